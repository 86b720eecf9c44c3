"""Promptable segmentation (LiteSAM, LiteMedSAM): training on prompts sampled from masks, and evaluation
with the challenge's DSC / NSD from box and point prompts. Prediction is :mod:`medlite.models.litesam.predictor`."""

from medlite.engine.tasks.promptable.evaluate import eval_prompt, evaluate_sam, val_dice
from medlite.engine.tasks.promptable.train import SamTrainConfig, load_dataset, sam_loss, train_sam

__all__ = ["SamTrainConfig", "eval_prompt", "evaluate_sam", "load_dataset", "sam_loss", "train_sam", "val_dice"]
