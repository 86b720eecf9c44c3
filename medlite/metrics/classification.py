"""Classification metrics with the official MedMNIST v2 conventions (AUC, ACC), bootstrap CIs, reports.

Conventions (``medmnist.evaluator.getAUC`` / ``getACC``, MedMNIST v2, Yang et al. 2023):

* ``y_score`` holds **probabilities**, never logits: softmax over C classes for "binary" (C = 2),
  "multi-class" and "ordinal"; sigmoid per label for "multi-label" (C = L). A binary ``y_score`` may
  also be the positive-class probability alone, shape (N,) or (N, 1).
* ``y_true`` is (N,) or (N, 1) integer class indices for single-label tasks, (N, L) in {0, 1} for
  "multi-label" (float arrays holding whole numbers are accepted).
* AUC -- binary: ROC-AUC of ``y_score[:, -1]``; multi-class / ordinal: unweighted mean of the
  one-vs-rest ROC-AUCs of the C classes; multi-label: unweighted mean of the L per-label ROC-AUCs.
* ACC -- binary: ``mean((y_score[:, -1] > threshold) == y_true)``; multi-class / ordinal: argmax
  accuracy (first maximum wins on ties, as ``np.argmax``); multi-label: mean over labels of the
  per-label accuracy of ``score > threshold`` (equal to the mean over all N x L decisions).
  The comparison is strict (``>``), so a score of exactly 0.5 is predicted negative.

Where medlite departs from the official code (which calls sklearn once per class): a class (or label)
whose one-vs-rest AUC is undefined because ``y_true`` has no positive or no negative case for it is
left out of the mean with a :class:`UndefinedAUCWarning` naming its index; if no class is defined the
AUC is ``nan``. The official code would let sklearn raise (sklearn < 1.6) or put a ``nan`` into the
mean (newer sklearn). The official task strings ("binary-class", "ordinal-regression",
"multi-label, binary-class") are accepted as aliases.

ROC-AUC is computed from ranks (the Mann-Whitney statistic with average ranks for ties), which equals
``sklearn.metrics.roc_auc_score`` and lets :func:`bootstrap_ci` evaluate many resamples at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

TASKS = ("binary", "multi-class", "ordinal", "multi-label")
_ALIASES = {
    "binary-class": "binary",
    "ordinal-regression": "ordinal",
    "multi-label, binary-class": "multi-label",
}
_MAX_BOOT_ELEMENTS = 2_000_000  # resamples x cases held in memory at once by bootstrap_ci


class UndefinedAUCWarning(UserWarning):
    """A class or label has only positive or only negative cases, so its ROC-AUC is undefined."""


# ----------------------------------------------------------------------------------------- validation
def canonical_task(task: str) -> str:
    """Return the medlite task name for ``task`` (accepts the official MedMNIST task strings)."""
    name = _ALIASES.get(task, task)
    if name not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {TASKS} (or a MedMNIST alias)")
    return name


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _labels_as_int(y_true: np.ndarray) -> np.ndarray:
    if y_true.dtype == bool or np.issubdtype(y_true.dtype, np.integer):
        return y_true.astype(np.int64)
    if not np.issubdtype(y_true.dtype, np.floating):
        raise ValueError(f"y_true must hold integer labels, got dtype {y_true.dtype}")
    if not np.isfinite(y_true).all() or (y_true != np.round(y_true)).any():
        raise ValueError("y_true must hold whole-number labels (no NaN, no fractions)")
    return y_true.astype(np.int64)


def check_inputs(y_true, y_score, task: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Validate and bring inputs to one layout.

    Returns:
        y_true: (N,) int64 for single-label tasks, (N, L) int64 in {0, 1} for multi-label.
        y_score: (N,) float64 positive-class probability for binary, (N, C) float64 otherwise.
        task: the canonical task name.

    Raises:
        ValueError: unknown task, empty input, NaN / inf scores, scores outside [0, 1] (logits),
            shapes that do not fit the task, or labels out of range.
    """
    task = canonical_task(task)
    y_true = _labels_as_int(_to_numpy(y_true))
    y_score = np.asarray(_to_numpy(y_score), dtype=np.float64)
    if y_score.size == 0 or y_true.size == 0:
        raise ValueError("y_true and y_score must not be empty")
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or infinite values")
    lo, hi = float(y_score.min()), float(y_score.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"y_score must be probabilities in [0, 1], got values in [{lo:.4g}, {hi:.4g}]: these look "
            "like logits; apply softmax (binary / multi-class / ordinal) or sigmoid (multi-label) first"
        )

    if task == "multi-label":
        if y_score.ndim != 2:
            raise ValueError(f"multi-label y_score must have shape (N, L), got {y_score.shape}")
        if y_true.ndim == 1 and y_score.shape[1] == 1:
            y_true = y_true[:, None]
        if y_true.shape != y_score.shape:
            raise ValueError(f"multi-label y_true {y_true.shape} and y_score {y_score.shape} must match")
        if ((y_true != 0) & (y_true != 1)).any():
            raise ValueError("multi-label y_true must hold 0 / 1 only")
        return y_true, y_score, task

    if y_true.ndim == 2 and y_true.shape[1] == 1:
        y_true = y_true[:, 0]
    if y_true.ndim != 1:
        raise ValueError(f"{task} y_true must have shape (N,) or (N, 1), got {y_true.shape}")
    if task == "binary":
        if y_score.ndim == 2 and y_score.shape[1] in (1, 2):
            y_score = y_score[:, -1]
        if y_score.ndim != 1:
            raise ValueError(f"binary y_score must have shape (N,), (N, 1) or (N, 2), got {y_score.shape}")
        n_classes = 2
    else:
        if y_score.ndim != 2 or y_score.shape[1] < 2:
            raise ValueError(f"{task} y_score must have shape (N, C) with C >= 2, got {y_score.shape}")
        n_classes = y_score.shape[1]
    if y_true.shape[0] != y_score.shape[0]:
        raise ValueError(f"y_true has {y_true.shape[0]} cases but y_score has {y_score.shape[0]}")
    if y_true.min() < 0 or y_true.max() >= n_classes:
        got = f"[{y_true.min()}, {y_true.max()}]"
        raise ValueError(f"y_true labels must lie in [0, {n_classes - 1}] for this y_score, got {got}")
    return y_true, y_score, task


# ------------------------------------------------------------------------------------------ rank AUC
class _SortedColumn:
    """One one-vs-rest problem sorted by score once, so many weightings of it cost O(N) each."""

    def __init__(self, positive: np.ndarray, score: np.ndarray):
        self.order = np.argsort(score, kind="stable")
        s = score[self.order]
        self.positive = positive[self.order].astype(bool)
        self.group_starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # start of each run of ties

    def auc(self, weights: np.ndarray) -> np.ndarray:
        """ROC-AUC under case weights (B, N) float64 (bootstrap counts; ones for the plain AUC) -> (B,).

        AUC = sum over (pos i, neg j) of w_i w_j ([s_i > s_j] + 0.5 [s_i == s_j]) / (W_pos W_neg); nan
        where W_pos or W_neg is 0.
        """
        w = weights[:, self.order]
        pos = np.add.reduceat(w * self.positive, self.group_starts, axis=1)
        neg = np.add.reduceat(w * ~self.positive, self.group_starts, axis=1)
        neg_below = np.cumsum(neg, axis=1) - neg
        num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
        den = pos.sum(axis=1) * neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def roc_auc(y_true, y_score) -> float:
    """ROC-AUC of one binary problem from ranks; equals ``sklearn.metrics.roc_auc_score`` (ties too).

    Args:
        y_true: (N,) 0 / 1 (or bool).
        y_score: (N,) float, any monotone score.

    Returns:
        The AUC, or nan when ``y_true`` has only one class.
    """
    y_true, y_score = _to_numpy(y_true).ravel(), np.asarray(_to_numpy(y_score), dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"y_true {y_true.shape} and y_score {y_score.shape} must have the same length")
    return float(_SortedColumn(y_true == 1, y_score).auc(np.ones((1, y_true.size)))[0])


def _columns(y_true: np.ndarray, y_score: np.ndarray, task: str) -> list[_SortedColumn]:
    """The one-vs-rest problems whose AUCs MedMNIST averages (inputs already checked)."""
    if task == "binary":
        return [_SortedColumn(y_true == 1, y_score)]
    if task == "multi-label":
        return [_SortedColumn(y_true[:, j] == 1, y_score[:, j]) for j in range(y_score.shape[1])]
    return [_SortedColumn(y_true == c, y_score[:, c]) for c in range(y_score.shape[1])]


def _mean_defined(per_class: np.ndarray, task: str, warn: bool = True) -> float:
    undefined = np.flatnonzero(np.isnan(per_class))
    if warn and undefined.size:
        kind = "label" if task == "multi-label" else "class"
        warnings.warn(
            f"ROC-AUC is undefined for {kind} index(es) {undefined.tolist()} (y_true has no positive or "
            "no negative case for it); left out of the mean AUC",
            UndefinedAUCWarning,
            stacklevel=3,
        )
    if undefined.size == per_class.size:
        return float("nan")
    return float(np.nanmean(per_class))


# ------------------------------------------------------------------------------------- pure functions
def per_class_auc(y_true, y_score, task: str) -> np.ndarray:
    """One-vs-rest ROC-AUC per class (per label for multi-label), nan where undefined.

    Returns:
        (C,) float64; for binary (2,): both classes share the same AUC (class 0 is scored by 1 - p).
    """
    y_true, y_score, task = check_inputs(y_true, y_score, task)
    return _per_class_auc(y_true, y_score, task)


def _per_class_auc(y_true: np.ndarray, y_score: np.ndarray, task: str) -> np.ndarray:
    ones = np.ones((1, y_true.shape[0]))
    aucs = np.array([col.auc(ones)[0] for col in _columns(y_true, y_score, task)])
    return np.repeat(aucs, 2) if task == "binary" else aucs


def medmnist_auc(y_true, y_score, task: str) -> float:
    """MedMNIST AUC (see the module docstring); undefined classes are skipped with a warning."""
    y_true, y_score, task = check_inputs(y_true, y_score, task)
    return _mean_defined(_per_class_auc(y_true, y_score, task)[: 1 if task == "binary" else None], task)


def predict(y_score: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions from checked scores: (N,) class indices, or (N, L) 0 / 1 for multi-label."""
    if task in ("binary", "multi-label"):
        return (y_score > threshold).astype(np.int64)
    return np.argmax(y_score, axis=1)


def _correct_per_case(y_true: np.ndarray, y_score: np.ndarray, task: str, threshold: float) -> np.ndarray:
    correct = predict(y_score, task, threshold) == y_true
    return correct.mean(axis=1) if task == "multi-label" else correct.astype(np.float64)


def medmnist_acc(y_true, y_score, task: str, threshold: float = 0.5) -> float:
    """MedMNIST ACC (see the module docstring); ``threshold`` applies to binary and multi-label."""
    y_true, y_score, task = check_inputs(y_true, y_score, task)
    return float(_correct_per_case(y_true, y_score, task, threshold).mean())


def confusion_matrix(y_true, y_score, task: str, threshold: float = 0.5) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class.

    Returns:
        (C, C) int64 for single-label tasks (C = 2 for binary, ``score > threshold``; argmax otherwise);
        (L, 2, 2) int64 for multi-label, each ``[[TN, FP], [FN, TP]]``.
    """
    y_true, y_score, task = check_inputs(y_true, y_score, task)
    pred = predict(y_score, task, threshold)
    if task == "multi-label":
        cells = 2 * y_true + pred  # 0 TN, 1 FP, 2 FN, 3 TP
        counts = np.stack([np.bincount(cells[:, j], minlength=4) for j in range(y_true.shape[1])])
        return counts.reshape(-1, 2, 2)
    n_classes = 2 if task == "binary" else y_score.shape[1]
    flat = np.bincount(y_true * n_classes + pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def bootstrap_ci(
    y_true,
    y_score,
    task: str,
    metric: str = "auc",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    threshold: float = 0.5,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the MedMNIST AUC or ACC, resampling cases.

    Each resample draws N cases with replacement (``numpy.random.default_rng(seed)``); a class that has
    no positive or no negative case in a resample is left out of that resample's mean AUC, and
    resamples whose AUC is wholly undefined are dropped. Resamples are evaluated in blocks as case
    weights, so 1000 resamples of 2000 cases take well under a second per class.

    Returns:
        (low, high): the ``alpha / 2`` and ``1 - alpha / 2`` quantiles; (nan, nan) if undefined.
    """
    if metric not in ("auc", "acc"):
        raise ValueError(f"metric must be 'auc' or 'acc', got {metric!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    y_true, y_score, task = check_inputs(y_true, y_score, task)
    n = y_true.shape[0]
    rng = np.random.default_rng(seed)
    if metric == "acc":
        correct = _correct_per_case(y_true, y_score, task, threshold)
    else:
        columns = _columns(y_true, y_score, task)
    stats = np.empty(n_boot)
    block = max(1, _MAX_BOOT_ELEMENTS // n)
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        idx = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
        weights = np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        if metric == "acc":
            stats[start : start + b] = weights @ correct / n
        else:
            aucs = np.stack([col.auc(weights) for col in columns], axis=1)  # (b, K)
            defined = ~np.isnan(aucs)
            count = defined.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                stats[start : start + b] = np.where(defined, aucs, 0.0).sum(axis=1) / count
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def classification_report(
    y_true,
    y_score,
    task: str,
    label_names: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict:
    """All classification numbers in one JSON-friendly dict.

    Keys: ``task``; ``n`` (cases); ``auc``, ``acc`` (MedMNIST conventions); ``auc_ci``, ``acc_ci``
    (95 % percentile bootstrap ``(low, high)`` from ``n_boot`` resamples, None when ``n_boot == 0``);
    ``per_class_auc`` (list, nan where undefined; binary lists both classes); ``confusion`` (list of
    lists, rows = true class; multi-label: one ``[[TN, FP], [FN, TP]]`` per label); ``label_names``.
    """
    y_true, y_score, task = check_inputs(y_true, y_score, task)
    per_class = _per_class_auc(y_true, y_score, task)
    n_entries = per_class.shape[0]
    if label_names is not None and len(label_names) != n_entries:
        raise ValueError(f"got {len(label_names)} label names for {n_entries} classes / labels")
    auc = _mean_defined(per_class[: 1 if task == "binary" else None], task)
    acc = float(_correct_per_case(y_true, y_score, task, threshold).mean())
    ci = {}
    for metric in ("auc", "acc"):
        ci[metric] = (
            bootstrap_ci(y_true, y_score, task, metric, n_boot=n_boot, seed=seed, threshold=threshold)
            if n_boot > 0
            else None
        )
    return {
        "task": task,
        "n": int(y_true.shape[0]),
        "auc": auc,
        "acc": acc,
        "auc_ci": ci["auc"],
        "acc_ci": ci["acc"],
        "per_class_auc": [float(a) for a in per_class],
        "confusion": confusion_matrix(y_true, y_score, task, threshold).tolist(),
        "label_names": list(label_names) if label_names is not None else None,
    }


# --------------------------------------------------------------------------------------- metric object
class ClassificationMetrics:
    """Accumulates probabilities and labels over batches; ``compute`` returns a classification report.

    Example::

        metrics = ClassificationMetrics("multi-class")
        for images, labels in loader:
            metrics.update(model(images).softmax(-1), labels)
        report = metrics.compute()  # same dict as classification_report(...)
    """

    def __init__(
        self,
        task: str,
        n_boot: int = 0,
        label_names: Sequence[str] | None = None,
        seed: int = 0,
        threshold: float = 0.5,
    ):
        self.task = canonical_task(task)
        self.n_boot = n_boot
        self.label_names = label_names
        self.seed = seed
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self._labels: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def update(self, probs, labels) -> None:
        """Add a batch.

        Args:
            probs: (B, C) float probabilities (tensor or array; binary also (B,) or (B, 1)).
            labels: (B,) or (B, 1) int class indices; (B, L) 0 / 1 for multi-label.
        """
        y_true, y_score, _ = check_inputs(labels, probs, self.task)
        if self._scores and y_score.shape[1:] != self._scores[0].shape[1:]:
            raise ValueError(
                f"batch scores have shape {y_score.shape}, earlier batches {self._scores[0].shape}"
            )
        self._labels.append(y_true)
        self._scores.append(y_score)

    def compute(self) -> dict:
        """Report over everything seen since the last reset (see :func:`classification_report`)."""
        if not self._scores:
            raise ValueError("ClassificationMetrics.compute() called before any update()")
        return classification_report(
            np.concatenate(self._labels),
            np.concatenate(self._scores),
            self.task,
            label_names=self.label_names,
            n_boot=self.n_boot,
            seed=self.seed,
            threshold=self.threshold,
        )
