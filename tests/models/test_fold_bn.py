"""Batch norm folded into the conv before it (models/fold_bn.py): the same function, fewer passes, and
a refusal wherever folding would change what the model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from foveal.card import ModelCard, Preprocessing
from foveal.models import create_model
from foveal.models.fold_bn import fold_batchnorm


def _randomize_bn(model: nn.Module) -> None:
    """Running statistics and affine parameters far from the identity, so a wrong fold shows."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            if m.weight is not None:
                m.weight.data.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.data.copy_(0.4 * torch.rand(n, generator=g) - 0.2)


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name,size,left", [("resnet20", 32, 0), ("mobilenetv3_small", 64, 0),
                                            ("efficientnet_b0", 64, 0), ("googlenet", 64, 0),
                                            ("preact_resnet18", 64, 9), ("timm/tf_efficientnet_lite0", 64, 0)])
def test_folded_model_computes_the_same_with_fewer_norms(name: str, size: int, left: int) -> None:
    """Each batch norm after a conv is gone (pre-activation ResNets keep the ones that read a sum),
    the output is the model's to fp32 rounding on inputs it did not see, in channels-last too, and the
    model itself is untouched (weights, mode)."""
    if name.startswith("timm/"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, img_size=size)
    _randomize_bn(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model.eval(), torch.randn(2, 3, size, size))
    model.train()
    assert folded is not model and _count_bn(folded) == left and _count_bn(model) > left
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()) and model.training
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        ref = model.eval()(x)
        err = float((folded(x) - ref).abs().max() / ref.abs().max())
        assert err < 1e-4, err
        nhwc = fold_batchnorm(model.to(memory_format=torch.channels_last), x[:2])
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in nhwc.parameters() if p.ndim == 4)
        assert float((nhwc(x.contiguous(memory_format=torch.channels_last)) - ref).abs().max() / ref.abs().max()) < 1e-4


class _ConvReadTwice(nn.Module):
    """The conv's output feeds its batch norm and a skip connection: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.bn(h) + h


class _SharedNorm(nn.Module):
    """One batch norm after two convs: folding it into either would be wrong for the other."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.a(x)) + self.bn(self.b(x))


class _InPlaceBetween(nn.Module):
    """An in-place op between the conv and its norm: the norm reads the very tensor, changed."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(torch.relu_(self.conv(x)))


def test_fold_refuses_what_it_would_change() -> None:
    """Pairs whose conv output is read twice or changed in place stay; the others in the same model fold."""
    x = torch.randn(2, 3, 8, 8)
    for odd in (_ConvReadTwice(), _InPlaceBetween()):
        model = nn.Sequential(odd, nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)).eval()
        _randomize_bn(model)
        folded = fold_batchnorm(model, x)
        assert isinstance(folded[0].bn, nn.BatchNorm2d) and isinstance(folded[2], nn.Identity), type(odd)
        assert torch.allclose(folded(x), model(x), atol=1e-5)
    shared = _SharedNorm().eval()
    _randomize_bn(shared)
    assert fold_batchnorm(shared, x) is shared  # called twice: not a pair
    no_bn = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
    assert fold_batchnorm(no_bn, x) is no_bn


def test_scoring_and_predictor_run_the_folded_copy() -> None:
    """`score_with_logits` and `Predictor.probabilities` give the unfolded model's logits to rounding,
    from a model whose batch norms really fire (a trained-like state), and leave it as it was."""
    from foveal.tasks.inference import Predictor
    from foveal.training.scoring import score_with_logits

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3, img_size=16)
    _randomize_bn(model)
    model.train()
    x = torch.randn(10, 3, 16, 16)
    y = torch.randint(0, 3, (10,))
    with torch.no_grad():
        ref = model.eval()(x)
    model.train()
    logits = score_with_logits(model, [(x[:6], y[:6]), (x[6:], y[6:])], 3, torch.device("cpu")).logits
    assert model.training and float((logits - ref).abs().max()) < 1e-4
    card = ModelCard("m", ["a", "b", "c"], 3, Preprocessing([0.0] * 3, [1.0] * 3, 16))
    pred = Predictor(model, card, torch.device("cpu"))
    u8 = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        want = torch.softmax(model(u8.float() / 255), 1)
    got = pred.probabilities(u8, batch_size=2)
    assert float((got - want).abs().max()) < 1e-5
    assert pred._net is not None and pred._net is not pred.model and _count_bn(pred._net) == 0
