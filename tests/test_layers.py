"""The layers of foveal, read from the source with `ast` (no import runs): every import statement,
relative or absolute, at module level or inside a function, counts.

- no import cycle between the packages of src/foveal (data, models, training, ...) and the
  top-level modules (config, io, api, ...), and none between the modules of data/;
- no import cycle between any two modules anywhere in src/foveal (imports inside functions and
  TYPE_CHECKING blocks count: a cycle that is only deferred is still a cycle);
- the rooms stand in order: runtime/ (device, precision, processes) imports none of training/ and
  tasks/, training/ (run, step, loop, checkpoints) imports nothing from tasks/, and the library
  below them (data, models, metrics, robustness, explain) imports neither, so any feature may use
  the runtime;
- report/ renders what it is given and imports nothing from training/, tasks/ or runtime/;
- nothing outside cli/ imports cli/: the library (api.py included) never reaches up into the CLI,
  nor runs it in a child process (only cli/ and benchmarks/ name `foveal.cli` or the `foveal` command);
- benchmarks live in benchmarks/ (none inside training/, tasks/, runtime/ or data/), and only cli/ imports them;
- training enters through tasks/fit.py: nothing but fit.py imports training/jtt.py;
- weights' metadata is read through the model card (foveal/card.py) alone: no other module reads
  it by string key.

See ARCHITECTURE.md for the layers these rules keep.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "foveal"


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted ("foveal.report.write")
    target: str  # imported module, dotted, resolved to a module or package of src/foveal
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path.relative_to(SRC.parent)}:{self.line})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(base: str, name: str, modules: dict[str, Path]) -> str:
    """`from base import name`: the submodule base.name when it exists, else base itself."""
    return f"{base}.{name}" if f"{base}.{name}" in modules else base


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of foveal code in one file, wherever it stands (functions, TYPE_CHECKING blocks)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [_resolve(base, a.name, modules) for a in node.names]
        for t in targets:
            if t == "foveal" or t.startswith("foveal."):
                while t not in modules:  # `import foveal.x.y` of a name that is no file: its package
                    t = t.rpartition(".")[0]
                found.append(Import(module, t, path, node.lineno))
    return found


def all_imports() -> list[Import]:
    modules = all_modules()
    return [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]


def layer(module: str) -> str:
    """The unit of the package graph: 'foveal' (the package's own __init__), a subpackage
    ('engine') or a top-level module ('config')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(edges: list[tuple[str, str, Import]]) -> list[list[Import]]:
    """One cycle (as the imports that close it) per strongly connected group of nodes (Tarjan)."""
    graph: dict[str, dict[str, Import]] = {}
    for a, b, imp in edges:
        if a != b:
            graph.setdefault(a, {}).setdefault(b, imp)
            graph.setdefault(b, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, g) for g in groups]


def _one_cycle(graph: dict[str, dict[str, Import]], group: set[str]) -> list[Import]:
    """A shortest path inside `group` from its first node back to itself, as imports."""
    start = min(group)
    paths = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w, imp in sorted(graph[v].items()):
                if w == start:
                    return paths[v] + [imp]
                if w in group and w not in paths:
                    paths[w] = paths[v] + [imp]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {group}")  # cannot happen for a strongly connected group


def _explain(found: list[list[Import]]) -> str:
    return "\n".join("cycle (one of those in the group):\n  " + "\n  ".join(map(str, c)) for c in found)


def test_the_walker_sees_every_kind_of_import(tmp_path):
    """Relative (any level), absolute, `from . import submodule`, and imports inside functions."""
    modules = {"foveal": Path(), "foveal.training": Path(), "foveal.training.a": Path(), "foveal.training.b": Path(),
               "foveal.report": Path(), "foveal.report.write": Path(), "foveal.io": Path()}
    src = tmp_path / "write.py"
    src.write_text("from ..training.a import x\nimport foveal.training.b\nfrom .. import io\nimport os\n"
                   "def f():\n    from foveal.training import missing\n    from . import write\n")
    found = [(i.target, i.line) for i in imports_of("foveal.report.write", src, modules)]
    assert found == [("foveal.training.a", 1), ("foveal.training.b", 2), ("foveal.io", 3), ("foveal.training", 6),
                     ("foveal.report.write", 7)]
    edges = [("a", "b", Import("a", "b", src, 1)), ("b", "c", Import("b", "c", src, 2)),
             ("c", "a", Import("c", "a", src, 3)), ("c", "d", Import("c", "d", src, 4))]
    assert [[i.line for i in c] for c in cycles(edges)] == [[1, 2, 3]]


def test_the_walker_finds_the_packages_imports():
    """The walk is not vacuous: the imports every build has are found."""
    imps = {(i.source, i.target) for i in all_imports()}
    assert ("foveal.training.trainer", "foveal.data.stream") in imps
    assert ("foveal.training.trainer", "foveal.training.build") in imps  # a relative import inside training/
    assert ("foveal.cli.main", "foveal.training.build") in imps  # an import inside a function
    assert ("foveal.tasks.fit", "foveal.training.trainer") in imps  # a relative import across rooms


def test_no_import_cycle_between_packages():
    edges = [(layer(i.source), layer(i.target), i) for i in all_imports()]
    found = cycles(edges)
    assert not found, "packages of src/foveal import each other in a circle:\n" + _explain(found)


def test_no_import_cycle_inside_data():
    edges = [(i.source, i.target, i) for i in all_imports()
             if i.source.startswith("foveal.data") and i.target.startswith("foveal.data")]
    found = cycles(edges)
    assert not found, "modules of foveal.data import each other in a circle:\n" + _explain(found)


def test_no_import_cycle_between_modules():
    edges = [(i.source, i.target, i) for i in all_imports()]
    found = cycles(edges)
    assert not found, "modules of src/foveal import each other in a circle:\n" + _explain(found)


RUNNING = ("runtime", "training", "tasks")  # the rooms where models run, lowest first
BELOW = ("data", "models", "metrics", "robustness", "explain")  # the library they use


def test_the_rooms_import_downwards_only():
    order = {room: k for k, room in enumerate(RUNNING)}
    bad = [str(i) for i in all_imports() if layer(i.target) in order and (
        (layer(i.source) in order and order[layer(i.target)] > order[layer(i.source)])
        or (layer(i.source) in BELOW and layer(i.target) != "runtime"))]
    assert not bad, ("runtime/ < training/ < tasks/: a room imports only rooms below it, and data/, models/, "
                     "metrics/, robustness/, explain/ import the runtime alone:\n  " + "\n  ".join(bad))


def test_report_renders_and_does_not_compute():
    bad = [str(i) for i in all_imports() if layer(i.source) == "report" and layer(i.target) in RUNNING]
    assert not bad, "report/ must not import training/, tasks/ or runtime/ (it renders a ReportInputs that " \
        "tasks/ builds):\n  " + "\n  ".join(bad)


def test_benchmarks_live_apart_and_only_the_cli_imports_them():
    misplaced = [m for m in all_modules() if layer(m) in (*RUNNING, "data") and "bench" in m.rpartition(".")[2]]
    assert not misplaced, f"benchmark modules inside the library: {misplaced} (they belong in foveal/benchmarks/)"
    bad = [str(i) for i in all_imports() if layer(i.target) == "benchmarks" and layer(i.source) not in
           ("benchmarks", "cli")]
    assert not bad, "the library imports a benchmark:\n  " + "\n  ".join(bad)


def test_training_enters_through_fit_not_jtt():
    bad = [str(i) for i in all_imports() if i.target == "foveal.training.jtt" and i.source != "foveal.tasks.fit"]
    assert not bad, "Just Train Twice is one configuration of tasks.fit.fit, not a front door:\n  " + \
        "\n  ".join(bad)


def test_library_does_not_import_cli():
    bad = [str(i) for i in all_imports() if layer(i.target) == "cli" and layer(i.source) != "cli"]
    assert not bad, "the library imports the command line (cli/ calls the library, never the reverse):\n  " + \
        "\n  ".join(bad)


def _cli_calls(tree: ast.AST) -> list[ast.Constant]:
    """What runs the command line in a child process: the module `foveal.cli...` named anywhere, or a
    subprocess/os call whose command list starts with the `foveal` script."""
    found = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.startswith("foveal.cli")]
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and \
                isinstance(call.func.value, ast.Name) and call.func.value.id in ("subprocess", "os"):
            for arg in call.args[:1]:
                first = arg.elts[0] if isinstance(arg, (ast.List, ast.Tuple)) and arg.elts else arg
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and \
                        first.value.split(" ")[0] == "foveal":
                    found.append(first)
    return found


def test_library_does_not_run_the_cli():
    """A subprocess of the CLI is an import in disguise: the library calls library functions."""
    bad = []
    for name, path in all_modules().items():
        if layer(name) in ("cli", "benchmarks"):
            continue  # the CLI re-runs itself under torchrun; benchmarks time whole commands as users run them
        bad += [f"{path.relative_to(SRC.parent)}:{n.lineno}: {n.value!r}"
                for n in _cli_calls(ast.parse(path.read_text()))]
    assert not bad, "the library runs the command line in a child process:\n  " + "\n  ".join(bad)
    planted = _cli_calls(ast.parse('subprocess.call([sys.executable, "-m", "foveal.cli.main", "train"])\n'
                                   'subprocess.run(["foveal", "eval", "runs/x"])\nos.system("foveal predict x")\n'
                                   'log("foveal train")\ncache = Path.home() / "foveal"'))
    assert [n.value for n in planted] == ["foveal.cli.main", "foveal", "foveal predict x"]  # not vacuous


def _string_key_reads(tree: ast.AST) -> list[tuple[ast.AST, str, str]]:
    """(node, key, the object read from) for every `obj["key"]` and `obj.get("key", ...)` in `tree`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
                isinstance(node.slice.value, str):
            found.append((node, node.slice.value, ast.unparse(node.value)))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and \
                node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.append((node, node.args[0].value, ast.unparse(node.func.value)))
    return found


# Reads that look like weight metadata and are not, each with what it reads
NOT_WEIGHT_METADATA = {
    ("foveal.data.check", "s"): "`foveal check`'s own report: the statistics it suggests",
    ("foveal.data.check", "DATASETS.entry(source.lower()).meta"): "a dataset's registry entry (native size)",
    ("foveal.training.checkpoint", "meta"): "the resume file's metadata (optimizer state, loop counters), in load_resume",
    ("foveal.models.registry", "meta"): "a model's registry entry (family, default and smallest input size)",
}


def test_only_the_model_card_reads_weight_metadata_by_key():
    """The card (foveal/card.py) is the one reader of the JSON saved with weights and exported models;
    everything else reads its typed attributes, so a renamed or added field has one place to change."""
    bad = []
    for name, path in all_modules().items():
        if name == "foveal.card":
            continue
        text = path.read_text()
        for node, key, obj in _string_key_reads(ast.parse(text, str(path))):
            meta_like = obj == "meta" or obj.endswith(".meta") or key in ("mean", "std")
            if meta_like and (name, obj) not in NOT_WEIGHT_METADATA:
                bad.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {obj}[{key!r}]")
        if "foveal-weights/1" in text or "foveal-onnx/1" in text:
            bad.append(f"{path.relative_to(SRC.parent)}: names a card format (use ModelCard.describes)")
    assert not bad, "weight metadata read by string key outside foveal/card.py (read the ModelCard):\n  " + \
        "\n  ".join(bad)


def test_the_metadata_check_sees_reads(tmp_path):
    """Not vacuous: the reads the check looks for are found in source that has them."""
    reads = _string_key_reads(ast.parse('m = meta["mean"]\nx = pred.meta.get("img_size")\ny = row["epoch"]'))
    assert [(k, o) for _, k, o in reads] == [("mean", "meta"), ("img_size", "pred.meta"), ("epoch", "row")]
