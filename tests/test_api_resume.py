"""`Classifier(..., resume=True)` continues a run with the config it was started with, as
`foveal train --resume` does: the library owns the resume rule (training.runs.load_run_config)."""

from __future__ import annotations

import json

import pytest

from foveal import Classifier
from foveal.config import ConfigError, load_config

# Settings the resumed Classifier is NOT given again: each must come back from the saved config.yaml.
STARTED_WITH = {"lr": 0.03, "batch_size": 32, "seed": 5, "optim.momentum": 0.8, "data.limit": 300}


@pytest.fixture(scope="module")
def first_epoch(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    clf = Classifier("lenet5_modern", epochs=1, device="cpu", out_dir=str(out), name="r", report=False,
                     verbose=False, **STARTED_WITH).fit("digits")
    return out, clf.run_dir_


def test_resume_takes_the_saved_config(first_epoch):
    out, run = first_epoch
    cfg = Classifier("lenet5_modern", epochs=2, out_dir=str(out), name="r", resume=True).config("digits")
    assert (cfg.optim.lr, cfg.train.batch_size, cfg.train.seed, cfg.optim.momentum, cfg.data.limit) == \
        (0.03, 32, 5, 0.8, 300)  # not the defaults
    assert cfg.train.epochs == 2 and cfg.train.resume  # what is given again still overrides
    assert (cfg.train.name, cfg.train.out_dir) == ("r", str(run.parent))


def test_resume_continues_the_run(first_epoch):
    out, run = first_epoch
    clf = Classifier("lenet5_modern", epochs=2, device="cpu", out_dir=str(out), name="r", resume=True, report=False,
                     verbose=False).fit("digits")
    assert clf.run_dir_ == run  # the same folder, not r-2
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    saved = load_config(run / "config.yaml")  # what the resumed trainer ran with, written at its start
    assert (saved.optim.lr, saved.train.batch_size, saved.data.limit, saved.train.epochs) == (0.03, 32, 300, 2)


def test_resume_refuses_another_model(first_epoch):
    out, _ = first_epoch
    with pytest.raises(ConfigError, match="model.name is 'lenet5_modern' in that run"):
        Classifier("lenet5", out_dir=str(out), name="r", resume=True).config("digits")
