import json

import numpy as np
import pytest
import torch

from foveal.config import RunConfig, apply_overrides
from foveal import fit
from foveal.training import Callback, Trainer
from foveal.training.optim import Shape
from foveal.io import load_tensors


def _cfg(tmp_path, **over):
    base = {"train.out_dir": str(tmp_path / "runs"), "train.progress": False, "train.device": "cpu",
            "train.epochs": 4}
    return apply_overrides(RunConfig(), {**base, **over})


def test_digits_lenet_learns_and_writes_the_run_folder(tmp_path):
    res = fit(_cfg(tmp_path, **{"train.epochs": 8}))  # the front door: the loop, then the report page
    assert res.test_metrics["accuracy"] >= 0.93
    for f in ("config.yaml", "metrics.csv", "metrics.jsonl", "best.safetensors", "last.safetensors",
              "resume.safetensors", "test.json", "test.csv", "test_confusion.csv", "curves.png", "report.html"):
        assert (res.run_dir / f).is_file(), f
    _, meta = load_tensors(res.run_dir / "best.safetensors")
    assert meta["classes"] == [str(i) for i in range(10)] and meta["img_size"] == 32 and meta["in_chans"] == 1
    assert len(meta["mean"]) == 1 and 0 < meta["std"][0] < 1
    assert len(res.history) == 8


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    w = []
    for seed in (1, 1, 2):
        r = Trainer(_cfg(tmp_path, **{"train.epochs": 2, "train.seed": seed})).fit()
        w.append(load_tensors(r.run_dir / "last.safetensors")[0])
    assert all(torch.equal(w[0][k], w[1][k]) for k in w[0])
    assert not all(torch.equal(w[0][k], w[2][k]) for k in w[0])


def test_existing_run_is_never_overwritten(tmp_path):
    a = Trainer(_cfg(tmp_path, **{"train.epochs": 1, "train.name": "x"})).fit()
    b = Trainer(_cfg(tmp_path, **{"train.epochs": 1, "train.name": "x"})).fit()
    assert a.run_dir.name == "x" and b.run_dir.name == "x-2"


def test_early_stopping_and_callbacks(tmp_path):
    seen = []

    class Record(Callback):
        def on_epoch_end(self, trainer, row):
            seen.append(row["epoch"])

    # lr=0 cannot improve after the first epoch: patience 2 stops after epoch 3.
    cfg = _cfg(tmp_path, **{"train.epochs": 10, "train.early_stop": 2, "optim.lr": 0.0})
    Trainer(cfg, callbacks=(Record(),)).fit()
    assert seen == [1, 2, 3]


def test_best_metric_last_keeps_the_final_epoch(tmp_path):
    # lr=0 after epoch 1 under val_acc would keep epoch 1; 'last' keeps epoch 3 whatever val says.
    res = Trainer(_cfg(tmp_path, **{"train.epochs": 3, "train.best_metric": "last"})).fit()
    best, meta = load_tensors(res.run_dir / "best.safetensors")
    last, last_meta = load_tensors(res.run_dir / "last.safetensors")
    assert meta["epoch"] == last_meta["epoch"] == 3 and res.test_metrics["best_epoch"] == 3
    assert all(torch.equal(best[k], last[k]) for k in last)


def test_cpu_bf16_trains_in_bf16_and_evaluates_in_fp32(tmp_path, autocast_calls):
    trainer = Trainer(_cfg(tmp_path, **{"train.epochs": 6, "train.cpu_bf16": True, "train.channels_last": True,
                                        "optim.lr": 3e-3}))
    res = trainer.fit()
    assert res.test_metrics["accuracy"] >= 0.9
    assert set(autocast_calls) == {("cpu", torch.bfloat16, True)}  # only the training step autocasts: one per step
    assert len(autocast_calls) == trainer.state.step > 0


def test_cpu_bf16_warns_where_the_cpu_has_no_native_bf16(monkeypatch):
    from foveal.runtime import device as dev

    lines = []
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    dev.warn_slow_cpu_bf16(torch.device("cpu"), True, lines.append)
    dev.warn_slow_cpu_bf16(torch.device("cpu"), False, lines.append)
    assert len(lines) == 1 and "slower than fp32" in lines[0]
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)
    dev.warn_slow_cpu_bf16(torch.device("cpu"), True, lines.append)
    assert len(lines) == 1
    monkeypatch.undo()  # the real check reads /proc/cpuinfo: a bool on Linux
    assert dev.cpu_has_native_bf16() in (True, False, None)


@pytest.mark.parametrize("opt", ["sgd", "adam", "adamw"])
def test_optimizers_schedules_smoothing_clipping_ema(tmp_path, opt):
    over = {"optim.name": opt, "optim.lr": 0.05 if opt == "sgd" else 3e-3, "optim.schedule": "onecycle",
            "optim.label_smoothing": 0.1, "optim.grad_clip": 1.0, "train.ema": True, "train.ema_decay": 0.9,
            "train.best_metric": "val_macro_f1", "train.epochs": 6}
    res = Trainer(_cfg(tmp_path, **over)).fit()
    assert res.test_metrics["accuracy"] >= 0.85


def test_cosine_warmup_and_onecycle_shapes():
    cfg = RunConfig().optim
    f = [Shape.from_config(cfg, 100, 10).factor(s) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[-1] < 0.05
    assert all(a >= b for a, b in zip(f[9:], f[10:]))
    cfg.schedule = "onecycle"
    g = [Shape.from_config(cfg, 100, 10).factor(s) for s in range(100)]
    assert g[0] < 0.05 and max(g) == pytest.approx(1.0, abs=1e-3) and g[-1] < 0.05 and g.index(max(g)) in range(28, 32)


def test_focal_loss_trains(tmp_path):
    res = Trainer(_cfg(tmp_path, **{"optim.loss": "focal", "train.epochs": 6})).fit()
    assert res.test_metrics["accuracy"] >= 0.85


def test_lr_suggestion_is_the_steepest_fall_of_a_known_curve():
    """A range-test curve whose loss falls fastest at 1e-3 (a logistic in log10 LR) and explodes past 0.1:
    the suggestion is 1e-3, up to the lag of the smoothing (0.15 decades at 50 points per decade)."""
    from foveal.training.lr_find import suggest

    lrs = np.logspace(-6, 0, 300)
    u = np.log10(lrs)
    loss = 2 - 1.5 / (1 + np.exp(-4 * (u + 3))) + np.where(u > -1, 20 * (u + 1) ** 2, 0)
    assert -3.0 < np.log10(suggest(list(lrs), list(loss))) < -2.6


def test_lr_find_suggests_the_steepest_descent_of_its_curve(tmp_path):
    """On digits: the suggestion is where the smoothed loss it reports falls fastest against log LR,
    before its minimum, on a stretch where the loss still falls well below its start."""
    from foveal.training.build import build_run
    from foveal.training.lr_find import lr_find, smooth

    res = lr_find(build_run(_cfg(tmp_path, **{"train.name": "lrf"})), steps=80)
    lrs, s = np.asarray(res["lrs"]), np.asarray(smooth(res["losses"]))
    low = int(np.argmin(s))
    i = int(np.flatnonzero(lrs == res["suggested_lr"])[0])
    slope = np.gradient(s[:low + 1], np.log(lrs[:low + 1]))
    assert 0 < i < low and slope[i] == slope.min() < 0, (i, low, slope[i], slope.min())
    assert s[i] < s[0] and s[low] < s[i] - 0.3 * (s[0] - s[low]), s  # mid-descent: much of the fall still ahead
    assert 1e-5 < res["suggested_lr"] < 1.0
    assert json.loads((tmp_path / "runs/lrf/lr_find.json").read_text()) == res
    assert (tmp_path / "runs/lrf/lr_find.png").is_file()


def test_calibration_reuses_the_best_epochs_validation_logits(tmp_path, monkeypatch):
    """One process, fp32, no TTA: the temperature is fitted on the logits the best epoch's validation
    computed (no second pass over val), and it is the temperature a fresh pass with best.safetensors gives."""
    from foveal.training import trainer as trainer_mod
    from foveal.training.checkpoint import load_model
    from foveal.training.scoring import score_with_logits
    from foveal.metrics.calibration import fit_temperature

    passes = []
    real = trainer_mod.score_with_logits
    monkeypatch.setattr(trainer_mod, "score_with_logits", lambda *a, **k: passes.append(1) or real(*a, **k))
    tr = Trainer(_cfg(tmp_path, **{"train.epochs": 3, "optim.lr": 0.3}))  # a high lr: val accuracy need not rise
    res = tr.fit()
    assert len(passes) == 3 + 1  # three validations and the test split; calibration added none
    model, card = load_model(res.run_dir, torch.device("cpu"))
    assert card.epoch == res.test_metrics["best_epoch"]
    _, logits, labels = score_with_logits(model, tr.run.loaders.val, 10, torch.device("cpu"))
    assert card.temperature == pytest.approx(fit_temperature(logits, labels), rel=1e-4)
    assert card.temperature != 1.0
