"""Experiment loggers as trainer callbacks: TensorBoard event files and MLflow runs.

`train.logger` picks them ('auto': TensorBoard when the `tensorboard` package is importable,
as Lightning and Ultralytics do); the Trainer adds the callback on rank 0 only. Every epoch's
row of metrics.jsonl goes to the logger with the epoch number (1-based) as the step, so the
curves in TensorBoard / MLflow are the run folder's own numbers.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .callbacks import Callback, RunResult

# metrics.jsonl key -> TensorBoard tag
TB_TAGS = {"train_loss": "train/loss", "train_acc": "train/acc", "lr": "train/lr", "images_per_s": "train/images_per_s",
           "val_loss": "val/loss", "val_acc": "val/acc", "val_macro_f1": "val/macro_f1", "val_top5": "val/top5",
           "val_worst_group_acc": "val/worst_group_acc"}
# test.json key -> tag, logged once at the end with the best epoch as step
TEST_TAGS = {"accuracy": "test/acc", "macro_f1": "test/macro_f1", "loss": "test/loss", "top5": "test/top5"}
RUN_ARTIFACTS = ("config.yaml", "metrics.jsonl", "metrics.csv", "test.json", "test.csv", "test_confusion.csv",
                 "report.html", "curves.png", "best.safetensors")


def has_tensorboard() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def logger_callbacks(kind: str) -> list[Callback]:
    """The callbacks for `train.logger`: 'auto', 'none', 'tensorboard' or 'mlflow'."""
    if kind == "auto":
        return [TensorBoardLogger()] if has_tensorboard() else []
    if kind == "tensorboard":
        if not has_tensorboard():
            raise ImportError("train.logger 'tensorboard' needs the tensorboard package: pip install tensorboard "
                              "(or foveal[log]); or set --train.logger none")
        return [TensorBoardLogger()]
    if kind == "mlflow":
        if importlib.util.find_spec("mlflow") is None:
            raise ImportError("train.logger 'mlflow' needs mlflow: pip install mlflow-skinny (or foveal[log])")
        return [MLflowLogger()]
    if kind == "none":
        return []
    raise ValueError(f"train.logger: unknown logger {kind!r}; use auto, none, tensorboard or mlflow")


class TensorBoardLogger(Callback):
    """Scalars per epoch, then the test metrics, the confusion matrix and the most confident
    mistakes as images, into RUN/tensorboard/ (`tensorboard --logdir runs`)."""

    def __init__(self, worst_k: int = 16):
        self.worst_k = worst_k
        self.writer = None

    def on_train_begin(self, trainer: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(trainer.run.run_dir) / "tensorboard"))

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> None:
        for key, tag in TB_TAGS.items():
            if key in row:
                self.writer.add_scalar(tag, row[key], row["epoch"])
        self.writer.flush()  # a crash later keeps the epochs so far

    def on_train_end(self, trainer: Any, result: RunResult) -> None:
        m, step = result.test_metrics, max(result.test_metrics.get("best_epoch", 0), 0)
        for key, tag in TEST_TAGS.items():
            if isinstance(m.get(key), (int, float)):
                self.writer.add_scalar(tag, m[key], step)
        self._images(result, step)
        self.writer.close()

    def _images(self, result: RunResult, step: int) -> None:
        import io

        import numpy as np
        import torch
        from PIL import Image

        from ..report.plots import confusion_heatmap

        m = result.test_metrics
        png = confusion_heatmap(m["confusion_matrix"], m["classes"])
        self.writer.add_image("test/confusion_matrix", np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), step,
                              dataformats="HWC")
        worst = worst_errors(result, self.worst_k)
        if worst is not None and len(worst):
            if worst.shape[1] == 2:  # two-channel images (colored-mnist): TensorBoard takes 1 or 3, so add a zero third
                worst = torch.cat([worst, torch.zeros_like(worst[:, :1])], dim=1)
            self.writer.add_images("test/worst_errors", worst, step, dataformats="NCHW")


def worst_errors(result: RunResult, k: int):
    """(k, C, H, W) uint8 of the test split's most confident mistakes (None without logits or images)."""
    import torch

    test = result.data.splits.get("test") if result.data is not None else None
    if test is None or result.test_logits is None or len(result.test_logits) != len(test):
        return None  # streamed test files failed to decode: logits no longer line up with images
    conf, pred = torch.softmax(result.test_logits.float().cpu(), dim=1).max(1)
    wrong = (pred != test.labels.cpu()).nonzero().flatten()
    idx = wrong[conf[wrong].argsort(descending=True)][:k]
    return test.images.load(idx) if len(idx) else None  # decodes only these k when streamed


class MLflowLogger(Callback):
    """One MLflow run per training run at `mlflow.get_tracking_uri()`: the flattened config as
    params, every epoch's metrics with the epoch as step, the test metrics, and the run folder's
    report, metrics and best weights as artifacts."""

    def __init__(self, artifacts: tuple[str, ...] = RUN_ARTIFACTS):
        self.artifacts = artifacts
        self.run = None

    def on_train_begin(self, trainer: Any) -> None:
        import mlflow

        from ..config import to_dict
        from .runs import flatten

        left = mlflow.active_run()
        if left is not None and "foveal.run_dir" in mlflow.get_run(left.info.run_id).data.tags:  # ours, left
            # open by a training run that raised
            mlflow.end_run(status="FAILED")
        self.run = mlflow.start_run(run_name=Path(trainer.run.run_dir).name)
        params = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in flatten(to_dict(trainer.run.cfg)).items()}
        mlflow.log_params(params)
        mlflow.set_tag("foveal.run_dir", str(Path(trainer.run.run_dir).resolve()))

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))},
                           step=row["epoch"])

    def on_train_end(self, trainer: Any, result: RunResult) -> None:
        import mlflow

        m = result.test_metrics
        mlflow.log_metrics({f"test_{k}": float(m[k]) for k in ("accuracy", "macro_f1", "loss", "top5", "train_seconds")
                            if isinstance(m.get(k), (int, float))})
        for name in self.artifacts:
            if (Path(result.run_dir) / name).is_file():
                mlflow.log_artifact(str(Path(result.run_dir) / name))
        mlflow.end_run()


__all__ = ["TensorBoardLogger", "MLflowLogger", "logger_callbacks", "has_tensorboard", "worst_errors"]
