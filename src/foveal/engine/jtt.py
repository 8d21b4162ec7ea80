"""Just Train Twice (Liu et al. 2021): bias mitigation without group labels in training.

Stage 1 trains an ordinary (ERM) model for a few epochs; the training images it gets wrong are
mostly those where the shortcut fails (the minority groups). Stage 2 trains a fresh model from
scratch on the training split with those errors repeated `upweight` times (JTT's upsampling).
Neither stage reads `Split.groups`; groups are only used to evaluate, as in the paper.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from ..config import RunConfig
from ..data import DataBundle
from ..data.splits import concat
from ..data.stream import make_loader
from .evaluate import evaluate
from .trainer import RunResult, Trainer


def upsample_errors(result: RunResult, upweight: int, batch_size: int | str = "auto") -> tuple[DataBundle, int]:
    """The stage-1 run's data with its training errors repeated `upweight` times in 'train'
    (val and test unchanged); and the number of errors found. batch_size 'auto': sized by memory."""
    from ..batching import resolve_batch_size

    data, meta = result.data, result.meta
    train = data.splits["train"]
    device = next(result.model.parameters()).device
    batch_size = resolve_batch_size(batch_size, result.model, tuple(train.images.shape[1:]), device)
    loader = make_loader(train, batch_size, device, meta["mean"], meta["std"])  # unshuffled: rows in split order
    _, logits, labels = evaluate(result.model, loader, len(data.classes), device, keep_logits=True)
    if len(labels) != len(train):
        raise ValueError(f"JTT: {len(train) - len(labels)} training images could not be decoded; fix or remove them")
    wrong = (logits.argmax(1) != labels).nonzero().flatten()  # (E,) rows of the training errors
    up = train
    if len(wrong) and upweight > 1:
        up = concat(train, train.subset(wrong.repeat(upweight - 1)))
    return DataBundle(data.name, data.classes, {**data.splits, "train": up}, data.problems), len(wrong)


def fit_jtt(cfg: RunConfig, id_epochs: int = 2, upweight: int = 6,
            log: Callable[[str], None] = print) -> RunResult:
    """Train twice: `id_epochs` of ERM to find the errors, then `cfg` on the upsampled split.

    Both stages use `cfg` (the first with `train.epochs = id_epochs`, no report); the second
    keeps the first's normalization, so the repeated images do not shift the mean/std.
    """
    t = cfg.train
    first = dataclasses.replace(cfg, train=dataclasses.replace(t, epochs=id_epochs, report=False,
                                                               name=f"{t.name or 'run'}-jtt-id"))
    stage1 = Trainer(first, log=log).fit()
    bundle, n_wrong = upsample_errors(stage1, upweight, t.eval_batch_size)
    log(f"JTT: {n_wrong} of {len(stage1.data.splits['train'])} training images misclassified after {id_epochs} "
        f"epochs; repeated {upweight}x for the second model")
    d = stage1.meta
    # limit / exclude / relabel were applied in stage 1, by position: not again on the upsampled split
    data = dataclasses.replace(cfg.data, mean=list(d["mean"]), std=list(d["std"]), limit=None, exclude=None,
                               relabel=None)
    second = dataclasses.replace(cfg, data=data)
    torch.manual_seed(t.seed)
    return Trainer(second, data=bundle, log=log).fit()
