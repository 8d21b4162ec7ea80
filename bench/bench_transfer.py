"""Transfer defaults against a small hand-tuned grid, per photo folder, each configuration a whole `foveal train`.

    python bench/bench_transfer.py FOLDER... [--weights FILE] [--model NAME] [--seeds 0,1,2] [--out DIR]
    python bench/bench_transfer.py ../shared/data/weather4 --model timm/tf_efficientnet_lite0 --seeds 0,1,2

For each image folder (class subfolders, or train/ val/ test/ with class subfolders; when val or test is
missing foveal carves it with the run's seed, so each seed also draws its own split) and each seed, from the
same pretrained weights (`--weights FILE`, else the architecture's ImageNet weights, `--pretrained imagenet`):
- defaults: nothing set but the data, model, weights and seed (with published weights foveal resolves this to
  the 'staged' fine-tune at the default lr; the resolved recipe is read back from the run's config.yaml);
- linear: `--model.finetune linear` (linear probe);
- staged x0.3 / x1 / x3: `--model.finetune staged --lr L` at 0.3, 1 and 3 times the default lr;
- full: `--model.finetune full`.
Every run is a child process (`python -m foveal.cli.main train`), timed as a user sees it: wall seconds, and
user/sys CPU seconds of the child and its reaped descendants (`time_command`). Recorded per run: the val
accuracy of the best epoch and of the final epoch (metrics.jsonl), the test accuracy of the best weights
(test.json) and of the last weights (`foveal eval RUN/last.safetensors`, the run's own test split).

Written under --out: bench_transfer.md / .csv / .json, one table of per-configuration means over the seeds,
and per folder the acceptance line: the defaults' final-epoch test accuracy against the best grid
configuration's (picked by that same mean, on test: the grid's most favourable pick), and the defaults'
final-epoch val against their best epoch's val, each to be within 1 point. Run folders go to DIR/runs/; their
weights files are deleted once measured (--keep-weights keeps them); a run whose record is already there
is reused, so an interrupted benchmark continues where it stopped. Exit status 1 when any run failed.

Every run also gets `--progress false --report false --logger none` (no progress bar, HTML report or event
files; none of them changes the training). --img-size, --epochs, --batch-size and --device are handed to
every configuration, the defaults included (for smoke runs on small machines; the acceptance numbers are
without them).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import yaml  # noqa: E402

from foveal.benchmarks.cpu_e2e import foveal_argv, time_command  # noqa: E402
from foveal.config import OptimConfig  # noqa: E402

METRICS = ("val_best", "val_final", "test_best", "test_last")  # accuracies in [0, 1]
TIMES = ("wall_s", "user_s", "sys_s")
RUN_RECORD = "bench_transfer_run.json"


def configurations(default_lr: float) -> dict[str, list[str]]:
    """Name -> the `foveal train` flags that make the configuration (beyond data, model, weights, seed)."""
    return {"defaults": [],
            "linear": ["--model.finetune", "linear"],
            **{f"staged x{k:g}": ["--model.finetune", "staged", "--lr", f"{default_lr * k:.6g}"] for k in (0.3, 1, 3)},
            "full": ["--model.finetune", "full"]}


def child_env() -> dict[str, str]:
    """The children import this tree's foveal, as this script does."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)}


def read_run(run: Path) -> dict[str, Any]:
    """Accuracies and the resolved recipe of a finished run folder."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    test = json.loads((run / "test.json").read_text())
    best = test.get("best_epoch")
    at_best = next((r for r in rows if r.get("epoch") == best), None)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    return {"epochs_run": len(rows), "best_epoch": best,
            "val_best": at_best["val_acc"] if at_best else max(r["val_acc"] for r in rows),
            "val_final": rows[-1]["val_acc"], "test_best": test["accuracy"],
            "finetune": cfg["model"]["finetune"], "lr": cfg["optim"]["lr"], "layer_decay": cfg["optim"]["layer_decay"],
            "img_size": cfg["data"]["img_size"], "augment": cfg["data"]["augment"]}


def one_run(folder: Path, config: str, flags: list[str], seed: int, run: Path, args: argparse.Namespace,
            log: Any = print) -> dict[str, Any]:
    """Train one configuration and seed into `run`, then evaluate its last weights; the run's record."""
    record = run / RUN_RECORD
    if record.is_file():
        rec = json.loads(record.read_text())
        log(f"{run.name}: reused ({record})")
        return rec
    if run.exists():  # an interrupted earlier attempt: foveal would pick run-2, so start it over here
        shutil.rmtree(run)
    common = [*(["--img-size", str(args.img_size)] if args.img_size else []),
              *(["--epochs", str(args.epochs)] if args.epochs else []),
              *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
              *(["--device", args.device] if args.device else [])]
    weights = args.weights or "imagenet"
    argv = foveal_argv("train", "--data", str(folder), "--model", args.model, "--pretrained", weights,
                       "--seed", str(seed), "--name", run.name, "--out-dir", str(run.parent), "--progress", "false",
                       "--report", "false", "--logger", "none", *common, *flags)
    rec: dict[str, Any] = {"folder": str(folder), "config": config, "seed": seed, "flags": flags,
                           "command": " ".join(argv[3:])}
    try:
        t = time_command(argv, child_env())
        rec.update({k: t[k] for k in TIMES}, max_rss_gb=t["max_rss_gb"])
        rec.update(read_run(run))
        ev = time_command(foveal_argv("eval", str(run / "last.safetensors"), "--out", str(run / "eval-last"),
                                      *(["--device", args.device] if args.device else [])), child_env())
        rec["test_last"] = json.loads((run / "eval-last" / "eval.json").read_text())["accuracy"]
        rec["eval_wall_s"] = ev["wall_s"]
    except (RuntimeError, OSError, KeyError, ValueError) as e:  # recorded, the others still run; exit status 1
        rec["error"] = str(e)[-2000:]
        log(f"{run.name}: FAILED: {str(e)[-600:]}")
        return rec
    if not args.keep_weights:
        for f in run.glob("*.safetensors"):
            f.unlink()
    record.write_text(json.dumps(rec, indent=1))
    log(f"{run.name}: wall {rec['wall_s']} s (user {rec['user_s']}, sys {rec['sys_s']}), {rec['finetune']} lr "
        f"{rec['lr']:g}; val best {rec['val_best']:.4f} (epoch {rec['best_epoch']}) final {rec['val_final']:.4f}; "
        f"test best {rec['test_best']:.4f} last {rec['test_last']:.4f}")
    return rec


def summarize(label: str, config: str, runs: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    row: dict[str, Any] = {"folder": label, "config": config, "seeds_ok": len(ok), "seeds": seeds}
    if ok:
        r0 = ok[0]
        row["recipe"] = f"{r0['finetune']}, lr {r0['lr']:g}, layer decay {r0['layer_decay']:g}, {r0['img_size']} px"
        for k in (*TIMES, "best_epoch", *METRICS):
            row[k] = round(statistics.mean(float(r[k]) for r in ok), 4 if k in METRICS else 2)
    return row


def compare(label: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The acceptance line of one folder: defaults against the best grid configuration, final against best val."""
    by = {r["config"]: r for r in rows if r["seeds_ok"]}
    d = by.get("defaults")
    grid = [r for c, r in by.items() if c != "defaults"]
    if d is None or not grid:
        return {"folder": label, "line": f"{label}: no comparison (the defaults or every grid configuration failed)",
                "passed": False}
    best = max(grid, key=lambda r: r["test_last"])
    test_gap = round(100 * (d["test_last"] - best["test_last"]), 2)
    val_gap = round(100 * (d["val_final"] - d["val_best"]), 2)
    passed = test_gap >= -1.0 and val_gap >= -1.0
    line = (f"{label}: defaults final-epoch test {d['test_last']:.4f} vs best grid configuration ({best['config']}) "
            f"{best['test_last']:.4f}: {test_gap:+.2f} points; defaults final-epoch val {d['val_final']:.4f} vs "
            f"best-epoch val {d['val_best']:.4f}: {val_gap:+.2f} points; within 1 point each: "
            f"{'yes' if passed else 'no'}")
    return {"folder": label, "best_grid_config": best["config"], "test_gap_points": test_gap,
            "val_gap_points": val_gap, "passed": passed, "line": line}


COLUMNS = ("folder", "config", "recipe", "seeds_ok", *TIMES, "best_epoch", *METRICS)
HEADERS = ("folder", "configuration", "resolved recipe", "seeds", "wall s", "user s", "sys s", "best epoch",
           "val acc, best epoch", "val acc, final epoch", "test acc, best weights", "test acc, last weights")


def markdown(rows: list[dict[str, Any]], lines: list[str]) -> str:
    def cell(r: dict[str, Any], k: str) -> str:
        if k == "seeds_ok":
            return f"{r['seeds_ok']}/{r['seeds']}"
        v = r.get(k, "failed")
        return f"{v:.4f}" if k in METRICS and isinstance(v, float) else str(v)

    out = ["| " + " | ".join(HEADERS) + " |", "| " + " | ".join("---" for _ in HEADERS) + " |"]
    out += ["| " + " | ".join(cell(r, k) for k in COLUMNS) + " |" for r in rows]
    return "\n".join([*out, "", *lines]) + "\n"


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", metavar="FOLDER")
    p.add_argument("--weights", help="pretrained weights file (default: the architecture's ImageNet weights)")
    p.add_argument("--model", default="timm/tf_efficientnet_lite0", help="a name from `foveal models`")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training (and split) seeds")
    p.add_argument("--out", default="bench_transfer", help="folder for the table and the run folders")
    p.add_argument("--img-size", type=int, help="handed to every configuration (default: the weights')")
    p.add_argument("--epochs", type=int, help="handed to every configuration (default: foveal's)")
    p.add_argument("--batch-size", type=int, help="handed to every configuration (default: foveal's)")
    p.add_argument("--device", help="handed to every run (default: foveal's, auto)")
    p.add_argument("--keep-weights", action="store_true", help="keep each run's .safetensors files")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.weights:
        args.weights = str(Path(args.weights).resolve())
    out = Path(args.out).resolve()
    folders = [Path(f).resolve() for f in args.folders]
    for f in folders:
        if not f.is_dir():
            p.error(f"{f}: not a folder")
    names = [f.name for f in folders]
    labels = [n if names.count(n) == 1 else f"{n}-{i}" for i, n in enumerate(names)]  # run folder names stay apart
    default_lr = OptimConfig().lr
    grid = configurations(default_lr)
    res: dict[str, Any] = {
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch": metadata.version("torch"), "model": args.model, "weights": args.weights or "imagenet",
        "seeds": seeds, "default_lr": default_lr, "configurations": grid,
        "handed_to_every_run": {k: getattr(args, k) for k in ("img_size", "epochs", "batch_size", "device")
                                if getattr(args, k)},
        "folders": [str(f) for f in folders], "runs": [], "table": [], "comparisons": []}
    out.mkdir(parents=True, exist_ok=True)
    for folder, label in zip(folders, labels):
        for config, flags in grid.items():
            runs = []
            for seed in seeds:
                run = out / "runs" / f"{label}-{config.replace(' ', '')}-s{seed}"
                runs.append(one_run(folder, config, flags, seed, run, args))
                res["runs"].append(runs[-1])
                (out / "bench_transfer.json").write_text(json.dumps(res, indent=1))  # progress survives a crash
            res["table"].append(summarize(label, config, runs, len(seeds)))
        res["comparisons"].append(compare(label, [r for r in res["table"] if r["folder"] == label]))
    lines = [c["line"] for c in res["comparisons"]]
    failed = [f"{Path(r['folder']).name} {r['config']} seed {r['seed']}" for r in res["runs"] if "error" in r]
    if failed:
        lines.append(f"FAILED runs ({len(failed)}): {', '.join(failed)}")
    res["failed_runs"] = failed
    text = markdown(res["table"], lines)
    (out / "bench_transfer.md").write_text(text)
    with open(out / "bench_transfer.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["folder", "config", "recipe", "seeds_ok", "seeds", *TIMES, "best_epoch",
                                          *METRICS], extrasaction="ignore")
        w.writeheader()
        w.writerows(res["table"])
    (out / "bench_transfer.json").write_text(json.dumps(res, indent=1))
    print(text, flush=True)
    return res


if __name__ == "__main__":
    sys.exit(1 if main()["failed_runs"] else 0)
