"""Explanation overlays of image files for a trained model: what `foveal explain` writes.

The class and probability come from `Predictor.probabilities`, predict's own path (test-time
views and temperature), so an overlay names the class `predict` prints; the heat map explains
the model on the plain image, since a map averaged over shifted and mirrored views would not
line up with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

from .inference import Predictor, list_images


@dataclass
class Explained:
    """One image's overlay: the class explained and what the model predicts for the image."""

    image: Path
    overlay: Path  # <out>/<image stem>_<method>.png
    target: str  # the class the map explains
    prob: float  # its probability (temperature-scaled, test-time views)
    predicted: str


def explain_files(pred: Predictor, inputs: Sequence[str | Path], method: str, out: str | Path, *,
                  target: Optional[str], alpha: float, batch_size: int) -> Iterator[Explained]:
    """Write a heat-map overlay PNG per image of `inputs` (files or folders) into `out`, explaining
    `target` (a class name) or else each image's predicted class; yields each as it is written."""
    from ..explain import explain, save_overlay

    classes = pred.classes
    if target is not None and target not in classes:
        raise ValueError(f"target '{target}' is not a class of this model ({', '.join(classes)})")
    paths = list_images(inputs)
    for i in range(0, len(paths), batch_size):
        chunk = paths[i:i + batch_size]
        images = pred.load_images(chunk)  # (B, C, H, W) uint8
        probs = pred.probabilities(images)  # (B, K) on the CPU
        targets = probs.argmax(1) if target is None else torch.full((len(images),), classes.index(target))
        x = pred.normalize(images)
        maps = explain(pred.model, x, method, target=targets.to(pred.device)).cpu()
        for p, img, m, t, pr in zip(chunk, images, maps, targets.tolist(), probs):
            dest = Path(out) / f"{p.stem}_{method}.png"
            save_overlay(dest, img, m, alpha)
            yield Explained(p, dest, classes[t], float(pr[t]), classes[int(pr.argmax())])
