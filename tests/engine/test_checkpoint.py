import pickle

import pytest
import torch

from foveal.training.checkpoint import load_model
from foveal.io import UnsafeFileError, load_tensors, save_tensors
from foveal.models import create_model
from foveal.models.weights import load_pretrained


class _Payload:
    def __reduce__(self):  # what a malicious checkpoint does: run code when unpickled
        import os

        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
def test_pickle_payload_is_refused_and_never_run(tmp_path, monkeypatch, suffix):
    monkeypatch.chdir(tmp_path)
    for i, payload in enumerate([{"w": _Payload()}, {"w": torch.zeros(2)}]):
        path = tmp_path / f"evil{i}{suffix}"
        if i == 0:
            path.write_bytes(pickle.dumps(payload, protocol=2))
        else:
            torch.save(payload, path)  # a zip-format torch checkpoint, also pickle inside
        with pytest.raises(UnsafeFileError, match="refusing to load .*pickle"):
            load_tensors(path)
        with pytest.raises(UnsafeFileError):
            load_model(path)
        with pytest.raises(UnsafeFileError):
            load_pretrained(create_model("lenet5"), path)
    assert not (tmp_path / "PWNED").exists()


def test_garbage_is_refused_with_the_file_named(tmp_path):
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UnsafeFileError, match="w.safetensors"):
        load_tensors(bad)


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"a": torch.ones(3)}, {"v": 1})
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError):
        save_tensors(path, {"a": torch.zeros(3)}, {"v": 2})
    t, meta = load_tensors(path)  # the old file is intact, no temp files left behind
    assert torch.equal(t["a"], torch.ones(3)) and meta == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_pretrained_reports_head_and_refuses_mismatch(tmp_path):
    src = create_model("resnet18", num_classes=10, in_chans=3, img_size=32)
    save_tensors(tmp_path / "r.safetensors", src.state_dict())
    dst = create_model("resnet18", num_classes=4, in_chans=1, img_size=32)
    rep = load_pretrained(dst, tmp_path / "r.safetensors")
    assert rep.head_replaced == ["fc.weight", "fc.bias"] and rep.adapted == ["conv1.weight"]
    assert torch.equal(dst.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    with pytest.raises(ValueError, match=r"missing: layer4|unexpected"):
        load_pretrained(create_model("resnet34", num_classes=4, img_size=32), tmp_path / "r.safetensors")


def test_safetensors_whose_header_length_starts_with_pickle_byte_loads(tmp_path):
    # The first byte of a safetensors file is the low byte of its header length; 0x80 is also
    # the pickle opcode PROTO, and such a file must still load.
    path = tmp_path / "w.safetensors"
    for pad in range(300):
        save_tensors(path, {"w": torch.arange(3.0)}, {"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length ending in 0x80")
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["w"], torch.arange(3.0)) and meta["pad"].startswith("x")


def test_airnet_saves_and_loads_with_its_whitening(tmp_path):
    model = create_model("airnet_mnist", num_classes=10, in_chans=1, img_size=28)
    model.init_from_data(torch.randn(64, 1, 28, 28))
    save_tensors(tmp_path / "a.safetensors", model.state_dict())
    tensors, _ = load_tensors(tmp_path / "a.safetensors")
    fresh = create_model("airnet_mnist", num_classes=10, in_chans=1, img_size=28)
    fresh.load_state_dict(tensors)
    assert torch.equal(fresh.whiten.weight, model.whiten.weight)
