"""The package's shape, checked from its source: an acyclic import graph, imports that flow down the
layers, and no private module at the package root.

The graph is read with :mod:`ast`, never by importing: every ``import`` / ``from ... import``
anywhere in a module counts (inside functions too, since an import deferred to call time still
ties the two modules together), as do ``importlib.import_module("...")`` string literals, the
homes tables handed to :func:`vertebra.lazy.lazy_exports` and the homes named with
:func:`vertebra.lazy.provide` (an edge from the module that names them).  Only ``if TYPE_CHECKING:``
blocks are skipped: they never run.  Importing ``a.b.c`` is an edge to ``a.b.c`` alone, not to the package
``__init__`` of ``a.b`` (which Python runs too, but which is a module with its own edges).
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import pytest

import vertebra

PACKAGE = "vertebra"
ROOT = Path(vertebra.__file__).parent

# The layers, top first: a module may import its own layer and any layer below, never one above.
# A row names a module or a package (then every module under it), matched by the longest prefix;
# the package root itself ("vertebra") names only its __init__.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("package root", (PACKAGE, "vertebra.__main__")),
    ("cli", ("vertebra.cli",)),
    # The plugin author's test kit runs the registry, the heads and the export path on a backbone.
    ("conformance kit", ("vertebra.plugins.testing", "vertebra.plugins._conformance")),
    ("engine", ("vertebra.engine", "vertebra.deploy", "vertebra.quantization")),
    ("data and metrics", ("vertebra.data", "vertebra.metrics")),
    # timm/torchvision backbones (reached by lazy reference from the built-in plugin) and smp encoders
    # (which build vertebra backbones through the registry).
    ("bridges", ("vertebra.bridges",)),
    ("registry", ("vertebra.registry",)),
    ("plugins", ("vertebra.plugins",)),
    ("inference", ("vertebra.inference",)),
    ("models and weights", ("vertebra.heads", "vertebra.backbones", "vertebra.weights")),
    ("foundations", ("vertebra.features", "vertebra.validation", "vertebra.lazy", "vertebra.text", "vertebra.atomic", "vertebra.norms",
                     "vertebra.inputs",
                     "vertebra.errors", "vertebra.version")),
)

# Inside the models-and-weights layer the packages do not know each other, except that backbones
# and heads may declare weights key maps (vertebra.weights.keys).  A head knows a backbone only
# through the feature contract (vertebra.features).
APART: tuple[tuple[str, str, str], ...] = (
    ("vertebra.backbones", "vertebra.heads", "a backbone never knows about heads"),
    ("vertebra.weights", "vertebra.heads", "weights load into any module"),
    ("vertebra.weights", "vertebra.backbones", "weights load into any module"),
)
HEADS_APART = ("vertebra.heads", "vertebra.backbones", "heads use the backbone contract in vertebra.features")

ALLOWED_PRIVATE_AT_ROOT = {"__init__.py", "__main__.py"}


# -- reading the graph ------------------------------------------------------------------------------
def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the package."""
    found = {}
    for file in sorted(root.rglob("*.py")):
        parts = (package, *file.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = file
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Every node under ``node``, skipping the body (not the ``else``) of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield other
                yield from _walk(other)
            continue
        yield child
        yield from _walk(child)


def _resolve(name: str, level: int, module: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if not level:
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _home(name: str, package: str) -> str:
    """``importlib.import_module(name, package)``'s absolute name, without importing."""
    dots = len(name) - len(name.lstrip("."))
    return _resolve(name.lstrip("."), dots, package, True) if dots else name


def _string_arguments(call: ast.Call) -> list[str]:
    return [arg.value for arg in call.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def imported_names(tree: ast.Module, module: str, is_package: bool, modules: Collection[str]) -> Iterator[str]:
    """Every absolute module name ``module`` imports.  ``from x import y`` imports module ``x.y`` when
    there is one (``modules`` says), else the name ``y`` of ``x`` (then ``x`` itself)."""
    assigned = {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                for target in node.targets if isinstance(target, ast.Name)}
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, module, is_package)
            yield from (f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                        for alias in node.names)
        elif isinstance(node, ast.Call):
            yield from _call_homes(node, module, assigned)


def _call_homes(call: ast.Call, module: str, assigned: Mapping[str, ast.expr]) -> Iterator[str]:
    """The modules an ``import_module`` / ``provide`` / ``lazy_exports`` call names with string literals."""
    name = _call_name(call)
    if name == "import_module":
        strings = _string_arguments(call)
        if strings:
            yield _home(strings[0], strings[1] if len(strings) > 1 else module)
    elif name == "provide" and len(call.args) >= 2:
        home = call.args[1]
        if isinstance(home, ast.Constant) and isinstance(home.value, str):
            yield _home(home.value.partition(":")[0], module)
    elif name == "lazy_exports" and len(call.args) >= 2:
        homes = call.args[1]
        homes = assigned.get(homes.id, homes) if isinstance(homes, ast.Name) else homes
        if isinstance(homes, ast.Dict):
            yield from (_home(value.value, module) for value in homes.values
                        if isinstance(value, ast.Constant) and isinstance(value.value, str))


def import_graph(files: Mapping[str, Path] | None = None) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}``."""
    files = module_files() if files is None else files
    graph: dict[str, set[str]] = {}
    for module, file in files.items():
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        names = imported_names(tree, module, file.name == "__init__.py", files)
        graph[module] = {name for name in names if name in files and name != module}
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or ``None`` when the graph is acyclic (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            step = next(stack[-1], None)
            if step is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(step) == 1:
                return [*path[path.index(step):], step]
            elif not state.get(step):
                state[step] = 1
                path.append(step)
                stack.append(iter(sorted(graph.get(step, ()))))
    return None


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the longest row prefix naming ``module``."""
    best, level = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            named = module == prefix or (prefix != PACKAGE and module.startswith(prefix + "."))
            if named and len(prefix) > best:
                best, level = len(prefix), index
    return level


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


# -- the rules --------------------------------------------------------------------------------------
def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_has_a_layer():
    unplaced = [module for module in module_files() if layer_of(module) is None]
    assert not unplaced, f"add these modules to LAYERS in {Path(__file__).name}: {unplaced}"


def test_imports_flow_down_the_layers():
    graph = import_graph()
    upward = [f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
              for module, targets in sorted(graph.items()) for target in sorted(targets)
              if layer_of(module) is not None and layer_of(target) is not None
              and layer_of(target) < layer_of(module)]
    upward += _crossings(graph, APART)
    assert not upward, "imports that flow up:\n" + "\n".join(upward)


def test_heads_know_backbones_only_through_the_contract():
    crossings = _crossings(import_graph(), (HEADS_APART,))
    assert not crossings, "\n".join(crossings)


def _crossings(graph: Mapping[str, set[str]], rules) -> list[str]:
    return [f"{module} imports {target}: {why}" for module, targets in sorted(graph.items())
            for target in sorted(targets) for low, high, why in rules
            if _within(module, low) and _within(target, high)]


def test_no_private_module_at_the_package_root():
    private = sorted(file.name for file in ROOT.glob("_*.py") if file.name not in ALLOWED_PRIVATE_AT_ROOT)
    assert not private, f"private modules at the package root (give each a home in a subpackage): {private}"


# -- the checker checks what it claims ----------------------------------------------------------------
def _graph_of(tmp_path: Path, sources: Mapping[str, str]) -> dict[str, set[str]]:
    for relative, text in sources.items():
        file = tmp_path / "pkg" / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")
    return import_graph(module_files(tmp_path / "pkg", "pkg"))


def test_the_graph_counts_deferred_lazy_and_string_imports_but_not_type_checking(tmp_path):
    graph = _graph_of(tmp_path, {
        "__init__.py": "from .lazy import lazy_exports, provide\n_HOMES = {'thing': '.sub.deep'}\n"
                       "__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())\n"
                       "provide('an answer', '.answer', __name__)\n",
        "lazy.py": "",
        "answer.py": "",
        "a.py": "def f():\n    from .b import g\n",
        "b.py": "import importlib\ndef g():\n    importlib.import_module('.c', 'pkg')\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n",
        "sub/__init__.py": "",
        "sub/deep.py": "from .. import c\nfrom ..sub import other\n",
        "sub/other.py": "",
    })
    assert graph == {"pkg": {"pkg.lazy", "pkg.sub.deep", "pkg.answer"}, "pkg.lazy": set(), "pkg.answer": set(),
                     "pkg.a": {"pkg.b"},
                     "pkg.b": {"pkg.c"}, "pkg.c": set(), "pkg.sub": set(),
                     "pkg.sub.deep": {"pkg.c", "pkg.sub.other"}, "pkg.sub.other": set()}
    assert find_cycle(graph) is None


def test_a_cycle_through_a_deferred_import_is_found(tmp_path):
    graph = _graph_of(tmp_path, {"__init__.py": "", "a.py": "from . import b\n",
                                 "b.py": "def f():\n    from .c import x\n", "c.py": "from .a import y\n"})
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]


def test_a_module_takes_the_layer_of_its_longest_row():
    assert {module: LAYERS[layer_of(module)][0] for module in (
        "vertebra", "vertebra.__main__", "vertebra.registry._weights", "vertebra.weights.keys", "vertebra.version")} == {
        "vertebra": "package root", "vertebra.__main__": "package root", "vertebra.registry._weights": "registry",
        "vertebra.weights.keys": "models and weights", "vertebra.version": "foundations"}
    assert layer_of("vertebra.not_in_the_table") is None  # the root row names only the package __init__


# -- sizes: a module holds one idea, a function one step --------------------------------------------
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _sizes(root: Path = ROOT):
    """``(module lines, [(function, lines)])`` of every module; a function's lines include its docstring."""
    for module, file in module_files(root).items():
        source = file.read_text(encoding="utf-8")
        functions = [(f"{module}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1)
                     for node in ast.walk(ast.parse(source))
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        yield module, source.count("\n"), functions


def test_modules_and_functions_stay_small():
    too_long = []
    for module, lines, functions in _sizes():
        if lines > MAX_MODULE_LINES:
            too_long.append(f"module {module}: {lines} lines (split it by idea; at most {MAX_MODULE_LINES})")
        too_long += [f"function {name}: {length} lines (at most {MAX_FUNCTION_LINES})"
                     for name, length in functions if length > MAX_FUNCTION_LINES]
    assert not too_long, "\n".join(too_long)


def test_the_size_check_sees_a_long_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (package / "long.py").write_text(f"def long():\n{body}\n")
    sizes = {module: functions for module, _, functions in _sizes(package)}
    assert sizes["vertebra.long"] == [("vertebra.long:1 long", MAX_FUNCTION_LINES + 1)]
