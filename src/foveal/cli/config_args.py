"""Config fields as command-line flags: every field is `--section.field`, common ones have short names.

Flags default to "not given", so only what the user typed becomes an override: a recipe's
values are kept unless a flag changes them, and `--resume` reuses the run's saved config
(`foveal.engine.runs.load_run_config`, the library's one rule for resuming).
"""

from __future__ import annotations

import argparse
import typing
from typing import Any

from ..config import SHORT_NAMES, ConfigError, RunConfig


def _is_bool(tp: Any) -> bool:
    return tp is bool or (typing.get_origin(tp) is typing.Union and bool in typing.get_args(tp))


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add a flag for every RunConfig field (values are checked later, by config.from_dict), one
    argument group per config section; each flag's help is the comment beside its field in
    config.py, with the default and the allowed values (see foveal.config_help)."""
    from ..config_help import help_line, section_title, sections

    short_for = {v: k for k, v in SHORT_NAMES.items()}
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


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's config from the recipe argument and the flags given (the library applies --resume)."""
    from ..engine.runs import load_run_config

    return load_run_config(args.recipe, overrides_from_args(args))


__all__ = ["add_config_flags", "overrides_from_args", "config_from_args", "ConfigError"]
