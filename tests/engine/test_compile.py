"""Compiled equals eager: every path that can compile, compiled for real by inductor on the CPU.

Each case runs the same seeded job eager and compiled and holds the compiled one to the eager
accuracy and final loss, and to `"compiled": true` in what it writes: a compile flag a path ignores
(the fast recipe once compiled on CUDA only) fails here, and so does a compiled graph that computes
something else. `step.check_compiled` is tested on a module that really does differ.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from foveal.cli.main import main
from foveal.training import fast
from foveal.training.step import CompileMismatch, StepOptions, TrainStep, check_compiled, classify, compile_applied


@pytest.fixture()
def one_thread():
    """Inductor's CPU kernels are OpenMP loops that crawl when their threads share two busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_fast_recipe_compiled_equals_eager(one_thread) -> None:
    data = fast.load_fast_data("digits", img_size=16)
    cfg = dataclasses.replace(fast.RECIPES["digits"], epochs=4.0)
    out = {}
    for compile in (False, True):
        run = fast.prepare(data, dataclasses.replace(cfg, compile=compile))
        fast.run_once(run, data, seed=3)
        logits = fast.predict_tta(run, data.test_x)
        out[compile] = (logits, run)
        if compile:
            assert compile_applied(run.step_model)
            check = run.compile_check
            assert check is not None and check["compiled_loss"] == pytest.approx(check["eager_loss"], rel=1e-4)
    (eager, _), (comp, _) = out[False], out[True]
    acc = [(lg.argmax(1) == data.test_y).float().mean().item() for lg in (eager, comp)]
    loss = [F.cross_entropy(lg, data.test_y).item() for lg in (eager, comp)]
    assert acc[0] > 0.5, acc  # chance is 0.1; data it gets partly wrong: 4 epochs of the tiny net reach ~0.66
    assert acc[0] < 1.0
    assert acc[1] == pytest.approx(acc[0], abs=0.01), acc
    assert loss[1] == pytest.approx(loss[0], rel=0.02), loss


def test_bench_fast_cli_fails_under_the_floor_and_records_compilation(tmp_path: Path, one_thread, capsys) -> None:
    """`foveal bench fast` prints FAILED and exits 1 for a run under the recipe's floor; a compiled run says so."""
    out = tmp_path / "short.json"
    assert main(["bench", "fast", "--data", "digits", "--device", "cpu", "--runs", "1", "--epochs", "0.05",
                 "--no-warmup", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "under the floor 0.9000" in err
    res = json.loads(out.read_text())
    assert res["passed"] is False and res["failed"] == [0] and res["seconds"] == [None] and res["seconds_mean"] is None
    # the same short run passes when the floor is lowered on purpose
    assert main(["bench", "fast", "--data", "digits", "--device", "cpu", "--runs", "1", "--epochs", "0.05",
                 "--no-warmup", "--min-accuracy", "0.0", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["compiled"] is False
    capsys.readouterr()
    comp = tmp_path / "compiled.json"
    assert main(["bench", "fast", "--data", "digits", "--device", "cpu", "--runs", "1", "--epochs", "3",
                 "--min-accuracy", "0.5", "--no-warmup", "--compile", "--out", str(comp)]) == 0
    res = json.loads(comp.read_text())
    assert res["compiled"] is True and res["passed"] is True and res["seconds_mean"] > 0
    assert res["compile_check"]["grad_cosine"] > 0.999


def _train(tmp_path: Path, name: str, compile: bool, verb: str = "train") -> Path:
    args = [verb, "--data", "digits", "--model", "lenet5_modern", "--img-size", "20", "--epochs", "2",
            "--out-dir", str(tmp_path), "--name", name, "--train.progress", "false", "--device", "cpu",
            "--train.compile", "true" if compile else "false"]
    if verb == "train":
        args += ["--train.report", "false"]
    else:
        args += ["--method", "simclr"]
    assert main(args) == 0
    return tmp_path / name


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_compiled_equals_eager(tmp_path: Path, one_thread) -> None:
    eager, comp = _train(tmp_path, "eager", False), _train(tmp_path, "compiled", True)
    te, tc = (json.loads((r / "test.json").read_text()) for r in (eager, comp))
    assert te["compiled"] is False and tc["compiled"] is True
    assert 0.5 < te["accuracy"] < 1.0  # partly wrong after 2 epochs at 20 px
    assert tc["accuracy"] == pytest.approx(te["accuracy"], abs=0.01)
    he, hc = _history(eager), _history(comp)
    assert hc[-1]["train_loss"] == pytest.approx(he[-1]["train_loss"], rel=1e-3)
    assert hc[-1]["val_loss"] == pytest.approx(he[-1]["val_loss"], rel=1e-3)


def test_pretrain_compiled_equals_eager(tmp_path: Path, one_thread) -> None:
    eager, comp = _train(tmp_path, "eager", False, "pretrain"), _train(tmp_path, "compiled", True, "pretrain")
    he, hc = _history(eager), _history(comp)
    assert [r["compiled"] for r in he] == [False, False] and [r["compiled"] for r in hc] == [True, True]
    # NT-Xent sums over every pair of the batch; inductor's fused reductions add in another order, so the
    # epoch means drift apart by ~1e-3 per epoch (4.3219 / 4.3260, then 4.0100 / 4.0176 here)
    assert [r["ssl_loss"] for r in hc] == pytest.approx([r["ssl_loss"] for r in he], rel=5e-3)
    assert he[-1]["ssl_loss"] < he[0]["ssl_loss"] - 0.1  # it learns
    assert hc[-1]["knn_acc"] == pytest.approx(he[-1]["knn_acc"], abs=0.02)


def test_bench_train_compiled_equals_eager(tmp_path: Path, one_thread) -> None:
    rows = {}
    for compile in (False, True):
        out = tmp_path / f"{compile}.json"
        args = ["bench", "train", "--model", "lenet5_modern", "--img-size", "32", "--batch-size", "8", "--steps", "3",
                "--warmup", "1", "--device", "cpu", "--no-channels-last", "--no-timm", "--out", str(out)]
        assert main(args + (["--compile"] if compile else [])) == 0
        rows[compile] = json.loads(out.read_text())["results"][0]["ours"]
    assert rows[False]["compiled"] is False and rows[True]["compiled"] is True
    assert rows[True]["passed"] and rows[False]["passed"]
    assert rows[True]["final_loss"] == pytest.approx(rows[False]["final_loss"], rel=1e-4)


class _Drifted(nn.Module):
    """Stands in for a miscompiled graph: the same weights, a different function."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * 0.5


def test_check_compiled_refuses_a_graph_that_computes_something_else() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    stats = [b.clone() for b in model.buffers()]
    run = lambda m: F.cross_entropy(m(x), y)  # noqa: E731
    report = check_compiled(model, model, run)
    assert report["grad_cosine"] == pytest.approx(1.0) and report["compiled_loss"] == report["eager_loss"]
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))  # BN statistics restored
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(CompileMismatch, match="torch.compile changed what the model computes"):
        check_compiled(model, _Drifted(model), run)


def test_train_step_checks_its_compiled_module_once(monkeypatch) -> None:
    """The step runs the check on its first call when compiling (here a stand-in that drifts), not later."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monkeypatch.setattr("foveal.training.step.is_compiled_module", lambda net: True)
    monkeypatch.setattr("foveal.training.step.compiled", lambda net, mode: _Drifted(net))
    step = TrainStep(model, opt, classify(F.cross_entropy), torch.device("cpu"), StepOptions.plain(compile=True))
    x, y = torch.randn(4, 1, 4, 4), torch.randint(0, 3, (4,))
    with pytest.raises(CompileMismatch):
        step(x, y)
    ok = TrainStep(model, opt, classify(F.cross_entropy), torch.device("cpu"), StepOptions.plain(compile=True),
                   net=model)
    ok(x, y)
    assert ok.compile_check is not None and ok.compile_check["grad_cosine"] == pytest.approx(1.0)
    calls = []
    monkeypatch.setattr("foveal.training.step.check_compiled", lambda *a: calls.append(a))
    ok(x, y)
    assert calls == []  # once per step object
