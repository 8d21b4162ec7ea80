"""The generated photos of `foveal bench cpu-e2e`: photo-like pixel statistics, a fixed split for both tools."""

from pathlib import Path

import numpy as np
from PIL import Image

from foveal.benchmarks.cpu_e2e import split_photo_folder, write_photo_folder


def test_generated_photos_have_photo_like_statistics(tmp_path: Path):
    root = write_photo_folder(tmp_path / "photos", n=8, seed=3)
    files = sorted(root.rglob("*.jpg"))
    assert [f.parent.name for f in files].count("class_0") == 4 and len(files) == 8
    for f in files:
        im = Image.open(f)
        assert im.mode == "RGB" and all(300 <= s <= 500 for s in im.size)
        a = np.asarray(im, dtype=np.float32) / 255
        # Natural photos: pixel std ~0.2-0.35 and detail at every scale (sklearn's two sample photos: mean
        # absolute difference of neighbouring pixels 0.013 and 0.057). The first generator's blurred colour
        # fields had std ~0.15 and 0.003: batch-norm statistics from ImageNet then did not fit them.
        assert 0.12 < a.std() < 0.4, f.name
        assert np.abs(np.diff(a, axis=1)).mean() > 0.008, f.name


def test_split_is_the_same_for_both_tools(tmp_path: Path):
    root = write_photo_folder(tmp_path / "photos", n=20, seed=0)
    a = split_photo_folder(root, tmp_path / "a")
    b = split_photo_folder(root, tmp_path / "b")
    names = {d: sorted(str(p.relative_to(d)) for p in d.rglob("*.jpg")) for d in (a, b)}
    assert names[a] == names[b] and len(names[a]) == 20
    assert sum(1 for n in names[a] if n.startswith("train/")) == 14  # 70/10/20 per class of 10
    assert sum(1 for n in names[a] if n.startswith("test/")) == 4


def test_unknown_part_is_refused_before_any_work(tmp_path: Path, capsys):
    from foveal.cli.main import main

    assert main(["bench", "cpu-e2e", "--parts", "train,bogus", "--work", str(tmp_path / "w")]) != 0
    assert "--parts bogus: expected malloc, train, robust or peer" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # no photos generated


def test_time_command_reports_child_cpu_and_kills_at_its_timeout():
    import sys
    import time

    import pytest

    from foveal.benchmarks.cpu_e2e import time_command

    spin = [sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"]
    r = time_command(spin)
    assert r["user_s"] + r["sys_s"] >= 0.25 and r["wall_s"] >= r["user_s"] * 0.5  # the child's own CPU time
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match="still ran after 0.5 s"):
        time_command([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert time.perf_counter() - t0 < 10
    with pytest.raises(RuntimeError, match="exited 3"):
        time_command([sys.executable, "-c", "raise SystemExit(3)"])
