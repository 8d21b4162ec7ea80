"""Blocks shared across model families, written once."""

from .drop import DropPath, drop_path
from .norm import LayerNorm2d

__all__ = ["DropPath", "drop_path", "LayerNorm2d"]
