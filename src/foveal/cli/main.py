"""`foveal` command line: thin commands that parse into config, call the library and print."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from .. import malloc
from ..config import CheckConfig, EvalConfig, LRFindConfig, PredictConfig
from .config_args import add_config_flags, add_dataclass_flags, config_from_args, dataclass_from_args

# The one way to add a command: a module's `register(subparsers)` adds its parsers, each with
# `set_defaults(handler=fn)`; this module registers the core verbs the same way (`register` below).
# Imported lazily by name so `foveal -h` stays fast and an optional group whose dependencies are
# missing does not break the others.
CLI_MODULES: list[str] = ["foveal.cli.bench", "foveal.cli.report_cmds", "foveal.cli.deploy", "foveal.cli.ssl", "foveal.cli.robust", "foveal.cli.runs", "foveal.cli.shard"]


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """Re-run this command under torchrun with `nproc` processes on this machine; returns its exit code."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "foveal.cli.main", *argv]
    return subprocess.call(cmd)


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from ..tasks.fit import fit

    cfg = config_from_args(args)
    if cfg.train.devices > 1 and "LOCAL_RANK" not in os.environ:  # not yet under torchrun: launch it
        return launch_torchrun(cfg.train.devices, args.argv)
    fit(cfg)  # one Trainer, or Just Train Twice's two (train.jtt_epochs)
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from ..training.build import build_run
    from ..training.lr_find import lr_find

    cfg = config_from_args(args)
    if not cfg.train.name:
        from ..training.runs import default_name

        cfg.train.name = f"{default_name(cfg)}-lr-find"
    sweep = dataclass_from_args(LRFindConfig, args, "lr_find")
    res = lr_find(build_run(cfg), sweep.start_lr, sweep.end_lr, sweep.steps)
    print(f"suggested learning rate: {res['suggested_lr']:.3g}  (plot: lr_find.png in the run folder)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..tasks.reporting import evaluate_to_folder
    from ..metrics import format_report

    o = dataclass_from_args(EvalConfig, args)
    res = evaluate_to_folder(args.run, o.data, o.split, o.device, data_dir=o.data_dir, out=o.out)
    print(json.dumps(res.metrics, indent=2) if args.json else format_report(res.metrics))
    # with --json, stdout is the JSON alone; say where the files went on stderr
    print(f"saved eval.json, eval.csv, eval_confusion.csv and {res.page.name} in {res.out_dir}",
          file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ..backends import load_predictor  # an .onnx file runs on ONNX Runtime, without torch

    o = dataclass_from_args(PredictConfig, args)
    records = load_predictor(args.run, device=o.device).predict_files(args.inputs, topk=o.topk)
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    for r in records:
        if "error" in r:
            print(f"{r['path']}\tERROR {r['error']}")
        else:
            print(f"{r['path']}\t" + "  ".join(f"{t['class']} {t['prob']:.3f}" for t in r["top"]))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """Registered models with parameters (1000 classes, 3 channels) and GFLOPs at --img-size
    (default: each model's own size); --names lists names only, without building anything."""
    from ..models import list_models

    names = list_models(args.pattern)
    if not names:
        print(f"no registered model matches {args.pattern!r} (`foveal models --names` lists them all)", file=sys.stderr)
        return 1
    if args.names:
        print("\n".join(names))
        return 0
    from ..models.registry import model_table

    rows = model_table(args.pattern, args.img_size)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    size = f"{args.img_size} px" if args.img_size else "default px"
    extra = f" {'family':<13} {'min px':>6}" if args.details else ""
    print(f"{'model':<24} {'params (M)':>10} {'GFLOPs@' + size:>16} {'default px':>10}{extra}")
    for r in rows:
        gflops = f"{r['gflops']:.3f}" if r["gflops"] is not None else f"< min {r['min_img_size']} px"
        extra = f" {r['family']:<13} {r['min_img_size']:>6}" if args.details else ""
        print(f"{r['name']:<24} {r['params'] / 1e6:>10.2f} {gflops:>16} {r['default_img_size']:>10}{extra}")
    print("params at 1000 classes and 3 channels, for the form the input size selects (below 96 px the "
          "small-input stem); GFLOPs per image, a multiply-add counted as 2 FLOPs", file=sys.stderr)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ..config import apply_overrides, RunConfig
    from ..data.check import check_data, format_check, write_preview

    o = dataclass_from_args(CheckConfig, args)
    cfg = apply_overrides(RunConfig(), {"data.source": args.data, **({"data.data_dir": o.data_dir} if o.data_dir else {}),
                                        **({"data.augment": o.augment} if o.augment is not None else {})})
    report = check_data(cfg.data)
    if not (args.json and o.labels):  # with both, one JSON document: the report with its "labels" part
        print(json.dumps(report, indent=2) if args.json else format_check(report))
    if o.preview:
        write_preview(cfg.data, o.preview)
        print(f"wrote augmentation preview {o.preview}", file=sys.stderr)
    if o.labels:
        _check_labels(o, args.json, cfg.data, report)
    return 0


def _check_labels(o: CheckConfig, as_json: bool, data, report: dict) -> None:
    """`check --labels`: confident learning on one split's out-of-sample probabilities (K folds or a held-out model,
    trained from scratch or, with --pretrained, linear heads on frozen features); files into --out (see the help)."""
    from ..tasks.labels import find_label_issues, label_check_dir, write_label_check

    log = (lambda m: print(m, file=sys.stderr)) if as_json else print
    check = find_label_issues(data.source, split=o.split, holdout=o.holdout, model=o.model, folds=o.folds,
                              epochs=o.epochs, rank_by=o.rank_by, data_dir=data.data_dir, img_size=o.img_size,
                              pretrained=o.pretrained, device=o.device, log=log)
    out = Path(o.out) if o.out else label_check_dir(report["source"], check.split)
    summary = write_label_check(check, out, data_report=report)
    if as_json:
        print(json.dumps({**report, "labels": summary}, indent=2))
        return
    print(f"label check of split '{check.split}': {summary['flagged']:,} of {summary['images']:,} images flagged "
          f"(estimated noise rate {summary['noise_rate']:.4f}), {summary['seconds']:.0f} s")
    for i, given, sug, sc in summary["top"]:
        print(f"  [{i}] given {given}, suggested {sug} (self-confidence {sc:.3f})")
    print(f"wrote label_issues.csv, label_quality.csv, noise_matrix.csv, label_issues.html and check.json in {out}")


def cmd_convert(args: argparse.Namespace) -> int:
    from ..models.convert import convert_checkpoint

    n = convert_checkpoint(args.input, args.output)
    print(f"wrote {n} tensors to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    p = argparse.ArgumentParser(prog="foveal", description="Image classification: train, evaluate, predict.")
    p.add_argument("--version", action="version", version=f"foveal {__version__}")
    from .completion import PrintCompletion

    p.add_argument("--print-completion", choices=["bash", "zsh"], action=PrintCompletion,
                   help="print a shell completion script for the verbs and flags (see README)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    register(sub)
    import importlib

    for mod in CLI_MODULES:
        importlib.import_module(mod).register(sub)
    return p


def register(sub: argparse._SubParsersAction) -> None:
    """The core verbs: train, lr-find, eval, predict, models, check, convert."""
    for name, helptext in (("train", "train a classifier (default: LeNet-5 on scikit-learn's digits)"),
                           ("lr-find", "learning-rate range test: plot loss against LR, suggest a value")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("recipe", nargs="?", help="YAML recipe (see recipes/)")
        add_config_flags(sp)
        if name == "lr-find":
            add_dataclass_flags(sp, LRFindConfig, into="lr_find")
        sp.set_defaults(handler=cmd_lr_find if name == "lr-find" else cmd_train)

    sp = sub.add_parser("eval", help="metrics of a trained model on its test split or on other data")
    sp.add_argument("run", help="run folder or weights file")
    sp.add_argument("--json", action="store_true", help="print all metrics as JSON")
    add_dataclass_flags(sp, EvalConfig)
    sp.set_defaults(handler=cmd_eval)

    sp = sub.add_parser("predict", help="top-k classes of image files or folders")
    sp.add_argument("run", help="run folder, weights file or exported .onnx file")
    sp.add_argument("inputs", nargs="+", help="image files or folders")
    sp.add_argument("--json", action="store_true", help="print the predictions as JSON")
    add_dataclass_flags(sp, PredictConfig)
    sp.set_defaults(handler=cmd_predict)

    sp = sub.add_parser("models", help="registered models: parameters, GFLOPs, input sizes")
    sp.add_argument("pattern", nargs="?", help="substring or glob, e.g. 'resnet*'")
    sp.add_argument("--details", "-v", action="store_true", help="also the family and the smallest input size")
    sp.add_argument("--img-size", type=int, help="input side in px for parameters and GFLOPs (default: each model's own)")
    sp.add_argument("--names", action="store_true", help="names only (instant: builds no model)")
    sp.add_argument("--json", action="store_true", help="the table as JSON")
    sp.set_defaults(handler=cmd_models)

    sp = sub.add_parser("check", help="inspect a data set: counts, imbalance, bad files, duplicates, sizes")
    sp.add_argument("data", help="dataset name, image folder or CSV")
    sp.add_argument("--json", action="store_true", help="print the report (and the --labels summary) as JSON")
    add_dataclass_flags(sp, CheckConfig, switches=("labels", "holdout"))  # `check --labels DATA` reads DATA
    sp.set_defaults(handler=cmd_check)

    sp = sub.add_parser("convert", help="convert a trusted .pth/.pt state_dict to safetensors")
    sp.add_argument("input")
    sp.add_argument("output")
    sp.set_defaults(handler=cmd_convert)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    malloc.allow_for_process()  # a real command: on the CPU, glibc keeps freed memory (foveal/malloc.py)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError, ImportError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        if isinstance(e, ImportError) and (e.name or "").split(".")[0] in ("torch", "torchvision"):
            msg = (f"this needs PyTorch, which this install lacks ({e}); the inference install runs only "
                   "`predict` and `serve` on an exported .onnx model. Install torch and torchvision for the rest.")
        print(f"foveal {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
