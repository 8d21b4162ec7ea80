"""Runs trained briefly on scikit-learn digits, cached for the whole session."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

# model -> (input px, epochs, lr) where `recipe`'s default does not suit; small inputs keep CPU
# training to seconds. Digits test accuracy and CPU seconds (seed 0, one thread, shared 2-core box)
# in the comments. LeNet-5 exports from 28 px only (test_export_zoo.UNEXPORTABLE). ViT-Ti needs a
# lower lr and more epochs on 1,259 images (chance at 3e-3). AlexNet, without normalization layers,
# is a seed lottery at 3e-3 (test_digits_training.py). The costliest learn enough in 3 epochs.
RECIPES = {
    "lenet5": (28, 3, 3e-3),  # 0.930, 5 s
    "vit_tiny": (16, 15, 5e-4),  # 0.791, 220 s
    "alexnet": (16, 6, 1e-3),  # 0.919, 23 s
    "wrn16_4": (8, 3, 3e-3),  # 0.981, 18 s
    "googlenet": (16, 3, 3e-3),  # 0.953, 47 s
    "convnext_tiny": (16, 3, 3e-3),  # 0.939, 209 s
}


def recipe(model: str) -> tuple[int, int, float]:
    """(input px, epochs, lr) for `model`: its RECIPES entry, else 6 epochs of AdamW 3e-3 at its
    smallest size (resnet20 at 8 px: 0.933, 14 s; inception_v3: 0.955, 111 s, where 3 and 4 epochs
    left int8 flipping 4.5% of the test images and losing 1.39 points)."""
    from foveal.models import model_info

    return RECIPES.get(model) or (model_info(model)["min_img_size"], 6, 3e-3)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`digits_run(model)` -> run folder of `model` trained on digits (trained once per session)."""
    import torch

    from foveal.config import RunConfig
    from foveal.training import Trainer

    root, cache = tmp_path_factory.mktemp("export_runs"), {}

    def get(model: str) -> Path:
        if model not in cache:
            size, epochs, lr = recipe(model)
            cfg = RunConfig()
            cfg.model.name, cfg.data.img_size, cfg.optim.lr = model, size, lr
            cfg.train.epochs, cfg.train.progress, cfg.train.out_dir, cfg.train.name = epochs, False, str(root), model
            torch.manual_seed(0)
            cache[model] = Trainer(cfg).fit().run_dir
        return cache[model]

    return get
