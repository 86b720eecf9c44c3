"""Reports: figures (PNG) for training runs and classification results."""

from medlite.report.plots import plot_confusion, plot_roc, plot_training_curves, plot_values_per_epoch

__all__ = ["plot_confusion", "plot_roc", "plot_training_curves", "plot_values_per_epoch"]
