"""Run folders: one per run, holding config, metrics, weights, plots and the report."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunConfig, dump_yaml, load_config
from ..io import write_json, write_text

RUN_MARKER = ".foveal-run"  # empty file whose atomic creation claims a run folder for one job


def default_name(cfg: RunConfig) -> str:
    src = Path(cfg.data.source).stem if cfg.data.source else "data"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{src}-{cfg.model.name.replace('/', '-')}")


def new_run_dir(cfg: RunConfig) -> Path:
    """runs/<name>, or runs/<name>-2, -3... so an existing run is never overwritten.

    The folder is claimed atomically (see `_claim`), so jobs started at the same moment with
    the same config each get their own folder instead of writing into one.
    """
    base = Path(cfg.train.out_dir) / (cfg.train.name or default_name(cfg))
    path, k = base, 2
    while not _claim(path):
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    return path


def _claim(path: Path) -> bool:
    """Make `path` this job's run folder; False when it is taken (or is not a folder).

    Creating RUN_MARKER with O_CREAT | O_EXCL is the claim: the OS lets exactly one caller
    create it. An existing folder is claimed only while empty (e.g. made by a user beforehand),
    and a folder this call just made is claimed the same way, since another job may see it
    empty before our marker lands.
    """
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        try:
            if not path.is_dir() or any(path.iterdir()):
                return False  # an earlier run, a user's files, or a file of that name
        except OSError:  # removed or unreadable since: not ours to use
            return False
    try:
        os.close(os.open(path / RUN_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        return False  # another job marked it first
    return True


def find_run_dir(cfg: RunConfig) -> Path:
    """The folder to resume: train.name under out_dir (or a path given as the name)."""
    if not cfg.train.name:
        raise ValueError("--resume needs the run's name: foveal train --resume --name NAME (or a run folder path)")
    for path in (Path(cfg.train.name), Path(cfg.train.out_dir) / cfg.train.name):
        if (path / "resume.safetensors").is_file():
            return path
    raise FileNotFoundError(f"no resumable run '{cfg.train.name}' (looked for resume.safetensors in "
                            f"'{cfg.train.name}' and '{Path(cfg.train.out_dir) / cfg.train.name}')")


# What makes a run the run it is: resuming with another value would load its weights into another model or
# continue on other data, so an override that changes one is refused rather than silently applied.
_RUN_IDENTITY = ("model.name", "data.source")


def load_run_config(recipe: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """The config of a run: the recipe with the overrides; with `train.resume`, the run's saved
    config.yaml with the overrides instead, so a resumed run keeps every setting it started with and
    changes only what is given again (more epochs, say). The one resume rule, for `foveal train
    --resume` and `Classifier(resume=True)` alike."""
    if str(overrides.get("train.resume", "")).lower() != "true":
        return load_config(recipe, overrides)
    run_dir = find_run_dir(load_config(recipe, overrides))
    saved = load_config(run_dir / "config.yaml")
    for path in _RUN_IDENTITY:
        section, leaf = path.split(".")
        was = getattr(getattr(saved, section), leaf)
        if path in overrides and str(overrides[path]) != str(was):
            raise ConfigError(f"resuming '{run_dir}': {path} is '{was}' in that run, not '{overrides[path]}'; "
                              "drop the setting or start a new run (another train.name)")
    keep = {**overrides, "train.name": run_dir.name, "train.out_dir": str(run_dir.parent)}
    return load_config(run_dir / "config.yaml", keep)


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    write_text(run_dir / "config.yaml", dump_yaml(cfg))


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """metrics.csv and metrics.jsonl, rewritten whole (atomically) from the loop's history."""
    if not history:
        return
    write_text(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for row in history for k in row))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(history)
    write_text(run_dir / "metrics.csv", buf.getvalue())


def write_eval(run_dir: Path, metrics: dict[str, Any], prefix: str = "eval") -> None:
    """<prefix>.json (all metrics), <prefix>.csv (per class) and <prefix>_confusion.csv: the test split's
    at the end of training (prefix 'test'), `foveal eval`'s (prefix 'eval')."""
    write_json(run_dir / f"{prefix}.json", metrics)
    rows = ["class,precision,recall,f1,support"]
    rows += [f"{c},{r['precision']:.6f},{r['recall']:.6f},{r['f1']:.6f},{r['support']}"
             for c, r in metrics["per_class"].items()]
    for avg in ("macro", "weighted"):
        rows.append(f"{avg} avg,{metrics[avg + '_precision']:.6f},{metrics[avg + '_recall']:.6f},"
                    f"{metrics[avg + '_f1']:.6f},{metrics['support']}")
    write_text(run_dir / f"{prefix}.csv", "\n".join(rows) + "\n")
    cm = metrics["confusion_matrix"]
    lines = ["true\\pred," + ",".join(metrics["classes"])]
    lines += [f"{c}," + ",".join(map(str, r)) for c, r in zip(metrics["classes"], cm)]
    write_text(run_dir / f"{prefix}_confusion.csv", "\n".join(lines) + "\n")


# ---- reading run folders back: `foveal runs` and `foveal runs --compare` ----------------------
def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 0.1}} -> {'optim.lr': 0.1}: nested dicts as dotted keys, other values as they are."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or half-written by a run still going
        return None


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch rows of metrics.jsonl ([] when the run has finished no epoch yet)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    return [row for row in map(_read_json_line, lines) if row is not None]


def _read_json_line(line: str) -> Any:
    try:
        return json.loads(line) if line.strip() else None
    except ValueError:
        return None


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """One run folder in a line: name, model, data, epochs done/planned, best val acc, test acc,
    training seconds and the date the run started (its folder claim), from config.yaml,
    metrics.jsonl and test.json; None where a file is missing (a run still going, or killed)."""
    import yaml

    run_dir = Path(run_dir)
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"'{run_dir}' is not a run folder: cannot read config.yaml ({e})") from None
    history = read_history(run_dir)
    test = _read_json(run_dir / "test.json") or {}
    val = [row["val_acc"] for row in history if "val_acc" in row]
    return {"name": run_dir.name, "path": str(run_dir), "model": cfg.get("model", {}).get("name"),
            "data": cfg.get("data", {}).get("source"), "epochs": len(history),
            "epochs_planned": cfg.get("train", {}).get("epochs"), "best_val_acc": max(val) if val else None,
            "test_acc": test.get("accuracy"),
            "train_seconds": test.get("train_seconds", sum(row.get("train_seconds", 0.0) for row in history)),
            "date": datetime.fromtimestamp(_started(run_dir)).isoformat(timespec="seconds"),
            "finished": bool(test)}


def list_runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """`run_summary` of every run folder (a folder holding config.yaml) right under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no runs folder '{root}' (train a model first, or pass the folder: foveal runs DIR)")
    found = sorted((p for p in root.iterdir() if (p / "config.yaml").is_file()), key=lambda p: (_started(p), p.name))
    return [run_summary(p) for p in found]


def _started(run_dir: Path) -> float:
    """When the run claimed its folder (RUN_MARKER's mtime; config.yaml's for older runs), in epoch seconds."""
    return next((p for p in (run_dir / RUN_MARKER, run_dir / "config.yaml") if p.exists()), run_dir).stat().st_mtime


def compare_runs(a: str | Path, b: str | Path) -> dict[str, Any]:
    """Two runs side by side: the config keys (dotted) whose values differ, and their summary
    metrics and final-epoch metrics, each as {key: [value in a, value in b]}."""
    import yaml

    runs = [Path(a), Path(b)]
    summaries = [run_summary(p) for p in runs]  # raises for a folder that is not a run
    configs = [flatten(yaml.safe_load((p / "config.yaml").read_text()) or {}) for p in runs]
    keys = list(dict.fromkeys([*configs[0], *configs[1]]))
    config = {k: [configs[0].get(k), configs[1].get(k)] for k in keys if configs[0].get(k) != configs[1].get(k)}
    last = [(read_history(p) or [{}])[-1] for p in runs]
    metrics = {k: [s.get(k) for s in summaries] for k in ("epochs", "best_val_acc", "test_acc", "train_seconds")}
    tests = [_read_json(p / "test.json") or {} for p in runs]
    for k in ("macro_f1", "loss"):
        if any(k in t for t in tests):
            metrics[f"test_{k}"] = [t.get(k) for t in tests]
    for k in dict.fromkeys([*last[0], *last[1]]):
        if k != "epoch":
            metrics[f"last_{k}"] = [row.get(k) for row in last]
    return {"runs": [s["path"] for s in summaries], "names": [s["name"] for s in summaries], "config": config,
            "metrics": metrics}
