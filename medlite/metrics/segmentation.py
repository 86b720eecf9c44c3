"""Binary segmentation metrics: Dice, IoU, HD95 and NSD, per case, with explicit empty-mask rules.

The surface metrics (HD95, NSD) use MONAI's implementations (``monai.metrics``, the ``seg`` extra);
Dice and IoU are two lines of counting and need nothing. Each metric has a pure function on one case and
:class:`SegmentationMetrics` accumulates cases (``update`` / ``compute`` / ``reset``) and reports
mean ± std over cases.

Empty masks (MONAI leaves these undefined, so medlite decides, and says so):

============================  ======  ======  =====================  ======
case                          Dice    IoU     HD95                   NSD
============================  ======  ======  =====================  ======
prediction and truth empty    1       1       0                      1
exactly one of them empty     0       0       image diagonal (px)    0
============================  ======  ======  =====================  ======

The diagonal is the largest distance two pixels of the image can have, so an empty prediction for a
present lesion is never better than the worst non-empty one. Distances are in pixels unless ``spacing``
(row, column) says otherwise; all masks are compared at the resolution they are given in (medlite
evaluates at the original image size).
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Sequence

import numpy as np

METRICS = ("dice", "iou", "hd95", "nsd")


def _monai_metrics():
    try:
        return importlib.import_module("monai.metrics")
    except ImportError as e:
        raise ImportError("HD95 and NSD need MONAI: pip install 'medlite[seg]'") from e


def _binary(mask, what: str) -> np.ndarray:
    a = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    a = np.squeeze(a)
    if a.ndim != 2:
        raise ValueError(f"{what} must be one 2-D mask (H, W); got shape {np.shape(mask)}")
    return a > 0.5 if a.dtype.kind == "f" else a > 0


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = _binary(pred, "pred"), _binary(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ in size; map the prediction back first")
    return p, t


def dice(pred, target) -> float:
    """Dice = 2|P∩T| / (|P| + |T|).

    Args:
        pred: (H, W) bool / {0, 1} integers, or float probabilities thresholded at 0.5.
        target: (H, W), same encoding and size.
    """
    p, t = _pair(pred, target)
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom


def iou(pred, target) -> float:
    """IoU (Jaccard) = |P∩T| / |P∪T|; inputs as in :func:`dice`."""
    p, t = _pair(pred, target)
    union = int((p | t).sum())
    return 1.0 if union == 0 else int((p & t).sum()) / union


def _empty_rule(p: np.ndarray, t: np.ndarray, both: float, one: float) -> float | None:
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return both
    if has_p != has_t:
        return one
    return None


def _diagonal(shape: Sequence[int], spacing: Sequence[float] | None) -> float:
    s = (1.0, 1.0) if spacing is None else spacing
    return math.hypot(shape[0] * s[0], shape[1] * s[1])


def _as_monai(a: np.ndarray):
    import torch

    return torch.from_numpy(a[None, None].astype(np.float32))


def hd95(pred, target, spacing: Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance between the mask boundaries (MONAI).

    Args:
        pred, target: (H, W) masks as in :func:`dice`.
        spacing: (row, column) pixel size; None means distances in pixels.
    """
    p, t = _pair(pred, target)
    rule = _empty_rule(p, t, 0.0, _diagonal(p.shape, spacing))
    if rule is not None:
        return rule
    with warnings.catch_warnings():  # MONAI 1.5 warns about its own deprecated internal argument
        warnings.simplefilter("ignore", FutureWarning)
        d = _monai_metrics().compute_hausdorff_distance(
            _as_monai(p), _as_monai(t), include_background=True, percentile=95,
            spacing=None if spacing is None else list(spacing))
    return float(d.reshape(-1)[0])


def nsd(pred, target, tolerance: float = 2.0, spacing: Sequence[float] | None = None) -> float:
    """Normalised surface Dice: the share of both boundaries lying within ``tolerance`` of the other (MONAI).

    Args:
        pred, target: (H, W) masks as in :func:`dice`.
        tolerance: in pixels (or in the unit of ``spacing``).
        spacing: (row, column) pixel size; None means pixels.
    """
    p, t = _pair(pred, target)
    rule = _empty_rule(p, t, 1.0, 0.0)
    if rule is not None:
        return rule
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        d = _monai_metrics().compute_surface_dice(
            _as_monai(p), _as_monai(t), class_thresholds=[float(tolerance)], include_background=True,
            spacing=None if spacing is None else list(spacing))
    return float(d.reshape(-1)[0])


def case_metrics(pred, target, tolerance: float = 2.0, spacing: Sequence[float] | None = None,
                 metrics: Sequence[str] = METRICS) -> dict[str, float]:
    """Every metric in ``metrics`` for one case, as a dict name -> value."""
    fns = {"dice": lambda: dice(pred, target), "iou": lambda: iou(pred, target),
           "hd95": lambda: hd95(pred, target, spacing), "nsd": lambda: nsd(pred, target, tolerance, spacing)}
    unknown = set(metrics) - set(fns)
    if unknown:
        raise ValueError(f"unknown metric(s) {sorted(unknown)}; choose from {list(fns)}")
    return {m: fns[m]() for m in metrics}


class SegmentationMetrics:
    """Accumulates per-case metrics; ``compute()`` gives mean and std over cases.

    Example:
        >>> m = SegmentationMetrics(tolerance=2)
        >>> for pred, gt, name in cases:
        ...     m.update(pred, gt, name)
        >>> m.compute()["dice"]["mean"]
    """

    def __init__(self, tolerance: float = 2.0, metrics: Sequence[str] = METRICS) -> None:
        self.tolerance = tolerance
        self.metrics = tuple(metrics)
        self.reset()

    def reset(self) -> None:
        self.cases: list[dict] = []

    def update(self, pred, target, name: str | None = None, spacing: Sequence[float] | None = None) -> dict:
        """Add one case. pred, target: (H, W) masks (see :func:`dice`). Returns that case's metrics."""
        row = case_metrics(pred, target, self.tolerance, spacing, self.metrics)
        self.cases.append({"case": name if name is not None else str(len(self.cases)), **row})
        return row

    def compute(self) -> dict[str, dict[str, float]]:
        """{metric: {"mean", "std", "median", "n"}} over the cases seen so far (std with ddof 0)."""
        return reduce_cases(self.cases, self.metrics)


def reduce_cases(cases: list[dict], metrics: Sequence[str], skip_nan: bool = False) -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std", "median", "n"}} of per-case rows (std with ddof 0); ``skip_nan`` leaves
    NaN values out (``n`` counts what is left; all NaN gives NaN statistics)."""
    if not cases:
        raise ValueError("no cases were added")
    out = {}
    for m in metrics:
        v = np.array([c[m] for c in cases], dtype=np.float64)
        if skip_nan:
            v = v[~np.isnan(v)]
        if not len(v):
            out[m] = {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "n": 0}
            continue
        out[m] = {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)), "n": len(v)}
    return out


def summarise(values: Sequence[float]) -> str:
    """'mean ± std' with 3 decimals (2 for distances above 10)."""
    v = np.asarray(values, dtype=np.float64)
    nd = 2 if abs(v.mean()) >= 10 else 3
    return f"{v.mean():.{nd}f} ± {v.std():.{nd}f}"


# ------------------------------------------------------------------------ MedSAM-on-laptop challenge rule
def _surface_distance():
    try:
        with warnings.catch_warnings():  # it imports scipy.ndimage.filters, deprecated in SciPy 1.x
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module("surface_distance")
    except ImportError as e:
        raise ImportError("the challenge NSD needs DeepMind's surface-distance package: "
                          "pip install 'medlite[seg]'") from e


def _official_dice(gt: np.ndarray, seg: np.ndarray) -> float:
    # surface_distance.compute_dice_coefficient, whose empty branch returns np.NaN (gone in NumPy 2)
    total = int(gt.sum()) + int(seg.sum())
    return float("nan") if total == 0 else 2.0 * int((gt & seg).sum()) / total


def challenge_case_metrics(seg, gt, spacing: Sequence[float] | None = None, tolerance: float = 2.0,
                           dsc_floor: float = 0.2) -> dict[str, float]:
    """DSC and NSD of one case exactly as the official scoring script of the CVPR 2024 "Segment Anything
    in Medical Images on Laptop" challenge computes them (``evaluation/compute_metrics.py`` in the MedSAM
    repository, with DeepMind's ``surface-distance`` package):

    - labels 1 .. ``gt.max()`` are scored, each as a binary mask; the case's DSC and NSD are the means
      over those labels (an empty ground truth has no label: DSC NaN, NSD 0; a label absent from both
      maps scores DSC NaN, so the case's DSC is NaN too);
    - NSD at ``tolerance`` is computed only if the case's mean DSC > ``dsc_floor``, else it is 0;
    - a 2-D case is scored as a one-slice volume (H, W, 1) with spacing (1, 1, 1), so every foreground
      pixel lies on the surface (the slice's top and bottom faces); this is not the 2-D contour NSD,
      which medlite reports separately as :func:`nsd` ("boundary NSD").

    Args:
        seg, gt: integer label maps (H, W) or volumes (D, H, W), same shape; label 0 is background.
        spacing: voxel size of a 3-D case (ignored for 2-D, as in the official script).
    Returns:
        {"dsc": float, "nsd": float}.
    """
    seg, gt = np.asarray(seg), np.asarray(gt)
    if seg.shape != gt.shape or gt.ndim not in (2, 3):
        raise ValueError(f"seg {seg.shape} and gt {gt.shape} must be the same 2-D or 3-D shape")
    if gt.dtype.kind not in "iub" or seg.dtype.kind not in "iub":
        raise ValueError(f"label maps must be integer or bool; got {seg.dtype} and {gt.dtype}")
    labels = range(1, int(gt.max()) + 1)
    if not labels:
        return {"dsc": float("nan"), "nsd": 0.0}
    d = float(np.mean([_official_dice(gt == i, seg == i) for i in labels]))
    if not d > dsc_floor:  # NaN included
        return {"dsc": d, "nsd": 0.0}
    if gt.ndim == 2:
        gt, seg, spacing = gt[..., None], seg[..., None], (1.0, 1.0, 1.0)
    elif spacing is None:
        raise ValueError("a 3-D case needs its voxel spacing")
    sd = _surface_distance()
    with warnings.catch_warnings():  # both maps empty for a label: 0 / 0 -> NaN, as in the official code;
        warnings.simplefilter("ignore", RuntimeWarning)  # and its scipy.ndimage.filters calls are deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        n = [sd.compute_surface_dice_at_tolerance(
            sd.compute_surface_distances(gt == i, seg == i, tuple(float(s) for s in spacing)), tolerance)
            for i in labels]
    return {"dsc": d, "nsd": float(np.mean(n))}


def challenge_metrics(pred, target, tolerance: float = 2.0, dsc_floor: float = 0.2) -> dict[str, float]:
    """The challenge's DSC / NSD of one binary target (:func:`challenge_case_metrics` on a one-label map),
    plus ``boundary_nsd``: the 2-D contour NSD of :func:`nsd` at the same tolerance (not gated).

    Args:
        pred, target: (H, W) masks as in :func:`dice`, at the original image size.
    Returns:
        {"dsc": float, "nsd": float, "boundary_nsd": float}.
    """
    p, t = _pair(pred, target)
    return {**challenge_case_metrics(p.astype(np.uint8), t.astype(np.uint8), tolerance=tolerance,
                                     dsc_floor=dsc_floor),
            "boundary_nsd": nsd(p, t, tolerance)}


def challenge_label_metrics(seg: np.ndarray, gt: np.ndarray, tolerance: float = 2.0) -> dict[int, dict[str, float]]:
    """Per-label challenge DSC / NSD of a label map: seg, gt (H, W) integer maps, label i = target i.

    Every label present in ``gt`` is scored (a label missing from ``seg`` scores DSC 0, NSD 0). The
    official script averages these into one case score: :func:`challenge_case_metrics`.
    """
    labels = [int(v) for v in np.unique(gt) if v != 0]
    return {lab: challenge_metrics(seg == lab, gt == lab, tolerance) for lab in labels}


class ChallengeMetrics:
    """Accumulates challenge DSC / NSD (and the 2-D boundary NSD) per target; ``compute()`` ->
    {"dsc"|"nsd"|"boundary_nsd": {"mean", "std", "median", "n"}}. A target with an empty ground truth
    (DSC NaN in the official script) is left out of the DSC mean, as pandas' mean would."""

    def __init__(self, tolerance: float = 2.0, dsc_floor: float = 0.2) -> None:
        self.tolerance, self.dsc_floor = tolerance, dsc_floor
        self.reset()

    def reset(self) -> None:
        self.cases: list[dict] = []

    def update(self, pred, target, name: str | None = None) -> dict[str, float]:
        row = challenge_metrics(pred, target, self.tolerance, self.dsc_floor)
        self.cases.append({"case": name if name is not None else str(len(self.cases)), **row})
        return row

    def compute(self) -> dict[str, dict[str, float]]:
        """{"dsc"|"nsd"|"boundary_nsd": {"mean", "std", "median", "n"}} over the targets seen so far."""
        return reduce_cases(self.cases, ("dsc", "nsd", "boundary_nsd"), skip_nan=True)
