"""End-to-end runs of the `foveal` command, as users type it."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli, write_digit_folder


def test_predict_on_png_and_jpeg_agrees_with_eval(tmp_path):
    run_cli("train", "--epochs", "3", "--name", "d", "--train.progress", "false", "--device", "cpu", cwd=tmp_path)
    from tests.conftest import digits_arrays

    x, y = digits_arrays()
    folder = tmp_path / "imgs"
    for i in range(120):
        d = folder / str(y[i])
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).resize((32, 32)).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    ev = run_cli("eval", "runs/d", "--data", str(folder), "--json", "--device", "cpu", cwd=tmp_path)
    metrics = json.loads(ev.stdout)
    pr = run_cli("predict", "runs/d", str(folder), "--json", "--topk", "3", "--device", "cpu", cwd=tmp_path)
    records = json.loads(pr.stdout)
    assert len(records) == 120 and all("error" not in r for r in records)
    classes = metrics["classes"]
    cm = np.zeros((10, 10), int)
    for r in records:
        cm[classes.index(Path(r["path"]).parent.name), classes.index(r["class"])] += 1
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert np.array_equal(cm, np.array(metrics["confusion_matrix"]))
    assert metrics["support"] == 120 and (tmp_path / "runs/d/eval.json").is_file()
    table = run_cli("predict", "runs/d", str(folder / "3"), cwd=tmp_path).stdout
    assert table.count("\n") == len(list((folder / "3").iterdir()))
    # a weights file: results go beside it in eval-best/, not into the cwd or over the run's report
    report = (tmp_path / "runs/d/report.html").read_bytes()
    ev = run_cli("eval", "runs/d/best.safetensors", "--data", str(folder), "--json", "--device", "cpu", cwd=tmp_path)
    assert json.loads(ev.stdout)["accuracy"] == metrics["accuracy"] and "eval-best" in ev.stderr
    assert (tmp_path / "runs/d/eval-best/eval.json").is_file() and (tmp_path / "runs/d/eval-best/report.html").is_file()
    assert not (tmp_path / "eval.json").exists() and (tmp_path / "runs/d/report.html").read_bytes() == report


def test_bad_folder_names_each_problem_and_trains_on_the_rest(tmp_path):
    root = write_digit_folder(tmp_path / "data", per_class=25, classes=(0, 1, 7))
    (root / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # PNG signature, garbage body
    (root / "7" / "notes.txt").write_text("not an image")
    (root / "empty_class").mkdir()
    proc = run_cli("train", "--data", str(root), "--epochs", "4", "--name", "bad", "--train.progress", "false",
                   "--device", "cpu", "--data.val_fraction", "0.2", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "broken.png" in out and "unreadable" in out
    assert "notes.txt" in out and "non-image" in out
    assert "empty_class" in out and "no image files" in out
    meta = json.loads((tmp_path / "runs/bad/test.json").read_text())
    assert meta["classes"] == ["0", "1", "7"] and meta["accuracy"] >= 0.8
    problems = json.loads((tmp_path / "runs/bad/data_problems.json").read_text())
    assert len(problems) == 3


@pytest.mark.slow  # ~30 s; the conformance grid runs folders with split subfolders and CSV manifests every time
def test_split_folders_and_csv_manifest(tmp_path):
    for split, n in (("train", 30), ("valid", 8), ("test", 8)):
        write_digit_folder(tmp_path / "sp" / split, per_class=n, classes=(4, 5))
    run_cli("train", "--data", str(tmp_path / "sp"), "--epochs", "2", "--name", "sp", "--train.progress", "false",
            "--device", "cpu", cwd=tmp_path)
    res = json.loads((tmp_path / "runs/sp/test.json").read_text())
    assert res["support"] == 16  # exactly the test/ folder
    rows = ["path,label"] + [f"sp/train/{c}/{i}.png,{c}" for c in (4, 5) for i in range(30)]
    (tmp_path / "m.csv").write_text("\n".join(rows + ["sp/train/4/missing.png,4"]) + "\n")
    proc = run_cli("train", "--data", str(tmp_path / "m.csv"), "--epochs", "2", "--name", "csv", "--train.progress",
                   "false", "--device", "cpu", cwd=tmp_path)
    assert "missing.png" in proc.stdout + proc.stderr
    assert json.loads((tmp_path / "runs/csv/test.json").read_text())["classes"] == ["4", "5"]


def test_clear_errors_for_bad_input(tmp_path):
    for args, msg in [(("train", "--data", "nowhere"), "'nowhere' is neither"),
                      (("train", "--train.epochs", "x"), "train.epochs: expected an integer, got 'x'"),
                      (("train", "--model", "resnet81"), "unknown model 'resnet81'"),
                      (("predict", "nowhere", "a.png"), "does not exist")]:
        proc = run_cli(*args, cwd=tmp_path, check=False)
        assert proc.returncode == 2 and msg in proc.stderr, proc.stderr
    (tmp_path / "r.yaml").write_text("optim: {lr: 0.1, momentun: 0.9}\n")
    proc = run_cli("train", "r.yaml", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "unknown key 'optim.momentun'" in proc.stderr


def test_classifier_api_mirrors_the_cli(tmp_path, monkeypatch):
    import foveal

    monkeypatch.chdir(tmp_path)
    clf = foveal.Classifier("lenet5", epochs=4, device="cpu", progress=False, name="api").fit("digits")
    assert clf.evaluate()["accuracy"] >= 0.9 and clf.classes_ == [str(i) for i in range(10)]
    path = clf.save(tmp_path / "m.safetensors")
    again = foveal.Classifier.load(path, device="cpu")
    root = write_digit_folder(tmp_path / "f", per_class=5, classes=(2, 3), size=32)
    assert again.predict([root]) == clf.predict([root])
    assert np.allclose(again.predict_proba([root]).sum(1), 1, atol=1e-5)
    assert again.evaluate(str(root), split="all")["support"] == 10


def test_every_verb_is_registered_one_way():
    """Each subcommand, core or from a CLI module, carries its handler as the parser default
    (`set_defaults(handler=...)`): the one way `foveal.cli.main` dispatches. A group (`bench`)
    passes the rule down to its own subcommands."""
    import argparse

    from foveal.cli.main import build_parser

    def verbs(parser, prefix=""):
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None:
            return {prefix.strip(): parser}
        return {k: v for name, p in sub.choices.items() for k, v in verbs(p, f"{prefix} {name}").items()}

    found = verbs(build_parser())
    assert {"train", "eval", "predict", "explain", "report", "serve", "pretrain", "runs", "bench fast"} <= set(found)
    missing = [name for name, p in found.items() if not callable(p.get_default("handler"))]
    assert not missing, f"subcommands without a handler: {missing}"
