"""Blocks shared across model families, written once."""

from .conv import BasicConv2d, ConvNormAct, conv_kind, make_act, make_divisible
from .drop import DropPath, drop_path, drop_path_rates
from .init import init_conv_linear
from .mbconv import InvertedResidual
from .norm import LayerNorm2d
from .se import SqueezeExcite
from .transformer import Attention, Mlp, TransformerBlock

__all__ = [
    "BasicConv2d", "ConvNormAct", "conv_kind", "make_act", "make_divisible", "DropPath", "drop_path", "drop_path_rates",
    "init_conv_linear", "InvertedResidual", "LayerNorm2d", "SqueezeExcite", "Attention", "Mlp", "TransformerBlock",
]
