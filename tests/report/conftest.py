"""A short digits run shared by the report tests (trained once per session, in-process:
the same `fit` that `foveal train` calls, which writes the report page)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    from foveal.config import RunConfig, apply_overrides
    from foveal import fit

    root = tmp_path_factory.mktemp("report_run")
    cfg = apply_overrides(RunConfig(), {
        "data.source": "digits", "train.epochs": 2, "train.name": "digits", "train.out_dir": str(root / "runs"),
        "train.device": "cpu", "train.progress": False, "data.limit": 600,
    })
    result = fit(cfg, log=lambda msg: None)
    return result.run_dir

