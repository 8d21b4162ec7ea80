"""Run folders: jobs started together with the same config never share a folder, and an
existing run is never written into, while an empty folder made beforehand is still used."""

from __future__ import annotations

import threading
from pathlib import Path

from foveal.config import RunConfig, TrainConfig
from foveal.training.runs import RUN_MARKER, new_run_dir


def _cfg(out: Path, name: str = "exp") -> RunConfig:
    return RunConfig(train=TrainConfig(out_dir=str(out), name=name))


def _claim_together(cfg: RunConfig, n: int) -> list[Path]:
    """new_run_dir from n threads released at the same instant."""
    barrier, out, errors = threading.Barrier(n), [], []

    def job() -> None:
        barrier.wait()
        try:
            out.append(new_run_dir(cfg))
        except Exception as e:  # reported below: a crash must fail the test, not vanish in a thread
            errors.append(e)

    threads = [threading.Thread(target=job) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return out


def test_jobs_started_together_get_distinct_folders(tmp_path: Path):
    for round_ in range(5):  # repeated: a race shows up only some of the time
        cfg = _cfg(tmp_path / f"runs{round_}")
        dirs = _claim_together(cfg, 16)
        assert len(dirs) == 16 and len(set(dirs)) == 16, sorted(map(str, dirs))
        names = {d.name for d in dirs}
        assert names == {"exp"} | {f"exp-{k}" for k in range(2, 17)}
        assert all(d.is_dir() and (d / RUN_MARKER).is_file() for d in dirs)


def test_an_existing_empty_folder_goes_to_exactly_one_job(tmp_path: Path):
    for round_ in range(5):
        (tmp_path / f"runs{round_}" / "exp").mkdir(parents=True)  # made by a user beforehand
        dirs = _claim_together(_cfg(tmp_path / f"runs{round_}"), 8)
        assert len(set(dirs)) == 8 and tmp_path / f"runs{round_}" / "exp" in dirs


def test_existing_run_is_skipped_and_empty_folder_reused(tmp_path: Path):
    runs = tmp_path / "runs"
    (runs / "exp").mkdir(parents=True)
    (runs / "exp" / "config.yaml").write_text("old run\n")
    (runs / "exp-2").mkdir()
    assert new_run_dir(_cfg(runs)) == runs / "exp-2"  # empty: reused
    assert new_run_dir(_cfg(runs)) == runs / "exp-3"  # exp-2 is claimed now, though still empty of results
    assert (runs / "exp" / "config.yaml").read_text() == "old run\n"
    (runs / "exp-4").write_text("a file, not a folder")
    assert new_run_dir(_cfg(runs)) == runs / "exp-5"
