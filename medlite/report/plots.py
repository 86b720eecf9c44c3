"""Figures for reports: training curves, ROC curves, confusion matrices, per-epoch comparisons.

Every function saves one PNG (dpi 120, tight layout) and returns its path. matplotlib is imported inside
the functions and figures are drawn on an explicit Agg canvas (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``) rather than through pyplot: this needs no display, leaves no open figure behind and,
unlike ``matplotlib.use("Agg")``, never switches (and so never closes the figures of) a user's
interactive pyplot backend, e.g. in a notebook. Importing this module has no side effects.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medlite.metrics.classification import check_inputs, confusion_matrix, medmnist_auc, per_class_auc

DPI = 120


def _figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.8)):
    """A figure drawn by the Agg canvas, outside pyplot: no global backend switch, nothing to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: str | os.PathLike) -> Path:
    """Save ``fig`` to ``path`` (".png" added when it has no extension, as matplotlib would) and return the
    path actually written."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # long tick labels must not be clipped
    return path


def _names(label_names: Sequence[str] | None, n: int) -> list[str]:
    if label_names is None:
        return [f"class {i}" for i in range(n)]
    if len(label_names) != n:
        raise ValueError(f"got {len(label_names)} label names for {n} classes / labels")
    return [str(name) for name in label_names]


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# ------------------------------------------------------------------------------------ training curves
def _series(rows: list[dict], key: str) -> tuple[list, list]:
    xs, ys = [], []
    for i, row in enumerate(rows):
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            xs.append(row.get("epoch", i + 1))
            ys.append(float(value))
    return xs, ys


def plot_training_curves(rows: list[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Loss (left) and validation AUC / ACC (right) per epoch; learning rate on a log axis if present.

    Args:
        rows: one dict per epoch with any of ``epoch, train_loss, val_loss, val_auc, val_acc, lr``;
            missing or None values are skipped (``epoch`` defaults to the 1-based row index).
        path: PNG to write. The epoch with the best ``val_auc`` is marked on both panels.
    """
    fig, axes = _figure(1, 2, figsize=(11, 4))
    ax_loss, ax_score = axes[0]
    for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
        xs, ys = _series(rows, key)
        if xs:
            ax_loss.plot(xs, ys, style, markersize=3, label=key.replace("_", " "))
    xs, lrs = _series(rows, "lr")
    if xs:
        ax_lr = ax_loss.twinx()
        ax_lr.plot(xs, lrs, "--", color="grey", linewidth=1, label="lr")
        if min(lrs) > 0:
            ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate", color="grey")
        ax_lr.legend(loc="center right", fontsize=8)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")

    for key, style in (("val_auc", "-o"), ("val_acc", "-s")):
        xs, ys = _series(rows, key)
        if xs:
            ax_score.plot(
                xs,
                ys,
                style,
                markersize=3,
                label=key.replace("_", " ").replace("auc", "AUC").replace("acc", "ACC"),
            )
    ax_score.set(xlabel="epoch", ylabel="score", title="Validation AUC / ACC")

    xs, aucs = _series(rows, "val_auc")
    if xs:
        best = int(np.argmax(aucs))
        for ax in (ax_loss, ax_score):
            ax.axvline(xs[best], color="red", linestyle=":", linewidth=1.2)
        ax_score.plot(
            [xs[best]],
            [aucs[best]],
            "r*",
            markersize=12,
            label=f"best val AUC {aucs[best]:.3f} (epoch {xs[best]})",
        )
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_score):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, also after one epoch
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper right" if ax is ax_loss else "lower right")
    if len(rows) == 1:
        for ax in (ax_loss, ax_score):
            ax.set_xlim(0.5, 1.5)
            ax.set_xticks([rows[0].get("epoch", 1)])
    ax_score.set_ylim(0.0, 1.02)  # AUC and ACC live in [0, 1]: a flat 0.70 must not look like a jump
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------------ ROC
def _roc_band(positive_sets, scores, grid: np.ndarray, n_boot: int, seed: int = 0):
    """Pointwise 95 % bootstrap band of the (mean) ROC curve: resample the cases, interpolate TPR on
    ``grid`` for each (positive mask, score) pair and average them; resamples with one class are skipped."""
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(seed)
    n = len(scores[0])
    curves = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        per = []
        for pos, s in zip(positive_sets, scores, strict=True):
            p = pos[idx]
            if p.all() or not p.any():
                continue
            fpr, tpr, _ = roc_curve(p, s[idx])
            per.append(np.interp(grid, fpr, tpr))
        if per:
            curves.append(np.mean(per, axis=0))
    if len(curves) < 10:
        return None
    return np.percentile(curves, 2.5, axis=0), np.percentile(curves, 97.5, axis=0)


def plot_roc(y_true, y_score, task: str, label_names: Sequence[str] | None, path: str | os.PathLike,
             title: str = "", n_boot: int = 200) -> Path:
    """ROC curves with each curve's AUC in the legend, and a shaded pointwise 95 % bootstrap band (``n_boot``
    resamples of the cases; 0 = none) around the binary curve or the macro average.

    Binary: one curve for the positive class (``label_names[-1]`` if two names are given).
    Multi-class / ordinal: one one-vs-rest curve per class plus the macro average (TPR averaged on a
    common FPR grid; its legend shows the MedMNIST AUC, the mean of the per-class AUCs).
    Multi-label: one curve per label. Classes whose AUC is undefined are drawn as "n/a" without a curve.
    """
    from sklearn.metrics import roc_curve

    y_true, y_score, task = check_inputs(y_true, y_score, task)
    aucs = per_class_auc(y_true, y_score, task)
    mean_auc = medmnist_auc(y_true, y_score, task)  # warns about classes whose AUC is undefined
    fig, axes = _figure(figsize=(6.5, 6))
    ax = axes[0, 0]
    grid = np.linspace(0.0, 1.0, 201)
    if task == "binary":
        names = _names(label_names, 2) if label_names is not None else ["negative", "positive"]
        fpr, tpr, _ = roc_curve(y_true, y_score)
        ax.plot(fpr, tpr, linewidth=2, label=f"{names[1]} (AUC = {aucs[1]:.3f})")
        band = _roc_band([y_true == 1], [y_score], grid, n_boot) if n_boot else None
        if band is not None:
            ax.fill_between(grid, *band, color="tab:blue", alpha=0.2, label="95 % bootstrap band")
    else:
        n = y_score.shape[1]
        names = _names(label_names, n)
        curves = []
        for j, color in zip(range(n), _colors(n), strict=True):
            positive = y_true[:, j] == 1 if task == "multi-label" else y_true == j
            if np.isnan(aucs[j]):
                ax.plot([], [], color=color, label=f"{names[j]} (AUC n/a)")
                continue
            fpr, tpr, _ = roc_curve(positive, y_score[:, j])
            curves.append(np.interp(grid, fpr, tpr))
            ax.plot(fpr, tpr, color=color, linewidth=1.3, label=f"{names[j]} (AUC = {aucs[j]:.3f})")
        if task != "multi-label" and curves:
            ax.plot(
                grid,
                np.mean(curves, axis=0),
                color="black",
                linewidth=2.5,
                linestyle="--",
                label=f"macro (mean AUC = {mean_auc:.3f})",
            )
            ok = [j for j in range(n) if not np.isnan(aucs[j])]
            band = _roc_band([y_true == j for j in ok], [y_score[:, j] for j in ok], grid, n_boot) if n_boot else None
            if band is not None:
                ax.fill_between(grid, *band, color="black", alpha=0.12, label="macro: 95 % bootstrap band")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=(f"{title}\n" if title else "") + f"ROC ({task}, MedMNIST AUC = {mean_auc:.3f})",
        aspect="equal",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8 if len(ax.lines) <= 11 else 6, loc="lower right")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------- confusion
def _heatmap(ax, counts: np.ndarray, names: list[str], normalize: bool, title: str) -> None:
    rows = counts.sum(axis=1, keepdims=True)
    pct = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    shown = pct if normalize else counts
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, counts.max()))
    k = len(names)
    fontsize = 9 if k <= 7 else 7
    for i in range(k):
        for j in range(k):
            dark = shown[i, j] > 0.6 * (1 if normalize else max(1, counts.max()))
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n{100 * pct[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(k), names, rotation=45 if k > 2 else 0, ha="right" if k > 2 else "center")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)


def plot_confusion(
    y_true,
    y_score,
    task: str,
    label_names: Sequence[str] | None,
    path: str | os.PathLike,
    normalize: bool = True,
    title: str = "",
) -> Path:
    """Confusion matrix heat map; each cell shows the count and the row-normalised percentage (``title``:
    e.g. model, data and split, above the matrix).

    Single-label tasks: one C x C matrix (binary: ``score > 0.5``; multi-class / ordinal: argmax).
    Multi-label: a grid of per-label 2 x 2 matrices (absent / present, ``score > 0.5``).
    ``normalize`` chooses the colour scale: row fractions (True) or raw counts (False).
    """
    y_true, y_score, task = check_inputs(y_true, y_score, task)
    counts = confusion_matrix(y_true, y_score, task)
    if task != "multi-label":
        names = _names(label_names, counts.shape[0])
        side = max(4.5, 0.9 * len(names) + 2.5)
        fig, axes = _figure(figsize=(side, side * 0.9))
        _heatmap(axes[0, 0], counts, names, normalize, (f"{title}\n" if title else "")
                 + f"Confusion matrix ({task}, n = {counts.sum()})")
        return _save(fig, path)
    names = _names(label_names, counts.shape[0])
    cols = min(4, len(names))
    n_rows = math.ceil(len(names) / cols)
    fig, axes = _figure(n_rows, cols, figsize=(3.2 * cols, 3.0 * n_rows))
    for ax, name, c in zip(axes.flat, names, counts, strict=False):
        _heatmap(ax, c, ["absent", "present"], normalize, name)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    return _save(fig, path)


# ------------------------------------------------------------------------------------------ generic
def plot_values_per_epoch(
    series: dict[str, list[float]] | dict[str, dict[str, list[float]]],
    path: str | os.PathLike,
    ylabel: str,
    title: str,
) -> Path:
    """One line per named series against the 1-based epoch (e.g. val AUC with vs without pretraining).

    ``series`` is either ``{name: values}`` (one panel) or ``{panel title: {name: values}}`` (one panel
    each, side by side, e.g. one per dataset). None / nan values leave gaps.
    """
    panels = series if series and all(isinstance(v, dict) for v in series.values()) else {"": series}
    fig, axes = _figure(1, len(panels), figsize=(max(7.0, 4.6 * len(panels)), 4.2))
    for ax, (panel, lines) in zip(axes[0], panels.items(), strict=True):
        for name, values in lines.items():
            ys = np.array([np.nan if v is None else float(v) for v in values])
            ax.plot(np.arange(1, len(ys) + 1), ys, "-o", markersize=3, label=name)
        ax.set(xlabel="epoch", ylabel=ylabel, title=panel or title)
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(fontsize=8)
    if len(panels) > 1:
        fig.suptitle(title)
    return _save(fig, path)


# ------------------------------------------------------------------------------------ attention overlay
def plot_attention_overlay(
    image: np.ndarray,
    heat: np.ndarray,
    probs: Sequence[float],
    label_names: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    method: str = "attention rollout",
) -> Path:
    """The image, the image with a heat map overlaid (with its colour bar), and the class probabilities.

    Args:
        image: (H, W) or (H, W, 3) float in [0, 1], the original image (any size).
        heat: (g, g) float in [0, 1], e.g. attention rollout over the patch grid; upsampled bilinearly.
        probs: (C,) class probabilities.
        label_names: (C,) names.
    """
    from PIL import Image

    img = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    h, w = img.shape[:2]
    heat_img = Image.fromarray(np.asarray(heat, dtype=np.float32)).resize((w, h), Image.BILINEAR)
    names = _names(label_names, len(probs))
    fig, axes = _figure(1, 3, figsize=(12, 4))
    cmap = "gray" if img.ndim == 2 else None
    axes[0, 0].imshow(img, cmap=cmap)
    axes[0, 0].set_title("image")
    axes[0, 1].imshow(img, cmap=cmap)
    shown = axes[0, 1].imshow(np.asarray(heat_img), cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[0, 1].set_title(method)
    fig.colorbar(shown, ax=axes[0, 1], fraction=0.046, pad=0.04, label="relevance (0-1)")
    for ax in axes[0, :2]:
        ax.axis("off")
    order = np.argsort(probs)
    axes[0, 2].barh([names[i] for i in order], [probs[i] for i in order], color="tab:blue")
    axes[0, 2].set_xlim(0, 1)
    axes[0, 2].set_xlabel("probability")
    axes[0, 2].set_title(f"prediction: {names[int(np.argmax(probs))]}")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


# ------------------------------------------------------------------------------------ MoE routing
def plot_expert_load(loads: Sequence[Sequence[float]], path: str | os.PathLike, top_k: int = 2) -> Path:
    """Fraction of tokens routed to each expert, one group of bars per MoE layer.

    Args:
        loads: per layer, (E_l,) fraction of tokens sent to each expert (sums to ``top_k``).
        top_k: experts per token; the dashed line per layer marks perfectly balanced routing (top_k / E_l).
    """
    fig, axes = _figure(figsize=(max(6.0, 0.35 * sum(len(v) for v in loads) + 2), 4))
    ax = axes[0, 0]
    x0, ticks, names = 0, [], []
    colors = _colors(len(loads))
    for layer, load in enumerate(loads):
        xs = np.arange(x0, x0 + len(load))
        ax.bar(xs, np.asarray(load, dtype=float), color=colors[layer], width=0.8)
        ax.hlines(top_k / len(load), xs[0] - 0.4, xs[-1] + 0.4, colors="k", linestyles="dashed", lw=1)
        ticks.append(xs.mean())
        names.append(f"layer {layer + 1}\n({len(load)} experts)")
        x0 += len(load) + 1
    ax.set_xticks(ticks, names, fontsize=8)
    ax.set(ylabel="fraction of tokens", title="MoE expert load per layer (dashed: balanced)")
    return _save(fig, path)
