"""Mutation testing of the numeric modules with mutmut 3: one module at a time, then a score table.

    .venv/bin/python bench/mutation.py                      # every module, fresh mutants/ folder
    .venv/bin/python bench/mutation.py metrics.calibration  # some modules (keeps mutants/ and its stats)
    .venv/bin/python bench/mutation.py --table              # only print the table of the last runs

What is mutated and which tests run is configured under [tool.mutmut] in pyproject.toml; each
mutant runs only the tests that executed its function during mutmut's stats pass. Runs are
niced with one worker and one thread: the box is shared. Score = killed / (total - excluded),
where timeouts count as killed (the mutant made the tests hang) and `EQUIVALENT` lists the
mutants that cannot change behaviour, each with its reason.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = ROOT / ".venv" / "bin" / "mutmut"
MODULES = ["metrics.classification", "metrics.calibration", "metrics.groups", "data.splits", "data.labels",
           "data.augment", "robustness.draws", "robustness.attacks"]

# Equivalent mutants (no input can tell them from the original), excluded from the denominator.
# Keyed by mutant name (`mutmut show NAME` prints the diff); the value says why.
EQUIVALENT: dict[str, str] = {}


def status(code) -> str:
    return {1: "killed", 3: "killed", 0: "survived", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout",
            255: "timeout", 5: "no tests", 33: "no tests", None: "not checked"}.get(code, "suspicious")


def results(module: str) -> dict[str, str]:
    meta = ROOT / "mutants" / "src" / "foveal" / (module.replace(".", "/") + ".py.meta")
    if not meta.is_file():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {k: status(v) for k, v in codes.items()}


def table(modules: list[str]) -> str:
    rows = [f"| {'module':<22} | killed | timeout | survived | no tests | excluded | total | score |",
            f"|{'-' * 24}|--------|---------|----------|----------|----------|-------|-------|"]
    for m in modules:
        r = results(m)
        excluded = {k for k in r if k in EQUIVALENT and r[k] == "survived"}
        c = Counter(v for k, v in r.items() if k not in excluded)
        denom = len(r) - len(excluded)
        score = (c["killed"] + c["timeout"]) / denom if denom else float("nan")
        rows.append(f"| {m:<22} | {c['killed']:6d} | {c['timeout']:7d} | {c['survived']:8d} | {c['no tests']:8d} "
                    f"| {len(excluded):8d} | {len(r):5d} | {score:5.1%} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"of {', '.join(MODULES)} (default: all, from a fresh mutants/)")
    ap.add_argument("--table", action="store_true", help="print the table of the last runs, run nothing")
    ap.add_argument("--survivors", action="store_true", help="also list the surviving mutants")
    args = ap.parse_args()
    modules = args.modules or MODULES
    if not args.table:
        if not args.modules:  # a full run starts clean, so the stats pass sees the current tests
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        for m in modules:
            t0 = time.time()
            cmd = ["nice", "-n", "15", str(MUTMUT), "run", "--max-children", "1", f"foveal.{m}.*"]
            p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            print(f"{m}: mutmut exit {p.returncode} in {time.time() - t0:.0f} s", file=sys.stderr)
            if p.returncode:
                print(p.stdout[-3000:], p.stderr[-3000:], file=sys.stderr)
    print(table(modules))
    if args.survivors:
        for m in modules:
            for k, v in sorted(results(m).items()):
                if v == "survived" and k not in EQUIVALENT:
                    print(k)


if __name__ == "__main__":
    main()
