"""Config fields as command-line flags: every field is `--section.field`, common ones have short names.

Flags default to "not given", so only what the user typed becomes an override: a recipe's
values are kept unless a flag changes them, and `--resume` reuses the run's saved config
(`foveal.training.runs.load_run_config`, the library's one rule for resuming). The other verbs
(foveal.config.VERB_CONFIGS) build their flags from their own config dataclasses the same way
(`add_dataclass_flags`); a verb with two (pretrain: RunConfig and SSLConfig) keeps each one's
values apart under its own `into` name.
"""

from __future__ import annotations

import argparse
import typing
from typing import Any

from ..config import SHORT_NAMES, ConfigError, RunConfig
from ..config_help import choices, help_line, section_title, sections


def _is_bool(tp: Any) -> bool:
    return tp is bool or (typing.get_origin(tp) is typing.Union and bool in typing.get_args(tp))


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) is list


def _add_field_flag(group: Any, row: dict[str, Any], aliases: list[str], into: str, switch: bool = False) -> None:
    """`--path` and `--path-with-dashes` (plus `aliases`) for one config field, stored as 'into:path'.

    Booleans take an optional value (`--x`, `--x false`) and, for each dot-free name, `--no-x`; a
    `switch` takes none (`--x` / `--no-x`), so a positional argument after it is never read as its value;
    lists take commas and repeats alike (`--format onnx --format int8` = `--format onnx,int8`);
    a field of one of fixed values (a Literal) is checked by argparse, so a wrong one stops with the
    usage before anything loads."""
    path, tp = row["path"], row["type"]
    spelled = [f"--{path}", f"--{path.replace('_', '-')}"]  # a top-level field: the dashed spelling first
    names = list(dict.fromkeys([*(f"--{a}" for a in aliases), *(spelled if "." in path else spelled[::-1])]))
    kw: dict[str, Any] = dict(dest=f"{into}:{path}", default=argparse.SUPPRESS, metavar=row["name"].upper())
    if _is_bool(tp) and switch:
        kw = dict(dest=f"{into}:{path}", default=argparse.SUPPRESS, action="store_const", const="true")
    elif _is_bool(tp):
        kw.update(nargs="?", const="true", metavar="BOOL")
    elif _is_list(tp):
        kw.update(action="append")
    elif choices(tp):
        kw.update(choices=[str(c) for c in choices(tp)])
    help_text = help_line(row).replace("%", "%%")
    group.add_argument(*names, **kw, help=help_text)
    if _is_bool(tp):
        negated = [f"--no-{n[2:]}" for n in names if "." not in n]
        if negated:
            group.add_argument(*negated, dest=f"{into}:{path}", action="store_const", const="false",
                               default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, aliases: dict[str, str] | None = None,
                        titled: bool = False, into: str = "cfg", switches: tuple[str, ...] = ()) -> None:
    """Add a flag for every field of config dataclass `cls` (values are checked later, by
    config.from_dict): `--field` or `--section.field` for nested dataclasses, with the dashed
    spelling too and the names of `aliases` ({flag name: field path}). Each flag's help is the
    comment beside its field in config.py (or config_commands.py), with the default and the allowed
    values (see foveal.config_help). `titled`: one argument group per section, named `--section.*`.
    `into`: the values are kept as 'into:path' (read them back with the same `into`). `switches`: boolean
    fields whose flags take no value (for verbs whose positional argument may follow them)."""
    alias_for: dict[str, list[str]] = {}
    for flag, path in (aliases or {}).items():
        alias_for.setdefault(path, []).append(flag)
    for section, sub, rows in sections(cls):
        if titled:
            group = parser.add_argument_group(f"{section} (--{section}.*, also settable in a YAML recipe)",
                                              section_title(sub))
        else:
            group = parser.add_argument_group(section_title(sub).rstrip(".") + (f" (--{section}.*)" if section else ""))
        for row in rows:
            _add_field_flag(group, row, alias_for.get(row["path"], []), into, row["path"] in switches)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add a flag for every RunConfig field, one argument group per config section, and --resume."""
    add_dataclass_flags(parser, RunConfig, SHORT_NAMES, titled=True)
    parser.add_argument("--resume", dest="cfg:train.resume", action="store_const", const="true",
                        default=argparse.SUPPRESS, help="continue the run --name from its last checkpoint")


def overrides_from_args(args: argparse.Namespace, into: str = "cfg") -> dict[str, Any]:
    """The config fields the user set on the command line, as {'optim.lr': '0.1', ...}; a repeated
    list flag's values are joined with commas."""
    tag = f"{into}:"
    return {k[len(tag):]: ",".join(v) if isinstance(v, list) else v for k, v in vars(args).items()
            if k.startswith(tag)}


def dataclass_from_args(cls: type, args: argparse.Namespace, into: str = "cfg") -> Any:
    """`cls()` with the fields set on the command line (flags of `add_dataclass_flags`), checked."""
    from ..config import apply_overrides

    return apply_overrides(cls(), overrides_from_args(args, into))


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's config from the recipe argument and the flags given (the library applies --resume)."""
    from ..training.runs import load_run_config

    return load_run_config(args.recipe, overrides_from_args(args))


__all__ = ["add_config_flags", "add_dataclass_flags", "config_from_args", "dataclass_from_args", "overrides_from_args",
           "ConfigError"]
