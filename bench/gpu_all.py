"""All measurements of the GPU issues in one call: `python bench/gpu_all.py --out DIR`.

Runs from a plain checkout (it puts ./src on the path; no pip install needed) on a machine
with torch (and timm, for the comparison). Parts, in order:

- fast:  10 seeded runs each of the fast recipe on Fashion-MNIST and MNIST (data on the GPU,
         warmed up first, training + TTA evaluation timed with CUDA events), eager and compiled;
         a run under the recipe's floor is FAILED, not a timing;
- compile: the compiled-vs-eager diagnosis: eager and compiled copies of the fast recipe from the
         same weights fed the same batches, per-step losses side by side, for the recipe as it is and
         with bf16, channels-last and lookahead each switched off, then each model's accuracy
         through the eager and the compiled module: where a compiled run goes wrong, and in which pass;
- sync:  the fast-recipe step and the zoo train step under torch.cuda.set_sync_debug_mode("error"),
         and the Trainer's host reads per epoch at two step counts (must not grow with steps);
- train: train-step images/s, batch 256, 224 px, bf16, channels-last, compiled: foveal's model
         against timm's written the way timm's benchmark.py steps it, same process;
- cli:   the commands a GPU user runs, each timed (wall, user, sys, and training seconds where it
         trains): `foveal train` (digits), the same with --train.compile true, a generated JPEG
         folder in memory and streamed, then `eval`, `predict` and `export --format onnx` of it.

Data: --data-dir holds fashion-mnist/ and mnist/ with the official IDX files, e.g.
`mkdir -p data && cp -r /work/shared/data/mnist /work/shared/data/fashion-mnist data/` (./data/
is git-ignored; carry it to the GPU machine). Results go to DIR/gpu_all.json and DIR/gpu_all.md
after every part, so a run cut short keeps what it measured; parts left out for the time
budget are listed, run them again with `--parts`. The script exits 1 when anything FAILED (a
fast run under its floor, a compiled run unlike eager, a command that did not exit 0).
`--smoke` runs every part at toy sizes (CPU included; the timm comparison is skipped when timm
is missing).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from foveal.config import FastConfig  # noqa: E402
from foveal.data.preprocess import normalize_u8  # noqa: E402
from foveal.benchmarks import train_step as bench  # noqa: E402
from foveal.benchmarks.fast import bench_fast  # noqa: E402
from foveal.training import fast  # noqa: E402
from foveal.benchmarks.cpu_e2e import foveal_argv, time_command, write_photo_folder  # noqa: E402
from foveal.runtime.device import autocast  # noqa: E402
from foveal.training.step import memory_format  # noqa: E402
from foveal.io import write_json, write_text  # noqa: E402

MODELS = ["resnet50", "vit_base_patch16_224", "efficientnet_b0", "mobilenetv3_large_100", "convnext_tiny", "resnet18"]
TARGETS = {"fashion-mnist": (0.950, 3.5), "mnist": (0.995, 2.0)}  # (mean accuracy, seconds per run)
PARTS = ("tune", "fast", "compile", "sync", "train", "cli")


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    env: dict[str, Any] = {"date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                           "python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "host": platform.node(), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    if importlib.util.find_spec("timm"):
        import timm

        env["timm"] = timm.__version__
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    return env


# ---- parts ----------------------------------------------------------------------------------
def part_tune(args: argparse.Namespace, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """Fashion-MNIST's epochs for its target: one model (compiled unless --no-compile, eager if compiling fails
    its check), `--tune-runs` seeded runs per candidate of `--tune-epochs`; the fewest epochs whose mean reaches
    the target accuracy plus `--tune-margin` within the time target, else the most accurate in time. The fast
    part then runs with that choice (unless --fmnist-epochs is given)."""
    import dataclasses as dc

    name = "digits" if args.smoke else "fashion-mnist"
    data = (fast.load_fast_data("digits", img_size=16) if args.smoke
            else fast.load_fast_data(name, str(Path(args.data_dir) / name))).to(device)
    acc_t, sec_t = (0.5, 60.0) if args.smoke else TARGETS[name]
    candidates = [float(e) for e in args.tune_epochs.split(",")]
    base = fast.RECIPES[name]
    rows: list[dict[str, Any]] = []
    for compile in ((False,) if args.no_compile else (True, False)):
        try:
            rows = []
            prepared = fast.prepare(data, dc.replace(base, compile=compile))  # one compiled graph for all
            for e in candidates:
                cfg = dc.replace(base, epochs=e, compile=compile, min_accuracy=0.0)
                r = bench_fast(data, cfg, runs=args.tune_runs, seed=1000, log=log, run=prepared,
                               warmup=device.type == "cuda" and not rows)
                rows.append({"epochs": e, "compiled": r["compiled"], "accuracy_mean": r["accuracy_mean"],
                             "seconds_mean": r["seconds_mean"], "accuracies": r["accuracies"]})
                log(f"tune {name} epochs {e} compiled={r['compiled']}: {r['accuracy_mean']:.4f} "
                    f"{r['seconds_mean']:.2f} s")
            break
        except Exception as e:  # a compiled step unlike eager: tune eager instead, and say so
            log(f"tune with compile={compile} failed: {type(e).__name__}: {e}")
            rows = [{"error": f"{type(e).__name__}: {e}", "compiled": compile}]
    ok = [r for r in rows if "error" not in r and r["accuracy_mean"] >= acc_t + args.tune_margin
          and r["seconds_mean"] <= sec_t]
    in_time = [r for r in rows if "error" not in r and r["seconds_mean"] <= sec_t]
    pick = min(ok, key=lambda r: r["epochs"]) if ok else (max(in_time, key=lambda r: r["accuracy_mean"])
                                                          if in_time else None)
    if pick is not None and args.fmnist_epochs is None and not args.smoke:
        args.fmnist_epochs = pick["epochs"]
    log(f"tune picked {pick}")
    return {"data": name, "runs_each": args.tune_runs, "margin": args.tune_margin, "rows": rows,
            "picked_epochs": pick["epochs"] if pick else None}


def _fast_cases(args: argparse.Namespace, device: torch.device) -> list[tuple[str, fast.FastData, FastConfig]]:
    """(name, data on the device, preset) for each data set of the fast part; digits for --smoke."""
    if args.smoke:
        data = fast.load_fast_data("digits", img_size=16).to(device)
        return [("digits", data, dataclasses.replace(fast.RECIPES["digits"], epochs=5.0, min_accuracy=0.5))]
    cases = []
    for name in ("fashion-mnist", "mnist"):
        data = fast.load_fast_data(name, str(Path(args.data_dir) / name)).to(device)
        epochs = args.fmnist_epochs if name == "fashion-mnist" else args.mnist_epochs
        cases.append((name, data, dataclasses.replace(fast.RECIPES[name], **({"epochs": epochs} if epochs else {}))))
    return cases


def part_fast(args: argparse.Namespace, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """Each data set eager and (unless --no-compile) compiled; a compiled run that differs from eager on its
    first batch raises CompileMismatch in the step, recorded here as that mode's error."""
    out: dict[str, Any] = {}
    for name, data, cfg in _fast_cases(args, device):
        out[name] = {}
        for mode in ("eager",) + (() if args.no_compile else ("compiled",)):
            c = dataclasses.replace(cfg, compile=mode == "compiled", compile_mode=args.fast_compile_mode)
            log(f"fast recipe on {data.name}, {mode}: {args.runs} runs, {c.epochs} epochs")
            try:
                r = bench_fast(data, c, runs=args.runs, log=log, warmup=device.type == "cuda")
            except Exception as e:  # the other mode's and data set's numbers still count
                r = {"data": data.name, "passed": False, "error": f"{type(e).__name__}: {e}"}
            out[name][mode] = r
            if not r["passed"]:
                log(f"FAILED: fast recipe on {data.name}, {mode}: {r.get('error') or r.get('accuracies')}")
    return out


def lockstep(data: fast.FastData, cfg: FastConfig, seed: int = 0) -> dict[str, Any]:
    """Eager and compiled copies of the recipe from the same weights, stepped on the same batches: the first
    step whose losses differ by over 1% (or is not finite), the losses there, non-finite weights, and each
    trained model's test accuracy through its eager and its compiled module."""
    runs = {}
    for compile in (False, True):
        runs[compile] = fast.prepare(data, dataclasses.replace(cfg, compile=compile))
        fast.reinit(runs[compile], data, seed)
    steps = {c: fast.build_step(runs[c], data, check_compile=False) for c in runs}
    g = torch.Generator(device=data.train_x.device).manual_seed(seed)
    flip_bits = torch.rand(len(data.train_y), generator=g, device=data.train_x.device) < 0.5
    losses: dict[bool, list[torch.Tensor]] = {False: [], True: []}
    total = steps[False][1]
    for run in runs.values():
        run.model.train()
    for epoch in range(math.ceil(cfg.epochs)):
        for x, y in fast.batches(data, runs[False], epoch, flip_bits, g):
            if len(losses[False]) >= total:
                break
            for c, (step, _, _) in steps.items():
                losses[c].append(step(x, y).loss.float())
    for step, _, ahead in steps.values():
        if ahead is not None:
            ahead.step(1.0)
    le, lc = torch.stack(losses[False]).cpu(), torch.stack(losses[True]).cpu()
    rel = (lc - le).abs() / le.abs().clamp_min(1e-6)
    bad = ((rel > 0.01) | ~torch.isfinite(lc)).nonzero()
    first = int(bad[0]) if len(bad) else None
    res: dict[str, Any] = {"steps": total, "first_divergent_step": first, "max_rel_loss_diff": rel.max().item(),
                           "loss_at": {str(i): [le[i].item(), lc[i].item()] for i in sorted({0, 1, 10, total - 1}
                                                                                          | ({first} if first else set()))
                                       if i < total},
                           "nonfinite_compiled_weights": [n for n, t in runs[True].model.state_dict().items()
                                                          if t.is_floating_point() and not torch.isfinite(t).all()]}
    for c, run in runs.items():
        tag = "compiled" if c else "eager"
        acc = (fast.predict_tta(run, data.test_x).argmax(1) == data.test_y).float().mean().item()
        run.model.eval()
        with torch.no_grad(), autocast(run.device, cfg.amp):
            x = memory_format(normalize_u8(data.test_x[:cfg.eval_batch_size], run.mean, run.std),
                              cfg.channels_last and data.train_x.is_cuda)
            through = run.step_model(x).argmax(1)  # no TTA: the compiled eval graph against the eager one
            plain = run.model(x).argmax(1)
        res[f"{tag}_trained"] = {"test_acc_tta_eager_module": acc,
                                 "first_batch_acc_eager_module": (plain == data.test_y[:len(x)]).float().mean().item(),
                                 "first_batch_acc_step_module": (through == data.test_y[:len(x)]).float().mean().item()}
    return res


def part_compile(args: argparse.Namespace, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """`lockstep` on the last fast data set for the preset; when the preset diverges (or with
    --compile-variants), also with bf16, channels-last, lookahead each off, to say which one matters."""
    name, data, cfg = _fast_cases(args, device)[-1]  # MNIST (digits with --smoke): the shorter recipe
    variants = {"preset": {}, "no_bf16": {"amp": False}, "no_channels_last": {"channels_last": False},
                "no_lookahead": {"lookahead": False}}
    out: dict[str, Any] = {"data": name}
    for label, change in variants.items():
        if label != "preset" and not args.compile_variants and "error" not in out["preset"] \
                and out["preset"]["first_divergent_step"] is None:
            break  # the preset agrees: the variants would diagnose nothing
        log(f"compile diagnosis on {name}: {label}")
        try:
            out[label] = lockstep(data, dataclasses.replace(cfg, **change))
        except Exception as e:
            out[label] = {"error": f"{type(e).__name__}: {e}"}
        log(json.dumps(out[label]))
    return out


def _sync_error(fn: Callable[[], None]) -> str | None:
    """None if `fn` ran without a host sync; else the error torch raised."""
    if not torch.cuda.is_available():
        return "not checked: no CUDA"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        return None
    except RuntimeError as e:
        return str(e).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()


def _trainer_reads(batch_size: int, device: torch.device, tmp: Path) -> tuple[int, int]:
    """(host syncs reported in one Trainer epoch, steps in it) on digits."""
    from foveal.config import load_config
    from foveal.training import Trainer

    cfg = load_config(overrides={"data.source": "digits", "model.name": "lenet5_modern", "train.epochs": 1,
                                 "train.progress": False, "train.batch_size": batch_size, "train.out_dir": str(tmp),
                                 "train.name": f"sync-b{batch_size}", "train.device": str(device),
                                 "train.deterministic": False})
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.setup()
    if device.type != "cuda":
        trainer.train_epoch(0)
        return -1, len(trainer.train_loader)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_epoch(0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught), len(trainer.train_loader)


def part_sync(args: argparse.Namespace, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    import tempfile

    data = fast.load_fast_data("digits", img_size=16).to(device)
    cfg = dataclasses.replace(fast.RECIPES["digits"], epochs=1.0)
    run = fast.prepare(data, cfg)
    fast.run_once(run, data, seed=0)  # warm-up outside the checked region
    fast.reinit(run, data, seed=1)
    res: dict[str, Any] = {"fast_train_and_tta": _sync_error(lambda: (fast.train(run, data, 1),
                                                                     fast.predict_tta(run, data.test_x)))}
    zoo_model = "lenet5_modern" if args.smoke else "resnet18"
    step, _ = bench.build_train_step(zoo_model, 8, 32 if args.smoke else 64, device, num_classes=10)
    step()
    res["zoo_train_step"] = _sync_error(lambda: [step() for _ in range(3)])
    with tempfile.TemporaryDirectory() as tmp:
        few, many = _trainer_reads(256, device, Path(tmp)), _trainer_reads(32, device, Path(tmp))
    res["trainer_epoch_syncs"] = {"steps": [few[1], many[1]], "syncs": [few[0], many[0]],
                                  "constant": few[0] == many[0] if device.type == "cuda" else None}
    log(f"host-sync check: {res}")
    return res


def part_train(args: argparse.Namespace, device: torch.device, log: Callable[[str], None],
               over_budget: Callable[[], bool]) -> dict[str, Any]:
    models = args.models.split(",")
    kw: dict[str, Any] = dict(batch=args.batch_size, img_size=args.img_size, steps=args.steps, warmup=args.warmup,
                              device=device, amp=True, channels_last=True, compile=not args.no_compile,
                              compile_mode=args.train_compile_mode)
    if args.smoke:
        kw.update(batch=2, img_size=32, steps=1, warmup=1, compile=False)
    peak = bench.matmul_peak_tflops(device)
    rows, skipped = [], []
    for m in models:
        if over_budget():
            skipped.append(m)
            continue
        log(f"train step: {m}")
        try:
            rows.append(bench.compare_train(m, peak_tflops=peak, **kw))
        except Exception as e:  # one model failing must not lose the others' numbers
            rows.append({"model": m, "error": f"{type(e).__name__}: {e}"})
        log(json.dumps(rows[-1]))
    return {"bf16_matmul_peak_tflops": peak, "settings": {k: str(v) for k, v in kw.items()}, "results": rows,
            "skipped_for_time": skipped}


def _command(name: str, args: list[str], cwd: Path, log: Callable[[str], None],
             train_json: Path | None = None) -> dict[str, Any]:
    """One `foveal` command, timed (wall, user, sys of it and its children); with `train_json`, the run's
    test accuracy, training seconds and whether it compiled. A failure is recorded, not raised."""
    env = {"PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        row: dict[str, Any] = {"command": "foveal " + " ".join(args), **time_command(foveal_argv(*args), env, cwd)}
        row.pop("output_tail")
        row["passed"] = True
    except RuntimeError as e:
        row = {"command": "foveal " + " ".join(args), "passed": False, "error": str(e)[-1500:]}
    if row["passed"] and train_json is not None:
        t = json.loads(train_json.read_text())
        row.update(test_accuracy=t["accuracy"], train_seconds=t["train_seconds"], compiled=t.get("compiled"))
    log(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'error'})}" + ("" if row["passed"] else
                                                                                   f"\nFAILED: {row['error']}"))
    return row


def part_cli(args: argparse.Namespace, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """The commands a new GPU user runs, in one work folder under --out."""
    work = Path(args.out).resolve() / "cli"
    runs = work / "runs"
    work.mkdir(parents=True, exist_ok=True)
    dev = ["--device", str(device), "--train.progress", "false", "--out-dir", str(runs)]
    small = ["--epochs", "2"] if args.smoke else []
    out: dict[str, Any] = {}
    out["train_digits"] = _command("train digits", ["train", "--name", "digits", *dev, *small], work, log,
                                   runs / "digits" / "test.json")
    out["train_digits_compiled"] = _command("train digits compiled", ["train", "--name", "digits-c", *dev, *small,
                                                                      "--train.compile", "true"], work, log,
                                            runs / "digits-c" / "test.json")
    photos = write_photo_folder(work / "photos", n=args.cli_photos, sizes=(375, 500))
    folder = ["--data", str(photos), "--model", args.cli_model, "--img-size", str(args.cli_img_size),
              "--epochs", str(1 if args.smoke else args.cli_epochs)]
    for store in ("in_memory", "streamed"):
        out[f"train_photos_{store}"] = _command(
            f"train photos {store}", ["train", "--name", f"photos-{store}", *dev, *folder,
                                      "--data.in_memory", "true" if store == "in_memory" else "false"], work, log,
            runs / f"photos-{store}" / "test.json")
    run = str(runs / "photos-in_memory")
    some = sorted((photos / "class_0").glob("*.jpg"))[:8] + sorted((photos / "class_1").glob("*.jpg"))[:8]
    out["eval"] = _command("eval", ["eval", run, "--device", str(device)], work, log)
    out["predict"] = _command("predict", ["predict", run, *map(str, some), "--device", str(device)], work, log)
    out["export"] = _command("export", ["export", run, "--format", "onnx"], work, log)
    floor = 0.6  # two generated classes: chance is 0.5
    for key in ("train_digits", "train_digits_compiled"):
        r = out[key]
        if r["passed"] and r["test_accuracy"] < (0.5 if args.smoke else 0.9):
            r["passed"], r["error"] = False, f"test accuracy {r['test_accuracy']:.4f} under the floor"
    if out["train_digits_compiled"]["passed"] and out["train_digits_compiled"]["compiled"] is not True:
        out["train_digits_compiled"].update(passed=False, error="--train.compile true did not compile")
    for key in ("train_photos_in_memory", "train_photos_streamed"):
        r = out[key]
        if r["passed"] and not args.smoke and r["test_accuracy"] < floor:
            r["passed"], r["error"] = False, f"test accuracy {r['test_accuracy']:.4f} under the floor {floor}"
    return out


def failures(res: dict[str, Any]) -> list[str]:
    """Every FAILED item of the results, as 'part: what'."""
    bad = [f"fast {name} {mode}" for name, modes in res.get("fast", {}).items() for mode, r in modes.items()
           if not r["passed"]]
    bad += [f"compile {label}" for label, r in res.get("compile", {}).items() if isinstance(r, dict)
            and ("error" in r or r.get("first_divergent_step") is not None)]
    bad += [f"cli {key}" for key, r in res.get("cli", {}).items() if not r["passed"]]
    bad += [f"train {r['model']}" for r in res.get("train", {}).get("results", [])
            if "error" in r or not r["ours"].get("passed", True)]
    return bad


# ---- report ---------------------------------------------------------------------------------
def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def markdown(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [f"Measured {env['date_utc']} UTC on {env.get('gpu', 'CPU (no GPU)')}, driver {env.get('driver', '-')}, "
             f"torch {env['torch']} (CUDA {env['cuda']}), timm {env.get('timm', '-')}, Python {env['python']}, "
             f"commit {env.get('commit')}; command: `{res['command']}`.", ""]
    if "fast" in res:
        lines += ["| data | mode | runs | test accuracy (mean ± std) | min | seconds per run | floor | target |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, modes in res["fast"].items():
            acc_t, sec_t = TARGETS.get(name, (None, None))
            target = f"≥ {acc_t:.3f} in ≤ {sec_t} s" if acc_t else "-"
            for mode, r in modes.items():
                if "error" in r:
                    lines.append(f"| {name} | {mode} | FAILED: {r['error'][:120]} | | | | | |")
                    continue
                status = "" if r["passed"] else "FAILED "
                lines.append(f"| {name} | {mode} | {r['runs']} | {status}{r['accuracy_mean']:.4f} ± "
                             f"{r['accuracy_std']:.4f} | {r['accuracy_min']:.4f} | {_fmt(r['seconds_mean'], '.2f')} | "
                             f"{r['min_accuracy']:.3f} | {target} |")
        lines.append("")
    if "compile" in res:
        lines += [f"Compiled vs eager in lockstep ({res['compile']['data']}): first step whose losses differ by "
                  "over 1%, and test accuracy of each trained model.", "",
                  "| variant | first divergent step | max rel. loss diff | eager-trained acc | compiled-trained acc "
                  "(eager module / compiled module, first batch) |", "| --- | --- | --- | --- | --- |"]
        for label, r in res["compile"].items():
            if not isinstance(r, dict):
                continue
            if "error" in r:
                lines.append(f"| {label} | error: {r['error'][:100]} | | | |")
                continue
            e, c = r["eager_trained"], r["compiled_trained"]
            lines.append(f"| {label} | {r['first_divergent_step']} of {r['steps']} | {r['max_rel_loss_diff']:.2e} | "
                         f"{e['test_acc_tta_eager_module']:.4f} | {c['test_acc_tta_eager_module']:.4f} / "
                         f"{c['first_batch_acc_eager_module']:.4f} / {c['first_batch_acc_step_module']:.4f} |")
        lines.append("")
    if "cli" in res:
        lines += ["| command | wall s | user s | sys s | training s | test accuracy | status |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in res["cli"].values():
            lines.append(f"| `{r['command'][:90]}` | {_fmt(r.get('wall_s'), '.1f')} | {_fmt(r.get('user_s'), '.1f')} | "
                         f"{_fmt(r.get('sys_s'), '.1f')} | {_fmt(r.get('train_seconds'), '.1f')} | "
                         f"{_fmt(r.get('test_accuracy'), '.4f')} | {'ok' if r['passed'] else 'FAILED'} |")
        lines.append("")
    if "train" in res:
        t = res["train"]
        lines += [f"Train step, synthetic data, {t['settings']}; bf16 matmul peak "
                  f"{_fmt(t['bf16_matmul_peak_tflops'], '.0f')} TFLOP/s.", "",
                  "| model | foveal img/s | timm-style img/s | ratio | foveal step ms | peak GiB | MFU |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in t["results"]:
            if "error" in r:
                lines.append(f"| {r['model']} | error: {r['error'][:80]} | | | | | |")
                continue
            o, tm = r["ours"], r.get("timm", {})
            lines.append(f"| {r['model']} | {o['images_per_s']:.0f} | {_fmt(tm.get('images_per_s'), '.0f')} | "
                         f"{_fmt(r.get('speedup'), '.2f')} | {o['step_ms']:.1f} | {_fmt(o['peak_mem_gib'], '.1f')} | "
                         f"{_fmt(o.get('mfu'), '.2f')} |")
        if t["skipped_for_time"]:
            lines.append(f"\nNot measured (time budget): {', '.join(t['skipped_for_time'])}.")
    if "sync" in res:
        lines += ["", f"Host-sync check: `{json.dumps(res['sync'])}`"]
    bad = failures(res)
    lines += ["", f"FAILED: {', '.join(bad)}" if bad else "All checks passed."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="gpu_results", help="folder for gpu_all.json and gpu_all.md")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    p.add_argument("--data-dir", default=str(REPO / "data"), help="holds fashion-mnist/ and mnist/ IDX files")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--fmnist-epochs", type=float, help="override the preset (default: its epochs)")
    p.add_argument("--mnist-epochs", type=float)
    p.add_argument("--tune-epochs", default="10,11,12,13,14", help="the tune part's Fashion-MNIST candidates")
    p.add_argument("--tune-runs", type=int, default=3, help="seeded runs per tune candidate")
    p.add_argument("--tune-margin", type=float, default=0.001, help="accuracy over the target a pick must reach")
    p.add_argument("--compile-variants", action="store_true", help="diagnose bf16/channels-last/lookahead "
                   "even when the preset's compiled run agrees with eager")
    p.add_argument("--fast-compile-mode", default="default", help="max-autotune-no-cudagraphs may be faster "
                   "per run but autotunes for minutes")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--train-compile-mode", default="default")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--budget-s", type=float, default=540, help="start no new model after this many seconds")
    p.add_argument("--cli-photos", type=int, default=400, help="generated JPEGs (375-500 px) of the cli part")
    p.add_argument("--cli-model", default="resnet18", help="the cli part's model for the JPEG folder")
    p.add_argument("--cli-img-size", type=int, default=160)
    p.add_argument("--cli-epochs", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="toy sizes: checks the script runs end to end")
    args = p.parse_args(argv)
    if args.smoke:
        args.runs, args.models, args.cli_photos, args.cli_model, args.cli_img_size = 1, "resnet18", 24, "lenet5", 32
        args.tune_epochs, args.tune_runs = "3,5", 1
    t0 = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    res: dict[str, Any] = {"command": "python bench/gpu_all.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                           "environment": environment()}

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    def save() -> None:
        write_json(out / "gpu_all.json", res)
        write_text(out / "gpu_all.md", markdown(res))

    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(sorted(unknown))} ({', '.join(PARTS)})")
    for part in args.parts.split(","):
        if part == "tune":
            res["tune"] = part_tune(args, device, log)
        elif part == "fast":
            res["fast"] = part_fast(args, device, log)
        elif part == "compile":
            res["compile"] = part_compile(args, device, log)
        elif part == "sync":
            res["sync"] = part_sync(args, device, log)
        elif part == "train":
            res["train"] = part_train(args, device, log, lambda: time.time() - t0 > args.budget_s)
        elif part == "cli":
            res["cli"] = part_cli(args, device, log)
        save()
    log(f"wrote {out / 'gpu_all.json'} and {out / 'gpu_all.md'}")
    print(markdown(res))
    return res


if __name__ == "__main__":
    sys.exit(1 if failures(main()) else 0)
