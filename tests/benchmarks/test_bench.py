"""Train-step benchmark and `foveal bench`: numbers that add up, a step without host syncs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from foveal.cli.main import main
from foveal.benchmarks import train_step as bench


def _forbid(*_a, **_k):
    raise AssertionError("host synchronization inside the train step")


def test_train_step_learns_and_never_syncs(monkeypatch) -> None:
    step, gflops = bench.build_train_step("lenet5_modern", batch=4, img_size=32, device=torch.device("cpu"),
                                          channels_last=False, num_classes=10)
    assert gflops > 0
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, _forbid)
    step()
    step()


def test_bench_train_ours_reports_consistent_numbers() -> None:
    res = bench.bench_train_ours("lenet5_modern", batch=8, img_size=32, steps=3, warmup=1, device="cpu",
                                 channels_last=False, num_classes=10, peak_tflops=1.0)
    assert res["images_per_s"] > 0
    assert res["images_per_s"] * res["step_ms"] / 1000 == pytest.approx(8)
    assert res["train_tflops"] == pytest.approx(res["mfu"])  # peak of 1 TFLOP/s
    assert bench.matmul_peak_tflops("cpu") is None


def test_compare_maps_timm_names_and_skips_timm_on_request() -> None:
    from foveal.models import list_models

    assert set(bench.TIMM_TO_OURS.values()) <= set(list_models())
    row = bench.compare_train("lenet5_modern", with_timm=False, batch=2, img_size=32, steps=1, warmup=1,
                              device="cpu", channels_last=False, num_classes=10)
    assert row["ours"]["model"] == "lenet5_modern" and "timm" not in row


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm not installed")
def test_timm_style_step_runs() -> None:
    res = bench.bench_train_timm("resnet18", batch=2, img_size=32, steps=1, warmup=1, device="cpu",
                                 channels_last=False, num_classes=10)
    assert res["impl"] == "timm-style" and res["images_per_s"] > 0


def test_cli_bench_train_writes_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "train.json"
    rc = main(["bench", "train", "--model", "lenet5_modern", "--img-size", "32", "--batch-size", "4", "--steps", "2",
               "--warmup", "1", "--device", "cpu", "--no-channels-last", "--no-timm", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["results"][0]["ours"]["images_per_s"] > 0 and res["settings"]["batch"] == 4
    assert json.loads(capsys.readouterr().out) == res


def test_cli_bench_cpu_train_compares_precisions(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cpu.json"
    rc = main(["bench", "cpu-train", "--model", "lenet5", "--batch-size", "8", "--steps", "2", "--warmup", "1",
               "--threads", "1", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    row = res["results"][0]
    assert row["model"] == "lenet5" and row["bf16_native"] in (True, False, None)
    assert set(bench.CPU_PRECISIONS) <= set(row) and row["fp32"]["speedup"] == 1.0
    for label in bench.CPU_PRECISIONS:
        assert row[label]["images_per_s"] > 0
        assert row[label]["speedup"] == pytest.approx(row[label]["images_per_s"] / row["fp32"]["images_per_s"])
    assert json.loads(capsys.readouterr().out) == res


def test_cli_bench_fast_on_digits(tmp_path: Path, capsys) -> None:
    torch.set_num_threads(1)
    rc = main(["bench", "fast", "--data", "digits", "--runs", "2", "--epochs", "1", "--device", "cpu", "--no-warmup",
               "--min-accuracy", "0.2", "--out", str(tmp_path / "fast.json")])  # 1 epoch: under the preset's floor
    assert rc == 0
    res = json.loads((tmp_path / "fast.json").read_text())
    assert res["runs"] == 2 and len(res["accuracies"]) == 2 and 0.2 < res["accuracy_mean"] < 0.9
    assert res["passed"] and res["min_accuracy"] == 0.2 and all(s > 0 for s in res["seconds"])
    assert "accuracy" in capsys.readouterr().out


def test_cli_bench_fast_bad_arguments_are_clear_errors(capsys) -> None:
    assert main(["bench", "fast", "--data", "cifar100"]) == 2
    assert "no fast recipe" in capsys.readouterr().err
    assert main(["bench", "fast", "--data", "digits", "--runs", "0"]) == 2
    assert "runs must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_all_smoke_runs_every_part(tmp_path: Path) -> None:
    """bench/gpu_all.py end to end at toy sizes (on the CPU here; the real run needs a GPU)."""
    import runpy

    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_all.py"
    module = runpy.run_path(str(script), run_name="gpu_all")
    res = module["main"](["--smoke", "--out", str(tmp_path)])
    assert set(res) >= {"tune", "fast", "compile", "sync", "train", "cli", "environment"}
    tune = res["tune"]
    assert [r["epochs"] for r in tune["rows"]] == [3.0, 5.0] and all(r["compiled"] for r in tune["rows"])
    assert tune["picked_epochs"] in (3.0, 5.0)
    fast = res["fast"]["digits"]
    assert fast["eager"]["passed"] and fast["compiled"]["passed"] and fast["compiled"]["compiled"] is True
    assert fast["compiled"]["accuracy_mean"] == pytest.approx(fast["eager"]["accuracy_mean"], abs=0.01)
    assert res["compile"]["preset"]["first_divergent_step"] is None
    assert "no_bf16" not in res["compile"]  # the variants diagnose a divergent preset only
    assert res["compile"]["preset"]["compiled_trained"]["test_acc_tta_eager_module"] > 0.5
    assert all(r["passed"] for r in res["cli"].values()), res["cli"]
    assert res["cli"]["train_digits_compiled"]["compiled"] is True and res["cli"]["export"]["wall_s"] > 0
    assert module["failures"](res) == []
    assert res["train"]["results"][0]["ours"]["images_per_s"] > 0
    saved = json.loads((tmp_path / "gpu_all.json").read_text())
    assert saved["train"]["results"][0]["model"] == "resnet18"
    assert "| resnet18 |" in (tmp_path / "gpu_all.md").read_text()


def test_gpu_e2e_smoke_measures_every_source(tmp_path: Path) -> None:
    """bench/gpu_e2e.py end to end at toy sizes: folder, shards and synthetic rates for each model, one folder."""
    import runpy

    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_e2e.py"
    res = runpy.run_path(str(script), run_name="gpu_e2e")["main"](["--smoke", "--out", str(tmp_path)])
    row = res["results"][0]
    for source in ("folder", "shards"):
        assert row[source]["images_per_s"] > 0 and row[source]["cores_used"] > 0 and row[source]["problems"] == []
        assert row[source]["of_synthetic"] == pytest.approx(row[source]["images_per_s"] / row["synthetic"]["images_per_s"],
                                                            abs=1e-3)
    assert json.loads((tmp_path / "gpu_e2e.json").read_text())["generate_s"] > 0
    assert not (tmp_path / "data").exists()  # the generated data is removed; only the results stay


@pytest.mark.slow
def test_bench_transfer_smoke_has_every_configuration(tmp_path: Path) -> None:
    """bench/bench_transfer.py on 60 generated photos: every configuration trained (none skipped), accuracies in
    [0, 1], the acceptance line; from a plain state_dict, so the defaults take the published-weights recipe."""
    import csv
    import runpy

    from safetensors.torch import load_file, save_file

    from foveal.benchmarks.cpu_e2e import write_photo_folder

    photos = write_photo_folder(tmp_path / "photos", n=60, classes=2, sizes=(48, 64))
    assert main(["train", "--data", str(photos), "--model", "lenet5", "--img-size", "32", "--epochs", "1",
                 "--device", "cpu", "--progress", "false", "--report", "false", "--logger", "none",
                 "--out-dir", str(tmp_path / "runs"), "--name", "pre"]) == 0
    weights = tmp_path / "plain.safetensors"  # no foveal metadata: read as published weights, as ImageNet's are
    save_file(load_file(tmp_path / "runs" / "pre" / "best.safetensors"), str(weights))
    script = Path(__file__).resolve().parents[2] / "bench" / "bench_transfer.py"
    module = runpy.run_path(str(script), run_name="bench_transfer")
    argv = [str(photos), "--weights", str(weights), "--model", "lenet5", "--seeds", "0", "--img-size", "32",
            "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "out")]
    res = module["main"](argv)
    configs = ["defaults", "linear", "staged x0.3", "staged x1", "staged x3", "full"]
    assert [r["config"] for r in res["table"]] == configs and res["failed_runs"] == []
    for row in res["table"]:
        assert row["seeds_ok"] == 1 and row["wall_s"] > 0 and row["user_s"] > 0, row
        assert all(0 <= row[k] <= 1 for k in ("val_best", "val_final", "test_best", "test_last")), row
    recipes = {r["config"]: r["recipe"] for r in res["table"]}
    assert recipes["defaults"].startswith("staged, lr 0.003,") and recipes["linear"].startswith("linear")
    assert recipes["full"].startswith("full") and recipes["staged x3"].startswith("staged, lr 0.009,")
    md = (tmp_path / "out" / "bench_transfer.md").read_text()
    assert all(f"| photos | {c} |" in md for c in configs)
    (line,) = [x for x in md.splitlines() if "defaults final-epoch test" in x]
    assert "best grid configuration" in line and "within 1 point each: " in line
    with open(tmp_path / "out" / "bench_transfer.csv") as f:
        assert [r["config"] for r in csv.DictReader(f)] == configs
    assert not list((tmp_path / "out" / "runs").rglob("*.safetensors"))  # measured, then deleted
    again = module["main"](argv)  # every run's record is reused: nothing retrains
    assert again["table"] == res["table"]
