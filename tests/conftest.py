"""Shared fixtures: small generated data sets written as real image files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FOVEAL_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after the -ra list
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line at the end of every run, just above the counts: `skipped: 80 imagecorruptions (...) not
    installed, 5 need ../shared/data (absent)`. A green run that skipped the shared-data or reference
    cases says so where it is read (the -ra list of every skipped test scrolls away)."""
    try:
        return (yield)  # the terminal reporter's own summaries (failures, -ra) first
    finally:
        reasons = Counter(_skip_reason(rep) for rep in terminalreporter.stats.get("skipped", ()))
        if reasons:
            terminalreporter.write_line("skipped: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common()),
                                        yellow=True, bold=True)


def _skip_reason(report) -> str:
    """The reason of a skip report; every skip for want of the shared MNIST files is one reason."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    if "MNIST" in reason:  # the skipif reasons of the tests that read SHARED_DATA
        return f"need {SHARED_DATA} ({'present, without these files' if SHARED_DATA.is_dir() else 'absent'})"
    return reason.removeprefix("Skipped: ")


def digits_arrays():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * (255 / 16)).round().astype(np.uint8), d.target


def write_digit_folder(root: Path, per_class: int = 30, classes=(0, 1, 2), size: int = 24, fmt: str = "png") -> Path:
    """root/<class>/<i>.<fmt> from sklearn digits, upscaled to `size` px."""
    x, y = digits_arrays()
    for c in classes:
        d = root / str(c)
        d.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(x[y == c][:per_class]):
            Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR).save(d / f"{i}.{fmt}")
    return root


def run_cli(*args: str, cwd: Path, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    """`foveal ARGS` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "foveal.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"foveal {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) executables of Debian's chromium + chromium-driver, or None."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chrome(height: int = 3000, console_log: bool = False):
    """A headless Chromium WebDriver for the page tests (the caller quits it)."""
    from selenium import webdriver

    browser, driver_path = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size=1280,{height}"):
        opts.add_argument(flag)
    if console_log:
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_path))


@pytest.fixture
def digit_folder(tmp_path: Path) -> Path:
    return write_digit_folder(tmp_path / "digits3")


@pytest.fixture(scope="session")
def tta_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet-5 trained one epoch on digits with flip+shift TTA (its temperature fitted on TTA logits),
    its plain graph exported to RUN/export/model.onnx: what eval, predict, explain and serve share."""
    import torch

    from foveal.config import RunConfig, apply_overrides
    from foveal.training import Trainer
    from foveal.training.checkpoint import load_model
    from foveal.export.onnx_export import export_onnx

    torch.manual_seed(0)
    cfg = apply_overrides(RunConfig(), {"train.epochs": 1, "train.tta": "flip,shift", "train.name": "t",
                                        "train.out_dir": str(tmp_path_factory.mktemp("tta_run")),
                                        "train.device": "cpu", "train.progress": False})
    run = Trainer(cfg, log=lambda m: None).fit().run_dir
    model, card = load_model(run, "cpu")
    assert card.tta == ("flip", "shift") and card.temperature != 1.0
    export_onnx(model, card, run / "export" / "model.onnx")
    return run


@pytest.fixture
def autocast_calls(monkeypatch) -> list:
    """(device_type, dtype, enabled) of every torch.autocast entered during the test."""
    import torch

    calls, real = [], torch.autocast

    def spy(device_type, dtype=None, **kw):
        calls.append((device_type, dtype, kw.get("enabled", True)))
        return real(device_type, dtype=dtype, **kw)

    monkeypatch.setattr(torch, "autocast", spy)
    return calls
