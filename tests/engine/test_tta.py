"""Test-time augmentation: the views and their weights, and one setting that training, eval and predict share."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from foveal.config import RunConfig, apply_overrides
from foveal.training import Trainer
from foveal.training.tta import check_views, tta_logits


class Probe(torch.nn.Module):
    """Logits that tell views apart: a fixed linear map of the raw pixels."""

    def __init__(self, pixels: int, k: int = 3):
        super().__init__()
        self.w = torch.randn(pixels, k, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return x.flatten(1) @ self.w


def test_views_are_averaged_with_the_speedrun_weights():
    x = torch.randn(4, 1, 6, 6)
    m = Probe(36)
    torch.testing.assert_close(tta_logits(m, x, []), m(x))
    torch.testing.assert_close(tta_logits(m, x, ["flip"]), (m(x) + m(x.flip(3))) / 2)
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = xp[..., :6, :6], xp[..., 2:, 2:]
    assert torch.equal(up_left[..., 1:, 1:], x[..., :5, :5])  # content moved one pixel down-right in the frame
    shifted = (m(up_left) + m(down_right) + m(up_left.flip(3)) + m(down_right.flip(3))) / 4
    torch.testing.assert_close(tta_logits(m, x, ["flip", "shift"]), 0.5 * (m(x) + m(x.flip(3))) / 2 + 0.5 * shifted)
    torch.testing.assert_close(tta_logits(m, x, ["shift"]), 0.5 * m(x) + 0.25 * (m(up_left) + m(down_right)))


def test_unknown_view_is_named():
    with pytest.raises(ValueError, match="'rotate' is not one of flip, shift"):
        check_views(["flip", "rotate"])
    cfg = apply_overrides(RunConfig(), {"train.tta": "flip,rotate", "train.progress": False})
    with pytest.raises(ValueError, match="rotate"):
        Trainer(cfg, log=lambda m: None).fit()


def test_trainer_eval_and_predict_share_the_tta_setting(tmp_path):
    from foveal.tasks.inference import Predictor, eval_data, evaluate_model

    cfg = apply_overrides(RunConfig(), {"train.epochs": 2, "train.tta": "flip,shift", "train.out_dir": str(tmp_path),
                                        "train.name": "t", "train.device": "cpu", "train.progress": False})
    res = Trainer(cfg, log=lambda m: None).fit()
    pred = Predictor.load(res.run_dir, "cpu")
    assert pred.tta == ["flip", "shift"]
    test = eval_data(pred.card, None, "test").splits["test"]
    x = (test.images.load().float() / 255 - pred.normalized.mean) / pred.normalized.std
    with torch.no_grad():
        by_hand = tta_logits(pred.model, x, ["flip", "shift"])
        plain = pred.model(x)
    acc = (by_hand.argmax(1) == test.labels).float().mean().item()
    assert json.loads((res.run_dir / "test.json").read_text())["accuracy"] == pytest.approx(acc)
    metrics, logits, _ = evaluate_model(res.run_dir, device="cpu")
    assert metrics["accuracy"] == pytest.approx(acc)
    torch.testing.assert_close(logits, by_hand, rtol=1e-4, atol=1e-4)
    probs = pred.probabilities(test.images.load()[:8])
    torch.testing.assert_close(probs, torch.softmax(by_hand[:8] / pred.temperature, 1), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(by_hand, plain)  # the views did change the logits


def test_views_of_uint8_behind_the_normalizing_wrapper_are_views_of_the_normalized_batch():
    """`Predictor` hands the wrapped model views of the uint8 pixels (as the ONNX runtime feeds its graph);
    bit for bit what views of the normalized batch through the bare model give, batch norm folded or not."""
    from foveal.card import ModelCard, Preprocessing
    from foveal.data.preprocess import Normalized, normalize_u8
    from foveal.tasks.inference import Predictor
    from foveal.models import create_model
    from foveal.models.fold_bn import fold_batchnorm

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=4, in_chans=3, img_size=16).eval()
    with torch.no_grad():  # batch norms with statistics of their own, so folding them changes the floats
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    mean, std, views = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3], ["flip", "shift"]
    u8 = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    x = normalize_u8(u8, mean, std)
    with torch.no_grad():
        assert torch.equal(tta_logits(Normalized(model, mean, std), u8, views), tta_logits(model, x, views))
        folded = fold_batchnorm(model, x[:2])
        want = torch.softmax(tta_logits(folded, x, views) / 1.5, dim=1)
    card = ModelCard("resnet18", list("abcd"), 3, Preprocessing(mean, std, 16), tuple(views), 1.5)
    got = Predictor(model, card, torch.device("cpu")).probabilities(u8, batch_size=8)
    assert torch.equal(got, want)
