"""The training loop: data on the device, metrics on the device, one sync per log point.

Each batch goes through the `TrainStep` every loop shares (engine/step.py), with this run's
hooks: the lr schedule, mixup/cutmix and the adversarial/corruption perturber.

`Trainer(cfg).fit()` prepares data and model, trains with checkpoints every epoch, picks
the best epoch on `train.best_metric`, then evaluates the best weights on the test split
and writes everything into the run folder. A run killed at any point continues with
`train.resume`: every epoch's shuffling, augmentation and dropout are seeded from
(seed, epoch), so the resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn
from tqdm import tqdm

from .. import malloc
from ..batching import resolve_batch_size
from ..card import ModelCard
from ..config import RunConfig, to_dict
from ..data import Compose, DataBundle
from ..data.augment import MixBatch
from ..data.loader import epoch_seed
from ..data.stream import make_loader  # DeviceLoader for data in memory, StreamLoader for large folders
from ..io import write_json
from ..metrics import ConfusionMeter, format_report
from ..metrics.calibration import calibration_report, fit_temperature
from ..metrics.groups import add_group_metrics
from ..models import count_params, create_model
from . import distributed as dist
from . import runs
from .callbacks import Callback, RunResult
from .checkpoint import load_resume, model_card, save_resume, save_weights
from .device import resolve_channels_last, resolve_cpu_bf16, resolve_device, seed_everything, warn_slow_cpu_bf16
from .finetune import Finetuner, layer_decay_groups, load_for_finetune
from .losses import build_loss, inverse_frequency_weights
from .optim import Schedule, Shape, build_optimizer
from .prepare import init_from_data, prepare_data
from .scoring import score, score_with_logits
from .step import StepHook, StepOptions, TrainStep, classify, compile_applied
from .tta import check_views


@dataclass
class LoopState:
    """The loop's counters; saved in every resume checkpoint."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best: Optional[float] = None
    best_epoch: int = -1
    bad_epochs: int = 0  # epochs since the last improvement (early stopping)
    train_time: float = 0.0  # seconds spent in training epochs
    history: list[dict[str, Any]] = field(default_factory=list)


# metric -> (key in the validation metrics, whether a new value beats the best so far); 'last': always
_BEST_KEY: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "val_acc": ("accuracy", lambda new, best: new > best), "val_macro_f1": ("macro_f1", lambda new, best: new > best),
    "val_loss": ("loss", lambda new, best: new < best), "last": ("accuracy", lambda new, best: True),
    "worst_group_accuracy": ("worst_group_accuracy", lambda new, best: new > best)}


class Trainer:
    def __init__(self, cfg: RunConfig, data: Optional[DataBundle] = None, callbacks: tuple[Callback, ...] = (),
                 log: Callable[[str], None] = print):
        self.cfg = cfg
        self.data_in = data
        self.callbacks = list(callbacks)
        self.log = log

    # ---- set-up -------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        check_views(cfg.train.tta)  # before any work: a typo must not cost a training run
        self.dist, self.device = dist.setup(resolve_device(cfg.train.device), cfg.train.dist_timeout)
        if self.device.type == "cpu":  # training on the CPU: glibc keeps freed activations (foveal/malloc.py)
            malloc.keep_freed_memory()
        if not self.dist.is_main:
            self.log = lambda msg: None  # rank 0 speaks for the job
        warn_slow_cpu_bf16(self.device, cfg.train.cpu_bf16, self.log)
        seed_everything(cfg.train.seed, cfg.train.deterministic)
        if cfg.train.resume:
            self.run_dir = runs.find_run_dir(cfg)
        self.data, self.cfg = prepare_data(cfg, self.data_in, log=self.log)
        nhwc = resolve_channels_last(self.cfg.train.channels_last, self.device, self.cfg.data.img_size)
        sync_bn = self.dist.enabled if self.cfg.train.sync_bn is None else self.cfg.train.sync_bn
        self.cfg = cfg = dataclasses.replace(self.cfg, train=dataclasses.replace(
            self.cfg.train, channels_last=nhwc, cpu_bf16=resolve_cpu_bf16(self.cfg.train.cpu_bf16, self.device, nhwc),
            sync_bn=sync_bn))
        if not cfg.train.resume:
            self.run_dir = dist.broadcast_object(runs.new_run_dir(cfg) if self.dist.is_main else None)
        if self.dist.is_main:
            runs.write_config(self.run_dir, cfg)
            if self.data.problems:
                write_json(self.run_dir / "data_problems.json", self.data.problems)
        torch.manual_seed(cfg.train.seed)  # model init depends on the seed alone
        self.model = create_model(cfg.model.name, num_classes=len(self.data.classes), in_chans=cfg.data.in_chans,
                                  img_size=cfg.data.img_size, drop_rate=cfg.model.drop_rate,
                                  drop_path_rate=cfg.model.drop_path_rate)
        if cfg.model.pretrained and not cfg.train.resume:  # every key that does not fit is listed, and saved
            load_for_finetune(self.model, cfg.model.pretrained, self.run_dir if self.dist.is_main else None, self.log)
        elif not cfg.train.resume:  # e.g. AirNet's patch whitening; the same sample on every rank
            init_from_data(self.model, self.data.splits["train"].images, cfg.data.mean, cfg.data.std)
        self.finetuner = Finetuner(self.model, cfg.model)
        self.model.to(self.device)
        if cfg.train.sync_bn and self.dist.enabled:  # before the optimizer: new modules, new parameters
            self.model = dist.convert_sync_batchnorm(self.model, self.device)
        self._build_loaders()
        weights = None
        if cfg.data.balance == "weights":
            weights = inverse_frequency_weights(self.data.splits["train"].labels, len(self.data.classes))
        self.criterion = build_loss(cfg.optim, weights.to(self.device) if weights is not None else None,
                                    len(self.group_names))  # Group DRO's group count
        groups = layer_decay_groups(self.model, cfg.optim) if cfg.optim.layer_decay not in (None, 1.0) else None
        self.optimizer = build_optimizer(self.model, cfg.optim, groups)
        spe = len(self.train_loader)
        self.schedule = Schedule(self.optimizer, Shape.from_config(cfg.optim, cfg.train.epochs * spe, spe))
        self.train_step = self._build_step()
        self.ema = self.train_step.ema
        self.state = LoopState()
        # (logits, labels) of the last validation and of the best epoch's, when `validate` keeps them
        self._val_logits: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._best_val_logits: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        if cfg.train.resume:
            loop = load_resume(self.run_dir / "resume.safetensors", self.model, self.optimizer, self.ema)
            self.state = LoopState(**loop)
            self.train_step.count = self.state.step
            self.log(f"resuming '{self.run_dir}' after epoch {self.state.epoch}/{cfg.train.epochs}")

    def _build_step(self) -> TrainStep:
        """The step with this run's hooks: the lr schedule, then mixup/cutmix, then the perturber."""
        hooks = [StepHook(before=self.schedule.set_step)]
        if self.mixer:
            hooks.append(StepHook(batch=lambda x, y, step: self.mixer(x, y)))  # soft targets (B, K)
        if self.perturb is not None:
            hooks.append(StepHook(batch=self._perturb_batch))
        dro = self.cfg.optim.loss == "group_dro"  # group ids also come for group-balanced draws
        loss = self.criterion if dro else (lambda logits, y, *groups: self.criterion(logits, y))
        return TrainStep(self.model, self.optimizer, classify(loss), self.device, StepOptions.from_config(self.cfg),
                         hooks, self.dist)

    def _perturb_batch(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Adversarial / corruption training, in pixel space, on the unwrapped model (no DDP hooks)."""
        spe = len(self.train_loader)
        return self.perturb(self.model, x, y, step // spe + step % spe / spe), y  # progress in epochs

    def _build_loaders(self) -> None:
        cfg, d, world = self.cfg, self.cfg.data, self.dist.world
        if cfg.train.batch_size % world:
            raise ValueError(f"train.batch_size {cfg.train.batch_size} (the global batch) must divide by the "
                             f"{world} processes")
        common = dict(device=self.device, mean=d.mean, std=d.std, workers=d.workers, gpu_decode=d.gpu_decode)
        shard = dict(rank=self.dist.rank, world=world)
        aug = Compose(d.augment, d, len(self.data.classes))
        balanced = {"balanced": True} if d.balance == "sampler" else {}  # class-balanced draws with replacement
        self.group_names: list[str] = []  # train groups, for group-balanced draws and Group DRO
        if d.balance == "groups" or cfg.optim.loss == "group_dro":
            self.group_names, ids = self.data.splits["train"].group_index()  # batches become (x, y, g)
            balanced = {"balanced": "groups" if d.balance == "groups" else bool(balanced), "groups": ids}
        self.train_loader = make_loader(self.data.splits["train"], cfg.train.batch_size // world, augment=aug,
                                         shuffle=True, drop_last=True, seed=cfg.train.seed, **common, **shard,
                                         **balanced)
        self.mixer = MixBatch(d.mixup, d.cutmix, len(self.data.classes), cfg.train.seed)
        self.perturb = None  # adversarial / corruption training (train.adv, train.corrupt_aug)
        if cfg.train.adv != "none" or cfg.train.corrupt_aug != "none":
            from ..robustness.training import Perturber

            self.perturb = Perturber(cfg.train, d.mean, d.std, lambda logits, y: self.criterion(logits, y))
        val_groups = {}  # selecting on the worst val group needs the val split's group ids
        self.val_group_names: list[str] = []
        if cfg.train.best_metric == "worst_group_accuracy":
            if self.data.splits["val"].groups is None:
                raise ValueError("train.best_metric worst_group_accuracy needs groups in the val split: a CSV "
                                 "manifest with a 'group' column, or a dataset that defines groups (colored-mnist)")
            self.val_group_names, ids = self.data.splits["val"].group_index()
            val_groups = {"groups": ids}
        # 'auto': sized by memory on the CPU (foveal.batching); the same on every rank (same model and shape)
        self.eval_batch_size = resolve_batch_size(cfg.train.eval_batch_size, self.model,
                                                  (d.in_chans, d.img_size, d.img_size), self.device)
        self.val_loader = make_loader(self.data.splits["val"], self.eval_batch_size, **common, **shard,
                                      **val_groups)
        self.test_loader = make_loader(self.data.splits["test"], self.eval_batch_size, **common)

    def card(self, epoch: int) -> ModelCard:
        """The model card saved with the weights of `epoch` (1-based)."""
        return model_card(self.model, self.data.classes, self.cfg.data, to_dict(self.cfg), self.cfg.train.tta, epoch)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # ---- the loop -------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, loader, step = self.cfg, self.train_loader, self.train_step
        if self.finetuner.set_trainable(self.model, epoch) or step.net is None:
            step.wrap()  # DDP hooks exactly the parameters that train this epoch
        self.schedule.scale = self.finetuner.lr_scale(epoch)
        step.net.train()
        self.finetuner.start_epoch(self.model, epoch)  # frozen modules in eval mode (linear probe, gradual)
        loader.set_epoch(epoch)
        self.mixer.set_epoch(epoch)
        # dropout/drop-path (and perturber) draws of this epoch, a stream of their own on each rank
        torch.manual_seed(dist.rank_seed(epoch_seed(cfg.train.seed, epoch) + 1, self.dist.rank))
        loss_sum = torch.zeros((), device=self.device)
        meter = ConfusionMeter(len(self.data.classes), self.device, topk=0)
        seen, t0 = 0, time.perf_counter()
        bar = tqdm(total=len(loader) * cfg.train.batch_size, unit="img", leave=False, file=sys.stderr,
                   desc=f"epoch {epoch + 1}/{cfg.train.epochs}", dynamic_ncols=True,
                   disable=not (cfg.train.progress and self.dist.is_main))
        for i, (x, y, *g) in enumerate(loader):  # g: [group ids (B,)] when the loader yields groups
            res = step(x, y, *g)
            loss_sum += res.loss * len(res.y)
            meter.update(res.out, res.y)  # under mixup, accuracy counts the dominant label
            seen += len(res.y)
            bar.update(len(res.y) * self.dist.world)
            if (i + 1) % cfg.train.log_every == 0 and not bar.disable:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}")  # deliberate sync, at log points only
        bar.close()
        seconds = time.perf_counter() - t0
        self.state.step = step.count
        loss_sum = loss_sum.double()
        dist.all_reduce_sum(meter.state() + [loss_sum])
        acc = meter.compute()["accuracy"]  # one sync per epoch
        seen = int(meter.sums[1].item())
        return {"train_loss": loss_sum.item() / max(seen, 1), "train_acc": acc, "train_seconds": seconds,
                "images_per_s": seen / max(seconds, 1e-9), "lr": max(g["lr"] for g in self.optimizer.param_groups)}  # the head's, under layer decay

    def validate(self) -> dict[str, Any]:
        t = self.cfg.train
        args = (self.eval_model, self.val_loader, len(self.data.classes), self.device)
        # One process, fp32, no TTA: these logits are the ones calibration would compute again from the best
        # weights (`calibrate`), so the best epoch's are kept for it: one pass over val less per run.
        if not self.dist.enabled and not t.tta and not (t.amp and self.device.type == "cuda"):
            meter, logits, labels = score_with_logits(*args, num_groups=len(self.val_group_names))
            self._val_logits = (logits, labels)
            return meter.compute(self.data.classes)
        self._val_logits = None
        meter = score(*args, amp=t.amp,  # per-epoch selection may run bf16 on CUDA; the final test is fp32
                      num_groups=len(self.val_group_names))
        dist.all_reduce_sum(meter.state())  # each rank saw its shard of the split
        return meter.compute(self.data.classes)

    def _improved(self, value: float) -> bool:
        _, beats = _BEST_KEY[self.cfg.train.best_metric]
        return self.state.best is None or beats(value, self.state.best)

    def end_epoch(self, epoch: int, train_row: dict[str, float], val: dict[str, Any]) -> dict[str, Any]:
        """Record the epoch, save best/last/resume checkpoints (atomically), update early stopping."""
        key, _ = _BEST_KEY[self.cfg.train.best_metric]
        row = {"epoch": epoch + 1, **train_row, "val_loss": val["loss"], "val_acc": val["accuracy"],
               "val_macro_f1": val["macro_f1"]}
        if "top5" in val:
            row["val_top5"] = val["top5"]
        if "worst_group_accuracy" in val:
            row["val_worst_group_acc"] = val["worst_group_accuracy"]
        st = self.state
        st.epoch, st.train_time = epoch + 1, st.train_time + train_row["train_seconds"]
        improved = self._improved(val[key])
        if improved:
            st.best, st.best_epoch, st.bad_epochs = val[key], epoch + 1, 0
            self._best_val_logits = self._val_logits  # of the weights best.safetensors gets now
        else:
            st.bad_epochs += 1
        st.history.append(row)
        if self.dist.is_main:  # every rank holds the same weights and counters; rank 0 writes them
            if improved:
                save_weights(self.run_dir / "best.safetensors", self.eval_model, self.card(epoch + 1))
            save_weights(self.run_dir / "last.safetensors", self.eval_model, self.card(epoch + 1))
            save_resume(self.run_dir / "resume.safetensors", self.model, self.optimizer, self.ema,
                        dataclasses.asdict(st))
            runs.write_history(self.run_dir, st.history)
        self._write_stream_problems()
        return row

    def _write_stream_problems(self, gather: bool = True) -> None:
        """Streamed files that fail to decode are found while training, by whichever rank reads them:
        gather every rank's (a collective: all ranks call this) and add them to data_problems.json."""
        found = [p for ld in (self.train_loader, self.val_loader, self.test_loader) for p in getattr(ld, "problems", ())]
        if gather:
            found = [p for rank_found in dist.all_gather_object(found) for p in rank_found]
        if found and self.dist.is_main:
            write_json(self.run_dir / "data_problems.json", list(dict.fromkeys(self.data.problems + found)))

    def fit(self) -> Optional[RunResult]:
        """Train; returns the result on rank 0 (None on other ranks of a distributed job)."""
        self.setup()
        cfg = self.cfg
        self.log(f"run '{self.run_dir}': {cfg.model.name} ({count_params(self.model):,} parameters) on "
                 f"{self.data.name} {cfg.data.img_size}px x{cfg.data.in_chans}, "
                 f"{len(self.data.splits['train'])}/{len(self.data.splits['val'])}/{len(self.data.splits['test'])} "
                 f"train/val/test images, {self.device}")
        if self.dist.is_main and not getattr(self, "_loggers_added", False):  # train.logger: TensorBoard /
            from .loggers import logger_callbacks  # MLflow callbacks, rank 0 only (see engine/loggers.py)

            self.callbacks += logger_callbacks(cfg.train.logger)
            self._loggers_added = True
        for cb in self.callbacks:
            cb.on_train_begin(self)
        for epoch in range(self.state.epoch, cfg.train.epochs):
            if cfg.train.early_stop and self.state.bad_epochs >= cfg.train.early_stop:
                self.log(f"early stop: no improvement in {cfg.train.early_stop} epochs")
                break
            train_row = self.train_epoch(epoch)
            row = self.end_epoch(epoch, train_row, self.validate())
            self.log(_format_row(row, cfg.train.epochs))
            for cb in self.callbacks:
                cb.on_epoch_end(self, row)
            if not math.isfinite(row["train_loss"]):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {row['train_loss']}); "
                                         "lower --lr or set --optim.grad_clip")
        dist.barrier()  # rank 0 has written the last checkpoints
        result = self.finish() if self.dist.is_main else None
        dist.barrier()
        dist.teardown()
        if result is not None:
            for cb in self.callbacks:
                cb.on_train_end(self, result)
        return result

    def finish(self) -> RunResult:
        """Evaluate the best weights on the test split and write the run's results."""
        from .checkpoint import load_model

        model, card = load_model(self.run_dir, self.device)
        card = self.calibrate(model, card)
        meter, logits, labels = score_with_logits(model, self.test_loader, len(self.data.classes), self.device,
                                                  tta=self.cfg.train.tta)  # fp32, as predict and serve
        metrics = meter.compute(self.data.classes)
        metrics.update(split="test", best_epoch=self.state.best_epoch, train_seconds=self.state.train_time,
                       compiled=compile_applied(self.train_step.net))  # train.compile asked for and in effect
        metrics["calibration"] = calibration_report(logits, labels, card.temperature)
        # per-group metrics ("groups", "worst_group_accuracy") when the test split has groups
        group_table = add_group_metrics(metrics, logits, labels, self.data.splits["test"].groups, self.data.classes,
                                        self.data.splits["train"].groups)
        runs.write_eval(self.run_dir, metrics, prefix="test")
        self._write_stream_problems(gather=False)  # rank 0 alone evaluates the test split
        self.log(format_report(metrics) + (f"\n\n{group_table}" if group_table else ""))
        self.log(f"test accuracy {metrics['accuracy']:.4f} (best epoch {self.state.best_epoch}); "
                 f"training took {self.state.train_time:.1f}s; run folder: {self.run_dir}")
        result = RunResult(self.run_dir, model, card, self.state.history, metrics, logits, self.data)
        if self.cfg.train.report:  # off for quick fits, e.g. each fold of a scikit-learn cross-validation
            from .reporting import write_run_report

            write_run_report(result)
        return result


    def calibrate(self, model: nn.Module, card: ModelCard) -> ModelCard:
        """Fit the softmax temperature on the validation split and store it with the best weights."""
        d = self.cfg.data
        if self._best_val_logits is not None:  # from validating the best epoch (`validate`); not after a resume
            val_logits, val_labels = self._best_val_logits
        else:
            full_val = make_loader(self.data.splits["val"], self.eval_batch_size, self.device, d.mean, d.std,
                                   workers=d.workers)
            _, val_logits, val_labels = score_with_logits(model, full_val, len(self.data.classes), self.device,
                                                          tta=self.cfg.train.tta)  # fp32, as predict and serve
        card = card.replace(temperature=fit_temperature(val_logits, val_labels))
        save_weights(self.run_dir / "best.safetensors", model, card)
        return card


def _format_row(row: dict[str, Any], epochs: int) -> str:
    return (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  acc {row['train_acc']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.4f}  val_f1 {row['val_macro_f1']:.4f}  "
            + (f"worst_group {row['val_worst_group_acc']:.4f}  " if "val_worst_group_acc" in row else "")
            + f"lr {row['lr']:.2e}  {row['images_per_s']:.0f} img/s")
