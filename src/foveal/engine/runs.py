"""Run folders: one per run, holding config, metrics, weights, plots and the report."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import RunConfig, dump_yaml
from ..io import write_text


def default_name(cfg: RunConfig) -> str:
    src = Path(cfg.data.source).stem if cfg.data.source else "data"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{src}-{cfg.model.name.replace('/', '-')}")


def new_run_dir(cfg: RunConfig) -> Path:
    """runs/<name>, or runs/<name>-2, -3... so an existing run is never overwritten."""
    base = Path(cfg.train.out_dir) / (cfg.train.name or default_name(cfg))
    path, k = base, 2
    while path.exists() and any(path.iterdir()):
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


def find_run_dir(cfg: RunConfig) -> Path:
    """The folder to resume: train.name under out_dir (or a path given as the name)."""
    if not cfg.train.name:
        raise ValueError("--resume needs the run's name: foveal train --resume --name NAME (or a run folder path)")
    for path in (Path(cfg.train.name), Path(cfg.train.out_dir) / cfg.train.name):
        if (path / "resume.safetensors").is_file():
            return path
    raise FileNotFoundError(f"no resumable run '{cfg.train.name}' (looked for resume.safetensors in "
                            f"'{cfg.train.name}' and '{Path(cfg.train.out_dir) / cfg.train.name}')")


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


def timestamp() -> str:
    return datetime.now().isoformat(timespec="seconds")
