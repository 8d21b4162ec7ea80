"""Data: sources, splits, decoding, batched augmentation and loaders.

Names are imported on first use (PEP 562), so `foveal.data.decode`, which the torch-free
inference install reads images with, does not pull in torch through this package.
"""

from importlib import import_module
from typing import Any

_WHERE = {"AUGMENTS": "augment", "Compose": "augment", "DecodeError": "decode", "load_image": "decode",
          "DeviceLoader": "loader", "stats": "preprocess", "Normalized": "preprocess", "DATASETS": "sources",
          "DataBundle": "bundle", "Split": "bundle", "ImageStore": "images", "TensorImages": "images",
          "FileImages": "images", "load_source": "sources", "make_splits": "splits"}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'foveal.data' has no attribute '{name}'")
    return getattr(import_module(f".{_WHERE[name]}", __name__), name)
