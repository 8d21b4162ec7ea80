"""`foveal robust RUN` end to end on a small digits run: robustness.json follows the documented schema."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from foveal.config import RunConfig, apply_overrides
    from foveal.training import Trainer

    out = tmp_path_factory.mktemp("runs")
    cfg = apply_overrides(RunConfig(), {"data.source": "digits", "data.img_size": 20, "data.augment": [],
                                        "model.name": "lenet5_modern", "train.epochs": 3, "train.progress": False,
                                        "train.out_dir": str(out), "train.name": "digits", "data.workers": 1})
    return Trainer(cfg, log=lambda m: None).fit().run_dir


def test_robust_cli_writes_schema(run_dir, capsys) -> None:
    from foveal.cli.main import main

    rc = main(["robust", str(run_dir), "--limit", "120", "--attack-limit", "60", "--corruptions",
               "gaussian_noise,fog,pixelate", "--severities", "1,5", "--eps", "0,0.1,0.3", "--eps-l2", "0,1",
               "--noise", "0,0.2", "--pgd-steps", "5", "--device", "cpu"])
    assert rc == 0
    r = json.loads((run_dir / "robustness.json").read_text())
    assert set(r["corruptions"]) == {"gaussian_noise", "fog", "pixelate"}
    assert set(r["corruptions"]["fog"]) == {"1", "5"}
    vals = [a for d in r["corruptions"].values() for a in d.values()]
    assert r["mean_corruption_accuracy"] == pytest.approx(sum(vals) / len(vals))
    assert r["clean_accuracy"] > 0.8 and r["noise"]["0"] == pytest.approx(r["clean_accuracy"])
    assert r["noise"]["0.2"] < r["noise"]["0"] + 0.02
    assert set(r["occlusion"]["mean"]) == {"0.25", "0.5"} and len(r["occlusion"]["accuracy"]["0.5"]) == 9
    assert set(r["attacks"]) == {"fgsm_linf", "pgd_linf", "fgsm_l2", "pgd_l2"}
    assert r["attacks"]["pgd_linf"]["0.3"] < r["attacks"]["pgd_linf"]["0"]
    assert isinstance(r["warnings"], list) and isinstance(r["suspect_gradient_masking"], bool)
    for png in ("robustness_corruptions.png", "robustness_noise_occlusion.png", "robustness_attacks.png"):
        assert (run_dir / png).stat().st_size > 1000
    # corruption error against a reference: the run against itself has CE = 1 for every corruption
    rc = main(["robust", str(run_dir), "--limit", "120", "--corruptions", "gaussian_noise,fog,pixelate",
               "--severities", "1,5", "--skip", "noise,occlusion,attacks", "--reference", str(run_dir),
               "--device", "cpu", "--out", str(run_dir / "again")])
    assert rc == 0
    ce = json.loads((run_dir / "again" / "robustness.json").read_text())["corruption_error"]
    assert ce["mCE"] == pytest.approx(1.0) and set(ce["per_corruption"]) == {"gaussian_noise", "fog", "pixelate"}


def test_robust_cli_names_bad_corruption(run_dir, capsys) -> None:
    from foveal.cli.main import main

    assert main(["robust", str(run_dir), "--corruptions", "rain", "--device", "cpu"]) == 2
    assert "unknown corruption" in capsys.readouterr().err


def test_results_do_not_depend_on_the_batch_size(run_dir, tmp_path) -> None:
    """Every random draw (noise, corruption, random start) is keyed on the image's index, so two
    batch sizes give the same robustness.json: every accuracy equal, the random corruptions in.
    The mean losses agree to float32 rounding only: the CPU kernels block a batch of 7 and one
    of 50 differently, so a logit's last bits move (measured: 3e-7 relative)."""
    from foveal.cli.main import main

    args = ["robust", str(run_dir), "--limit", "50", "--attack-limit", "30", "--severities", "2", "--corruptions",
            "gaussian_noise,shot_noise,impulse_noise,glass_blur,motion_blur,snow,frost,fog,elastic_transform",
            "--eps", "0,0.1", "--eps-l2", "0,1", "--noise", "0,0.3", "--pgd-steps", "3", "--device", "cpu"]
    out = {}
    for bs in ("7", "50"):
        assert main([*args, "--batch-size", bs, "--out", str(tmp_path / bs)]) == 0
        out[bs] = json.loads((tmp_path / bs / "robustness.json").read_text())
    losses = [{k: r.pop(k) for k in ("attack_loss", "clean_loss")} for r in (out["7"], out["50"])]
    assert out["7"] == out["50"]
    assert losses[0]["clean_loss"] == pytest.approx(losses[1]["clean_loss"], rel=1e-5)
    for name, by_eps in losses[0]["attack_loss"].items():
        assert by_eps == pytest.approx(losses[1]["attack_loss"][name], rel=1e-5), name
    assert out["7"]["noise"]["0.3"] < out["7"]["noise"]["0"]  # the noise did change the images


def test_channels_last_measures_what_nchw_measures(run_dir, tmp_path) -> None:
    """`--channels-last` (auto: on for CPU inputs >= 160 px, where it makes the attacks ~1.25x faster) runs
    the same measurements in NHWC: clean and corruption accuracies equal, each attack's accuracy within one
    image (a sign-gradient step can land differently when a gradient component's last bits move)."""
    import torch

    from foveal.config import RobustConfig
    from foveal.training.checkpoint import load_model
    from foveal.tasks.inference import eval_data
    from foveal.robustness.measure import evaluate_robustness

    model, card = load_model(run_dir, torch.device("cpu"))
    part = next(iter(eval_data(card, None, "test", None).splits.values()))
    images, labels = part.images.load_readable(torch.arange(60))[0], part.labels[:60]
    out = {}
    for nhwc in (False, True):
        cfg = RobustConfig(limit=60, attack_limit=40, corruptions=["gaussian_noise", "fog"], severities=[2],
                           noise_stds=[0.0, 0.3], eps_linf=[0.0, 0.1], eps_l2=[0.0, 1.0], pgd_steps=3,
                           channels_last=nhwc)
        out[nhwc] = evaluate_robustness(model, card, images, labels, cfg, "cpu", log=lambda m: None)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) == nhwc
        model.to(memory_format=torch.contiguous_format)
    a, b = out[False], out[True]
    assert a["clean_accuracy"] == b["clean_accuracy"] and a["corruptions"] == b["corruptions"]
    assert a["noise"] == b["noise"] and a["occlusion"] == b["occlusion"]
    for name, by_eps in a["attacks"].items():
        assert by_eps == pytest.approx(b["attacks"][name], abs=1.01 / 40), name
    assert b["attacks"]["pgd_linf"]["0.1"] < b["attacks"]["pgd_linf"]["0"]  # the NHWC attack does attack


def test_channels_last_auto_is_for_large_cpu_inputs() -> None:
    import torch

    from foveal.runtime.device import resolve_channels_last

    assert resolve_channels_last(None, torch.device("cpu"), 224) is True
    assert resolve_channels_last(None, torch.device("cpu"), 20) is False
    assert resolve_channels_last(None, torch.device("cuda"), 224) is False
    assert resolve_channels_last(False, torch.device("cpu"), 224) is False


def test_cli_resolves_channels_last_before_measuring(run_dir, tmp_path, monkeypatch) -> None:
    """`foveal robust` (tasks.robust.robust_to_folder) turns the auto setting into a bool (off at the digits run's 20 px, on when asked);
    `evaluate_robustness` itself reads None as NCHW."""
    import foveal.tasks.robust as robust
    from foveal.cli.main import main

    seen, real = [], robust.evaluate_robustness
    monkeypatch.setattr(robust, "evaluate_robustness",
                        lambda model, meta, images, labels, cfg, *a, **k: seen.append(cfg.channels_last)
                        or real(model, meta, images, labels, cfg, *a, **k))
    args = ["robust", str(run_dir), "--limit", "8", "--attack-limit", "4", "--skip", "corruptions,noise,occlusion",
            "--pgd-steps", "1", "--eps", "0,0.1", "--eps-l2", "0", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--channels-last", "true", "--out", str(tmp_path / "b")]) == 0
    assert seen == [False, True]
