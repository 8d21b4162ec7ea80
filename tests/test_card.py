"""The model card: typed, saved with the weights, and readable both ways across versions.

Files written before the card existed (a dict of string keys, some keys missing in older files)
must still load; files written now must keep the keys and values older foveal versions read.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from foveal.card import ONNX_FORMAT, WEIGHTS_FORMAT, ModelCard, Preprocessing
from foveal.training.checkpoint import load_model, model_card, save_weights
from foveal.tasks.inference import Predictor
from foveal.io import read_meta, save_tensors
from foveal.models import create_model
from foveal.models.hub import FOVEAL_META, file_preprocessing

# best.safetensors of `foveal train` (digits, LeNet-5) at 82ed9fb, before the card: its metadata as
# written (the config cut to the keys read back)
OLD_META = {"format": "foveal-weights/1", "foveal_version": "0.1.0", "torch_version": "2.14.1+cu130",
            "model": "lenet5", "classes": [str(i) for i in range(10)], "in_chans": 1, "img_size": 32,
            "resize": "squash", "crop_pct": 1.0, "mean": [0.3062], "std": [0.324005],
            "config": {"data": {"source": "digits"}, "model": {"drop_rate": 0.0}, "train": {"seed": 3}},
            "tta": [], "epoch": 8, "temperature": 0.6976986527442932}
# older still: before crop_pct, test-time views and calibration were saved
OLDEST_META = {k: v for k, v in OLD_META.items() if k not in ("crop_pct", "tta", "temperature", "epoch")}


def _old_file(path, meta):
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_chans=1, img_size=32).eval()
    save_tensors(path, dict(model.state_dict()), meta)
    return model


def test_card_reads_the_metadata_old_versions_wrote():
    card = ModelCard.from_dict(OLD_META)
    pre = card.preprocessing
    assert (card.model, card.in_chans, card.classes) == ("lenet5", 1, tuple(str(i) for i in range(10)))
    assert (pre.mean, pre.std, pre.img_size, pre.resize, pre.crop_pct) == ((0.3062,), (0.324005,), 32, "squash", 1.0)
    assert (card.tta, card.temperature, card.epoch, card.seed) == ((), 0.6976986527442932, 8, 3)
    assert card.data_source == "digits" and card.model_kwargs() == {"drop_rate": 0.0}
    oldest = ModelCard.from_dict(OLDEST_META)  # what is missing takes the value old readers gave it
    assert (oldest.tta, oldest.temperature, oldest.epoch, oldest.preprocessing.crop_pct) == ((), 1.0, None, 1.0)


def test_to_dict_keeps_every_key_and_value_old_readers_look_up():
    """A file written now gives foveal versions before the card what they read by key, unchanged."""
    assert ModelCard.from_dict(OLD_META).to_dict() == OLD_META
    new = ModelCard.from_dict(OLDEST_META).to_dict()
    assert {k: new[k] for k in OLDEST_META} == OLDEST_META
    assert (new["tta"], new["temperature"], new["crop_pct"]) == ([], 1.0, 1.0)  # the defaults old readers used


def test_round_trip_keeps_extra_keys_and_replace_reaches_the_preprocessing():
    card = ModelCard("resnet18", ["cat", "dog"], 3, Preprocessing([0.5] * 3, [0.25] * 3, 64, 0.875, "crop"),
                     ("flip",), 1.5, 4, {"train": {"seed": 1}}, "x", "y", {"ssl": {"method": "simclr"}})
    assert ModelCard.from_dict(card.to_dict()) == card
    moved = card.replace(temperature=2.0, img_size=96)
    assert (moved.temperature, moved.preprocessing.img_size, moved.preprocessing.crop_pct) == (2.0, 96, 0.875)
    assert card.temperature == 1.5  # frozen: replace made a copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.temperature = 3.0  # type: ignore[misc]


def test_portable_card_is_what_onnx_carries_and_reads_back():
    card = ModelCard.from_dict(OLD_META).replace(tta=("flip", "shift"))
    onnx = card.portable()
    assert onnx["format"] == ONNX_FORMAT and "config" not in onnx and onnx["temperature"] == card.temperature
    back = ModelCard.from_dict({**onnx, "precision": "float32"})
    assert (back.preprocessing, back.tta, back.classes) == (card.preprocessing, card.tta, card.classes)
    assert back.extra == {"precision": "float32"} and back.config == {}
    assert set(card.public()) == {"model", "classes", "in_chans", "img_size", "resize", "crop_pct", "mean", "std",
                                  "tta", "temperature"}


def test_only_foveal_metadata_is_a_card():
    assert ModelCard.describes(OLD_META) and not ModelCard.describes({"converted_from": "x.pth"})
    with pytest.raises(ValueError, match="not a foveal model card"):
        ModelCard.from_dict({"mean": [0.5], "std": [0.5]})


@pytest.mark.parametrize("meta", [OLD_META, OLDEST_META], ids=["old", "oldest"])
def test_weights_files_written_before_the_card_still_load(tmp_path, meta):
    path = tmp_path / "best.safetensors"
    model = _old_file(path, meta)
    loaded, card = load_model(path)
    assert card == ModelCard.from_dict(meta)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    pre, where = file_preprocessing(path, "lenet5")  # fine-tuning from the old file keeps its preprocessing
    assert where == FOVEAL_META and pre == card.preprocessing
    u8 = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        want = torch.softmax(model((u8.float() / 255 - 0.3062) / 0.324005) / card.temperature, 1)
    torch.testing.assert_close(Predictor(loaded, card, torch.device("cpu")).probabilities(u8), want)


def test_saved_card_is_the_card_loaded(tmp_path):
    from foveal.config import DataConfig

    model = create_model("lenet5", num_classes=3, in_chans=1, img_size=32)
    data = DataConfig(img_size=32, in_chans=1, resize="squash", mean=[0.25], std=[0.5])
    card = model_card(model, ["a", "b", "c"], data, {"data": {"source": "digits"}}, ["flip"], epoch=2)
    save_weights(tmp_path / "w.safetensors", model, card)
    assert load_model(tmp_path / "w.safetensors")[1] == card
    assert read_meta(tmp_path / "w.safetensors")["format"] == WEIGHTS_FORMAT


def test_timm_pretrained_cfg_becomes_preprocessing():
    got = Preprocessing.from_timm({"mean": [0.5] * 3, "std": [0.5] * 3, "input_size": [3, 176, 176],
                                   "test_crop_pct": 0.95, "crop_pct": 0.9})
    assert got == Preprocessing((0.5,) * 3, (0.5,) * 3, 176, 0.95, "crop", "bicubic")
    assert Preprocessing.from_timm({"input_size": [3, 224, 224]}) is None
