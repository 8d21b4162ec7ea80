"""Explanations written against the model contract only: input gradients, SmoothGrad,
integrated gradients, Grad-CAM / Grad-CAM++ (on a CNN map or a transformer token grid),
attention rollout and occlusion sensitivity.

``explain(model, x, "gradcam")`` -> (B, H, W) maps in [0, 1]; ``EXPLAINERS.names()`` lists
the methods.
"""

from . import cam, gradients, occlusion, rollout  # noqa: F401  (importing registers the methods)
from .core import EXPLAINERS, explain
from .overlay import overlay, overlay_png, save_overlay

METHODS = EXPLAINERS.names()

__all__ = ["EXPLAINERS", "METHODS", "explain", "overlay", "overlay_png", "save_overlay"]
