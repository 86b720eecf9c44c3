"""Batched inference and evaluation of classifiers on in-memory data."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medlite.data.base import ArraySplit
from medlite.data.transforms import to_float


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Logits (B, C) -> probabilities: sigmoid for multi-label, softmax otherwise."""
    return torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, dim=-1)


@torch.no_grad()
def predict(
    model: nn.Module,
    split: ArraySplit,
    mean: list[float],
    std: list[float],
    task: str,
    batch_size: int = 512,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray, float]:
    """Run ``model`` over a whole split.

    Returns:
        (probs (N, C) float64, labels (N,) or (N, L), mean loss)
    """
    model.eval()
    out, losses = [], []
    for i in range(0, len(split), batch_size):
        x = to_float(split.images[i : i + batch_size].to(device), mean, std)
        y = split.labels[i : i + batch_size].to(device)
        logits = model(x).float()
        losses.append(loss_fn(logits, y, task).item() * len(y))
        out.append(probabilities(logits, task).cpu())
    probs = torch.cat(out).double().numpy()
    return probs, split.labels.numpy(), float(sum(losses) / max(len(split), 1))


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, task: str, label_smoothing: float = 0.0):
    """Cross-entropy (single-label tasks, including binary with 2 logits) or BCE (multi-label)."""
    if task == "multi-label":
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
    return nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def evaluate_split(model, split, mean, std, task, n_boot=1000, seed=0, device="cpu", label_names=None):
    """Official MedMNIST AUC/ACC (with bootstrap 95 % CIs) of ``model`` on ``split``."""
    from medlite.metrics.classification import classification_report

    probs, labels, loss = predict(model, split, mean, std, task, device=device)
    rep = classification_report(labels, probs, task, label_names=label_names, n_boot=n_boot, seed=seed)
    rep["loss"] = loss
    return rep, probs, labels


def write_medmnist_scores(folder, flag: str, split: str, probs, auc: float, acc: float, run: str = "medlite"):
    """Per-case scores in the official MedMNIST evaluator's file layout, so ``medmnist.Evaluator.
    parse_and_evaluate`` (or ``python -m medmnist evaluate``) scores them: named
    ``{flag}_{split}_[AUC]{auc:.3f}_[ACC]{acc:.3f}@{run}.csv``, no header, one line per case:
    ``index,score_0,...,score_{K-1}`` in dataset order. Returns the path."""
    from pathlib import Path

    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, K); got shape {p.shape}")
    if any(c in run for c in "/_@\\"):
        raise ValueError(f"run name {run!r} may not contain / \\ _ or @ (they delimit the official file name)")
    path = Path(folder) / f"{flag}_{split}_[AUC]{auc:.3f}_[ACC]{acc:.3f}@{run}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{i}," + ",".join(repr(float(v)) for v in row) for i, row in enumerate(p)]
    path.write_text("\n".join(lines) + "\n")
    return path
