"""ResNet variants of He et al. 2019 (ResNet-B/C/D) and the helpers to build, load and measure them."""

from bagoftricks.models.pretrained import fit_report, load_pretrained, read_checkpoint
from bagoftricks.models.resnet import ResNet, create_model, list_models, min_image_size, model_stats

__all__ = ["ResNet", "create_model", "list_models", "fit_report", "load_pretrained", "min_image_size", "model_stats", "read_checkpoint"]
