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
NAN = "float('NAN') is float('nan'): Python parses the name case-insensitively"
ZERO_OVER_ZERO = "the guarded branch computes 0 / 0, which torch makes NaN: the value of the else branch"
EMPTY_BIN = "where the count is 0 the sum is 0 too, so 0 / clamp(0, 1) == 0 either way"
INT_FLOOR = ("the clipped sum is of integer counts, 0 only where the numerator is 0 too (every row of the joint "
             "has its diagonal >= 1): a floor of 1e-100, 1 or none gives the same quotient")
FALLBACK = "the fallback string only feeds isdigit() / membership in TRUE, which '' and 'XXXX' both fail"
NEWLINE = "open(newline='') only changes line endings on Windows; POSIX open() does not translate them"
FLOAT_NAME = "float() reads 'nan' / 'inf' case-insensitively"
TIE = ("a strict and a non-strict comparison differ only on equality of a continuous draw with its threshold "
       "(probability 2^-24 for torch.rand, 2^-53 for numpy) or of a computed float with an exact bound")
DEFAULT_ARG = "the argument removed or set to None is torch's default (align_corners=False, bilinear, zeros)"
UNREACHABLE_CLAMP = "the bound is never reached: round(255 x) lies in [0, 255] for images in [0, 1] and the LUT is >= 0"
UNREACHABLE_TAKE = "every op's parameter tensors have more dimensions than its batch axis: the else branch is unused"
BOX_CLIP = "the bound cannot bind: the box start is below the centre, which is < H (W), and its end is >= 0"
INT_INDEX = "integer pixel indices compare with the float box bounds by value, as float indices do"
DEAD_STORE = "the counter is not read after this assignment (or starts at 0, so `= 1` equals `+= 1`)"
EQUIVALENT: dict[str, str] = {
    "foveal.metrics.classification.xǁConfusionMeterǁcompute__mutmut_16": NAN,
    "foveal.metrics.classification.xǁConfusionMeterǁcompute__mutmut_23": NAN,
    "foveal.metrics.classification.xǁConfusionMeterǁcompute__mutmut_34": NAN,
    "foveal.metrics.classification.x_report_from_confusion__mutmut_64": NAN,
    "foveal.metrics.classification.x_report_from_confusion__mutmut_71": NAN,
    "foveal.metrics.classification.x_report_from_confusion__mutmut_58": ZERO_OVER_ZERO,
    "foveal.metrics.classification.x_report_from_confusion__mutmut_60": ZERO_OVER_ZERO,
    "foveal.metrics.classification.x_report_from_confusion__mutmut_68": ZERO_OVER_ZERO + " (mean of no recalls)",
    "foveal.metrics.classification.x__safe_div__mutmut_7": "every caller's numerator is 0 where its denominator "
                                                           "is 0 (tp <= predicted, support; 2pr when p + r = 0)",
    "foveal.metrics.classification.x_report_from_confusion__mutmut_3": "the confusion matrix is square: shape[1] "
                                                                       "== shape[0]",
    "foveal.metrics.classification.x_report_from_confusion__mutmut_43": "at total == 1, support / total == support",
    "foveal.metrics.calibration.x_reliability__mutmut_59": EMPTY_BIN,
    "foveal.metrics.groups.x__binary_gaps__mutmut_35": NAN,
    "foveal.metrics.groups.x__binary_gaps__mutmut_10": "swapping which label is positive swaps the TPR and FPR "
                                                       "lists; the equalized-odds difference is the max of both "
                                                       "spreads, and demographic parity does not read labels",
    "foveal.data.labels.x_confident_learning__mutmut_56": "numpy reads the sort kind case-insensitively",
    "foveal.data.labels.x_issue_rows__mutmut_18": "numpy reads the sort kind case-insensitively",
    "foveal.data.labels.x_prune_by_noise_rate__mutmut_33": "None stored in a bool array is False",
    "foveal.data.labels.x__round_rows__mutmut_7": "astype(None) is astype(float64)",
    "foveal.data.labels.x__prune_counts__mutmut_3": "astype(None) is astype(float64)",
    "foveal.data.labels.x__round_rows__mutmut_21": "diff == 0 never gets here (inside `if diff:`)",
    "foveal.data.labels.x_noise_matrix__mutmut_10": "a (K,) column sum broadcasts like the kept (1, K) one",
    "foveal.data.labels.x_noise_matrix__mutmut_12": "a (K,) column sum broadcasts like the kept (1, K) one",
    "foveal.data.labels.x_noise_matrix__mutmut_13": INT_FLOOR,
    "foveal.data.labels.x_confident_joint__mutmut_61": INT_FLOOR,
    "foveal.data.labels.x_confident_joint__mutmut_71": INT_FLOOR,
    "foveal.data.labels.x_confident_joint__mutmut_79": INT_FLOOR,
    "foveal.data.labels.x_prune_by_noise_rate__mutmut_22": "n >= 0 adds n == 0, which flags argsort(...)[:0]: nothing",
    "foveal.data.labels.x_apply_label_files__mutmut_41": FALLBACK,
    "foveal.data.labels.x_read_refs__mutmut_51": FALLBACK,
    "foveal.data.labels.x_apply_label_files__mutmut_71": "notes is [] when the relabel notes are added",
    "foveal.data.labels.x_write_issue_csv__mutmut_14": NEWLINE,
    "foveal.data.labels.x_write_issue_csv__mutmut_17": NEWLINE,
    "foveal.data.labels.x_write_noise_csv__mutmut_3": NEWLINE,
    "foveal.data.labels.x_write_noise_csv__mutmut_6": NEWLINE,
    **{f"foveal.data.augment.x_affine__mutmut_{i}": DEFAULT_ARG for i in (4, 7, 14, 17, 18, 19)},
    "foveal.data.augment.x_apply_op__mutmut_2": "sign is +-1, so mag / sign == mag * sign",
    "foveal.data.augment.x_apply_op__mutmut_77": "r['solarize'] is 1.0 in both range tables: mag / 1 == mag * 1",
    "foveal.data.augment.x__geometric__mutmut_2": "a bool mask multiplies and sums like its 0/1 float",
    **{f"foveal.data.augment.x__take__mutmut_{i}": UNREACHABLE_TAKE for i in (6, 7, 8)},
    "foveal.data.augment.xǁHFlipǁmake_params__mutmut_8": TIE,
    "foveal.data.augment.x__signs__mutmut_14": TIE,
    "foveal.data.augment.xǁRandomErasingǁmake_params__mutmut_9": TIE,
    "foveal.data.augment.xǁMixBatchǁ__call____mutmut_18": TIE,
    "foveal.data.augment.xǁRandomResizedCropǁmake_params__mutmut_36": TIE,
    "foveal.data.augment.xǁRandomResizedCropǁmake_params__mutmut_38": TIE,
    "foveal.data.augment.xǁColorJitterǁmake_params__mutmut_2": "1 - u j and 1 + u j with u uniform on [-1, 1] have "
                                                                "the same distribution",
    **{f"foveal.data.augment.x_equalize__mutmut_{i}": UNREACHABLE_CLAMP for i in (7, 8, 10, 14, 64)},
    "foveal.data.augment.x_equalize__mutmut_61": "for integers c, s: (c + s / 2) // s == (c + s // 2) // s",
    "foveal.data.augment.x_equalize__mutmut_73": "the extra padded LUT column lies past every gathered index (<= 255)",
    "foveal.data.augment.x_equalize__mutmut_33": "the extra histogram bin (256) is always empty and never gathered",
    "foveal.data.augment.xǁMixBatchǁ_paste_box__mutmut_2": "x.shape[+2:] is x.shape[2:], (H, W) of (B, C, H, W)",
    **{f"foveal.data.augment.xǁMixBatchǁ_paste_box__mutmut_{i}": BOX_CLIP for i in (15, 26, 40, 51)},
    **{f"foveal.data.augment.xǁRandomErasingǁapply__mutmut_{i}": INT_INDEX for i in (5, 8, 13, 16)},
    "foveal.data.augment.x_grayscale__mutmut_9": "a (3, 1, 1) weight broadcasts over (B, 3, H, W) as (1, 3, 1, 1)",
    "foveal.robustness.attacks.x_pgd__mutmut_32": FLOAT_NAME,
    "foveal.robustness.attacks.x_masking_warnings__mutmut_43": FLOAT_NAME,
    "foveal.robustness.attacks.x_pgd__mutmut_106": TIE,
    "foveal.robustness.attacks.x_random_start__mutmut_39": "every image of a batch has the same number of elements",
    "foveal.robustness.attacks.x_attack_sweep__mutmut_281": "the class count is the output width: one image or two "
                                                            "give the same",
    "foveal.robustness.attacks.x_attack_sweep__mutmut_141": "fgsm_rows holds only FGSM names: the lookup gives None "
                                                            "for every other attack, as the else branch",
    "foveal.robustness.attacks.x_attack_sweep__mutmut_226": "pgd's default step 2.5 eps / 10 steps is eps / 4",
    "foveal.robustness.attacks.x_attack_sweep__mutmut_236": "'linf' is pgd's default norm",
    "foveal.robustness.attacks.x_attack_sweep__mutmut_237": "'linf' is pgd's default norm",
    **{f"foveal.data.splits.x_make_splits__mutmut_{i}": DEAD_STORE for i in (79, 86, 87, 88)},
    "foveal.data.splits.x_content_keys__mutmut_6": "flatten(2) keeps each image's bytes in the same order: same hash",
    "foveal.data.splits.x_make_splits__mutmut_96": "at len(train) == limit the stratified sample of fraction 1 "
                                                   "keeps every image in order",
}


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
    """Markdown rows: counts per status, the raw score (killed / total) and the score without the equivalents."""
    rows = ["| module | killed | timeout | survived | no tests | not checked | equivalent | total | raw score "
            "| score |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in modules:
        r = results(m)
        excluded = {k for k in r if k in EQUIVALENT and r[k] == "survived"}
        c = Counter(v for k, v in r.items() if k not in excluded)
        kill = c["killed"] + c["timeout"]
        denom = len(r) - len(excluded)
        rows.append(f"| {m} | {c['killed']} | {c['timeout']} | {c['survived']} | {c['no tests']} | {c['not checked']} "
                    f"| {len(excluded)} | {len(r)} | {kill / max(len(r), 1):.1%} | {kill / max(denom, 1):.1%} |")
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
