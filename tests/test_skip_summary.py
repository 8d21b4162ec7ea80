"""`make test` ends with one line naming what it skipped and why (tests/conftest.py), so a green run
that skipped the shared-data or reference cases says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_run_ends_with_the_skips_grouped_by_reason(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_terminal_summary  # noqa: F401\n")
    (tmp_path / "test_some.py").write_text(
        "import pytest\n"
        "@pytest.mark.skipif(True, reason='needs the MNIST files')\n"
        "def test_a(): pass\n"
        "@pytest.mark.skipif(True, reason='shared MNIST files not present')\n"
        "def test_b(): pass\n"
        "@pytest.mark.parametrize('k', range(3))\n"
        "def test_c(k): pytest.skip('imagecorruptions (and its cv2/skimage) not installed')\n"
        "def test_d(): pass\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "FOVEAL_SHARED_DATA": str(tmp_path / "absent")}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120).stdout
    lines = out.strip().splitlines()
    assert lines[-2] == (f"skipped: 3 imagecorruptions (and its cv2/skimage) not installed, "
                         f"2 need {tmp_path / 'absent'} (absent)"), out
    assert "1 passed, 5 skipped" in lines[-1]
