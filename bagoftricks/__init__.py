"""Ablate the training tricks of "Bag of Tricks for Image Classification with CNNs" (He et al., 2019)."""

from bagoftricks.models import create_model, list_models, model_stats
from bagoftricks.module import ClassificationModule

__all__ = ["ClassificationModule", "create_model", "list_models", "model_stats"]
__version__ = "0.1.0"
