"""Every verb beside `foveal train` builds its flags from its settings' dataclass (foveal.config.VERB_CONFIGS):
no flag holds a default of its own, so `--help` and the library can never disagree with the dataclass; the
spellings the flags had when they were written by hand still fill the same fields."""

from __future__ import annotations

import argparse
import inspect
import json

import pytest

from foveal.cli.config_args import dataclass_from_args, overrides_from_args
from foveal.cli.main import build_parser, main
from foveal.config import (VERB_CONFIGS, CheckConfig, EmbedConfig, EvalConfig, ExplainConfig, LRFindConfig,
                           PredictConfig, ReportConfig, SSLConfig)
from foveal.config_help import format_value, sections

# The positional arguments each verb needs to parse, and where a verb that also takes the run's config
# flags (RunConfig, stored as 'cfg:') keeps its own settings' values.
POSITIONALS = {"pretrain": [], "lr-find": [], "eval": ["r"], "predict": ["r", "a.png"], "check": ["digits"],
               "explain": ["r", "a.png"], "embed": ["r"], "report": ["r"], "serve": ["m.onnx"], "export": ["r"],
               "robust": ["r"]}
INTO = {"pretrain": "ssl", "lr-find": "lr_find"}
# Flags still written by hand: how the answer is printed, and help. None of them holds a setting.
HAND_WRITTEN = {"-h", "--help", "--json"}


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _verb_parser(verb: str) -> argparse.ArgumentParser:
    return next(a for a in build_parser()._actions if a.dest == "command").choices[verb]


def test_every_verb_with_settings_is_listed():
    verbs = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(VERB_CONFIGS) == set(POSITIONALS) and set(VERB_CONFIGS) <= set(verbs)


@pytest.mark.parametrize("verb", sorted(VERB_CONFIGS))
def test_no_flag_gives_the_dataclass_defaults(verb):
    cls, into = VERB_CONFIGS[verb], INTO.get(verb, "cfg")
    args = _parse(verb, *POSITIONALS[verb])
    assert dataclass_from_args(cls, args, into) == cls()
    if verb in INTO:  # the run's own flags (RunConfig) get none of the verb's settings
        assert overrides_from_args(args) == {}


@pytest.mark.parametrize("verb", sorted(VERB_CONFIGS))
def test_every_flag_comes_from_a_field_and_holds_no_default_of_its_own(verb):
    """A hand-written `add_argument("--split", default="test")` would be a second copy of the default, free to
    drift from the dataclass; every option of these verbs is a field's flag (or --json / --help), its
    default 'not given', and its help shows the field's default."""
    cls, into = VERB_CONFIGS[verb], INTO.get(verb, "cfg")
    parser = _verb_parser(verb)
    fields = {row["path"]: row for _, _, rows in sections(cls) for row in rows}
    seen = set()
    for action in parser._actions:
        if not action.option_strings or set(action.option_strings) <= HAND_WRITTEN:
            continue
        if action.dest.startswith("cfg:") and into != "cfg":  # pretrain / lr-find: the run's config flags
            continue
        if not action.dest.startswith(f"{into}:"):  # robust's input/output paths: hand-written, and no default
            assert verb == "robust" and action.default is None, (verb, action.option_strings)
            continue
        assert action.default is argparse.SUPPRESS, (verb, action.option_strings, action.default)
        path = action.dest.split(":", 1)[1]
        seen.add(path)
        if action.help != argparse.SUPPRESS:  # the --no-x twin of a boolean has no help line
            assert f"default: {format_value(fields[path]['default'])}" in action.help % {}, (verb, path)
    assert seen == set(fields), (verb, set(fields) - seen)


def test_old_spellings_fill_the_same_fields():
    ev = dataclass_from_args(EvalConfig, _parse("eval", "r", "--data", "d", "--data-dir", "dd", "--split", "val",
                                                "--device", "cpu", "--out", "o", "--json"))
    assert ev == EvalConfig(data="d", data_dir="dd", split="val", device="cpu", out="o")
    pr = _parse("predict", "r", "a.png", "b.png", "--topk", "3", "--device", "cpu", "--json")
    assert dataclass_from_args(PredictConfig, pr) == PredictConfig(topk=3, device="cpu") and pr.json
    assert pr.inputs == ["a.png", "b.png"]
    ch = _parse("check", "digits", "--data-dir", "dd", "--json", "--preview", "p.png", "--augment", "rrc,flip",
                "--labels", "--split", "test", "--holdout", "--model", "resnet20", "--folds", "3", "--epochs", "2",
                "--rank-by", "normalized_margin", "--img-size", "24", "--out", "o")
    assert dataclass_from_args(CheckConfig, ch) == CheckConfig(
        data_dir="dd", preview="p.png", augment=["rrc", "flip"], labels=True, split="test", holdout=True,
        model="resnet20", folds=3, epochs=2, rank_by="normalized_margin", img_size=24, out="o")
    assert dataclass_from_args(CheckConfig, _parse("check", "digits", "--no-holdout")).holdout is False
    first = _parse("check", "--labels", "--holdout", "digits")  # switches take no value: the data comes after them
    assert first.data == "digits" and dataclass_from_args(CheckConfig, first) == CheckConfig(labels=True, holdout=True)
    ex = _parse("explain", "r", "a.png", "--method", "ig", "--target", "3", "--out", "o", "--alpha", "0.3",
                "--batch-size", "8", "--device", "cpu")
    assert dataclass_from_args(ExplainConfig, ex) == ExplainConfig(method="ig", target="3", out="o", alpha=0.3,
                                                                   batch_size=8, device="cpu")
    em = _parse("embed", "r", "digits", "--data-dir", "dd", "--split", "val", "--map", "tsne", "--out", "o",
                "--batch-size", "16", "--device", "cpu")
    assert dataclass_from_args(EmbedConfig, em) == EmbedConfig(data_dir="dd", split="val", map="tsne", out="o",
                                                               batch_size=16, device="cpu")
    assert em.data == "digits"
    rp = _parse("report", "r", "--out", "o.html", "--split", "val", "--device", "cpu")
    assert dataclass_from_args(ReportConfig, rp) == ReportConfig(out="o.html", split="val", device="cpu")
    lf = _parse("lr-find", "--start-lr", "1e-5", "--end-lr", "1", "--steps", "20", "--epochs", "2")
    assert dataclass_from_args(LRFindConfig, lf, "lr_find") == LRFindConfig(start_lr=1e-5, end_lr=1.0, steps=20)
    assert overrides_from_args(lf) == {"train.epochs": "2"}
    pt = _parse("pretrain", "--method", "mae", "--mask-ratio", "0.6", "--temperature", "0.2", "--proj-hidden", "64",
                "--proj-dim", "32", "--views", "rrc,flip", "--knn-k", "5", "--knn-t", "0.1", "--knn-bank", "100",
                "--decoder-dim", "48", "--decoder-depth", "3", "--epochs", "1")
    assert dataclass_from_args(SSLConfig, pt, "ssl") == SSLConfig(
        method="mae", mask_ratio=0.6, temperature=0.2, proj_hidden=64, proj_dim=32, views_augment=["rrc", "flip"],
        knn_k=5, knn_t=0.1, knn_bank=100, decoder_dim=48, decoder_depth=3)
    assert overrides_from_args(pt) == {"train.epochs": "1"}


@pytest.mark.parametrize("argv", [("pretrain", "--method", "byol"), ("check", "d", "--rank-by", "margin"),
                                  ("explain", "r", "a.png", "--method", "lime"), ("embed", "r", "--map", "umap")])
def test_a_value_outside_a_fields_choices_stops_at_parsing(argv):
    with pytest.raises(SystemExit):
        _parse(*argv)


def test_the_handlers_pass_the_dataclass_values_on(monkeypatch, tmp_path):
    """eval, predict, embed, report and lr-find hand the library the dataclass's values (here: the defaults)."""
    import foveal.backends
    import foveal.tasks.embed
    import foveal.tasks.reporting
    import foveal.training.build
    import foveal.training.lr_find

    seen = {}

    class Stop(Exception):
        pass

    def spy(name):
        def f(*a, **kw):
            seen[name] = (a, kw)
            raise Stop
        return f

    monkeypatch.setattr(foveal.tasks.reporting, "evaluate_to_folder", spy("eval"))
    monkeypatch.setattr(foveal.tasks.reporting, "report_from_run", spy("report"))
    monkeypatch.setattr(foveal.tasks.embed, "embed_run", spy("embed"))
    monkeypatch.setattr(foveal.backends, "load_predictor", spy("predict"))
    monkeypatch.setattr(foveal.training.build, "build_run", lambda cfg: "RUN")
    monkeypatch.setattr(foveal.training.lr_find, "lr_find", spy("lr-find"))
    for argv in (["eval", "r"], ["report", "r"], ["embed", "r"], ["predict", "r", "a.png"],
                 ["lr-find", "--name", "x", "--out-dir", str(tmp_path)]):
        with pytest.raises(Stop):
            main(argv)
    e, r, lf = EvalConfig(), ReportConfig(), LRFindConfig()
    assert seen["eval"] == (("r", e.data, e.split, e.device), {"data_dir": e.data_dir, "out": e.out})
    assert seen["report"] == (("r", None, r.split, r.device), {})
    m = EmbedConfig()
    assert seen["embed"] == (("r", None, m.split, m.out, m.map, m.device, m.batch_size, m.data_dir), {})
    assert seen["predict"] == (("r",), {"device": PredictConfig().device})
    assert seen["lr-find"] == (("RUN", lf.start_lr, lf.end_lr, lf.steps), {})


def test_lr_find_takes_its_defaults_from_lrfindconfig(monkeypatch, tmp_path):
    """`lr_find(run)` sweeps LRFindConfig's range: its parameters default to None, read from the dataclass
    when it runs (here a short sweep the dataclass is patched to, so the test runs in a second)."""
    import foveal.training.lr_find as lr_find_module
    from foveal.config import RunConfig, apply_overrides
    from foveal.training.build import build_run

    params = inspect.signature(lr_find_module.lr_find).parameters
    assert [params[n].default for n in ("start", "end", "steps")] == [None, None, None]
    short = LRFindConfig(start_lr=1e-4, end_lr=1e-2, steps=12)
    monkeypatch.setattr(lr_find_module, "LRFindConfig", lambda: short)
    cfg = apply_overrides(RunConfig(), {"train.out_dir": str(tmp_path), "train.progress": False, "train.device": "cpu",
                                        "train.name": "lrf", "train.report": False})
    res = lr_find_module.lr_find(build_run(cfg))
    assert len(res["lrs"]) == short.steps  # 1e-4..1e-2 does not diverge: every step runs
    assert res["lrs"][0] == pytest.approx(short.start_lr)
    assert short.start_lr < res["lrs"][-1] <= short.end_lr * (1 + 1e-9)


def test_pretrain_decoder_flags_reach_the_mae_model(monkeypatch, tmp_path):
    """`foveal pretrain --method mae --decoder-dim 48 --decoder-depth 3`: the MAE the Pretrainer builds has a
    48-wide decoder of 3 blocks (vit_tiny at 16 px on 64 digits, no epoch trained)."""
    import foveal.tasks.pretrain as pretrain_module

    built = []
    real = pretrain_module.build_ssl_model
    monkeypatch.setattr(pretrain_module, "build_ssl_model", lambda backbone, ssl: built.append(real(backbone, ssl))
                        or built[-1])
    assert main(["pretrain", "--method", "mae", "--decoder-dim", "48", "--decoder-depth", "3", "--model", "vit_tiny",
                 "--img-size", "16", "--data", "digits", "--data.limit", "64", "--batch-size", "32", "--epochs", "0",
                 "--views", "flip", "--knn-k", "5", "--device", "cpu", "--out-dir", str(tmp_path), "--name", "mae",
                 "--train.progress", "false"]) == 0
    (mae,) = built
    assert type(mae).__name__ == "MAE" and mae.enc_to_dec.out_features == 48 and mae.dec_norm.normalized_shape == (48,)
    assert len(mae.decoder.layers) == 3
    saved = json.loads((tmp_path / "mae" / "ssl.json").read_text())
    assert (saved["method"], saved["decoder_dim"], saved["decoder_depth"]) == ("mae", 48, 3)
