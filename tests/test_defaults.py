"""Every default is written once, in config.py or config_commands.py (issue 25): nothing below restates one.

Reads src/foveal as Python syntax (no imports of the modules it checks) and looks for the
ways a default gets copied: a parameter default, a dataclass field, an argparse `default=`,
or a keyword argument in a call, that name a config field and give it its default value;
and the literals of the pixel limits and of batch sizes anywhere in the code.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import tokenize
import typing
from pathlib import Path
from typing import Any, Iterator

import foveal
from foveal import config as C

SRC = Path(foveal.__file__).parent
CONFIG = SRC / "config.py"
CONFIG_FILES = (CONFIG, SRC / "config_commands.py")  # where defaults are written: the run's, and the other verbs'
# Config dataclasses whose fields other modules and the CLI used to restate: every verb's settings.
CHECKED = (*C.VERB_CONFIGS.values(), C.BatchSizing)
# Values too common to mean "this default" (flags off, no limit, the first index, 'auto').
TRIVIAL = (None, True, False, 0, 1, "", "auto")
# Fields whose name and default other verbs share as their own convention, not as a copy of
# these: `split='test'` is what every evaluating verb reads; `topk=5` is `foveal predict`'s and the
# server's; `batch_size` is every benchmark's own (test_batch_sizes_are_not_literals_outside_config
# checks batch sizes by themselves).
SHARED_CONVENTIONS = {"split", "topk", "batch_size"}


def _modules() -> Iterator[tuple[Path, str]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path, path.read_text(encoding="utf-8")


def _defaults() -> dict[str, Any]:
    """{field name: default} of the checked configs' leaf fields, plus the pixel limit and eval batch."""
    out: dict[str, Any] = {"max_pixels": C.DataConfig.max_pixels, "eval_batch_size": C.TrainConfig.eval_batch_size}

    def walk(cls: type, inst: Any) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], getattr(inst, f.name))
            else:
                out.setdefault(f.name, getattr(inst, f.name))

    for cls in CHECKED:
        walk(cls, cls())
    return {k: v for k, v in out.items() if k not in SHARED_CONVENTIONS}


def _is_trivial(v: Any) -> bool:
    return isinstance(v, (bool, list)) or any(v == t and type(v) is type(t) for t in TRIVIAL)


def _named_values(tree: ast.AST) -> Iterator[tuple[str, ast.expr]]:
    """(name, value expression) of every parameter default, annotated assignment, keyword
    argument and argparse flag default (`add_argument("--max-batch", default=...)`)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            yield from zip([x.arg for x in pos[len(pos) - len(a.defaults):]], a.defaults)
            yield from ((x.arg, d) for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            yield node.target.id, node.value
        elif isinstance(node, ast.Call):
            yield from ((k.arg, k.value) for k in node.keywords if k.arg)
            is_flag = getattr(node.func, "attr", "") == "add_argument" and node.args
            if is_flag and isinstance(node.args[0], ast.Constant):
                flag = str(node.args[0].value).lstrip("-").replace("-", "_")
                yield from ((flag, k.value) for k in node.keywords if k.arg == "default")


def test_no_module_restates_a_config_default():
    defaults = _defaults()
    found = []
    for path, text in _modules():
        if path in CONFIG_FILES:
            continue
        for name, value in _named_values(ast.parse(text)):
            if name in defaults and isinstance(value, ast.Constant) and not _is_trivial(value.value) \
                    and not isinstance(value.value, bool) and value.value == defaults[name]:
                found.append(f"{path.relative_to(SRC)}:{value.lineno}: {name}={value.value!r}")
    assert not found, "defaults restated outside config.py (read them from the config dataclass):\n" + "\n".join(found)


def _numbers(text: str) -> Iterator[tuple[int, Any]]:
    """(line, value) of every number literal in code (not in comments or docstrings)."""
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NUMBER:
            yield tok.start[0], ast.literal_eval(tok.string)


def test_pixel_limits_are_written_once():
    """The decoder's limit (data.max_pixels) and the server's lower one (serve.max_pixels), once each."""
    for limit in (C.DataConfig.max_pixels, C.ServeConfig.max_pixels):
        places = [f"{p.relative_to(SRC)}:{line}" for p, text in _modules() for line, v in _numbers(text) if v == limit]
        assert len(places) == 1, f"the pixel limit {limit:,} stands in {len(places)} places: {places}"


# Modules that still keep batch sizes of their own, each written once there: pretraining's settings,
# the training and loader benchmarks, and the loader's decode chunk (not a batch). Moving them into
# config.py is left to the issues that own those modules; the list only shrinks (the explain verb's
# flag is ExplainConfig.batch_size now; the fast recipe's and the label check's folds' settings are
# FastConfig and CrossValConfig in config_commands.py).
OWN_BATCH_SIZES = {"tasks/pretrain.py", "benchmarks/train_step.py",
                   "benchmarks/cpu_e2e.py", "cli/bench.py", "benchmarks/loader.py", "data/preprocess.py"}


def test_batch_sizes_are_not_literals_outside_config():
    """No batch-size parameter, flag or keyword gets a number outside config.py: evaluation,
    attacks, explanations, export and serving take 'auto' (foveal.batching) or a config field."""
    found = []
    for path, text in _modules():
        rel = path.relative_to(SRC).as_posix()
        if path in CONFIG_FILES or rel in OWN_BATCH_SIZES:
            continue
        for name, value in _named_values(ast.parse(text)):
            if any(w in name for w in ("batch_size", "eval_batch", "chunk")) and isinstance(value, ast.Constant) \
                    and isinstance(value.value, int) and not isinstance(value.value, bool):
                found.append(f"{rel}:{value.lineno}: {name}={value.value}")
    assert not found, "fixed batch sizes outside config.py:\n" + "\n".join(found)


def test_the_old_evaluation_batch_256_is_gone():
    """256 images per evaluation or attack pass stood in four files; now only BatchSizing.max_batch
    holds it (the train benchmarks' synthetic batch of 256 is their own setting)."""
    places = [f"{p.relative_to(SRC)}:{v.lineno}" for p, text in _modules()
              if p.name != "bench.py" and "benchmarks" not in p.parts
              for n, v in _named_values(ast.parse(text))
              if "batch" in n and isinstance(v, ast.Constant) and v.value == 256]
    assert places == [f"config.py:{_line_of(CONFIG, 'max_batch: int = 256')}"], places


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_the_checks_find_a_restated_default(tmp_path):
    """The scanner is not blind: a copy of a ServeConfig default and a fixed eval batch are found."""
    tree = ast.parse("def f(max_upload_mb: float = 20.0, batch_size: int = 256): ...\n"
                     "p.add_argument('--max-wait-ms', type=float, default=5.0)\n")
    named = {(n, v.value) for n, v in _named_values(tree) if isinstance(v, ast.Constant)}
    assert {("max_upload_mb", 20.0), ("batch_size", 256), ("max_wait_ms", 5.0)} <= named
    assert _defaults()["max_upload_mb"] == 20.0 and _defaults()["max_wait_ms"] == 5.0
