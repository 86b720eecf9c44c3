"""The one learning-rate schedule and optimizer builder of every medlite training task.

Schedules are multipliers of the peak learning rate per optimizer step: a linear warmup over
``warmup_steps`` (step ``s`` gets ``(s + 1) / warmup_steps``), then either a half cosine from 1 to 0 at
``total_steps`` or a step schedule (x ``gamma`` at each milestone step). Tasks translate their own units
(warmup in epochs, as a fraction of the run, or in steps) into steps; the curve itself lives only here.
A parameter group may carry an ``lr_mult`` (:func:`param_groups`): its rate is that multiple of the curve
(e.g. a pretrained encoder fine-tuned at 0.1x the decoder's rate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from medlite.errors import ConfigError

SCHEDULES = ("cosine", "step")
OPTIMIZERS = ("adam", "adamw")


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine",
              milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Args:
        step: optimizer steps taken so far in the run.
        total_steps: steps of the whole run (the cosine reaches 0 there).
        warmup_steps: linear warmup length in steps; 0 disables it.
        schedule: "cosine" (after warmup) or "step".
        milestones: step schedule: the steps from which the rate is multiplied by another ``gamma``.
        gamma: step schedule: multiplier per milestone passed.
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        t = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    if schedule == "step":
        return gamma ** sum(step >= m for m in milestones)
    raise ConfigError(f"unknown schedule '{schedule}' (use one of {', '.join(SCHEDULES)})")


def epoch_milestones(fractions: Sequence[float], epochs: int, steps_per_epoch: int) -> list[int]:
    """Milestones given as fractions of the epochs (MedMNIST: 0.5, 0.75) -> the first step of that epoch."""
    return [int(round(f * epochs)) * steps_per_epoch for f in fractions]


def epoch_lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg) -> float:
    """:func:`lr_factor` for a config that states its schedule in epochs (fields ``schedule``,
    ``warmup_epochs``, ``milestones`` as fractions of ``epochs``, ``gamma``)."""
    return lr_factor(step, total_steps, int(cfg.warmup_epochs * steps_per_epoch), cfg.schedule,
                     epoch_milestones(cfg.milestones, cfg.epochs, steps_per_epoch), cfg.gamma)


def param_groups(model: nn.Module, weight_decay: float, lr_mults: Mapping[str, float] | None = None) -> list[dict]:
    """Weights with decay; biases, norms (ndim <= 1) and the model's ``no_weight_decay()`` without.

    Without ``lr_mults``: those two groups. With ``lr_mults`` (parameter-name prefix -> learning-rate
    multiplier, e.g. ``{"encoder.": 0.1}``): the two groups of the parameters no prefix matches come first
    (so ``param_groups[0]`` carries the schedule's own rate), then each prefix's two non-empty groups, each
    group with its ``lr_mult`` (the training loop sets its rate to ``lr_mult`` x the schedule). A prefix that
    matches no trainable parameter is a :class:`ConfigError`.
    """
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    prefixes = list(lr_mults or {})
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {(p, d): [] for p in ["", *prefixes] for d in (True, False)}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefix = next((pre for pre in prefixes if n.startswith(pre)), "")
        groups[(prefix, not (p.ndim <= 1 or n in skip))].append(p)
    out = [{"params": groups[("", True)], "weight_decay": weight_decay},
           {"params": groups[("", False)], "weight_decay": 0.0}]
    if not lr_mults:
        return out
    for pre in prefixes:
        if not groups[(pre, True)] and not groups[(pre, False)]:
            raise ConfigError(f"a learning-rate multiplier for '{pre}' parameters, but the model has none")
        out += [{"params": groups[(pre, d)], "weight_decay": wd, "lr_mult": float(lr_mults[pre])}
                for d, wd in ((True, weight_decay), (False, 0.0)) if groups[(pre, d)]]
    for g in out[:2]:
        g["lr_mult"] = 1.0
    return out


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, *, decay_groups: bool = True,
                    fused: bool = True, betas: tuple[float, float] = (0.9, 0.999),
                    lr_mults: Mapping[str, float] | None = None) -> torch.optim.Optimizer:
    """Adam or AdamW over ``model``'s trainable parameters.

    Args:
        decay_groups: exempt biases, norms and ``no_weight_decay()`` parameters from weight decay.
        fused: one kernel per step instead of ~10 per tensor (CPU and CUDA); off keeps the foreach path.
        lr_mults: parameter-name prefix -> learning-rate multiplier (see :func:`param_groups`); needs
            ``decay_groups``.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}' (use one of {', '.join(OPTIMIZERS)})")
    if lr_mults and not decay_groups:
        raise ConfigError("learning-rate multipliers need decay_groups=True (they split its parameter groups)")
    params = (param_groups(model, weight_decay, lr_mults) if decay_groups
              else [p for p in model.parameters() if p.requires_grad])
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    kwargs = {"fused": True} if fused else {}
    return cls(params, lr=lr, weight_decay=weight_decay, betas=betas, **kwargs)
