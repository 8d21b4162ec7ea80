"""Runs trained briefly on scikit-learn digits, cached for the whole session."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

# model -> (input px, epochs, lr); small inputs keep CPU training to seconds. ViT-Ti needs a lower
# lr and more epochs on 1,259 images (0.78 test accuracy after 15 epochs at 5e-4; chance at 3e-3).
RECIPES = {"lenet5": (28, 3, 3e-3), "resnet18": (16, 2, 3e-3), "mobilenetv3_small": (16, 6, 3e-3),
           "vit_tiny": (16, 15, 5e-4)}


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`digits_run(model)` -> run folder of `model` trained on digits (trained once per session)."""
    import torch

    from foveal.config import RunConfig
    from foveal.engine import Trainer

    root, cache = tmp_path_factory.mktemp("export_runs"), {}

    def get(model: str) -> Path:
        if model not in cache:
            size, epochs, lr = RECIPES[model]
            cfg = RunConfig()
            cfg.model.name, cfg.data.img_size, cfg.optim.lr = model, size, lr
            cfg.train.epochs, cfg.train.progress, cfg.train.out_dir, cfg.train.name = epochs, False, str(root), model
            torch.manual_seed(0)
            cache[model] = Trainer(cfg).fit().run_dir
        return cache[model]

    return get
