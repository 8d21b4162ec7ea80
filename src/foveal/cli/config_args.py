"""Config fields as command-line flags: every field is `--section.field`, common ones have short names.

Flags default to "not given", so only what the user typed becomes an override: a recipe's
values are kept unless a flag changes them, and `--resume` can reuse a run's saved config.
"""

from __future__ import annotations

import argparse
import typing
from typing import Any

from ..config import ConfigError, RunConfig

# The names users guess first, mapped to config fields.
SHORT_FLAGS = {
    "data": "data.source", "data-dir": "data.data_dir", "model": "model.name", "epochs": "train.epochs",
    "batch-size": "train.batch_size", "lr": "optim.lr", "img-size": "data.img_size", "seed": "train.seed",
    "name": "train.name", "device": "train.device", "pretrained": "model.pretrained", "out-dir": "train.out_dir",
    "optimizer": "optim.name", "augment": "data.augment", "devices": "train.devices",
    "download": "data.download",
}


def _is_bool(tp: Any) -> bool:
    return tp is bool or (typing.get_origin(tp) is typing.Union and bool in typing.get_args(tp))


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add a flag for every RunConfig field (values are checked later, by config.from_dict), one
    argument group per config section; each flag's help is the comment beside its field in
    config.py, with the default and the allowed values (see foveal.config_help)."""
    from ..config_help import help_line, section_title, sections

    short_for = {v: k for k, v in SHORT_FLAGS.items()}
    for section, cls, rows in sections(RunConfig):
        group = parser.add_argument_group(f"{section} (--{section}.*, also settable in a YAML recipe)",
                                          section_title(cls))
        for row in rows:
            path, tp = row["path"], row["type"]
            names = [f"--{path}"]
            if "_" in path:
                names.append(f"--{path.replace('_', '-')}")
            if path in short_for:
                names.insert(0, f"--{short_for[path]}")
            kw: dict[str, Any] = dict(dest=f"cfg:{path}", default=argparse.SUPPRESS, metavar=row["name"].upper())
            if _is_bool(tp):
                kw.update(nargs="?", const="true", metavar="BOOL")
            group.add_argument(*names, **kw, help=help_line(row).replace("%", "%%"))
    parser.add_argument("--resume", dest="cfg:train.resume", action="store_const", const="true",
                        default=argparse.SUPPRESS, help="continue the run --name from its last checkpoint")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the user set on the command line, as {'optim.lr': '0.1', ...}."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}


def build_config(recipe: str | None, overrides: dict[str, Any]) -> RunConfig:
    """Recipe + overrides; with --resume, the run's saved config + overrides."""
    from ..config import load_config

    if str(overrides.get("train.resume", "")).lower() == "true":
        from ..engine.runs import find_run_dir

        probe = load_config(recipe, overrides)
        run_dir = find_run_dir(probe)
        keep = {k: v for k, v in overrides.items()}
        keep["train.name"] = run_dir.name
        keep["train.out_dir"] = str(run_dir.parent)
        return load_config(run_dir / "config.yaml", keep)
    return load_config(recipe, overrides)


__all__ = ["add_config_flags", "overrides_from_args", "build_config", "ConfigError"]
