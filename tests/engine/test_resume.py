"""A run killed with SIGKILL mid-epoch and resumed ends with the weights of an uninterrupted run: on digits in
memory, and streamed from shards (`foveal shard digits`)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from foveal.io import load_tensors

ARGS = ["train", "--model", "lenet5_modern", "--epochs", "5", "--batch-size", "16", "--device", "cpu",
        "--train.progress", "false", "--data.augment", "crop,rotate", "--model.drop_rate", "0.2", "--train.ema", "true",
        "--seed", "3"]


def _cmd(name: str, data: list[str]) -> list[str]:
    return [sys.executable, "-m", "foveal.cli.main", *ARGS, *data, "--name", name]


def _epochs_done(run: Path) -> int:
    f = run / "metrics.jsonl"
    return len(f.read_text().splitlines()) if f.exists() else 0


@pytest.mark.parametrize("source", ["digits", "shards-streamed"])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path, source):
    data: list[str] = []
    if source == "shards-streamed":
        subprocess.run([sys.executable, "-m", "foveal.cli.main", "shard", "digits", str(tmp_path / "shards")],
                       cwd=tmp_path, check=True, capture_output=True, timeout=300)
        data = ["--data", str(tmp_path / "shards"), "--data.in_memory", "false", "--img-size", "24", "--data.limit", "500"]
    subprocess.run(_cmd("full", data), cwd=tmp_path, check=True, capture_output=True, timeout=300)
    full = load_tensors(tmp_path / "runs/full/last.safetensors")[0]

    proc = subprocess.Popen(_cmd("killed", data), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "runs/killed"
    deadline = time.time() + 240
    ends = []  # when epochs 1 and 2 ended: this process's own pace, whatever the machine's load now
    for k in (1, 2):
        while _epochs_done(run) < k and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        ends.append(time.time())
    time.sleep((ends[1] - ends[0]) / 2)  # land inside the third epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = _epochs_done(run)
    assert 2 <= done < 5, f"the kill should land mid-training, after {done} epochs"
    assert not (run / "test.json").exists()

    subprocess.run([sys.executable, "-m", "foveal.cli.main", "train", "--resume", "--name", "killed",
                    "--train.progress", "false"], cwd=tmp_path, check=True, capture_output=True, timeout=300)
    resumed = load_tensors(run / "last.safetensors")[0]
    assert _epochs_done(run) == 5
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    hist_full = (tmp_path / "runs/full/metrics.jsonl").read_text().splitlines()
    hist_resumed = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["val_acc"] for r in hist_full] == [json.loads(r)["val_acc"] for r in hist_resumed]
