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

from ..config import RunConfig, dump_yaml
from ..io import write_text

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
