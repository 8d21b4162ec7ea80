"""What a training run hands to code that watches it: the `Callback` hooks and the `RunResult`.

Its own module so that callbacks (the experiment loggers, JTT) import these two names without
importing the Trainer, which imports them back (the trainer adds the loggers): no module cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..card import ModelCard
from ..data import DataBundle


class Callback:
    """Hooks at clear points of the loop; override what you need. `trainer` is the running `Trainer`."""

    def on_train_begin(self, trainer: Any) -> None: ...
    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> None: ...
    def on_train_end(self, trainer: Any, result: "RunResult") -> None: ...


@dataclass
class RunResult:
    """A finished run: its folder, the best model (loaded back), its model card, the epochs' rows and the test
    split's metrics and logits."""

    run_dir: Path
    model: nn.Module
    card: ModelCard
    history: list[dict[str, Any]]
    test_metrics: dict[str, Any]
    test_logits: Optional[torch.Tensor] = None
    data: Optional[DataBundle] = None
