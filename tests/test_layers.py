"""The import graph of mapsim points one way, bottom to top, and has no cycle.

Every module under ``src/mapsim`` is read with :mod:`ast` (nothing is imported),
and every reference to another mapsim module becomes an edge:

- ``import`` and ``from ... import`` statements anywhere in the file: at the top,
  inside functions (lazy imports), under ``if TYPE_CHECKING:``, relative or absolute;
- ``importlib.import_module`` / ``__import__`` of a string: a literal names one
  module, an f-string with a literal prefix such as ``f"mapsim.cli.{name}"`` every
  module under that prefix;
- any other string literal that is exactly a mapsim module name or a
  ``"module:function"`` reference (the registries ``SAMPLERS`` of
  ``sampling/generate.py`` and ``KIND_MODULES`` of ``models/io.py``); docstrings
  are skipped, and so are the values of ``"generator"`` keys in dict literals
  (the provenance label a dataset's metadata carries, e.g. ``"mapsim.montecarlo"``).

Layers, bottom to top (one group per top-level package or module of ``mapsim``).
A module may import its own group and any group of a lower layer; groups on the
same layer must not import each other.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "mapsim"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "fileio", "argtypes"),  # one-line user errors; atomic writes; argparse value types
    ("zarrstore", "cluster"),  # the zarr dataset store; Dask clients
    # The .npz dataset format, and data.py's train/validation split, symmetries and
    # crops: both NumPy-only and used by everything above.
    ("lattice", "data"),
    # The package root: ``__version__`` and the re-export of the dataset API, which
    # modules of every layer above read (``from mapsim import __version__``).
    ("mapsim",),
    ("montecarlo", "exchange"),
    ("models",),
    ("sampling",),
    ("training",),
    ("analysis",),
    ("reproduce", "benchmarks"),
    ("cli",),
    ("__main__",),  # `python -m mapsim`: the only importer of cli outside cli
)
"""Groups of each layer, bottom first (``mapsim`` is the package's ``__init__.py``)."""

LAYER_OF = {group: level for level, groups in enumerate(LAYERS) for group in groups}


# ----------------------------------------------------------------------------- the graph
@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (packages by their ``__init__``)."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def group(module: str) -> str:
    """``mapsim.analysis.chain`` -> ``analysis``; ``mapsim`` -> ``mapsim``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_package(module: str) -> bool:
    return modules()[module].name == "__init__.py"


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes of the module, its classes and its functions."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _named(name: str) -> list[str]:
    """The mapsim module a dotted string names, if any (``"module:function"`` allowed)."""
    name = name.split(":", 1)[0]
    return [name] if name in modules() else []


def _under(prefix: str) -> list[str]:
    """Every module whose dotted name starts with ``prefix`` (an f-string's literal head)."""
    return [m for m in modules() if m.startswith(prefix)]


def _is_import_call(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return name in ("import_module", "__import__")


def _provenance_labels(tree: ast.AST) -> set[int]:
    """ids of the string values of ``"generator"`` keys in dict literals (labels, not imports)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "generator" and isinstance(v, ast.Constant):
                    out.add(id(v))
    return out


def imports_of(module: str) -> dict[str, int]:
    """mapsim modules referenced by ``module`` -> line of the first reference."""
    path = modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if _is_package(module) else module.rpartition(".")[0]
    skip = _docstrings(tree) | _provenance_labels(tree)
    found: dict[str, int] = {}

    def add(targets: list[str], line: int) -> None:
        for target in targets:
            if target != module:
                found.setdefault(target, line)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_named(alias.name), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source != PACKAGE and not source.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                # ``from mapsim.analysis import chain`` imports the module chain;
                # ``from mapsim.analysis.chain import X`` the module it comes from.
                sub = f"{source}.{alias.name}"
                add([sub] if sub in modules() else _named(source), node.lineno)
        elif isinstance(node, ast.Call) and _is_import_call(node) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                add(_under(str(arg.values[0].value)), node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            add(_named(node.value), node.lineno)
    return found


@lru_cache(maxsize=None)
def edges() -> dict[tuple[str, str], str]:
    """(importer, imported) -> ``file:line`` of the first reference."""
    out = {}
    for module, path in modules().items():
        for target, line in imports_of(module).items():
            out[(module, target)] = f"{path.relative_to(SRC)}:{line}"
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# ----------------------------------------------------------------------------- the checks
def test_every_group_has_a_layer():
    groups = {group(m) for m in modules()}
    assert groups - set(LAYER_OF) == set(), "place these modules/packages in LAYERS (and the README code map)"
    assert set(LAYER_OF) - groups == set(), "LAYERS names groups that no longer exist"


def test_imports_point_down():
    bad = []
    for (a, b), where in sorted(edges().items()):
        ga, gb = group(a), group(b)
        if ga == gb or ga not in LAYER_OF or gb not in LAYER_OF:  # unplaced: test_every_group_has_a_layer
            continue
        if LAYER_OF[ga] < LAYER_OF[gb]:
            bad.append(f"{where}: {a} -> {b} (upward: {ga} is below {gb})")
        elif LAYER_OF[ga] == LAYER_OF[gb]:
            bad.append(f"{where}: {a} -> {b} (same layer: {ga} and {gb} must not import each other)")
    assert not bad, "imports against the layer order\n  " + "\n  ".join(bad)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    for a, b in edges():
        graph.setdefault(a, set()).add(b)
    found = cycles(graph)
    lines = []
    for component in found:
        members = set(component)
        lines.append(" <-> ".join(component))
        lines += [f"    {where}: {a} -> {b}" for (a, b), where in sorted(edges().items())
                  if a in members and b in members]
    assert not found, "import cycles\n  " + "\n  ".join(lines)


def test_only_main_imports_cli():
    bad = [f"{where}: {a} -> {b}" for (a, b), where in sorted(edges().items())
           if group(b) == "cli" and group(a) not in ("cli", "__main__")]
    assert not bad, "mapsim.cli imported outside cli and __main__\n  " + "\n  ".join(bad)


def test_readme_code_map_matches_the_layers():
    """The README's code map names every group on its layer (``__init__.py`` is the root ``mapsim``)."""
    readme = (SRC.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Code map", 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            for name in cells[1].replace("`", "").split(","):
                name = name.strip().removesuffix(".py").removesuffix("/")
                found[PACKAGE if name == "__init__" else name] = int(cells[0])
    assert found == LAYER_OF


# ----------------------------------------------------------------------------- the walker itself
def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_walker_finds_every_kind_of_reference(tmp_path, monkeypatch):
    """The checks above could only fail if the walker sees lazy, dynamic and relative imports."""
    _write(tmp_path / PACKAGE, {
        "__init__.py": '"""mapsim.cli is mentioned in a docstring only."""\n',
        "errors.py": "def f():\n    from mapsim.analysis import chain\n",           # lazy, upward
        "lattice.py": "import importlib\nimportlib.import_module('mapsim.cli.x')\n",  # literal
        "fileio.py": "import importlib\ndef f(n):\n    importlib.import_module(f'mapsim.cli.{n}')\n",
        "models/__init__.py": "",
        "models/a.py": "from . import b\n",                                             # relative
        "models/b.py": "from .a import thing\nREG = {'x': 'mapsim.sampling.gen:draw'}\n",
        "sampling/__init__.py": "", "sampling/gen.py": "",
        "analysis/__init__.py": "", "analysis/chain.py": "",
        "cli/__init__.py": "", "cli/x.py": "",
    })
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    modules.cache_clear()
    edges.cache_clear()
    try:
        found = set(edges())
        assert found == {
            ("mapsim.errors", "mapsim.analysis.chain"),
            ("mapsim.lattice", "mapsim.cli.x"),
            ("mapsim.fileio", "mapsim.cli.x"),
            ("mapsim.models.a", "mapsim.models.b"), ("mapsim.models.b", "mapsim.models.a"),
            ("mapsim.models.b", "mapsim.sampling.gen"),
        }
        graph: dict[str, set[str]] = {}
        for a, b in found:
            graph.setdefault(a, set()).add(b)
        assert cycles(graph) == [["mapsim.models.a", "mapsim.models.b"]]
        with pytest.raises(AssertionError, match=r"mapsim.errors -> mapsim.analysis.chain \(upward"):
            test_imports_point_down()
        with pytest.raises(AssertionError, match="mapsim.lattice -> mapsim.cli.x"):
            test_only_main_imports_cli()
    finally:
        modules.cache_clear()
        edges.cache_clear()
