"""The loader benchmark runs end to end on a tiny data set and reports consistent numbers."""

from __future__ import annotations

import pytest

from foveal.benchmarks.loader import run_loader_bench


@pytest.mark.slow
def test_loader_bench_tiny(tmp_path):
    r = run_loader_bench(small=256, photos=32, photo_size=(320, 240), batch_size=64, photo_batch=16, epochs=1,
                         workdir=str(tmp_path))
    for key in ("in_memory_32px", "stream_224px"):
        part = r[key]
        assert part["baseline_img_s"] > 0 and part["foveal_img_s"] > 0
        assert part["ratio"] == pytest.approx(part["foveal_img_s"] / part["baseline_img_s"], rel=0.02)
    assert r["in_memory_32px"]["images"] == 256 and r["stream_224px"]["images"] == 32
    assert list(tmp_path.iterdir()) == []  # generated images are removed
