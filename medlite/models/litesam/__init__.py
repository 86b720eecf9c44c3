"""LiteSAM: box-, point- and scribble-prompted segmentation split like SAM.

``image_encoder`` (computed once per image) -> ``prompt_encoder`` + ``mask_decoder`` (per prompt);
``model`` holds the config and the registered variants, ``predictor`` the SAM-like
``set_image`` / ``predict`` API on images of any size.
"""

from medlite.models.litesam.model import VARIANTS, LiteSAM, LiteSAMConfig, config_for
from medlite.models.litesam.predictor import LiteSAMPredictor

__all__ = ["VARIANTS", "LiteSAM", "LiteSAMConfig", "LiteSAMPredictor", "config_for"]
