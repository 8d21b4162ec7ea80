"""Weights by name: a local HTTP server on 127.0.0.1 stands in for torchvision's download host and for
the Hugging Face hub. Nothing here touches the network; every file served is written by the test."""

from __future__ import annotations

import hashlib
import http.server
import json
import pickle
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from foveal.models import create_model, hub

# foveal's names of every architecture torchvision publishes ImageNet weights for
TV_ARCHS = ("alexnet", *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
            *(f"resnet{d}" for d in (18, 34, 50, 101, 152)), "wide_resnet50_2", "wide_resnet101_2", "googlenet",
            "inception_v3", "vit_base_patch16_224", "mobilenetv2", "mobilenetv3_small", "mobilenetv3_large",
            *(f"efficientnet_b{i}" for i in range(4)), "convnext_tiny")


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes] = {}
    hits: list[str] = []


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET/HEAD of `files` by path; for hub paths (/<repo>/resolve/<rev>/<file>) the headers that
    huggingface_hub reads (ETag, X-Repo-Commit)."""

    def _send(self, body: bool) -> None:
        self.server.hits.append(self.path)
        data = self.server.files.get(self.path.split("?")[0])
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("X-Repo-Commit", "0" * 40)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self):  # noqa: N802
        self._send(False)

    def do_GET(self):  # noqa: N802
        self._send(True)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch, tmp_path):
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.hits = {}, []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    monkeypatch.setenv("FOVEAL_WEIGHTS_MIRROR", url)
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    yield srv
    srv.shutdown()


def _pth(obj) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _fake_tv(monkeypatch, arch: str, payload: bytes, name_bytes: bytes | None = None) -> str:
    """torchvision's weight entry for `arch`, with the URL of a file named after the hash of
    `name_bytes` (default: of the payload itself, as torchvision names its files)."""
    import torchvision

    real = torchvision.models.get_model_weights(arch).DEFAULT
    h = hashlib.sha256(name_bytes if name_bytes is not None else payload).hexdigest()[:8]
    url = f"{hub.TV_HOST}models/{arch}-test-{h}.pth"
    fake = SimpleNamespace(url=url, name=real.name, transforms=real.transforms, meta=real.meta)
    monkeypatch.setattr(hub, "_tv_weights", lambda a, tag: fake)
    return f"/models/{arch}-test-{h}.pth"


def test_torchvision_weights_download_verify_cache_and_load(server, monkeypatch):
    import torchvision

    sd = torchvision.models.resnet18().state_dict()
    payload = _pth(sd)
    server.files[_fake_tv(monkeypatch, "resnet18", payload)] = payload
    got = hub.resolve("imagenet", "resnet18")
    assert got.path.suffix == ".safetensors" and "torchvision resnet18" in got.origin
    assert got.preprocessing.mean == pytest.approx([0.485, 0.456, 0.406]) and got.preprocessing.img_size == 224
    model = create_model("resnet18", num_classes=1000, in_chans=3, img_size=224, pretrained=str(got.path))
    ref = torchvision.models.resnet18()
    ref.load_state_dict(sd)
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(model.eval()(x), ref.eval()(x), rtol=1e-4, atol=1e-4)  # same network, same logits
    n = len(server.hits)
    assert hub.resolve("imagenet", "resnet18").path == got.path and len(server.hits) == n  # cached: no download


@pytest.mark.parametrize("damage", ["wrong_hash", "truncated"])
def test_a_corrupted_download_is_refused_and_nothing_is_kept(server, monkeypatch, damage, tmp_path):
    payload = _pth({"w": torch.ones(3)})
    served = payload[: len(payload) // 2] if damage == "truncated" else payload + b"x"
    server.files[_fake_tv(monkeypatch, "resnet18", served, name_bytes=payload)] = served
    with pytest.raises(hub.WeightsCorrupted, match="does not match"):
        hub.resolve("imagenet", "resnet18")
    assert not list((tmp_path / "torch_home").rglob("*.pth")) and not list((tmp_path / "torch_home").rglob("*.safetensors"))


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {_Exploit.marker}",))


def test_a_pickle_payload_behind_a_torchvision_url_never_runs(server, monkeypatch, tmp_path):
    """Even with a hash that matches its name (an attacker who controls the file and the name),
    the payload is never executed: the file is read with weights_only=True and refused."""
    _Exploit.marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": _Exploit()}, protocol=2)
    server.files[_fake_tv(monkeypatch, "resnet18", payload)] = payload
    with pytest.raises(hub.WeightsCorrupted, match="not a plain state_dict"):
        hub.resolve("imagenet", "resnet18")
    assert not _Exploit.marker.exists()


def test_offline_without_a_cache_names_the_file_and_where_to_put_it(server, monkeypatch):
    payload = _pth({"w": torch.ones(3)})
    server.files[_fake_tv(monkeypatch, "resnet18", payload)] = payload
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.WeightsUnavailable, match=r"offline .* put it at .*checkpoints"):
        hub.resolve("imagenet", "resnet18")
    with pytest.raises(hub.WeightsUnavailable, match="huggingface-cli download timm/foveal_test"):
        hub.resolve("hf-hub:timm/foveal_test.tiny", "timm/x")
    assert not server.hits  # nothing was even asked


def _hub_repo(server, repo: str, sd: dict, cfg: dict) -> None:
    from safetensors.torch import save

    server.files[f"/{repo}/resolve/main/model.safetensors"] = save(sd)
    server.files[f"/{repo}/resolve/main/config.json"] = json.dumps({"pretrained_cfg": cfg}).encode()


def test_hub_weights_and_their_preprocessing(server):
    timm = pytest.importorskip("timm")
    m = timm.create_model("resnet10t", num_classes=1000)
    cfg = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "input_size": [3, 176, 176], "crop_pct": 0.9,
           "interpolation": "bicubic"}
    _hub_repo(server, "timm/resnet10t.test", {k: v.contiguous() for k, v in m.state_dict().items()}, cfg)
    got = hub.resolve("hf-hub:timm/resnet10t.test", "timm/resnet10t")
    p = got.preprocessing
    assert (list(p.mean), list(p.std), p.img_size, p.crop_pct, p.interpolation) == ([0.5] * 3, [0.5] * 3, 176, 0.9, "bicubic")
    model = create_model("timm/resnet10t", num_classes=1000, pretrained=str(got.path))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model.eval()(x), m.eval()(x))


def test_timm_default_uses_its_pretrained_cfg(server, monkeypatch):
    """`--pretrained imagenet` on a timm/ model: timm's own default tag and pretrained_cfg."""
    timm = pytest.importorskip("timm")
    pcfg = timm.models.get_pretrained_cfg("tf_efficientnet_lite0")
    m = timm.create_model("tf_efficientnet_lite0")
    server.files[f"/{pcfg.hf_hub_id}/resolve/main/model.safetensors"] = __import__(
        "safetensors.torch", fromlist=["save"]).save({k: v.contiguous() for k, v in m.state_dict().items()})
    got = hub.resolve("imagenet", "timm/tf_efficientnet_lite0")
    assert list(got.preprocessing.mean) == list(pcfg.mean) and list(got.preprocessing.std) == list(pcfg.std)
    assert got.preprocessing.img_size == pcfg.input_size[-1] and got.preprocessing.crop_pct == pcfg.crop_pct


@pytest.mark.parametrize("arch", TV_ARCHS)
def test_every_torchvision_architecture_foveal_has_resolves_with_a_checkable_hash(arch):
    """The names map: foveal's model name is torchvision's, and each published file carries its hash."""
    import torchvision

    from foveal.models import list_models

    assert arch in list_models()
    tv = hub.TV_NAMES.get(arch, arch)
    w = hub._tv_weights(tv, "DEFAULT")
    assert w is torchvision.models.get_model_weights(tv).DEFAULT
    assert len(hub._hash_prefix(Path(w.url).name)) >= 8
    p = hub._tv_preprocessing(w)
    t = w.transforms()
    assert list(p.mean) == list(t.mean) and p.img_size == t.crop_size[0]


def test_named_weights_set_the_run_preprocessing_and_staged_fine_tune(server, monkeypatch, tmp_path):
    """`foveal train --model resnet18 --pretrained imagenet`: the run resolves to the weights' own
    preprocessing (mean/std, 224 px, shorter side + centre crop) and the staged fine-tune."""
    import torchvision

    from foveal.config import RunConfig, apply_overrides
    from foveal.training.prepare import prepare_data

    payload = _pth(torchvision.models.resnet18().state_dict())
    server.files[_fake_tv(monkeypatch, "resnet18", payload)] = payload
    cfg = apply_overrides(RunConfig(), {"model.name": "resnet18", "model.pretrained": "imagenet",
                                        "data.in_chans": 3, "data.limit": 50})
    _, got = prepare_data(cfg, log=lambda m: None)
    assert got.data.mean == pytest.approx([0.485, 0.456, 0.406]) and got.data.img_size == 224
    assert got.data.resize == "crop" and got.data.augment == ["rrc", "flip"]
    assert got.data.crop_pct == pytest.approx(224 / 256)  # torchvision's Resize(256) + CenterCrop(224)
    assert got.model.finetune == "staged" and got.optim.layer_decay == 0.75
    scratch = prepare_data(apply_overrides(RunConfig(), {"data.limit": 50}), log=lambda m: None)[1]
    assert scratch.model.finetune == "full" and scratch.data.augment == ["crop"] and scratch.optim.layer_decay == 1.0
    assert scratch.data.crop_pct == 1.0


def test_classifier_takes_weights_by_name():
    import foveal

    cfg = foveal.Classifier("resnet18", pretrained="imagenet", epochs=3).config("photos")
    assert cfg.model.pretrained == "imagenet" and cfg.model.finetune == "auto" and cfg.train.epochs == 3


@pytest.mark.parametrize("size,crop_pct", [((300, 451), 0.875), ((451, 300), 224 / 256), ((256, 256), 1.0)])
def test_centre_crop_fraction_matches_torchvision_eval_transform(size, crop_pct):
    """resize 'crop' with crop_pct decodes what torchvision's Resize(size / crop_pct) + CenterCrop(size)
    gives (the weights' eval transform): same framing, pixels within resampling differences."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import v2

    from foveal.data.decode import pil_to_array

    rng = np.random.default_rng(0)
    low = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)  # a smooth image: resampling filters barely differ
    img = Image.fromarray(low).resize(size, Image.Resampling.BICUBIC)
    ours = pil_to_array(img, 96, 3, "crop", crop_pct).astype(np.float32)
    tv = v2.Compose([v2.PILToTensor(), v2.Resize(int(96 / crop_pct), antialias=True), v2.CenterCrop(96)])(img)
    assert ours.shape == tuple(tv.shape)
    diff = np.abs(ours - tv.numpy().astype(np.float32)).mean()
    assert diff < 6.0  # resampling differences (PIL's bilinear vs torchvision's); another framing differs by 8-25
    if crop_pct < 1:  # and the fraction matters: the full shorter side frames the image differently
        full = pil_to_array(img, 96, 3, "crop", 1.0).astype(np.float32)
        assert np.abs(full - tv.numpy().astype(np.float32)).mean() > 3 * diff
