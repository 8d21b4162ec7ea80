"""Parameter counts of the ImageNet variants against the published ones (acceptance 2).

Counted on the meta device: no memory and no initialization, so even VGG-16 costs milliseconds.
Published numbers: the papers and torchvision's model cards (1000 classes, 3 channels).
"""

from __future__ import annotations

import pytest
import torch

from foveal.models import count_params, create_model

# (model, constructor kwargs, published parameters)
PUBLISHED = [
    ("alexnet", {}, 61.10e6),
    ("vgg16", {}, 138.36e6),
    ("resnet18", {}, 11.69e6),
    ("resnet50", {}, 25.56e6),
    ("googlenet", {}, 6.62e6),  # without the two auxiliary heads
    ("inception_v3", {}, 23.83e6),  # without the auxiliary head
    ("inception_v3", {"aux_logits": True}, 27.16e6),
    ("vit_base_patch16_224", {}, 86.57e6),
    ("vit_base", {}, 86.57e6),  # patch 16 by the size rule at 224 px
    ("mobilenetv2", {}, 3.50e6),
    ("mobilenetv3_large", {}, 5.48e6),
    ("efficientnet_b0", {}, 5.29e6),
    ("convnext_tiny", {}, 28.59e6),
    ("lenet5", {"num_classes": 10, "in_chans": 1, "img_size": 32}, 61_706),  # LeCun 1998 C1..F6 + 10-way output
]


@pytest.mark.parametrize("name,kwargs,published", PUBLISHED, ids=[f"{n}{'-aux' if k.get('aux_logits') else ''}"
                                                                  for n, k, _ in PUBLISHED])
def test_param_count_matches_published(name: str, kwargs: dict, published: float) -> None:
    with torch.device("meta"):
        model = create_model(name, **{"num_classes": 1000, **kwargs})
    n = count_params(model)
    assert abs(n - published) / published < 0.005, f"{name}: {n:,} parameters, published {published:,.0f}"


def test_aux_heads_are_counted_and_off_by_default() -> None:
    with torch.device("meta"):
        plain, aux = create_model("googlenet"), create_model("googlenet", aux_logits=True)
    # torchvision's GoogLeNet with aux_logits=True: 13,004,888 parameters
    assert count_params(plain) == 6_624_904 and count_params(aux) == 13_004_888


def test_aux_logits_train_path_returns_aux_outputs() -> None:
    model = create_model("inception_v3", num_classes=4, img_size=32, aux_logits=True)
    logits, aux = model.forward_aux(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 4) and len(aux) == 1 and aux[0].shape == (2, 4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)  # forward gives the logits alone
