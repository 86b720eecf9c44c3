"""medlite: lightweight medical-image AI that trains on a laptop CPU and runs on a phone."""

from medlite.registry import create_model, list_models, model_card

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "list_models", "model_card"]
