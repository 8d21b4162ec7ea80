"""TensorBoard and MLflow loggers, read back with each package's own reader (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foveal.config import RunConfig, apply_overrides
from foveal import fit
from foveal.training.loggers import TB_TAGS, MLflowLogger, TensorBoardLogger, logger_callbacks


def _train(out: Path, logger: str, epochs: int = 1):
    cfg = apply_overrides(RunConfig(), {"train.epochs": epochs, "train.name": logger, "train.out_dir": str(out),
                                        "train.device": "cpu", "train.progress": False, "train.logger": logger})
    return fit(cfg, log=lambda m: None)  # the report page is written before the loggers' end hooks


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_logger_choice():
    pytest.importorskip("tensorboard")
    assert [type(cb) for cb in logger_callbacks("auto")] == [TensorBoardLogger]
    assert [type(cb) for cb in logger_callbacks("tensorboard")] == [TensorBoardLogger]
    assert [type(cb) for cb in logger_callbacks("mlflow")] == [MLflowLogger]
    assert logger_callbacks("none") == []


def test_tensorboard_event_files_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _train(tmp_path, "tensorboard", epochs=2)
    logdir = result.run_dir / "tensorboard"
    assert list(logdir.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    history = _history(result.run_dir)
    assert len(history) == 2
    for key, tag in TB_TAGS.items():
        if key not in history[0]:
            continue
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [row["epoch"] for row in history], tag
        assert [e.value for e in events] == pytest.approx([row[key] for row in history], rel=1e-6), tag
    test = json.loads((result.run_dir / "test.json").read_text())
    assert acc.Scalars("test/acc")[0].value == pytest.approx(test["accuracy"], rel=1e-6)
    assert {"test/confusion_matrix", "test/worst_errors"} <= set(acc.Tags()["images"])
    cm = acc.Images("test/confusion_matrix")[0]
    assert cm.width > 100 and cm.height > 100


def test_mlflow_run_in_a_local_file_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3.x refuses a file: store without it
    mlflow.set_tracking_uri(uri)
    try:
        result = _train(tmp_path / "runs", "mlflow")
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
        assert len(runs) == 1
        run = runs[0]
        assert run.info.status == "FINISHED" and run.info.run_name == "mlflow"
        history = _history(result.run_dir)
        assert run.data.params["optim.lr"] == str(RunConfig().optim.lr)
        assert run.data.params["train.logger"] == "mlflow"
        assert run.data.metrics["val_acc"] == pytest.approx(history[-1]["val_acc"])
        assert run.data.metrics["test_accuracy"] == pytest.approx(result.test_metrics["accuracy"])
        steps = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_loss")
        assert [(m.step, m.value) for m in steps] == [(r["epoch"], pytest.approx(r["train_loss"])) for r in history]
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        assert {"config.yaml", "metrics.jsonl", "test.json", "report.html", "best.safetensors"} <= artifacts
    finally:
        mlflow.set_tracking_uri("")
