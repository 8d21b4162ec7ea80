"""`foveal robust RUN`: corruptions, noise/occlusion sweeps and attacks; writes robustness.json + plots."""

from __future__ import annotations

import argparse
import json
import sys

# Flag spellings kept from before the flags were built from config.py: {flag: field path}.
ROBUST_FLAGS = {"eps": "eps_linf", "noise": "noise_stds"}


def register(sub: argparse._SubParsersAction) -> None:
    from ..config import RobustConfig
    from .config_args import add_dataclass_flags

    sp = sub.add_parser("robust", help="robustness: common corruptions, noise/occlusion sweeps, FGSM/PGD attacks")
    sp.add_argument("run", help="run folder or weights file")
    sp.add_argument("--data", help="dataset name, image folder or CSV (default: the run's own data)")
    sp.add_argument("--data-dir", help="folder with the official files of a named dataset")
    sp.add_argument("--reference", help="baseline run (with robustness.json) for corruption error (CE, mCE)")
    sp.add_argument("--out", help="folder for robustness.json and plots (default: the run folder)")
    sp.add_argument("--json", action="store_true", help="print robustness.json")
    add_dataclass_flags(sp, RobustConfig, ROBUST_FLAGS)
    sp.set_defaults(handler=cmd_robust)


def cmd_robust(args: argparse.Namespace) -> int:
    from ..config import RobustConfig
    from ..tasks.robust import robust_to_folder
    from .config_args import dataclass_from_args

    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    done = robust_to_folder(args.run, dataclass_from_args(RobustConfig, args), args.data, args.data_dir,
                            args.reference, args.out, log)
    for e in done.skipped:
        print(f"robust: skipped unreadable image {e}", file=sys.stderr)
    result = done.result
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, d in result.get("attacks", {}).items():
            print(f"{name:<10} " + "  ".join(f"eps={e}: {a:.3f}" for e, a in d.items()))
        if result.get("suspect_gradient_masking"):
            print("WARNING: the attacks show signs of gradient masking; robust accuracies above are NOT evidence "
                  "of robustness:\n  - " + "\n  - ".join(result["warnings"]))
        print("wrote " + ", ".join(str(f) for f in done.files))
    return 0
