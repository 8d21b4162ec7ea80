"""CPU step time of the Trainer and of the fast recipe, for two source trees, measured alternately.

    python bench/bench_step.py --trees /path/to/old/src /path/to/new/src --rounds 3 --out step.json

Each measurement runs in a fresh Python process with PYTHONPATH set to one tree, so the two
trees never share an interpreter, a warm allocator or an import cache; the trees alternate
(old, new, then new, old, ...) so that load on a shared box drifts over both alike. The
children drive the code only through entry points both trees have (the issue-25 step refactor
kept them): `Trainer(cfg).setup()` and `train_epoch(epoch)` (its `train_seconds` over its
steps; one untimed epoch first), and `foveal.training.fast.prepare / reinit / train` (one
untimed run first). Printed: the median seconds per step of each tree and the median over
rounds of the per-round ratio second tree / first tree (below 1: the second tree is faster).

Cases:
- trainer-lenet5: digits (32 px, gray), LeNet-5, batch 64, the default augmentation;
- trainer-lite0: digits as 224-px RGB, timm/tf_efficientnet_lite0 (needs timm), batch 32;
- fast: the fast recipe's digits preset (airnet_tiny, 16 px, batch 128).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

# name -> settings of one measurement (read by CHILD)
CASES: dict[str, dict[str, Any]] = {
    "trainer-lenet5": {"kind": "trainer", "overrides": {
        "data.source": "digits", "model.name": "lenet5", "data.img_size": 32, "train.batch_size": 64}, "steps": 20},
    "trainer-lite0": {"kind": "trainer", "overrides": {
        "data.source": "digits", "model.name": "timm/tf_efficientnet_lite0", "data.img_size": 224,
        "data.in_chans": 3, "train.batch_size": 32}, "steps": 4},
    "fast": {"kind": "fast", "epochs": 4.0},
}

CHILD = r"""
import json, sys, time
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
if args["kind"] == "trainer":
    from foveal.config import load_config
    from foveal.training import Trainer
    over = {**args["overrides"], "data.limit": args["overrides"]["train.batch_size"] * args["steps"],
            "train.epochs": 2, "train.progress": False, "train.device": "cpu", "train.out_dir": args["out"],
            "train.name": "bench"}
    trainer = Trainer(load_config(overrides=over), log=lambda m: None)
    trainer.setup()
    trainer.train_epoch(0)  # warm-up: oneDNN primitives, allocator
    steps = len(trainer.train_loader)
    seconds = trainer.train_epoch(1)["train_seconds"]
else:
    import dataclasses
    from foveal.training import fast
    data = fast.load_fast_data("digits", img_size=16)
    cfg = dataclasses.replace(fast.RECIPES["digits"], epochs=args["epochs"])
    run = fast.prepare(data, cfg)
    fast.reinit(run, data, seed=1)
    fast.train(run, data, seed=1)  # warm-up
    fast.reinit(run, data, seed=0)
    t0 = time.perf_counter()
    fast.train(run, data, seed=0)
    seconds = time.perf_counter() - t0
    steps = max(1, int(cfg.epochs * (len(data.train_y) // cfg.batch_size)))
print(json.dumps({"seconds": seconds, "steps": steps, "step_s": seconds / steps}))
"""


def measure(tree: str, case: dict[str, Any], threads: int, out: str) -> dict[str, Any]:
    """One fresh process on `tree`; returns the child's JSON line."""
    env = {**os.environ, "PYTHONPATH": tree, "OMP_NUM_THREADS": str(threads)}
    args = json.dumps({**case, "threads": threads, "out": out})
    proc = subprocess.run([sys.executable, "-c", CHILD, args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement on '{tree}' failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", nargs=2, required=True, metavar=("OLD_SRC", "NEW_SRC"),
                   help="two source folders (each holding the foveal package)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--rounds", type=int, default=3, help="measurements per tree and case, alternating")
    p.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads in each child")
    p.add_argument("--steps", type=int, help="timed steps of the trainer cases (default: 20 for LeNet-5, 4 for Lite0)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    trees = [str(Path(t).resolve()) for t in args.trees]
    for t in trees:
        if not (Path(t) / "foveal" / "__init__.py").is_file():
            raise SystemExit(f"--trees: '{t}' holds no foveal package (give the src/ folder)")
    result: dict[str, Any] = {"trees": trees, "rounds": args.rounds, "threads": args.threads, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            case = {**CASES[name], **({"steps": args.steps} if args.steps and "steps" in CASES[name] else {})}
            times: list[list[float]] = [[], []]
            for r in range(args.rounds):
                for k in ((0, 1) if r % 2 == 0 else (1, 0)):
                    row = measure(trees[k], case, args.threads, str(Path(tmp) / f"{name}-{r}-{k}"))
                    times[k].append(row["step_s"])
                    print(f"{name} round {r + 1} tree {k + 1}: {1000 * row['step_s']:.1f} ms/step "
                          f"({row['steps']} steps)", file=sys.stderr, flush=True)
            ratios = [b / a for a, b in zip(*times)]
            result["cases"][name] = {"step_ms": [[1000 * t for t in ts] for ts in times],
                                     "median_step_ms": [1000 * statistics.median(ts) for ts in times],
                                     "ratios": ratios, "median_ratio": statistics.median(ratios)}
    for name, c in result["cases"].items():
        print(f"{name:16s} tree 1 {c['median_step_ms'][0]:8.1f} ms/step  tree 2 {c['median_step_ms'][1]:8.1f} "
              f"ms/step  median ratio 2/1 {c['median_ratio']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
