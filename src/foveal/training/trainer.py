"""The training loop: data on the device, metrics on the device, one sync per log point.

The run's parts (data, model, loaders, loss, optimizer, schedule, the `TrainStep` every loop
shares, callbacks) come from `build_run` (training/build.py) as one `Run`; the Trainer adds the
loop's counters, the epoch loop, checkpoints, best-epoch selection and calibration.

`Trainer(cfg).fit()` prepares data and model, trains with checkpoints every epoch, picks
the best epoch on `train.best_metric`, then evaluates the best weights on the test split
and writes weights, metrics and history into the run folder (the report page is the front door's,
`tasks.fit`). A run killed at any point continues with
`train.resume`: every epoch's shuffling, augmentation and dropout are seeded from
(seed, epoch), so the resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..card import ModelCard
from ..config import RunConfig, to_dict
from ..data import DataBundle
from ..data.loader import epoch_seed
from ..data.stream import make_loader
from ..io import write_json
from ..metrics import ConfusionMeter, format_report
from ..metrics.calibration import calibration_report, fit_temperature
from ..metrics.groups import add_group_metrics
from ..models import count_params
from ..runtime import distributed as dist
from . import runs
from .build import Run, build_run
from .callbacks import Callback, RunResult
from .checkpoint import load_resume, model_card, save_resume, save_weights
from .loop import Progress, run_steps
from .scoring import score, score_with_logits
from .step import compile_applied


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
    """`Trainer(cfg).fit()`: the epoch loop over the parts `setup` builds. `cfg` is the config as given; the
    resolved one, saved with the run, is `self.run.cfg`. `data`: an already loaded bundle (else cfg.data's)."""

    def __init__(self, cfg: RunConfig, data: Optional[DataBundle] = None, callbacks: tuple[Callback, ...] = (),
                 log: Callable[[str], None] = print):
        self.cfg = cfg
        self.data_in = data
        self.callbacks = list(callbacks)
        self.log = log
        self.run: Run  # set by `setup`, with the loop's counters `state`
        self.state = LoopState()

    # ---- set-up -------------------------------------------------------------------------
    def setup(self) -> None:
        """Build the run's parts (`build_run`) and the loop's counters, or load both back for `train.resume`."""
        self.run = run = build_run(self.cfg, self.data_in, tuple(self.callbacks), self.log)
        self.state = LoopState()
        # (logits, labels) of the last validation and of the best epoch's, when `validate` keeps them
        self._val_logits: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self._best_val_logits: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        if run.cfg.train.resume:
            loop = load_resume(run.run_dir / "resume.safetensors", run.model, run.optimizer, run.ema)
            self.state = LoopState(**loop)
            run.step.count = self.state.step
            run.log(f"resuming '{run.run_dir}' after epoch {self.state.epoch}/{run.cfg.train.epochs}")

    def card(self, epoch: int) -> ModelCard:
        """The model card saved with the weights of `epoch` (1-based)."""
        r = self.run
        return model_card(r.model, r.data.classes, r.cfg.data, to_dict(r.cfg), r.cfg.train.tta, epoch)

    # ---- the loop -------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        r = self.run
        cfg, loader, step = r.cfg, r.loaders.train, r.step
        if r.finetuner.set_trainable(r.model, epoch) or step.net is None:
            step.wrap()  # DDP hooks exactly the parameters that train this epoch
        r.schedule.scale = r.finetuner.lr_scale(epoch)
        step.net.train()
        r.finetuner.start_epoch(r.model, epoch)  # frozen modules in eval mode (linear probe, gradual)
        loader.set_epoch(epoch)
        r.mixer.set_epoch(epoch)
        # dropout/drop-path (and perturber) draws of this epoch, a stream of their own on each rank
        torch.manual_seed(dist.rank_seed(epoch_seed(cfg.train.seed, epoch) + 1, r.dist.rank))
        meter = ConfusionMeter(len(r.data.classes), r.device, topk=0)
        bar = Progress(f"epoch {epoch + 1}/{cfg.train.epochs}", len(loader) * cfg.train.batch_size,
                       cfg.train.log_every, r.dist.world) if cfg.train.progress and r.dist.is_main else None
        done = run_steps(step, loader, meter=meter, progress=bar)  # batches (x, y) or (x, y, group ids)
        seconds = done.seconds
        self.state.step = step.count
        loss_sum = done.loss_sum.double()
        dist.all_reduce_sum(meter.state() + [loss_sum])
        acc = meter.compute()["accuracy"]  # one sync per epoch
        seen = int(meter.sums[1].item())
        return {"train_loss": loss_sum.item() / max(seen, 1), "train_acc": acc, "train_seconds": seconds,
                "images_per_s": seen / max(seconds, 1e-9),
                "lr": max(g["lr"] for g in r.optimizer.param_groups)}  # the head's, under layer decay

    def validate(self) -> dict[str, Any]:
        r, t = self.run, self.run.cfg.train
        args = (r.eval_model, r.loaders.val, len(r.data.classes), r.device)
        groups = len(r.loaders.val_group_names)
        # One process, fp32, no TTA: these logits are the ones calibration would compute again from the best
        # weights (`calibrate`), so the best epoch's are kept for it: one pass over val less per run.
        if not r.dist.enabled and not t.tta and not (t.amp and r.device.type == "cuda"):
            meter, logits, labels = score_with_logits(*args, num_groups=groups)
            self._val_logits = (logits, labels)
            return meter.compute(r.data.classes)
        self._val_logits = None
        meter = score(*args, amp=t.amp, num_groups=groups)  # selection may run bf16 on CUDA; the test is fp32
        dist.all_reduce_sum(meter.state())  # each rank saw its shard of the split
        return meter.compute(r.data.classes)

    def _improved(self, value: float) -> bool:
        _, beats = _BEST_KEY[self.run.cfg.train.best_metric]
        return self.state.best is None or beats(value, self.state.best)

    def end_epoch(self, epoch: int, train_row: dict[str, float], val: dict[str, Any]) -> dict[str, Any]:
        """Record the epoch, save best/last/resume checkpoints (atomically), update early stopping."""
        r = self.run
        key, _ = _BEST_KEY[r.cfg.train.best_metric]
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
        if r.dist.is_main:  # every rank holds the same weights and counters; rank 0 writes them
            if improved:
                save_weights(r.run_dir / "best.safetensors", r.eval_model, self.card(epoch + 1))
            save_weights(r.run_dir / "last.safetensors", r.eval_model, self.card(epoch + 1))
            save_resume(r.run_dir / "resume.safetensors", r.model, r.optimizer, r.ema, dataclasses.asdict(st))
            runs.write_history(r.run_dir, st.history)
        self._write_stream_problems()
        return row

    def _write_stream_problems(self, gather: bool = True) -> None:
        """Streamed files that fail to decode are found while training, by whichever rank reads them:
        gather every rank's (a collective: all ranks call this) and add them to data_problems.json."""
        r = self.run
        found = [p for ld in (r.loaders.train, r.loaders.val, r.loaders.test) for p in getattr(ld, "problems", ())]
        if gather:
            found = [p for rank_found in dist.all_gather_object(found) for p in rank_found]
        if found and r.dist.is_main:
            write_json(r.run_dir / "data_problems.json", list(dict.fromkeys(r.data.problems + found)))

    def fit(self) -> Optional[RunResult]:
        """Train; returns the result on rank 0 (None on other ranks of a distributed job)."""
        self.setup()
        r, cfg, splits = self.run, self.run.cfg, self.run.data.splits
        r.log(f"run '{r.run_dir}': {cfg.model.name} ({count_params(r.model):,} parameters) on "
              f"{r.data.name} {cfg.data.img_size}px x{cfg.data.in_chans}, "
              f"{len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])} train/val/test images, {r.device}")
        for cb in r.callbacks:
            cb.on_train_begin(self)
        for epoch in range(self.state.epoch, cfg.train.epochs):
            if cfg.train.early_stop and self.state.bad_epochs >= cfg.train.early_stop:
                r.log(f"early stop: no improvement in {cfg.train.early_stop} epochs")
                break
            train_row = self.train_epoch(epoch)
            row = self.end_epoch(epoch, train_row, self.validate())
            r.log(_format_row(row, cfg.train.epochs))
            for cb in r.callbacks:
                cb.on_epoch_end(self, row)
            if not math.isfinite(row["train_loss"]):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {row['train_loss']}); "
                                         "lower --lr or set --optim.grad_clip")
        dist.barrier()  # rank 0 has written the last checkpoints
        result = self.finish() if r.dist.is_main else None
        dist.barrier()
        dist.teardown()
        if result is not None:
            for cb in r.callbacks:
                cb.on_train_end(self, result)
        return result

    def finish(self) -> RunResult:
        """Evaluate the best weights on the test split and write the run's results."""
        from .checkpoint import load_model

        r, st = self.run, self.state
        model, card = load_model(r.run_dir, r.device)
        card = self.calibrate(model, card)
        meter, logits, labels = score_with_logits(model, r.loaders.test, len(r.data.classes), r.device,
                                                  tta=r.cfg.train.tta)  # fp32, as predict and serve
        metrics = meter.compute(r.data.classes)
        metrics.update(split="test", best_epoch=st.best_epoch, train_seconds=st.train_time,
                       compiled=compile_applied(r.step.net))  # train.compile asked for and in effect
        metrics["calibration"] = calibration_report(logits, labels, card.temperature)
        # per-group metrics ("groups", "worst_group_accuracy") when the test split has groups
        group_table = add_group_metrics(metrics, logits, labels, r.data.splits["test"].groups, r.data.classes,
                                        r.data.splits["train"].groups)
        runs.write_eval(r.run_dir, metrics, prefix="test")
        self._write_stream_problems(gather=False)  # rank 0 alone evaluates the test split
        r.log(format_report(metrics) + (f"\n\n{group_table}" if group_table else ""))
        r.log(f"test accuracy {metrics['accuracy']:.4f} (best epoch {st.best_epoch}); "
              f"training took {st.train_time:.1f}s; run folder: {r.run_dir}")
        return RunResult(r.run_dir, model, card, st.history, metrics, logits, r.data)

    def calibrate(self, model: nn.Module, card: ModelCard) -> ModelCard:
        """Fit the softmax temperature on the validation split and store it with the best weights."""
        r, d = self.run, self.run.cfg.data
        if self._best_val_logits is not None:  # from validating the best epoch (`validate`); not after a resume
            val_logits, val_labels = self._best_val_logits
        else:
            full_val = make_loader(r.data.splits["val"], r.loaders.eval_batch_size, r.device, d.mean, d.std,
                                   workers=d.workers)
            _, val_logits, val_labels = score_with_logits(model, full_val, len(r.data.classes), r.device,
                                                          tta=r.cfg.train.tta)  # fp32, as predict and serve
        card = card.replace(temperature=fit_temperature(val_logits, val_labels))
        save_weights(r.run_dir / "best.safetensors", model, card)
        return card


def _format_row(row: dict[str, Any], epochs: int) -> str:
    return (f"epoch {row['epoch']:>3}/{epochs}  loss {row['train_loss']:.4f}  acc {row['train_acc']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.4f}  val_f1 {row['val_macro_f1']:.4f}  "
            + (f"worst_group {row['val_worst_group_acc']:.4f}  " if "val_worst_group_acc" in row else "")
            + f"lr {row['lr']:.2e}  {row['images_per_s']:.0f} img/s")
