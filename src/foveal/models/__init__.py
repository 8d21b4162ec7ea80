"""Model zoo: one family per file, every variant registered under one contract (see base.py)."""

from .base import FovealModel, is_small_input
from .registry import MODELS, count_gflops, count_params, create_model, list_models, model_info, register_model

# Importing a family module registers its variants.
from . import (  # noqa: E402,F401
    airnet, alexnet, convnext, efficientnet, googlenet, hybrid, inception, lenet, mobilenetv2, mobilenetv3,
    preact_resnet, resnet, vgg, vit,
)

__all__ = [
    "FovealModel", "MODELS", "create_model", "list_models", "model_info", "register_model",
    "count_params", "count_gflops", "is_small_input",
]
