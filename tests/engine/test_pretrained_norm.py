"""Weights carry their preprocessing: fine-tuning from a foveal run keeps its mean/std."""

from __future__ import annotations

from foveal.config import RunConfig, apply_overrides
from foveal.card import ModelCard, Preprocessing
from foveal.training.checkpoint import save_weights
from foveal.training.prepare import prepare_data
from foveal.models import create_model


def _weights(path, mean, std, in_chans=1):
    model = create_model("lenet5", num_classes=10, in_chans=in_chans, img_size=32)
    save_weights(path, model, ModelCard("lenet5", [str(i) for i in range(10)], in_chans, Preprocessing(mean, std, 32)))
    return path


def test_mean_std_come_from_foveal_weights(tmp_path):
    w = _weights(tmp_path / "base.safetensors", [0.123], [0.456])
    cfg = apply_overrides(RunConfig(), {"model.pretrained": str(w)})
    _, resolved = prepare_data(cfg, log=lambda m: None)
    assert resolved.data.mean == [0.123] and resolved.data.std == [0.456]


def test_explicit_mean_std_win_and_rgb_weights_give_gray_data_their_average(tmp_path):
    w = _weights(tmp_path / "base.safetensors", [0.123], [0.456])
    cfg = apply_overrides(RunConfig(), {"model.pretrained": str(w), "data.mean": [0.2], "data.std": [0.3]})
    assert prepare_data(cfg, log=lambda m: None)[1].data.mean == [0.2]
    rgb = _weights(tmp_path / "rgb.safetensors", [0.1, 0.2, 0.3], [0.4, 0.5, 0.6], in_chans=3)
    cfg = apply_overrides(RunConfig(), {"model.pretrained": str(rgb)})  # digits: 1 channel
    got = prepare_data(cfg, log=lambda m: None)[1].data  # the RGB stem is summed for 1 channel: average stats
    assert got.mean == [0.2] and got.std == [0.5]
