"""The "fast" speedrun recipe.

`run_once(run, data, seed)` trains and evaluates an AirNet in the manner of the public
CIFAR-10 speedruns (Page 2018; Jordan 2024, arXiv 2404.00498), written from the papers:
data as uint8 on the device, batched flip/translate augmentation with alternating flips,
patch-whitening initialization, frozen BN scales with a 64x learning rate on BN shifts,
label smoothing 0.2, Nesterov SGD on a summed loss with a triangular schedule, lookahead
averaging of the weights, and test-time flip + translate augmentation. Each step is the
`TrainStep` every loop runs (training/step.py), its schedule and lookahead given as hooks. The step
loop never synchronizes with the host; the one deliberate sync is reading the accuracy at the end.
Its benchmark (seeded runs, timing, the accuracy floor) is `foveal.benchmarks.fast.bench_fast`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn

# re-exported: the recipe's settings and its presets per data set (RECIPES) live with every other default
from ..config import FAST_RECIPES as RECIPES  # noqa: F401
from ..config import FastConfig
from ..config import OptimConfig
from ..data.augment import translate  # re-exported: the recipe's shift, drawn per image
from ..data.preprocess import normalize_u8, stats
from ..models import create_model
from ..runtime.device import autocast
from .loop import run_steps
from .optim import Schedule, Shape, build_optimizer, param_groups
from .step import StepHook, StepOptions, TrainStep, classify, compiled, memory_format
from .tta import check_views, tta_logits

# ---- data: the whole data set as uint8 on the device ---------------------------------------
@dataclass
class FastData:
    """Train and test images, (N, C, H, W) uint8, and (N,) int64 labels, on one device."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    def to(self, device: torch.device) -> "FastData":
        move = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)}
        return dataclasses.replace(self, **move)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images in [0, 1] units, (1, C, 1, 1) float32 each, on
        their device (computed on the CPU: `stats` sums in float64, which not every device has)."""
        mean, std = stats(self.train_x.cpu(), unbiased=True)
        return tuple(torch.tensor(v, dtype=torch.float32, device=self.train_x.device).view(1, -1, 1, 1)
                     for v in (mean, std))


def load_fast_data(name: str, data_dir: Optional[str] = None, img_size: int = 16) -> FastData:
    """'mnist' / 'fashion-mnist' from the official IDX files in `data_dir`, or 'digits' (scikit-learn's
    8x8 digits upsampled to `img_size`, first 80% train, rest test) for tests and smoke runs."""
    if name == "digits":
        from ..config import DataConfig
        from ..data.sources import load_digits

        split = load_digits(DataConfig(), img_size).splits["all"]
        n = int(0.8 * len(split))
        x = split.images.load()
        return FastData("digits", x[:n], split.labels[:n], x[n:], split.labels[n:], 10)
    if name not in ("mnist", "fashion-mnist"):
        raise ValueError(f"fast recipe data '{name}' is not one of mnist, fashion-mnist, digits")
    if not data_dir:
        raise ValueError(f"'{name}' needs --data-dir, a folder with its official IDX files")
    from ..config import DataConfig
    from ..data.datasets import load_idx_dataset

    # the official splits whole: the speedrun protocol trains on every training image (no val split carved)
    splits = load_idx_dataset(name, DataConfig(data_dir=data_dir), 28).splits
    train, test = splits["train"], splits["test"]
    return FastData(name, train.images.load(), train.labels, test.images.load(), test.labels, 10)


# ---- the recipe -----------------------------------------------------------------------------
# Its presets per data set are RECIPES, imported above from the config (FAST_RECIPES).


@dataclass
class FastRun:
    """A model ready for repeated seeded runs (compiled once, re-initialized per run)."""

    model: nn.Module  # the eager module; its weights are overwritten at each run's start
    step_model: nn.Module  # the module called in the step (compiled or the same)
    cfg: FastConfig
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device
    compile_check: Optional[dict[str, float]] = None  # compiled vs eager on a run's first batch (step.check_compiled)


def prepare(data: FastData, cfg: FastConfig) -> FastRun:
    """Build the model on the data's device, with memory format and compilation applied once (compilation on
    every device: inductor compiles for the CPU too, which is how the tests hold compiled equal to eager)."""
    check_views(cfg.tta)  # a misspelt view fails here, not after training
    device = data.train_x.device
    model = create_model(cfg.model, num_classes=data.num_classes, in_chans=data.train_x.shape[1],
                         img_size=data.train_x.shape[-1]).to(device)
    mean, std = data.mean_std()
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    step_model = compiled(model, cfg.compile_mode) if cfg.compile else model
    return FastRun(model, step_model, cfg, mean, std, device)


def reinit(run: FastRun, data: FastData, seed: int) -> None:
    """Fresh seeded weights in place (so compiled graphs are reused), then data-whitening init."""
    torch.manual_seed(seed)
    fresh = create_model(run.cfg.model, num_classes=data.num_classes, in_chans=data.train_x.shape[1],
                         img_size=data.train_x.shape[-1])
    run.model.load_state_dict(fresh.state_dict())
    run.model.init_whitening(normalize_u8(data.train_x[:5000], run.mean, run.std))


def batches(data: FastData, run: FastRun, epoch: int, flip_bits: torch.Tensor,
            g: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of augmented, normalized (x, y) batches; full batches only (static shapes)."""
    cfg = run.cfg
    order = torch.randperm(len(data.train_y), generator=g, device=run.device)
    for i in range(len(order) // cfg.batch_size):
        idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        x = data.train_x[idx].float().div_(255)  # (B, C, H, W) in [0, 1]
        if cfg.translate:
            x = translate(x, cfg.translate, g)
        if cfg.flip:  # alternating flips: epoch 0 flips a random half, later epochs alternate per image
            flip = flip_bits[idx] ^ bool(epoch % 2)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        yield memory_format((x - run.mean) / run.std, cfg.channels_last and x.is_cuda), data.train_y[idx]


def build_sgd(model: nn.Module, cfg: FastConfig) -> torch.optim.SGD:
    """Nesterov SGD in the speedruns' units: the loss is summed over the batch, so lr is per example.

    Three groups (`optim.param_groups`): conv/linear weights; BN shifts (lr x bias_scaler, wd / bias_scaler); the
    whitening bias (like the BN shifts, but its lr goes to 0 after `whiten_bias_epochs`, see `build_step`).
    """
    kilo = 1024 * (1 + 1 / (1 - cfg.momentum))  # examples per unit of lr, momentum's gain included
    lr, wd = cfg.lr / kilo, cfg.weight_decay * cfg.batch_size / kilo
    groups = param_groups(model, wd, exempt=False, lr=lr, bias_lr_scale=cfg.bias_scaler, apart=[model.whiten.bias])
    return build_optimizer(model, OptimConfig(name="sgd", lr=lr, momentum=cfg.momentum, nesterov=True), groups)


class Lookahead:
    """Keeps a slow copy of the float state; `step(decay)` moves it toward the weights and copies it back.

    With decay rising from 0 to ~0.77 over training (cubed progress), early training is
    untouched and late training averages out the noise of the last steps.
    """

    def __init__(self, model: nn.Module):
        self.live = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.live]

    @torch.no_grad()
    def step(self, decay: float) -> None:
        torch._foreach_lerp_(self.slow, self.live, 1 - decay)
        torch._foreach_copy_(self.live, self.slow)


def build_step(run: FastRun, data: FastData, check_compile: bool = True) -> tuple[TrainStep, int, Optional[Lookahead]]:
    """The recipe's step for `run.model` from its current weights: SGD, the triangle schedule and lookahead as
    hooks, through `run.step_model`; with the number of steps to take and the lookahead (None when off).
    `check_compile`: the step's first-batch comparison of a compiled module with eager (step.check_compiled)."""
    cfg, model = run.cfg, run.model
    opt = build_sgd(model, cfg)
    steps_per_epoch = len(data.train_y) // cfg.batch_size
    total = max(1, int(cfg.epochs * steps_per_epoch))
    opt.param_groups[-1]["lr_until"] = int(cfg.whiten_bias_epochs * steps_per_epoch)  # the whitening bias stops
    schedule = Schedule(opt, Shape("triangle", total, start=0.2, peak_at=0.23, end=0.07))

    def lookahead(taken: int) -> None:  # every 5 steps; the decay rises with progress cubed
        if taken % 5 == 0:
            ahead.step(0.95 ** 5 * (taken / total) ** 3)

    ahead = Lookahead(model) if cfg.lookahead else None
    hooks = [StepHook(before=schedule.set_step)] + ([StepHook(after=lookahead)] if ahead is not None else [])
    on_gpu = run.device.type == "cuda"  # channels-last pays off on CUDA only (prepare)
    options = StepOptions.plain(amp=cfg.amp, channels_last=cfg.channels_last and on_gpu, compile=cfg.compile,
                                compile_mode=cfg.compile_mode)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="sum")
    step = TrainStep(model, opt, classify(criterion), run.device, options, hooks, net=run.step_model,
                     check_compile=check_compile)
    return step, total, ahead


def train(run: FastRun, data: FastData, seed: int) -> None:
    """Train `run.model` in place from its current weights. No host synchronization inside."""
    step, total, ahead = build_step(run, data)
    g = torch.Generator(device=run.device).manual_seed(seed)
    flip_bits = torch.rand(len(data.train_y), generator=g, device=run.device) < 0.5
    run.model.train()
    for epoch in range(math.ceil(run.cfg.epochs)):
        run_steps(step, batches(data, run, epoch, flip_bits, g), until=total)
    if ahead is not None:
        ahead.step(1.0)  # end on the slow weights
    run.compile_check = step.compile_check


@torch.no_grad()
def predict_tta(run: FastRun, x_u8: torch.Tensor) -> torch.Tensor:
    """Logits (N, K) of uint8 images, averaged over test-time views (see FastConfig.tta).

    Through the eager module even when training is compiled: the evaluation is well under 1% of a run's
    work (forward only, once), and compiling it would add a graph per batch shape and view layout."""
    cfg = run.cfg
    views = check_views(cfg.tta)
    run.model.eval()
    out = []
    for i in range(0, len(x_u8), cfg.eval_batch_size):
        x = normalize_u8(x_u8[i:i + cfg.eval_batch_size], run.mean, run.std)
        cl = cfg.channels_last and x.is_cuda  # every view in the weights' layout
        x = memory_format(x, cl)
        with autocast(run.device, cfg.amp):
            out.append(tta_logits(run.model, x, views, lambda v: memory_format(v, cl) if cl else v.contiguous()))
    return torch.cat(out)


def run_once(run: FastRun, data: FastData, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-initialize, train and evaluate; returns (correct count, total) as device tensors (no sync)."""
    reinit(run, data, seed)
    train(run, data, seed)
    correct = (predict_tta(run, data.test_x).argmax(1) == data.test_y).sum()
    return correct, torch.tensor(len(data.test_y), device=run.device)
