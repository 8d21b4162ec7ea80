"""`foveal runs [DIR]`: the run folders as a table (or JSON); `--compare A B`: two runs side by side.

Reading and comparing is `foveal.training.runs` (list_runs, run_summary, compare_runs); this only prints.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(empty)"
    return str(value)


def _table(rows: list[dict[str, Any]]) -> str:
    titles = ["run", "model", "data", "epochs", "best val acc", "test acc", "train s", "date"]
    cells = [titles]
    for r in rows:
        epochs = f"{r['epochs']}/{r['epochs_planned']}" if r["epochs_planned"] not in (None, r["epochs"]) else str(r["epochs"])
        cells.append([_fmt(r["name"]), _fmt(r["model"]), _fmt(r["data"]), epochs, _fmt(r["best_val_acc"]),
                      _fmt(r["test_acc"]), f"{r['train_seconds']:.1f}" if r["train_seconds"] is not None else "-",
                      r["date"].replace("T", " ")])
    widths = [max(len(row[i]) for row in cells) for i in range(len(titles))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _side_by_side(cmp: dict[str, Any]) -> str:
    a, b = cmp["names"]
    lines = []
    for title, items in (("config differences", cmp["config"]), ("metrics", cmp["metrics"])):
        rows = [(key, _fmt(va), _fmt(vb)) for key, (va, vb) in items.items()]
        rows = rows or [("(none)", "", "")]
        w = [max(len(r[i]) for r in rows + [("", a, b)]) for i in range(3)]
        w[0] = max(w[0] + 2, len(title))  # keys are indented under their title
        lines.append(f"{title:<{w[0]}}  {a:<{w[1]}}  {b}")
        lines += [f"  {k:<{w[0] - 2}}  {va:<{w[1]}}  {vb}".rstrip() for k, va, vb in rows]
        lines.append("")
    return "\n".join(lines).rstrip()


def _cmd_runs(args: argparse.Namespace) -> int:
    from ..training.runs import compare_runs, list_runs

    if args.compare:
        cmp = compare_runs(*args.compare)
        print(json.dumps(cmp, indent=2) if args.json else _side_by_side(cmp))
        return 0
    rows = list_runs(args.dir)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no run folders in '{args.dir}'")
    else:
        print(_table(rows))
    return 0


def register(sub: Any) -> None:
    """Add `foveal runs` to the CLI's subcommands."""
    p = sub.add_parser("runs", help="list run folders (model, data, epochs, accuracies, time, date) or compare two")
    p.add_argument("dir", nargs="?", default="runs", help="folder holding the run folders (default: runs)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two run folders: config differences and metrics")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=_cmd_runs)
