"""One training step, the only one: every loop that updates weights calls a `TrainStep`.

The supervised Trainer, the self-supervised Pretrainer, the fast (speedrun) recipe, the
train-step benchmark, the LR finder and the label check's K-fold models differ in their
data, losses and schedules, not in how a step runs. A `TrainStep` holds what they share, in this order per call:

1. hooks `before(step)`: e.g. the learning-rate schedule, set from the step index;
2. the batch in the model's memory format (channels-last), then hooks `batch(x, y, step)`:
   e.g. mixup/cutmix, the adversarial or corruption perturber;
3. forward and loss under autocast (bf16 on CUDA with `amp`, on the CPU with `cpu_bf16`),
   through `net`: the model wrapped in DDP when distributed, compiled when asked;
4. backward, gradient clipping, the optimizer step, the EMA update;
5. hooks `after(steps_taken)`: e.g. lookahead averaging.

Nothing here reads a tensor on the host: the loss and outputs come back detached, on the
device, and the caller decides when (if ever) to look at them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import RunConfig
from ..runtime import distributed as dist
from ..runtime.device import autocast, cpu_bf16_depthwise

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# compute(net, x, y, *extra) -> (loss, outputs or None), run under autocast; `net` is the module to call
Compute = Callable[..., tuple[torch.Tensor, Optional[torch.Tensor]]]


def memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(B, C, H, W) input in the model's memory format."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def check_compile_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode '{mode}' is not one of {', '.join(COMPILE_MODES)}")


def compiled(model: nn.Module, mode: str) -> nn.Module:
    """`torch.compile(model)` for fixed shapes; the weights stay `model`'s."""
    check_compile_mode(mode)
    # dynamic=False: train and eval batches differ in size; without it the second size would switch the
    # graph to symbolic shapes (slower kernels) instead of compiling a second static one.
    return torch.compile(model, mode=mode, dynamic=False)


def is_compiled_module(net: Optional[nn.Module]) -> bool:
    """Whether `net` is torch.compile's wrapper (OptimizedModule)."""
    from torch._dynamo.eval_frame import OptimizedModule

    return isinstance(net, OptimizedModule)


def compile_applied(net: Optional[nn.Module]) -> bool:
    """Whether `net` is torch.compile's wrapper and dynamo has compiled a graph in this process: what a result
    records as "compiled", so a compile flag that a path ignores, or a compile that fell back, shows."""
    from torch._dynamo.utils import counters

    return is_compiled_module(net) and counters["frames"]["ok"] > 0


class CompileMismatch(RuntimeError):
    """The compiled module computes something else than the eager one on the same batch."""


@torch.no_grad()
def _restore(tensors: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
    for t, s in zip(tensors, saved):
        t.copy_(s)


def check_compiled(model: nn.Module, net: nn.Module, run: Callable[[nn.Module], torch.Tensor],
                   rtol: float = 0.02, min_cosine: float = 0.98) -> dict[str, float]:
    """Run `run(module) -> loss` through the eager `model` and the compiled `net` on one batch and compare the
    losses and the gradients of the trainable weights; raises `CompileMismatch` when they differ by more than
    bf16 rounding allows. Buffers (BN statistics), gradients and the global RNG are restored afterwards, so
    the run goes on as if the check had not happened. One deliberate host sync, once per step object."""
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = list(model.buffers())
    saved = [b.detach().clone() for b in buffers]
    rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    results = []
    for module in (model, net):
        loss = run(module).float()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(p)).float().flatten() for g, p in zip(grads, params)])
        results.append((loss.detach(), flat))
        _restore(buffers, saved)
        torch.random.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    (le, ge), (lc, gc) = results
    cos = torch.nn.functional.cosine_similarity(ge, gc, dim=0, eps=1e-30)
    stats = torch.stack([le, lc, cos, ge.norm(), gc.norm()]).tolist()  # deliberate sync, once
    eager_loss, compiled_loss, cosine, eager_norm, compiled_norm = stats
    report = {"eager_loss": eager_loss, "compiled_loss": compiled_loss, "grad_cosine": cosine,
              "grad_norm_ratio": compiled_norm / eager_norm if eager_norm else float("nan")}
    finite = all(map(math.isfinite, (eager_loss, eager_norm)))  # eager itself diverged: not compile's doing
    loss_ok = abs(compiled_loss - eager_loss) <= rtol * max(1.0, abs(eager_loss))
    grads_ok = eager_norm == 0 or (cosine >= min_cosine and abs(report["grad_norm_ratio"] - 1) <= 5 * rtol)
    if finite and not (loss_ok and grads_ok):
        raise CompileMismatch(
            "torch.compile changed what the model computes on the first batch: "
            + ", ".join(f"{k} {v:.6g}" for k, v in report.items())
            + ". Train without compiling (train.compile false / no --compile) and report the torch version.")
    return report


@dataclass(frozen=True)
class StepOptions:
    """How a step runs; `from_config` reads them from a run's config (where their defaults live)."""

    amp: bool  # bf16 autocast on CUDA
    cpu_bf16: bool  # bf16 autocast on the CPU
    channels_last: bool  # NHWC weights and inputs
    compile: bool  # torch.compile the module the step calls
    compile_mode: str  # one of COMPILE_MODES
    grad_clip: Optional[float]  # max global gradient norm; None or 0: no clipping
    ema_decay: Optional[float]  # keep an EMA of the weights with this per-step decay; None: no EMA

    @classmethod
    def plain(cls, **switches: Any) -> "StepOptions":
        """fp32, eager, NCHW, no clipping, no EMA, with `switches` (field=value) on top."""
        return cls(**{"amp": False, "cpu_bf16": False, "channels_last": False, "compile": False,
                      "compile_mode": "default", "grad_clip": None, "ema_decay": None, **switches})

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "StepOptions":
        t = cfg.train
        return cls(t.amp, t.cpu_bf16, t.channels_last, t.compile, t.compile_mode, cfg.optim.grad_clip,
                   t.ema_decay if t.ema else None)


@dataclass
class StepHook:
    """Callables at the three points of a step (module docstring); any may be None."""

    before: Optional[Callable[[int], None]] = None  # (index of this step) before the forward: lr schedules
    batch: Optional[Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]] = None
    after: Optional[Callable[[int], None]] = None  # (steps taken, this one included) after the update


@dataclass
class StepResult:
    """The step's loss () and outputs (B, ...) detached, and the targets after the batch hooks (soft
    targets under mixup); all on the device."""

    loss: torch.Tensor
    out: Optional[torch.Tensor]
    y: Optional[torch.Tensor]


def classify(criterion: Callable[..., torch.Tensor]) -> Compute:
    """The supervised compute: logits = net(x), loss = criterion(logits, y, *extra)."""

    def compute(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *extra: torch.Tensor):
        logits = net(x)
        return criterion(logits, y, *extra), logits

    return compute


class TrainStep:
    """`step(x, y, *extra) -> StepResult`: one optimizer step of `model` (see the module docstring).

    `count` is the number of steps taken, the index the hooks see; a resumed loop sets it. `net`
    is the module the forward runs through: built by `wrap()` on the first call and again
    whenever the caller changes which parameters train (DDP hooks exactly the parameters that
    require grad when it is built). Pass `net` to reuse a module compiled once for many
    seeded runs (the fast recipe). Evaluation and checkpoints use `model` (or `ema.module`).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, compute: Compute, device: torch.device,
                 options: StepOptions, hooks: Sequence[StepHook] = (), dist_info: dist.DistInfo = dist.DistInfo(),
                 net: Optional[nn.Module] = None, check_compile: bool = True):
        self.model, self.optimizer, self.compute, self.device = model, optimizer, compute, device
        self.options, self.dist = options, dist_info
        self.hooks = list(hooks)
        self.count = 0
        # Before the first compiled step, `check_compiled` compares it with eager on that batch (one process
        # only: a second backward through DDP would all-reduce). Off where `compute` draws from a generator
        # of its own (the pretrainer's views), which the check cannot rewind.
        self._check_compile = check_compile and options.compile and not dist_info.enabled
        self.compile_check: Optional[dict[str, float]] = None  # the check's numbers, once it has run
        if options.channels_last:  # before DDP or the EMA copy see the weights, so both keep NHWC strides
            model.to(memory_format=torch.channels_last)
        if options.cpu_bf16 and device.type == "cpu":
            cpu_bf16_depthwise(model)  # oneDNN's bf16 depthwise kernels: each pass in its faster precision (device.py)
        if options.compile:
            check_compile_mode(options.compile_mode)  # now, not at the first step
        self.ema: Optional[AveragedModel] = None  # eval and checkpoints use ema.module; resume loads its state
        self._ema_updates: Optional[int] = None  # = ema.n_averaged, kept on the host (read once, see _update_ema)
        if options.ema_decay is not None:
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(options.ema_decay), use_buffers=True)
        self.net = net

    def wrap(self) -> nn.Module:
        """(Re)build `net`: DDP around the model when distributed, compiled when asked."""
        net = dist.wrap_model(self.model, self.dist, self.device)
        self.net = compiled(net, self.options.compile_mode) if self.options.compile else net
        return self.net

    def __call__(self, x: torch.Tensor, y: Optional[torch.Tensor] = None, *extra: torch.Tensor) -> StepResult:
        opts = self.options
        for h in self.hooks:
            if h.before is not None:
                h.before(self.count)
        net = self.net if self.net is not None else self.wrap()
        if opts.channels_last:
            x = memory_format(x, True)
        for h in self.hooks:
            if h.batch is not None:
                x, y = h.batch(x, y, self.count)
        if self._check_compile:
            self._check_compile = False

            def run(module: nn.Module) -> torch.Tensor:
                with autocast(self.device, opts.amp, cpu=opts.cpu_bf16):
                    return self.compute(module, x, y, *extra)[0]

            if is_compiled_module(net):
                self.compile_check = check_compiled(self.model, net, run)
        with autocast(self.device, opts.amp, cpu=opts.cpu_bf16):
            loss, out = self.compute(net, x, y, *extra)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if opts.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), opts.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self._update_ema()
        self.count += 1
        for h in self.hooks:
            if h.after is not None:
                h.after(self.count)
        return StepResult(loss.detach(), out.detach() if out is not None else None, y)

    @torch.no_grad()
    def _update_ema(self) -> None:
        """`AveragedModel.update_parameters` (use_buffers=True), the same arithmetic, without its two
        host reads of `n_averaged` per step: the count lives on the host, read once per TrainStep
        (a resumed run's EMA brings its count with its state)."""
        ema = self.ema
        if self._ema_updates is None:
            self._ema_updates = int(ema.n_averaged)  # deliberate sync, once
        averaged = [*ema.module.parameters(), *ema.module.buffers()]
        current = [t.detach() for t in (*self.model.parameters(), *self.model.buffers())]
        if self._ema_updates == 0:  # the first update copies the weights
            for a, c in zip(averaged, current):
                a.copy_(c)
        else:
            groups: dict[tuple[torch.device, torch.dtype], tuple[list, list]] = {}
            for a, c in zip(averaged, current):  # one foreach call per (device, dtype), as torch groups them
                pair = groups.setdefault((a.device, a.dtype), ([], []))
                pair[0].append(a)
                pair[1].append(c)
            for a, c in groups.values():
                ema.multi_avg_fn(a, c, ema.n_averaged)
        ema.n_averaged += 1
        self._ema_updates += 1
