"""Just Train Twice (Liu et al. 2021): bias mitigation without group labels in training.

Stage 1 trains an ordinary (ERM) model for a few epochs; the training images it gets wrong are
mostly those where the shortcut fails (the minority groups). Stage 2 trains a fresh model from
scratch on the training split with those errors repeated `upweight` times (JTT's upsampling).
Neither stage reads `Split.groups`; groups are only used to evaluate, as in the paper.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import torch

from ..config import ConfigError, RunConfig
from ..data import DataBundle
from ..data.splits import concat
from ..data.stream import make_loader
from ..runtime.distributed import env_info
from .callbacks import Callback, RunResult
from .scoring import score_with_logits
from .trainer import Trainer


def upsample_errors(result: RunResult, upweight: int, batch_size: int | str = "auto") -> tuple[DataBundle, int]:
    """The stage-1 run's data with its training errors repeated `upweight` times in 'train'
    (val and test unchanged); and the number of errors found. batch_size 'auto': sized by memory."""
    from ..batching import resolve_batch_size

    data, pre = result.data, result.card.preprocessing
    train = data.splits["train"]
    device = next(result.model.parameters()).device
    batch_size = resolve_batch_size(batch_size, result.model, tuple(train.images.shape[1:]), device)
    loader = make_loader(train, batch_size, device, pre.mean, pre.std)  # unshuffled: rows in split order
    _, logits, labels = score_with_logits(result.model, loader, len(data.classes), device)
    if len(labels) != len(train):
        raise ValueError(f"JTT: {len(train) - len(labels)} training images could not be decoded; fix or remove them")
    wrong = (logits.argmax(1) != labels).nonzero().flatten()  # (E,) rows of the training errors
    up = train
    if len(wrong) and upweight > 1:
        up = concat(train, train.subset(wrong.repeat(upweight - 1)))
    return DataBundle(data.name, data.classes, {**data.splits, "train": up}, data.problems), len(wrong)


def fit_jtt(cfg: RunConfig, data: Optional[DataBundle] = None, log: Callable[[str], None] = print,
            callbacks: tuple[Callback, ...] = ()) -> RunResult:
    """Train twice: `train.jtt_epochs` of ERM to find the errors, then `cfg` on the upsampled split.

    Both stages use `cfg` (the first with `train.epochs = jtt_epochs`, no report); the second
    keeps the first's normalization, so the repeated images do not shift the mean/std.
    """
    t = cfg.train
    if t.devices > 1 or env_info().enabled:  # under torchrun, as the pretrainer checks it
        raise ConfigError("train.jtt_epochs: Just Train Twice runs in one process (train.devices 1); its error "
                          "set is found on the whole train split at once")
    first = dataclasses.replace(cfg, train=dataclasses.replace(t, epochs=t.jtt_epochs, report=False, jtt_epochs=0,
                                                               best_metric="last", early_stop=None,
                                                               name=f"{t.name or 'run'}-jtt-id"))
    stage1 = Trainer(first, data=data, log=log).fit()
    bundle, n_wrong = upsample_errors(stage1, t.jtt_upweight, t.eval_batch_size)
    log(f"JTT: {n_wrong} of {len(stage1.data.splits['train'])} training images misclassified after {t.jtt_epochs} "
        f"epochs; repeated {t.jtt_upweight}x for the second model")
    pre = stage1.card.preprocessing
    # limit / exclude / relabel were applied in stage 1, by position: not again on the upsampled split
    data_cfg = dataclasses.replace(cfg.data, mean=list(pre.mean), std=list(pre.std), limit=None, exclude=None,
                                   relabel=None)
    second = dataclasses.replace(cfg, data=data_cfg, train=dataclasses.replace(t, jtt_epochs=0))
    torch.manual_seed(t.seed)
    return Trainer(second, data=bundle, log=log, callbacks=callbacks).fit()  # the callbacks watch the model kept

