"""`foveal robust RUN`: corruptions, noise/occlusion sweeps and attacks; writes robustness.json + plots."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _floats(s: str) -> list[float]:
    try:
        return [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("robust", help="robustness: common corruptions, noise/occlusion sweeps, FGSM/PGD attacks")
    sp.add_argument("run", help="run folder or weights file")
    sp.add_argument("--data", help="dataset name, image folder or CSV (default: the run's own data)")
    sp.add_argument("--data-dir", help="folder with the official files of a named dataset")
    sp.add_argument("--split", default="test")
    sp.add_argument("--limit", type=int, default=2000, help="evaluate on N images drawn at random, every class in its share (default 2000)")
    sp.add_argument("--attack-limit", type=int, default=500, help="attack N of those, drawn the same way (default 500)")
    sp.add_argument("--corruptions", help="comma-separated subset of the 15 corruptions (default: all)")
    sp.add_argument("--severities", default="1,2,3,4,5")
    sp.add_argument("--eps", type=_floats, help="L-inf epsilons in pixel units, e.g. 0,0.1,0.2,0.3")
    sp.add_argument("--eps-l2", type=_floats, help="L2 epsilons in pixel units")
    sp.add_argument("--noise", type=_floats, help="Gaussian noise stds, e.g. 0,0.1,0.2")
    sp.add_argument("--pgd-steps", type=int, default=20)
    sp.add_argument("--skip", default="", help="comma-separated: corruptions,noise,occlusion,attacks")
    sp.add_argument("--reference", help="baseline run (with robustness.json) for corruption error (CE, mCE)")
    sp.add_argument("--device", default="auto")
    sp.add_argument("--batch-size", type=int, default=256)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", help="folder for robustness.json and plots (default: the run folder)")
    sp.add_argument("--json", action="store_true", help="print robustness.json")
    sp.set_defaults(handler=cmd_robust)


def cmd_robust(args: argparse.Namespace) -> int:
    from ..engine.checkpoint import load_model
    from ..engine.device import resolve_device
    from ..engine.inference import eval_data
    from ..robustness.corruptions import CORRUPTIONS
    from ..robustness.measure import RobustSpec, evaluate_robustness, load_reference, spread_subset, write_robustness

    device = resolve_device(args.device)
    model, meta = load_model(args.run, device)
    bundle = eval_data(meta, args.data, args.split, args.data_dir)
    (split, part), = bundle.splits.items()
    n = min(args.limit, len(part.labels)) if args.limit else len(part.labels)
    pick = spread_subset(part.labels, n, args.seed)  # not the first n: splits are often sorted by class
    names = tuple(c.strip() for c in args.corruptions.split(",")) if args.corruptions else CORRUPTIONS
    unknown = [c for c in names if c not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption(s) {', '.join(unknown)}; choose from {', '.join(CORRUPTIONS)}")
    kw = {k: tuple(v) for k, v in (("eps_linf", args.eps), ("eps_l2", args.eps_l2), ("noise_stds", args.noise))
          if v is not None}
    spec = RobustSpec(corruptions=names, severities=tuple(int(s) for s in args.severities.split(",")),
                      pgd_steps=args.pgd_steps, attack_limit=args.attack_limit, batch_size=args.batch_size,
                      seed=args.seed, skip=tuple(s.strip() for s in args.skip.split(",") if s.strip()), **kw)
    reference = load_reference(args.reference) if args.reference else None
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    images, kept, errors = part.images.load_readable(pick)  # a streamed split may hold unreadable files
    for e in errors:
        print(f"robust: skipped unreadable image {e}", file=sys.stderr)
    result = evaluate_robustness(model, meta, images, part.labels[pick][kept], spec, device, reference,
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
