"""Data: sources, splits, decoding, batched augmentation and loaders."""

from .augment import AUGMENTS, Compose
from .decode import DecodeError, load_image
from .loader import DeviceLoader, mean_std
from .sources import DATASETS, DataBundle, Split, load_source
from . import datasets  # noqa: F401  (registers mnist, fashion-mnist, kmnist, cifar10/100, medmnist)
from .splits import make_splits

__all__ = ["AUGMENTS", "Compose", "DecodeError", "load_image", "DeviceLoader", "mean_std", "DATASETS",
           "DataBundle", "Split", "load_source", "make_splits"]
