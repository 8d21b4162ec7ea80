"""glibc malloc keeps freed memory in CPU `foveal` commands and the Trainer, never on CUDA/MPS, never for a
library user who did not ask, and not with FOVEAL_MALLOC=default (foveal/malloc.py, issue 23)."""

import os
import platform
import subprocess
import sys

import pytest

from tests.conftest import REPO

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def state_after(code: str, cwd=REPO, **env: str) -> str:
    """malloc.state() printed by a fresh interpreter after `code` (the settings are per process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("FOVEAL_MALLOC", "LD_PRELOAD")} | env
    proc = subprocess.run([sys.executable, "-c", f"from foveal import malloc\n{code}\nprint(malloc.state())"],
                          cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("code,expect", [
    ("malloc.allow_for_process(); malloc.on_device('cpu')", "kept"),  # a CPU command
    ("malloc.allow_for_process(); malloc.on_device('cuda')", "None"),  # a GPU command: glibc untouched
    ("malloc.allow_for_process(); malloc.on_device('mps')", "None"),
    ("malloc.on_device('cpu')", "None"),  # a library user who did not ask
    ("from foveal.runtime.device import resolve_device; resolve_device('cpu')", "None"),
    ("from foveal.runtime.device import resolve_device; malloc.allow_for_process(); resolve_device('cpu')", "kept"),
])
def test_settings_apply_to_cpu_commands_only(code, expect):
    if expect == "kept" and not GLIBC:
        expect = "unsupported"
    assert state_after(code).startswith(expect)


def test_switches():
    assert state_after("malloc.keep_freed_memory()", FOVEAL_MALLOC="default") == "off (FOVEAL_MALLOC=default)"
    assert state_after("malloc.keep_freed_memory()", LD_PRELOAD="").startswith("kept" if GLIBC else "unsupported")
    bad = subprocess.run([sys.executable, "-c", "from foveal import malloc; malloc.keep_freed_memory()"], cwd=REPO,
                         capture_output=True, text=True, env={**os.environ, "FOVEAL_MALLOC": "jemalloc"})
    assert bad.returncode != 0 and "FOVEAL_MALLOC='jemalloc'" in bad.stderr


def test_trainer_on_cpu_keeps_freed_memory(tmp_path):
    code = ("from foveal.config import RunConfig, apply_overrides\nfrom foveal.training import Trainer\n"
            "cfg = apply_overrides(RunConfig(), {'train.device': 'cpu', 'train.epochs': 1})\n"
            "Trainer(cfg, log=lambda m: None).setup()")
    assert state_after(code, cwd=tmp_path).startswith("kept" if GLIBC else "unsupported")
