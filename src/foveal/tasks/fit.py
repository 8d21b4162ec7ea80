"""The front door of training: `fit(cfg)` runs what a fully resolved config asks for.

`foveal train`, `foveal.fit` and `Classifier.fit` all enter here; the kinds of run are its
configurations: one `Trainer`, or Just Train Twice's two when `train.jtt_epochs` > 0. The run's
report page (report.html, curves.png) is added here, once, whatever the kind of run.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..config import RunConfig
from ..data import DataBundle
from ..training.callbacks import Callback, RunResult
from ..training.trainer import Trainer


def fit(cfg: RunConfig, data: Optional[DataBundle] = None, log: Callable[[str], None] = print,
        callbacks: tuple[Callback, ...] = ()) -> Optional[RunResult]:
    """Train as `cfg` says, on `data` when given (else the config's source), with `callbacks` watching the
    (last) training loop; the result on rank 0, None on other ranks of a distributed job."""
    if cfg.train.report:  # off for quick fits, e.g. each fold of a cross-validation
        from .reporting import RunReport

        callbacks = (RunReport(), *callbacks)  # first: the loggers' end hooks find the page written
    if cfg.train.jtt_epochs > 0:
        from ..training.jtt import fit_jtt

        return fit_jtt(cfg, data, log, callbacks)
    return Trainer(cfg, data=data, log=log, callbacks=callbacks).fit()
