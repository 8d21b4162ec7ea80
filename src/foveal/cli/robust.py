"""`foveal robust RUN`: corruptions, noise/occlusion sweeps and attacks; writes robustness.json + plots."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

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
    from ..engine.checkpoint import load_model
    from ..engine.device import resolve_channels_last, resolve_device
    from ..engine.inference import eval_data
    from ..robustness.measure import check_config, evaluate_robustness, load_reference, spread_subset, write_robustness
    from .config_args import dataclass_from_args

    cfg = dataclass_from_args(RobustConfig, args)
    check_config(cfg)  # before loading anything: a typo should cost nothing
    device = resolve_device(cfg.device)
    model, card = load_model(args.run, device)
    cfg = dataclasses.replace(cfg, channels_last=resolve_channels_last(cfg.channels_last, device,
                                                                     card.preprocessing.img_size))
    bundle = eval_data(card, args.data, cfg.split, args.data_dir)
    (split, part), = bundle.splits.items()
    n = min(cfg.limit, len(part.labels)) if cfg.limit else len(part.labels)
    pick = spread_subset(part.labels, n, cfg.seed)  # not the first n: splits are often sorted by class
    reference = load_reference(args.reference) if args.reference else None
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    images, kept, errors = part.images.load_readable(pick)  # a streamed split may hold unreadable files
    for e in errors:
        print(f"robust: skipped unreadable image {e}", file=sys.stderr)
    result = evaluate_robustness(model, card, images, part.labels[pick][kept], cfg, device, reference,
                                 args.reference or "", log)
    result["split"] = split
    out = Path(args.out) if args.out else (Path(args.run) if Path(args.run).is_dir() else Path("."))
    files = write_robustness(out, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, d in result.get("attacks", {}).items():
            print(f"{name:<10} " + "  ".join(f"eps={e}: {a:.3f}" for e, a in d.items()))
        if result.get("suspect_gradient_masking"):
            print("WARNING: the attacks show signs of gradient masking; robust accuracies above are NOT evidence "
                  "of robustness:\n  - " + "\n  - ".join(result["warnings"]))
        print("wrote " + ", ".join(str(f) for f in files))
    return 0
