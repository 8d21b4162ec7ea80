"""`foveal convert`: the one command that unpickles. A real checkpoint converts tensor for tensor;
a pickle that would run code on loading is refused before any of it runs."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

import pytest
import torch

from foveal.cli.main import main
from foveal.io import load_tensors
from foveal.models import create_model


def _distinct_values(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict with every tensor refilled with its own random values (batch-norm
    statistics start as zeros and ones everywhere, so a key swapped between layers would still
    compare equal); integer buffers get a different count each."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for i, (k, v) in enumerate(model.state_dict().items()):
        fresh = torch.rand(v.shape, generator=g, dtype=v.dtype) + 0.5 if v.is_floating_point() else None
        sd[k] = fresh if fresh is not None else torch.full_like(v, i)
    model.load_state_dict(sd)
    return model.state_dict()


def _assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert torch.equal(got[k], v), f"tensor '{k}' changed in conversion"


@pytest.mark.parametrize("name,dtype", [("resnet20", torch.float32), ("lenet5", torch.float16)])
def test_registered_model_converts_tensor_for_tensor(tmp_path: Path, capsys, name: str, dtype: torch.dtype):
    model = create_model(name, num_classes=10, in_chans=1 if name == "lenet5" else 3).to(dtype)
    sd = _distinct_values(model)
    torch.save(sd, tmp_path / "m.pth")
    assert main(["convert", str(tmp_path / "m.pth"), str(tmp_path / "m.safetensors")]) == 0
    assert f"wrote {len(sd)} tensors" in capsys.readouterr().out
    got, meta = load_tensors(tmp_path / "m.safetensors")
    _assert_same_tensors(got, sd)
    assert meta == {"converted_from": "m.pth"}


def test_torchvision_reference_checkpoint_converts_and_loads(tmp_path: Path, capsys):
    """As torchvision's references/classification/train.py saves one: the weights under 'model'
    (here with DataParallel's 'module.' prefix) beside optimizer and scheduler state, the epoch and
    the argparse `args`; the converted file then loads into our MobileNetV3 with the same logits."""
    import torchvision.models as tvm

    tv = tvm.mobilenet_v3_small(num_classes=10)
    _distinct_values(tv)
    opt = torch.optim.SGD(tv.parameters(), lr=0.1, momentum=0.9)
    for p in tv.parameters():
        p.grad = torch.randn_like(p)
    opt.step()  # momentum buffers: the optimizer state holds tensors too
    sd = {k: v.clone() for k, v in tv.state_dict().items()}
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30)
    ckpt = {"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": opt.state_dict(),
            "lr_scheduler": sched.state_dict(), "epoch": 3,
            "args": argparse.Namespace(model="mobilenet_v3_small", lr=0.1, epochs=90, data_path=".", amp=False)}
    torch.save(ckpt, tmp_path / "checkpoint.pth")
    assert main(["convert", str(tmp_path / "checkpoint.pth"), str(tmp_path / "mnv3.safetensors")]) == 0
    assert f"wrote {len(sd)} tensors" in capsys.readouterr().out
    _assert_same_tensors(load_tensors(tmp_path / "mnv3.safetensors")[0], sd)
    ours = create_model("mobilenetv3_small", num_classes=10, pretrained=str(tmp_path / "mnv3.safetensors")).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv.eval()(x), rtol=1e-4, atol=1e-4)


class _RunsOnLoad:
    """Unpickling this calls os.system: the shape of a hostile checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def test_pickle_that_runs_code_is_refused_before_it_runs(tmp_path: Path, capsys, monkeypatch):
    weights = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.randn(3)}
    torch.save({"model": weights, "extra": _RunsOnLoad(tmp_path / "MARKER")}, tmp_path / "evil.pth")
    # the payload is live: an unrestricted load runs it (on a copy naming another marker)
    torch.save({"model": weights, "extra": _RunsOnLoad(tmp_path / "CONTROL")}, tmp_path / "control.pth")
    torch.load(tmp_path / "control.pth", weights_only=False)
    assert (tmp_path / "CONTROL").exists()

    monkeypatch.chdir(tmp_path)
    assert main(["convert", "evil.pth", "out.safetensors"]) == 2
    err = capsys.readouterr().err
    assert "refusing to convert 'evil.pth'" in err and "system" in err and "arbitrary code" in err, err
    assert "weights_only=False" not in err, err  # torch's advice to switch the guard off is not passed on
    assert not (tmp_path / "MARKER").exists(), "the pickle payload ran during `foveal convert`"
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("content,expected", [
    (None, "checkpoint '{p}' does not exist"),
    (b"plain text, not a checkpoint\n" * 8, "refusing to convert '{p}': torch's restricted unpickler cannot read"),
    ("truncated", "'{p}' is not a readable torch checkpoint"),
])
def test_unreadable_checkpoint_is_named(tmp_path: Path, capsys, content, expected: str):
    path = tmp_path / "bad.pth"
    if content == "truncated":
        torch.save({"w": torch.zeros(100)}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif content is not None:
        path.write_bytes(content)
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert expected.format(p=path) in err and "Traceback" not in err, err
    assert not (tmp_path / "out.safetensors").exists()
