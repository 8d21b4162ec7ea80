"""`foveal --help`, `--version`, per-command help and argument errors answer before torch is imported
(issue 23: they took 2.2-2.4 s; the measured times are in BENCHMARKS.md, "CPU: start-up")."""

import subprocess
import sys

import pytest

from tests.conftest import REPO


def imported_modules(*args: str) -> tuple[int, set[str]]:
    """Exit code of `python -X importtime -m foveal.cli.main ARGS` and the modules it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "foveal.cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    mods = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return proc.returncode, mods


@pytest.mark.parametrize("args,code", [(("--help",), 0), (("--version",), 0), (("train", "--help"), 0),
                                       (("robust", "--help"), 0), (("explain", "--help"), 0),
                                       (("train", "--no-such-flag"), 2), (("explain", "r", "x", "--method", "nope"), 2),
                                       (("no-such-command",), 2)])
def test_parse_time_answers_do_not_import_torch(args, code):
    rc, mods = imported_modules(*args)
    assert rc == code
    assert "foveal.cli.main" in mods or "foveal.cli" in mods  # the parser ran in this process
    heavy = {m for m in mods if m.split(".")[0] in ("torch", "torchvision", "timm", "numpy", "matplotlib")}
    assert not heavy, f"foveal {' '.join(args)} imported {sorted(heavy)[:5]} before answering"


def test_explain_method_names_match_the_registry():
    from foveal.cli.report_cmds import EXPLAIN_METHODS
    from foveal.explain import EXPLAINERS

    assert sorted(EXPLAIN_METHODS) == sorted(EXPLAINERS.names())
