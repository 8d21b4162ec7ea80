"""Acceptance 3 of the label-errors issue: `foveal check mnist --split test --labels` against the 15
MNIST test-set label errors that human raters confirmed (Northcutt, Athalye, Mueller 2021; the list
and its source are in bench/mnist_test_label_errors.csv).

For each way of getting the probabilities (`holdout`: one model trained on the 60,000 training
images, the default for --split test; `kfold`: 4 folds of the test split itself, --no-holdout):
the flagged set, how many confirmed errors it holds, and where each confirmed error ranks by
self-confidence p(given) among all 10,000 test images (hits in the top N), with the wall time.

    nice -n 10 python bench/bench_mnist_test_errors.py --data-dir /work/shared/data --out bench_mnist_test_errors.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from foveal.tasks.labels import LabelCheck, find_label_issues

CONFIRMED = Path(__file__).with_name("mnist_test_label_errors.csv")
TOP_N = (15, 30, 50, 100)


def read_confirmed(path: Path = CONFIRMED) -> list[dict[str, int]]:
    """The confirmed errors as dicts of ints (index, given, guessed, mturk votes); '#' lines are the source."""
    with open(path) as f:
        return [{k: int(v) for k, v in r.items()} for r in csv.DictReader(ln for ln in f if not ln.startswith("#"))]


def score(check: LabelCheck, confirmed: list[dict[str, int]]) -> dict:
    """Hits of the confirmed errors in the flagged set and in the top N of all images by self-confidence."""
    iss = check.issues
    sc = iss.probs[np.arange(len(iss.given)), iss.given]
    pos = np.empty(len(sc), dtype=np.int64)
    pos[np.argsort(sc, kind="stable")] = np.arange(1, len(sc) + 1)  # 1 = least self-confident image
    flagged = iss.mask
    per = [{"index": c["index"], "flagged": bool(flagged[c["index"]]), "rank_all": int(pos[c["index"]]),
            "suggested": int(iss.suggested[c["index"]]), "guessed": c["guessed"]} for c in confirmed]
    return {"probabilities": check.method, "seconds": round(check.seconds, 1), "flagged": int(flagged.sum()),
            "confirmed_flagged": sum(p["flagged"] for p in per),
            "top": {n: sum(p["rank_all"] <= n for p in per) for n in TOP_N},
            "flagged_not_confirmed": [int(i) for i in iss.ranked if i not in {c["index"] for c in confirmed}],
            "per_error": per}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--modes", nargs="+", default=["holdout", "kfold"], choices=["holdout", "kfold"])
    ap.add_argument("--out", default="bench_mnist_test_errors.json")
    args = ap.parse_args()
    confirmed = read_confirmed()
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "confirmed": len(confirmed), "modes": {}}
    for mode in args.modes:
        check = find_label_issues("mnist", split="test", holdout=mode == "holdout", data_dir=args.data_dir,
                                  log=lambda m: print("  " + m, flush=True))
        res["modes"][mode] = score(check, confirmed)
        r = res["modes"][mode]
        print(f"{mode}: {r['flagged']} flagged, {r['confirmed_flagged']}/{len(confirmed)} confirmed errors among "
              f"them, top-N hits {r['top']}, {r['seconds']} s", flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
