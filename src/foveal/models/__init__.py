"""Model zoo: one family per file, every variant registered under one contract (see base.py)."""

from .base import FovealModel, is_small_input
from .registry import MODELS, count_gflops, count_params, create_model, list_models, model_meta, register_model

# Importing a family module registers its variants.
from . import lenet, resnet  # noqa: E402,F401

__all__ = [
    "FovealModel", "MODELS", "create_model", "list_models", "model_meta", "register_model",
    "count_params", "count_gflops", "is_small_input",
]
