"""What each config field means, read from the comments beside the fields in config.py.

The comments in `foveal/config.py` (and `config_commands.py`, the other verbs' settings) stay the
single source: `--help`, the docs and this module's callers read them from the source text of the
module that defines the dataclass, once per process and module (cached). A field's
description is its trailing comment (`lr: float = 3e-3  # peak learning rate`) or, when it has
none, the block of comment lines right above it; a dataclass's docstring is its section title.
No torch here: `foveal --help` builds every flag's help from this module.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import sys
import typing
from pathlib import Path
from typing import Any, Literal, Sequence

from . import config


@functools.lru_cache(maxsize=None)
def _comments(path: str) -> dict[str, dict[str, str]]:
    """{class name: {field name: description}} for every class defined in the module file `path`."""
    source = Path(path).read_text(encoding="utf-8")
    lines = source.splitlines()
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = {stmt.target.id: _comment_of(stmt, lines) for stmt in node.body
                              if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)}
    return out


def _comment_of(stmt: ast.AnnAssign, lines: list[str]) -> str:
    """The trailing comment after the statement, else the comment lines directly above it."""
    tail = lines[stmt.end_lineno - 1][stmt.end_col_offset:].strip()
    if tail.startswith("#"):
        return tail[1:].strip()
    above: list[str] = []
    i = stmt.lineno - 2  # 0-based index of the line above
    while i >= 0 and lines[i].strip().startswith("#"):
        above.insert(0, lines[i].strip()[1:].strip())
        i -= 1
    return " ".join(above)


def section_title(cls: type) -> str:
    """A config dataclass's one-line title: the first line of its docstring."""
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def field_description(cls: type, name: str) -> str:
    """The comment describing field `name` of config dataclass `cls` ('' when there is none)."""
    return _comments(sys.modules[cls.__module__].__file__).get(cls.__name__, {}).get(name, "")


def choices(tp: Any) -> tuple[Any, ...]:
    """The allowed values of a Literal, Optional[Literal] or list[Literal] type; () for other types
    (Union[Literal['auto'], int] among them: 'auto' is not its only value)."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1 and typing.get_origin(args[0]) is Literal:
        return typing.get_args(args[0])
    return ()


def format_value(value: Any) -> str:
    """A default as a user would type it on the command line."""
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if value else "(empty)"
    if isinstance(value, bool):
        return str(value).lower()
    return "unset" if value is None else str(value)


def sections(cls: type = config.RunConfig) -> list[tuple[str, type, list[dict[str, Any]]]]:
    """[(section name, its dataclass, [{path, name, type, description, default, choices}])] of `cls`.

    Each dataclass field of `cls` is a section of its leaf rows; the plain fields of `cls` itself,
    if any, come first as section '' (ExportConfig: its own fields, then 'quant' and 'limits')."""
    hints = typing.get_type_hints(cls)
    nested = [f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])]
    own = leaf_rows(cls, skip=nested)
    out = [("", cls, own)] if own else []
    defaults = cls()
    return out + [(name, hints[name], leaf_rows(hints[name], f"{name}.", getattr(defaults, name)))
                  for name in nested]


def leaf_rows(cls: type, prefix: str = "", defaults: Any = None,
              skip: Sequence[str] = ()) -> list[dict[str, Any]]:
    """[{path, name, type, description, default, choices}] for every field of dataclass `cls`,
    descending into nested dataclasses; `defaults` is an instance to read defaults from."""
    hints = typing.get_type_hints(cls)
    defaults = cls() if defaults is None else defaults
    rows = []
    for f in dataclasses.fields(cls):
        tp, value = hints[f.name], getattr(defaults, f.name)
        if f.name in skip:
            continue
        if dataclasses.is_dataclass(tp):
            rows += leaf_rows(tp, f"{prefix}{f.name}.", value)
            continue
        rows.append({"path": f"{prefix}{f.name}", "name": f.name, "type": tp, "default": value,
                     "description": field_description(cls, f.name), "choices": choices(tp)})
    return rows


def help_line(row: dict[str, Any]) -> str:
    """'description (default: X; one of: a, b)' for one row of `sections`."""
    extra = f"default: {format_value(row['default'])}"
    if row["choices"]:
        extra += f"; one of: {', '.join(map(str, row['choices']))}"
    return f"{row['description']} ({extra})" if row["description"] else f"({extra})"


__all__ = ["sections", "leaf_rows", "section_title", "field_description", "choices", "format_value", "help_line"]
