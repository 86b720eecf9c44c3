"""Metrics: objects with update / compute / reset, and a pure function beside each."""

from medlite.metrics.classification import (
    TASKS,
    ClassificationMetrics,
    UndefinedAUCWarning,
    bootstrap_ci,
    canonical_task,
    check_inputs,
    classification_report,
    confusion_matrix,
    medmnist_acc,
    medmnist_auc,
    per_class_auc,
    predict,
    roc_auc,
)
from medlite.metrics.segmentation import SegmentationMetrics, case_metrics, dice, hd95, iou, nsd

__all__ = [
    "TASKS",
    "ClassificationMetrics",
    "UndefinedAUCWarning",
    "bootstrap_ci",
    "canonical_task",
    "check_inputs",
    "classification_report",
    "confusion_matrix",
    "medmnist_acc",
    "medmnist_auc",
    "per_class_auc",
    "predict",
    "roc_auc",
    "SegmentationMetrics",
    "case_metrics",
    "dice",
    "hd95",
    "iou",
    "nsd",
]
