"""Every family's smallest variant trains on digits and passes a stated accuracy floor
(acceptance 4 of the model-zoo issue).

scikit-learn's 1,797 8x8 digits (1259 train / 179 val / 359 test images), upsampled to the
model's small size, through the Trainer as a user runs it (AdamW 3e-3, cosine, crop
augmentation). Schedules are short so the default run stays cheap; the floors sit a few
points under the accuracy measured with these exact settings (BENCHMARKS.md, "Model zoo"),
so a regression in a family's small-input form or its training path fails, while seed-level
noise does not. Runs costing more than ~10 s of CPU are marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from foveal.config import RunConfig, apply_overrides
from foveal.training import Trainer

SLOW = pytest.mark.slow

# (model, input px, epochs, floor on test accuracy, slow?[, config overrides]). Measured test accuracy (seed 0,
# one torch thread) and CPU seconds of the whole run in the comments; families are at 16 px
# (their small-input form; digits are 8x8) except LeNet-5, made for 32 px.
RUNS = [
    ("lenet5", 32, 3, 0.90, False),  # 0.939, 6 s
    ("lenet5_modern", 32, 3, 0.90, False),  # 0.955, 6 s
    ("resnet20", 16, 6, 0.92, False),  # 0.964, 17 s (CIFAR ResNet: option-A shortcuts, 3 stages)
    # AlexNet has no normalization layer and AdamW at the default 3e-3 is too fast for it: 0.794
    # after 6 epochs on the AMD box (2026-11-25), 0.696 and (since the uint8 pad-crop, whose pad is
    # black, not the mean) 0.579 on the Xeon one: a seed lottery. At 1e-3 it learns: 0.930.
    ("alexnet", 16, 6, 0.85, True, {"optim.lr": 1e-3}),  # 0.930, 19 s
    ("vgg11_bn", 16, 6, 0.93, True),  # 0.972, 79 s
    ("hybrid_tiny", 16, 6, 0.95, True),  # 0.992, 60 s
    # With torchvision's BN momentum 0.01 this run tested at 0.100 (chance): 120 steps leave the
    # running statistics near their init. MobileNetV3 now uses 0.1 (see its docstring).
    ("mobilenetv3_small", 16, 6, 0.93, True),  # 0.972, 39 s
    ("mobilenetv2", 16, 6, 0.93, True),  # 0.972, 65 s
    ("efficientnet_b0", 16, 6, 0.93, True),  # 0.975, 126 s
    ("resnet18", 16, 6, 0.95, True),  # 0.992, 152 s (CIFAR stem at 16 px)
    ("airnet_tiny", 16, 6, 0.90, False),  # 0.947, 9 s (whitening from the data: the Trainer calls init_from_data)
    ("airnet_small", 16, 6, 0.95, False),  # 0.997, 7 s
    ("airnet_mnist", 16, 6, 0.95, True),  # 0.994, 12 s
    ("airnet94", 16, 6, 0.95, True),  # 0.994, 12 s
    ("resnet56", 16, 6, 0.95, True),  # 0.994, 19 s
    ("resnet110", 16, 6, 0.94, True),  # 0.986, 37 s
    ("wrn28_10", 16, 6, 0.95, True),  # 0.994, 583 s (37M parameters)
    ("wrn16_4", 16, 6, 0.95, True),  # 0.997, 81 s
    ("preact_resnet18", 16, 6, 0.95, True),  # 0.994, 159 s
    ("googlenet", 16, 6, 0.95, True),  # 0.992, 119 s
    ("inception_v3", 16, 6, 0.92, True),  # 0.967, 247 s
    ("convnext_tiny", 16, 6, 0.92, True),  # 0.969, 398 s
    # A ViT learns slowly from 1,259 images: chance (0.106) after 6 epochs at AdamW 3e-3; at 5e-4
    # with 2 warm-up epochs it climbs steadily, 0.780 after 15 epochs.
    ("vit_tiny", 16, 15, 0.65, True, {"optim.lr": 5e-4, "optim.warmup_epochs": 2}),  # 0.780, 222 s
]


@pytest.mark.parametrize("name,img_size,epochs,floor,extra", [
    pytest.param(*r[:4], r[5] if len(r) > 5 else {}, id=r[0], marks=[SLOW] if r[4] else []) for r in RUNS])
def test_small_variant_learns_digits(tmp_path: Path, name: str, img_size: int, epochs: int, floor: float,
                                     extra: dict) -> None:
    cfg = apply_overrides(RunConfig(), {
        "model.name": name, "data.img_size": img_size, "train.epochs": epochs,
        "train.out_dir": str(tmp_path), "train.progress": False, "train.device": "cpu", **extra,
    })
    res = Trainer(cfg).fit()
    assert res.test_metrics["accuracy"] >= floor, f"{name}: {res.test_metrics['accuracy']:.3f} < {floor}"
