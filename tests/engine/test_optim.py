"""The one optimizer builder and the one schedule reproduce, bit for bit, the forms they replaced: the trainer's
schedule function, the fast recipe's triangle and SGD groups, torch's OneCycleLR (the label check's folds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from foveal.config import FastConfig, OptimConfig
from foveal.training.optim import Schedule, Shape, build_optimizer, decayed_params, param_groups
from foveal.models import create_model


def _old_lr_factor(step: int, total: int, warmup: int, cfg: OptimConfig) -> float:
    """The trainer's schedule function as it was written before `Shape` (the reference)."""
    floor = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return 1.0 if step >= warmup else (step + 1) / warmup
    if cfg.schedule == "onecycle":
        up = max(1, int(0.3 * total))
        start = 1 / 25
        if step < up:
            return start + (1 - start) * (1 - math.cos(math.pi * step / up)) / 2
        t = min(1.0, (step - up) / max(1, total - up))
        return floor + (1 - floor) * (1 + math.cos(math.pi * t)) / 2
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * (1 + math.cos(math.pi * t)) / 2


@pytest.mark.parametrize("kind", ["cosine", "onecycle", "constant"])
@pytest.mark.parametrize("total,spe,warmup_epochs,floor",
                         [(100, 10, 1.0, 0.01), (37, 37, 0.5, 0.0), (1000, 7, 2.0, 0.2)])
def test_trainer_shapes_equal_the_former_schedule_exactly(kind, total, spe, warmup_epochs, floor) -> None:
    cfg = OptimConfig(schedule=kind, warmup_epochs=warmup_epochs, min_lr_ratio=floor)
    shape = Shape.from_config(cfg, total, spe)
    warmup = int(round(warmup_epochs * spe)) if kind != "onecycle" else 0
    assert [shape.factor(s) for s in range(total + 2)] == [_old_lr_factor(s, total, warmup, cfg)
                                                          for s in range(total + 2)]


@pytest.mark.parametrize("total", [1, 7, 100, 4321])
def test_triangle_equals_the_fast_recipes_interpolation_exactly(total: int) -> None:
    shape = Shape("triangle", total, start=0.2, peak_at=0.23, end=0.07)
    old = [float(np.interp(s, [0, int(0.23 * total), total], [0.2, 1.0, 0.07])) for s in range(total + 1)]
    assert [shape.factor(s) for s in range(total + 1)] == old


def test_triangle_rises_to_its_peak_then_falls() -> None:
    f = [Shape("triangle", 100, start=0.2, peak_at=0.23, end=0.07).factor(s) for s in range(101)]
    assert f[0] == pytest.approx(0.2) and max(f) == 1.0 and f.index(max(f)) == 23 and f[-1] == pytest.approx(0.07)


def _torch_onecycle(opt_cls, lr: float, total: int, **kw) -> list[tuple[float, float]]:
    m = nn.Linear(3, 2)
    opt = opt_cls(m.parameters(), lr=lr, **kw)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=total, pct_start=0.25)
    out = []
    for _ in range(total):
        g = opt.param_groups[0]
        out.append((g["lr"], g["betas"][0] if "betas" in g else g["momentum"]))
        opt.step()  # no gradients: the weights stay, the scheduler sees a step taken
        sched.step()
    return out


@pytest.mark.parametrize("lr", [4e-3, 0.1, 1.0])
@pytest.mark.parametrize("total", [8, 44, 250])
@pytest.mark.parametrize("opt_cls", [torch.optim.AdamW, torch.optim.SGD])
def test_as_torch_onecycle_equals_torchs_onecyclelr_at_every_step(opt_cls, lr: float, total: int) -> None:
    """The label check's folds' schedule: lr and momentum (Adam's beta1 or SGD's momentum), step for step."""
    assert lr * (1 / 25) == lr / 25 and lr * (1 / 25 / 1e4) == lr / 25 / 1e4  # the lrs where it is exact
    kw = {"momentum": 0.9} if opt_cls is torch.optim.SGD else {}
    want = _torch_onecycle(opt_cls, lr, total, **kw)
    opt = opt_cls(nn.Linear(3, 2).parameters(), lr=lr, **kw)
    schedule = Schedule(opt, Shape("onecycle", total, start=1 / 25, peak_at=0.25, end=1 / 25 / 1e4, as_torch=True,
                                   momentum=(0.95, 0.85)))
    got = []
    for s in range(total):
        schedule.set_step(s)
        g = opt.param_groups[0]
        got.append((g["lr"], g["betas"][0] if "betas" in g else g["momentum"]))
    assert got == want


def test_schedule_scales_every_group_and_stops_a_group_at_its_lr_until() -> None:
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = torch.optim.SGD([{"params": [m[0].weight], "lr": 0.5}, {"params": [m[1].bias], "lr": 2.0, "lr_until": 3}],
                          lr=1.0)
    schedule = Schedule(opt, Shape("constant", 10))
    schedule.scale = 0.5
    for step, want in [(0, (0.25, 1.0)), (2, (0.25, 1.0)), (3, (0.25, 0.0)), (9, (0.25, 0.0))]:
        schedule.set_step(step)
        assert (opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]) == want


@pytest.mark.parametrize("steps", [1, 2, 60, 100])
def test_exponential_sweep_sets_the_lr_finders_former_lrs_exactly(steps: int) -> None:
    """The LR finder's sweep as a Shape, every group at base lr 1: the lrs it set before, bit for bit."""
    start, end = 1e-7, 10.0
    want = [start * ((end / start) ** (1 / max(1, steps - 1))) ** i for i in range(steps)]  # the former sweep
    m = nn.Linear(3, 4)
    opt = torch.optim.SGD([{"params": [m.weight], "lr": 0.5}, {"params": [m.bias], "lr": 0.1}], lr=0.5)
    schedule = Schedule(opt, Shape("exponential", steps, start=start, end=end), base_lr=1.0)
    got = []
    for i in range(steps):
        schedule.set_step(i)
        got.append([g["lr"] for g in opt.param_groups])
    assert got == [[lr, lr] for lr in want]


def test_default_groups_exempt_norms_biases_and_named_parameters() -> None:
    m = create_model("resnet18", num_classes=3, in_chans=1, img_size=32)
    decay, no_decay = param_groups(m, 0.1)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.proj = nn.Parameter(torch.zeros(1, 4, 8)), nn.Linear(8, 8)

        def no_weight_decay(self):
            return ["tok"]

    t = Tokens()
    assert decayed_params(t) == {"tok": False, "proj.weight": True, "proj.bias": False}
    decay, no_decay = param_groups(t, 0.1)
    assert decay["params"] == [t.proj.weight] and no_decay["params"] == [t.tok, t.proj.bias]
    every, vectors = param_groups(t, 0.1, exempt=False)  # AdamW's default: every parameter decayed
    assert every["params"] == [t.tok, t.proj.weight] and vectors["params"] == [t.proj.bias]
    assert every["weight_decay"] == vectors["weight_decay"] == 0.1


def test_fast_recipe_groups_equal_the_former_build_sgd() -> None:
    """Weights; BN shifts at lr x bias_scaler; the whitening bias alone; weight decay as wd / group lr."""
    from foveal.training.fast import build_sgd

    cfg = FastConfig(model="airnet_tiny")
    model = create_model(cfg.model, num_classes=10, in_chans=1, img_size=16)
    opt = build_sgd(model, cfg)
    kilo = 1024 * (1 + 1 / (1 - cfg.momentum))
    lr, wd = cfg.lr / kilo, cfg.weight_decay * cfg.batch_size / kilo
    lr_b = lr * cfg.bias_scaler
    wb = model.whiten.bias
    weights = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    biases = [p for p in model.parameters() if p.requires_grad and p.ndim == 1 and p is not wb]
    want = [(weights, lr, wd / lr), (biases, lr_b, wd / lr_b), ([wb], lr_b, wd / lr_b)]
    got = [(g["params"], g["lr"], g["weight_decay"]) for g in opt.param_groups]
    assert len(got) == 3 and all(a[0] == b[0] and a[1:] == b[1:] for a, b in zip(got, want))
    g = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD) and g["nesterov"] and g["momentum"] == cfg.momentum and g["foreach"]


@pytest.mark.parametrize("name", ["sgd", "adamw", "adam"])
def test_build_optimizer_fills_group_lrs_and_drops_empty_groups(name: str) -> None:
    m = nn.Linear(3, 2)
    cfg = OptimConfig(name=name, lr=0.1, momentum=0.8, beta2=0.99)
    opt = build_optimizer(m, cfg, [{"params": [m.weight], "weight_decay": 0.1}, {"params": [], "weight_decay": 0.0},
                                   {"params": [m.bias], "lr": 0.5, "weight_decay": 0.0}])
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    g = opt.param_groups[0]
    if name == "sgd":
        assert (g["momentum"], g["nesterov"]) == (0.8, True)
    else:
        assert g["betas"] == (0.8, 0.99)
    assert type(opt).__name__.lower() == name
