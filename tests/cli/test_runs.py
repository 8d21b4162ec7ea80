"""`foveal runs` lists and compares real run folders: two 1-epoch digits runs that differ in lr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from foveal.cli.main import main
from foveal.training.runs import compare_runs, list_runs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    from foveal.config import RunConfig, apply_overrides
    from foveal.training import Trainer

    out = tmp_path_factory.mktemp("runs")
    for name, lr in (("slow", 0.001), ("fast", 0.01)):
        cfg = apply_overrides(RunConfig(), {"train.epochs": 1, "optim.lr": lr, "train.name": name,
                                            "train.out_dir": str(out), "train.device": "cpu",
                                            "train.progress": False, "train.logger": "none"})
        Trainer(cfg, log=lambda m: None).fit()
    (out / "not-a-run").mkdir()  # ignored: no config.yaml
    return out


def test_list_runs_reads_config_metrics_and_test(two_runs):
    rows = list_runs(two_runs)
    assert [r["name"] for r in rows] == ["slow", "fast"]  # oldest first
    for r in rows:
        history = [json.loads(s) for s in (two_runs / r["name"] / "metrics.jsonl").read_text().splitlines()]
        test = json.loads((two_runs / r["name"] / "test.json").read_text())
        assert (r["model"], r["data"], r["epochs"], r["epochs_planned"]) == ("lenet5", "digits", 1, 1)
        assert r["best_val_acc"] == max(h["val_acc"] for h in history)
        assert r["test_acc"] == test["accuracy"] and r["train_seconds"] == test["train_seconds"]
        assert r["finished"] and r["date"][:2] == "20"


def test_runs_table_and_json(two_runs, capsys):
    assert main(["runs", str(two_runs)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["run", "model", "data"] and "test acc" in out[0]
    assert [line.split()[0] for line in out[1:]] == ["slow", "fast"]
    assert all("lenet5" in line and "digits" in line for line in out[1:])
    assert main(["runs", str(two_runs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == list_runs(two_runs)


def test_compare_shows_config_differences_and_metrics(two_runs, capsys):
    a, b = two_runs / "slow", two_runs / "fast"
    cmp = compare_runs(a, b)
    assert cmp["config"]["optim.lr"] == [0.001, 0.01]
    assert cmp["config"]["train.name"] == ["slow", "fast"]
    assert "optim.name" not in cmp["config"] and "model.name" not in cmp["config"]  # equal keys are left out
    assert cmp["metrics"]["test_acc"] == [list_runs(two_runs)[0]["test_acc"], list_runs(two_runs)[1]["test_acc"]]
    assert "last_val_loss" in cmp["metrics"] and "last_lr" in cmp["metrics"]
    assert main(["runs", "--compare", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    line = next(s for s in text.splitlines() if s.strip().startswith("optim.lr"))
    assert line.split() == ["optim.lr", "0.001", "0.01"]
    assert "config differences" in text and "test_acc" in text


def test_clear_errors(two_runs, tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert "no runs folder" in capsys.readouterr().err
    assert main(["runs", "--compare", str(two_runs / "slow"), str(two_runs / "not-a-run")]) == 2
    assert "not a run folder" in capsys.readouterr().err
