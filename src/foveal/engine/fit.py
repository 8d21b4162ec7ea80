"""The front door of training: `fit(cfg)` runs what a fully resolved config asks for.

`foveal train`, `foveal.fit` and `Classifier.fit` all enter here; the kinds of run are its
configurations: one `Trainer`, or Just Train Twice's two when `train.jtt_epochs` > 0.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..config import RunConfig
from ..data import DataBundle
from .callbacks import RunResult
from .trainer import Trainer


def fit(cfg: RunConfig, data: Optional[DataBundle] = None, log: Callable[[str], None] = print) -> Optional[RunResult]:
    """Train as `cfg` says, on `data` when given (else the config's source); the result on rank 0, None on other
    ranks of a distributed job."""
    if cfg.train.jtt_epochs > 0:
        from .jtt import fit_jtt

        return fit_jtt(cfg, data, log)
    return Trainer(cfg, data=data, log=log).fit()
