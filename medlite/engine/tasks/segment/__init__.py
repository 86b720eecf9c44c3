"""2D binary segmentation (MedLiteNet, its ablations, the U-Net baseline): training, evaluation at the
original image size, and prediction on new images."""

from medlite.engine.tasks.segment.train import SegTrainConfig, rescore_segmentation, train_segmentation

__all__ = ["SegTrainConfig", "rescore_segmentation", "train_segmentation"]
