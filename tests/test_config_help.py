"""`--help` explains every config field: the comment beside it in config.py, its default, its choices."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest

from foveal.cli.main import build_parser
from foveal.config import VERB_CONFIGS, BatchSizing, CrossValConfig, FastConfig, RunConfig
from foveal.config_help import field_description, format_value, section_title, sections


def _leaf_fields(cls: type = RunConfig, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _leaf_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield cls, f.name, f"{prefix}{f.name}"


# RunConfig and the settings of the other verbs, whose flags are built from config.py and config_commands.py,
# and the recipes beside them (the label check's folds, the fast recipe)
ALL_FIELDS = [*_leaf_fields(), *(f for cls in (*VERB_CONFIGS.values(), BatchSizing, CrossValConfig, FastConfig)
                                 for f in _leaf_fields(cls, f"{cls.__name__}."))]


@pytest.mark.parametrize("cls,name,path", ALL_FIELDS, ids=lambda v: v if isinstance(v, str) else "")
def test_every_field_has_a_description(cls, name, path):
    desc = field_description(cls, name)
    assert len(desc) > 3, f"{path} has no comment in its config module (add one beside or above the field)"
    assert "\n" not in desc


def test_every_section_has_a_title():
    for section, cls, _ in sections():
        assert section_title(cls), f"{cls.__name__} has no docstring"


def _help_text(verb: str) -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices[verb]
    return parser.format_help()


@pytest.mark.parametrize("verb", ["train", "lr-find"])
def test_help_shows_description_default_and_choices_grouped_by_section(verb):
    text = " ".join(_help_text(verb).split())  # undo argparse's wrapping (it also breaks after hyphens)
    flat = "".join(text.split())
    for section, cls, rows in sections():
        assert f"{section} (--{section}.*" in text
        assert section_title(cls) in text
        for row in rows:
            assert f"--{row['path']}" in text
            assert "".join(row["description"].split()) in flat, row["path"]
            assert "".join(f"default: {format_value(row['default'])}".split()) in flat
    assert "'str'>" not in text and "typing." not in text  # no type reprs any more
    assert "oneof:auto,none,tensorboard,mlflow" in flat  # train.logger's Literal choices
    assert "peaklearningrate,perbatch(noautomaticscaling)(default:0.003)" in flat


def test_help_does_not_import_torch():
    code = ("import sys; from foveal.cli.main import build_parser; build_parser().parse_args(['train', '--lr', '1']);"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
