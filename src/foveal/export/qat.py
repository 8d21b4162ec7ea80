"""Quantization-aware fine-tuning (QAT): a few epochs with fake quantization before int8 export.

Where post-training quantization (PTQ, `search.py`) cannot reach the parity limits, `foveal export`
with `quant.qat` 'on' (or 'auto': only then) fine-tunes a copy of the run's model for
`quant.qat_epochs` epochs on the run's own training split (never its test split), with every
Conv/Linear computing on int8-rounded weights and uint8-rounded inputs, so that the weights learn
to sit where int8 rounds them harmlessly. The float weights so learned are then exported and
quantized by the same ORT search as PTQ (calibration method, float layers), and the parity check
compares that int8 file with the ORIGINAL eager model.

Mechanism, chosen on what torch 2.14 and ORT 1.32 do on this CPU:
- torch.ao.quantization's eager QAT needs QuantStub/DeQuantStub, fused modules and FloatFunctional
  in every model's code; its FX/PT2E paths need a traceable graph (and PT2E is no longer in torch.ao
  in 2.14). So fake quantization is inserted by hand, as ORT's QDQ scheme quantizes: weights symmetric
  int8 in [-127, 127] ([-64, 64] with reduce_range), per output channel (or per tensor, as
  `quant.per_channel` says), through a weight parametrization; the input of each Conv/Linear per
  tensor, asymmetric uint8 over a range that includes 0 (a moving min/max), through a forward
  pre-hook. Both are removed afterwards, leaving a plain model. The first and last such layers stay
  unrounded when `quant.float_ends` keeps them float in ORT too.
- Per-channel symmetric rounding does not change when a channel is scaled, so rounding the conv's
  own weight is exactly the rounding ORT applies after batch norm is folded into it. Batch norm is
  frozen (running statistics) during QAT, as the exported graph has it folded.
- Export of the learned float weights, quantized by ORT's static quantizer, rather than QDQ written
  from torch: ORT rounds those weights to the very grid they were trained on (same scale, same
  rounding), the search and its sensitivity pass apply unchanged, and the graph has ORT's own QDQ
  layout, which ORT fuses into integer kernels; a QDQ graph exported from torch's fake-quant ops
  has no Q after each Conv unless every output is fake-quantized too, and without it ORT runs
  DequantizeLinear + float Conv: no faster than float32.
- The loss is the KL divergence to the original model's outputs (KD_WEIGHT 1: distillation alone):
  the parity check measures agreement with the original model, and labels pull QAT toward other
  answers. Measured on ResNet-20 trained on digits, 7-bit per-tensor weights, 2 epochs at 1e-4:
  half distillation, half cross-entropy left the float model up to 0.78 logits from the original
  and its int8 agreeing on 99.44% of the test images; distillation alone 0.077 and 99.72%.
- Measured so far, PTQ on digits-sized models is already within a test image or two of the float
  model and QAT did not beat it there (README, BENCHMARKS.md); it is off unless asked for.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..card import ModelCard
from ..config import OptimConfig, QuantConfig, from_dict
from ..data.augment import Compose
from ..data.stream import make_loader
from ..tasks.inference import eval_data
from ..training.loop import run_steps
from ..training.optim import Schedule, Shape, build_optimizer
from ..training.step import StepHook, StepOptions, TrainStep

QUANTIZED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)  # what ORT's Conv/MatMul/Gemm come from
ACT_MOMENTUM = 0.1  # weight of each batch's min/max in the moving activation range
KD_WEIGHT = 1.0  # share of the distillation term in the loss (the rest: cross-entropy on the labels)


class WeightFakeQuant(nn.Module):
    """Parametrization: the weight rounded to symmetric int8 as ORT does (straight-through gradient).

    Per tensor, the batch norm `bn` after the layer matters: ORT rounds the weight with the norm's
    per-channel scale folded in, so that is the weight rounded here (per channel it cancels out)."""

    def __init__(self, per_channel: bool, qmax: int, bn: Optional[nn.Module] = None):
        super().__init__()
        self.per_channel, self.qmax = per_channel, qmax
        self._bn = (bn,)  # a tuple: not a submodule, so the parameters stay the layer's and the norm's

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            scale = (w.detach().abs().flatten(1).amax(1) / self.qmax).clamp_min(1e-12).float()
            zero = torch.zeros_like(scale, dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -self.qmax, self.qmax)
        fold = torch.ones(w.shape[0], device=w.device)
        bn = self._bn[0]
        if bn is not None:
            fold = torch.rsqrt(bn.running_var + bn.eps) * (bn.weight.detach() if bn.affine else 1.0)
            fold = torch.where(fold == 0, torch.ones_like(fold), fold)
        fold = fold.view(-1, *[1] * (w.dim() - 1))
        folded = w * fold
        scale = max(float(folded.detach().abs().max()) / self.qmax, 1e-12)
        return torch.fake_quantize_per_tensor_affine(folded, scale, 0, -self.qmax, self.qmax) / fold


class InputFakeQuant:
    """Forward pre-hook: the layer's input rounded to uint8 per tensor over a moving min/max that
    includes 0 (ORT's activation scheme), the range updated on training batches only."""

    def __init__(self):
        self.lo: Optional[float] = None
        self.hi = 0.0

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0]
        if module.training or self.lo is None:
            lo, hi = min(float(x.detach().min()), 0.0), max(float(x.detach().max()), 0.0)
            if self.lo is None:
                self.lo, self.hi = lo, hi
            else:
                self.lo += ACT_MOMENTUM * (lo - self.lo)
                self.hi += ACT_MOMENTUM * (hi - self.hi)
        scale = max((self.hi - self.lo) / 255.0, 1e-12)
        zero = int(min(max(round(-self.lo / scale), 0), 255))
        return (torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255), *args[1:])


def layer_order(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Module, Optional[nn.Module]]]:
    """The Conv/Linear modules of `model` in the order one forward pass calls them, each with the
    batch norm that reads its output directly (what the ONNX export folds into it), if any."""
    order: dict[nn.Module, Optional[nn.Module]] = {}
    outputs: dict[int, tuple[torch.Tensor, nn.Module]] = {}  # id -> (output, layer); the tensor kept alive

    def after_layer(m: nn.Module, args: Any, out: Any) -> None:
        order.setdefault(m, None)
        if isinstance(out, torch.Tensor):
            outputs[id(out)] = (out, m)

    def before_norm(bn: nn.Module, args: tuple[Any, ...]) -> None:
        t, m = outputs.get(id(args[0]), (None, None))
        if t is args[0] and order.get(m) is None:
            order[m] = bn

    hooks = [m.register_forward_hook(after_layer) for m in model.modules() if isinstance(m, QUANTIZED)]
    hooks += [m.register_forward_pre_hook(before_norm) for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return list(order.items())


def insert_fake_quant(model: nn.Module, quant: QuantConfig, example: torch.Tensor) -> Callable[[], None]:
    """Fake-quantize `model`'s Conv/Linear layers in place (all but the first and last with
    `quant.float_ends`); returns the function that takes it all out again, learned weights kept."""
    layers = layer_order(model, example)
    if quant.float_ends:
        layers = layers[1:-1]
    qmax = 64 if quant.reduce_range else 127
    hooks = []
    for m, bn in layers:
        parametrize.register_parametrization(m, "weight", WeightFakeQuant(quant.per_channel, qmax, bn))
        hooks.append(m.register_forward_pre_hook(InputFakeQuant()))

    def remove() -> None:
        for h in hooks:
            h.remove()
        for m, _ in layers:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)

    return remove


def train_split(card: ModelCard):
    """The run's own training split (the same seed and split as the run), decoded as for evaluation."""
    (split,) = eval_data(card, None, "train").splits.values()
    return split


def _freeze_batchnorm(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def finetune_qat(model: nn.Module, card: ModelCard, quant: QuantConfig, log: Callable[[str], None] = print
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """A fake-quantized copy of `model` (unchanged itself, the teacher) fine-tuned for `quant.qat_epochs`
    on the run's training split with the run's optimizer at peak lr `quant.qat_lr` (cosine to 0),
    returned as a plain float model, with a record of the training."""
    if quant.qat_epochs < 1 or quant.qat_lr <= 0:
        raise ValueError(f"quant.qat needs qat_epochs >= 1 and qat_lr > 0 (got {quant.qat_epochs}, {quant.qat_lr})")
    device = torch.device("cpu")
    cfg = card.config
    seed = card.seed or 0
    split = train_split(card)
    pre, dcfg = card.preprocessing, card.data_config()
    batch = max(1, min(int(cfg.get("train", {}).get("batch_size", 64)), len(split)))
    loader = make_loader(split, batch, device, pre.mean, pre.std, workers=dcfg.workers,
                         augment=Compose(dcfg.augment, dcfg, len(card.classes)), shuffle=True, drop_last=True,
                         seed=seed, gpu_decode=False)
    teacher = model.eval()
    student = copy.deepcopy(model).to(device)
    c, s = card.in_chans, pre.img_size
    remove = insert_fake_quant(student, quant, torch.zeros(1, c, s, s))
    optim_cfg = dataclasses.replace(from_dict(cfg.get("optim", {}), OptimConfig), lr=quant.qat_lr)
    optimizer = build_optimizer(student, optim_cfg)
    steps = quant.qat_epochs * len(loader)
    schedule = Schedule(optimizer, Shape("cosine", steps, end=0.0))

    def compute(net: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = net(x)
        with torch.no_grad():
            target = F.softmax(teacher(x), 1)
        kd = F.kl_div(F.log_softmax(logits, 1), target, reduction="batchmean")
        return KD_WEIGHT * kd + (1 - KD_WEIGHT) * F.cross_entropy(logits, y), logits

    step = TrainStep(student, optimizer, compute, device, StepOptions.plain(), [StepHook(before=schedule.set_step)])
    torch.manual_seed(seed)
    losses, t0 = [], time.perf_counter()
    for epoch in range(quant.qat_epochs):
        loader.set_epoch(epoch)
        student.train()
        _freeze_batchnorm(student)
        losses.append(run_steps(step, loader).mean_loss())
        log(f"qat: epoch {epoch + 1}/{quant.qat_epochs} loss {losses[-1]:.4f}")
    remove()
    student.eval()
    return student, {"epochs": quant.qat_epochs, "lr": quant.qat_lr, "optimizer": optim_cfg.name,
                     "train_images": len(split), "batch_size": batch, "steps": steps, "loss_per_epoch": losses,
                     "seconds": time.perf_counter() - t0}
