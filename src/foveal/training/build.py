"""The run builder: `build_run(cfg)` makes every part a training run needs, in the order they depend on
each other, and hands them back as one `Run`.

The Trainer's loop and the LR finder run the same parts. The order is part of the contract:
the device and process group come first, the data resolves the config's 'auto' fields, the run
folder is named from the resolved config, the model is seeded before it is built, the loaders
need the model (an 'auto' eval batch is sized by running it), and the optimizer, schedule and
step need all of these. The random draws made while building (the model's initialization,
the data-driven init, the eval batch probe) come in this fixed order, so a run repeats.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from .. import malloc
from ..batching import resolve_batch_size
from ..config import RunConfig
from ..data import Compose, DataBundle
from ..data.augment import MixBatch
from ..data.stream import make_loader  # DeviceLoader for data in memory, StreamLoader for large folders
from ..io import write_json
from ..models import create_model
from ..runtime import distributed as dist
from . import runs
from .callbacks import Callback
from ..runtime.device import resolve_channels_last, resolve_cpu_bf16, resolve_device, seed_everything, warn_slow_cpu_bf16
from .finetune import Finetuner, layer_decay_groups, load_for_finetune
from .losses import build_loss, inverse_frequency_weights
from .optim import Schedule, Shape, build_optimizer
from .prepare import init_from_data, prepare_data
from .step import StepHook, StepOptions, TrainStep, classify
from .tta import check_views

Log = Callable[[str], None]


@dataclass
class Loaders:
    """The splits' loaders (each rank its rows of the train and val batches; the test split whole) and
    the group names of the train and val splits (empty unless a group-aware option asks for them)."""

    train: object  # DeviceLoader or StreamLoader
    val: object
    test: object
    eval_batch_size: int
    group_names: list[str]  # train groups: group-balanced draws and Group DRO; batches are then (x, y, g)
    val_group_names: list[str]  # val groups: selecting the best epoch on the worst group


@dataclass
class Run:
    """Everything a training run needs, built by `build_run` from one config."""

    cfg: RunConfig  # fully resolved: data fields, channels_last, cpu_bf16, sync_bn
    device: torch.device
    dist: dist.DistInfo
    log: Log  # the caller's log on rank 0; silent on the other ranks
    run_dir: Path
    data: DataBundle
    model: nn.Module  # the unwrapped model (SyncBatchNorm converted when asked); `step` wraps it for DDP
    finetuner: Finetuner
    loaders: Loaders
    criterion: nn.Module
    mixer: MixBatch
    perturb: Optional[Callable]  # adversarial / corruption training (train.adv, train.corrupt_aug)
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    step: TrainStep
    callbacks: list[Callback]  # the caller's, then the experiment loggers on rank 0

    @property
    def ema(self):
        return self.step.ema

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


def build_run(cfg: RunConfig, data: Optional[DataBundle] = None, callbacks: tuple[Callback, ...] = (),
              log: Log = print) -> Run:
    """Resolve `cfg`, make the run folder (or find it, for `train.resume`) and build model, loaders, loss,
    optimizer, schedule and step. `data`: an already loaded bundle instead of `cfg.data`'s source."""
    check_views(cfg.train.tta)  # before any work: a typo must not cost a training run
    info, device = dist.setup(resolve_device(cfg.train.device), cfg.train.dist_timeout)
    if device.type == "cpu":  # training on the CPU: glibc keeps freed activations (foveal/malloc.py)
        malloc.keep_freed_memory()
    if not info.is_main:
        log = lambda msg: None  # noqa: E731  rank 0 speaks for the job
    warn_slow_cpu_bf16(device, cfg.train.cpu_bf16, log)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    run_dir = runs.find_run_dir(cfg) if cfg.train.resume else None
    bundle, cfg = prepare_data(cfg, data, log=log)
    cfg = _resolve_runtime(cfg, device, info)
    if run_dir is None:
        run_dir = dist.broadcast_object(runs.new_run_dir(cfg) if info.is_main else None)
    if info.is_main:
        runs.write_config(run_dir, cfg)
        if bundle.problems:
            write_json(run_dir / "data_problems.json", bundle.problems)
    model = _build_model(cfg, bundle, device, info, run_dir, log)
    finetuner = Finetuner(model, cfg.model)
    model.to(device)
    if cfg.train.sync_bn and info.enabled:  # before the optimizer: new modules, new parameters
        model = dist.convert_sync_batchnorm(model, device)
    group_names, group_ids = [], None  # train groups, for group-balanced draws and Group DRO
    if cfg.data.balance == "groups" or cfg.optim.loss == "group_dro":
        group_names, group_ids = bundle.splits["train"].group_index()
    criterion = _build_loss(cfg, bundle, device, len(group_names))
    loaders = _build_loaders(cfg, bundle, model, device, info, group_names, group_ids)
    mixer = MixBatch(cfg.data.mixup, cfg.data.cutmix, len(bundle.classes), cfg.train.seed)
    perturb = None
    if cfg.train.adv != "none" or cfg.train.corrupt_aug != "none":
        from ..robustness.training import Perturber

        perturb = Perturber(cfg.train, cfg.data.mean, cfg.data.std, lambda logits, y: criterion(logits, y))
    groups = layer_decay_groups(model, cfg.optim) if cfg.optim.layer_decay not in (None, 1.0) else None
    optimizer = build_optimizer(model, cfg.optim, groups)
    spe = len(loaders.train)
    schedule = Schedule(optimizer, Shape.from_config(cfg.optim, cfg.train.epochs * spe, spe))
    step = _build_step(cfg, model, optimizer, schedule, criterion, mixer, perturb, spe, device, info)
    cbs = list(callbacks)
    if info.is_main:  # train.logger: TensorBoard / MLflow callbacks, rank 0 only (see training/loggers.py)
        from .loggers import logger_callbacks

        cbs += logger_callbacks(cfg.train.logger)
    return Run(cfg, device, info, log, run_dir, bundle, model, finetuner, loaders, criterion, mixer, perturb,
               optimizer, schedule, step, cbs)


def _resolve_runtime(cfg: RunConfig, device: torch.device, info: dist.DistInfo) -> RunConfig:
    """The config with its device-dependent 'auto' settings decided: channels_last, cpu_bf16, sync_bn."""
    t = cfg.train
    nhwc = resolve_channels_last(t.channels_last, device, cfg.data.img_size)
    return dataclasses.replace(cfg, train=dataclasses.replace(
        t, channels_last=nhwc, cpu_bf16=resolve_cpu_bf16(t.cpu_bf16, device, nhwc),
        sync_bn=info.enabled if t.sync_bn is None else t.sync_bn))


def _build_model(cfg: RunConfig, data: DataBundle, device: torch.device, info: dist.DistInfo, run_dir: Path,
                 log: Log) -> nn.Module:
    """The model, seeded by `train.seed` alone, started from pretrained weights or from the data."""
    torch.manual_seed(cfg.train.seed)  # model init depends on the seed alone
    model = create_model(cfg.model.name, num_classes=len(data.classes), in_chans=cfg.data.in_chans,
                         img_size=cfg.data.img_size, drop_rate=cfg.model.drop_rate,
                         drop_path_rate=cfg.model.drop_path_rate)
    if cfg.model.pretrained and not cfg.train.resume:  # every key that does not fit is listed, and saved
        load_for_finetune(model, cfg.model.pretrained, run_dir if info.is_main else None, log)
    elif not cfg.train.resume:  # e.g. AirNet's patch whitening; the same sample on every rank
        init_from_data(model, data.splits["train"].images, cfg.data.mean, cfg.data.std)
    return model


def _build_loss(cfg: RunConfig, data: DataBundle, device: torch.device, num_groups: int) -> nn.Module:
    """The training criterion, with inverse-frequency class weights for `data.balance: weights`;
    `num_groups`: the train split's group count, for Group DRO."""
    weights = None
    if cfg.data.balance == "weights":
        weights = inverse_frequency_weights(data.splits["train"].labels, len(data.classes)).to(device)
    return build_loss(cfg.optim, weights, num_groups)


def _build_loaders(cfg: RunConfig, data: DataBundle, model: nn.Module, device: torch.device,
                   info: dist.DistInfo, group_names: list[str], group_ids: Optional[torch.Tensor]) -> Loaders:
    d, world = cfg.data, info.world
    if cfg.train.batch_size % world:
        raise ValueError(f"train.batch_size {cfg.train.batch_size} (the global batch) must divide by the "
                         f"{world} processes")
    common = dict(device=device, mean=d.mean, std=d.std, workers=d.workers, gpu_decode=d.gpu_decode)
    shard = dict(rank=info.rank, world=world)
    balanced = {"balanced": True} if d.balance == "sampler" else {}  # class-balanced draws with replacement
    if group_ids is not None:  # batches become (x, y, g)
        balanced = {"balanced": "groups" if d.balance == "groups" else bool(balanced), "groups": group_ids}
    train = make_loader(data.splits["train"], cfg.train.batch_size // world,
                        augment=Compose(d.augment, d, len(data.classes)), shuffle=True, drop_last=True,
                        seed=cfg.train.seed, **common, **shard, **balanced)
    val_groups, val_group_names = {}, []  # selecting on the worst val group needs the val split's group ids
    if cfg.train.best_metric == "worst_group_accuracy":
        if data.splits["val"].groups is None:
            raise ValueError("train.best_metric worst_group_accuracy needs groups in the val split: a CSV "
                             "manifest with a 'group' column, or a dataset that defines groups (colored-mnist)")
        val_group_names, ids = data.splits["val"].group_index()
        val_groups = {"groups": ids}
    # 'auto': sized by memory on the CPU (foveal.batching); the same on every rank (same model and shape)
    eval_bs = resolve_batch_size(cfg.train.eval_batch_size, model, (d.in_chans, d.img_size, d.img_size), device)
    return Loaders(train, make_loader(data.splits["val"], eval_bs, **common, **shard, **val_groups),
                   make_loader(data.splits["test"], eval_bs, **common), eval_bs, group_names, val_group_names)


def _build_step(cfg: RunConfig, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Schedule,
                criterion: nn.Module, mixer: MixBatch, perturb: Optional[Callable], steps_per_epoch: int,
                device: torch.device, info: dist.DistInfo) -> TrainStep:
    """The step with this run's hooks: the lr schedule, then mixup/cutmix, then the perturber."""
    hooks = [StepHook(before=schedule.set_step)]
    if mixer:
        hooks.append(StepHook(batch=lambda x, y, step: mixer(x, y)))  # soft targets (B, K)
    if perturb is not None:
        def perturb_batch(x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
            # in pixel space, on the unwrapped model (no DDP hooks); progress in epochs
            return perturb(model, x, y, step // steps_per_epoch + step % steps_per_epoch / steps_per_epoch), y

        hooks.append(StepHook(batch=perturb_batch))
    dro = cfg.optim.loss == "group_dro"  # group ids also come for group-balanced draws
    loss = criterion if dro else (lambda logits, y, *groups: criterion(logits, y))
    return TrainStep(model, optimizer, classify(loss), device, StepOptions.from_config(cfg), hooks, info)
