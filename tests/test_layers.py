"""The layers, read from the source: memory at the bottom, then agents, then topologies,
then runtime. An import may point down or sideways within its package, never up, never
round in a cycle, and never hide inside a function to dodge either.
"""

from __future__ import annotations

import ast
import pathlib
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYERS = ("memory", "agents", "topologies", "runtime")
"""Bottom first: a package may import the ones before it, never the ones after."""

HEAVY = {
    "ray": "Ray takes ~1 s to import; the CLI's quick commands and `import tether.memory` skip it"
}
"""Third-party modules a function may import late, with the reason."""

LATE = {
    "tether.runtime.launch": "`import tether` and `tether.run` load without Ray until a run",
    "tether.runtime._placement": "the placement plan is built and tested without Ray",
}
"""Modules allowed function-local imports of tether modules that (transitively) import a
HEAVY module, with the reason. A late import of anything lighter is a dodged cycle."""


TYPE_ONLY = ("TYPE_CHECKING", "typing.TYPE_CHECKING")
"""The tests of an ``if`` whose body never runs: imports there are for the type checker."""


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    local: bool
    typing_only: bool


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("tether", *parts))
            out[name.removesuffix(".__init__")] = path
    return out


def _resolve(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports(name: str, path: pathlib.Path) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    out: list[Import] = []

    def visit(node: ast.AST, local: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in TYPE_ONLY:
                for inner in child.body:
                    visit_one(inner, local, True)
                for inner in child.orelse:
                    visit_one(inner, local, typing_only)
                continue
            visit_one(child, local, typing_only)

    def visit_one(child: ast.AST, local: bool, typing_only: bool) -> None:
        if isinstance(child, ast.Import):
            for alias in child.names:
                out.append(Import(name, alias.name, child.lineno, local, typing_only))
        elif isinstance(child, ast.ImportFrom):
            target = _resolve(name, is_package, child)
            for alias in child.names:
                # `from tether.memory import store` names a module; `import X from Y` a name.
                full = f"{target}.{alias.name}"
                out.append(
                    Import(name, full if full in ALL else target, child.lineno, local, typing_only)
                )
        else:
            if isinstance(child, ast.Call) and ast.unparse(child.func).endswith("import_module"):
                # importlib.import_module("tether.x") imports as surely as a statement.
                named = [a.value for a in child.args[:1] if isinstance(a, ast.Constant)]
                for target in named:
                    if isinstance(target, str) and target.startswith("tether"):
                        out.append(Import(name, target, child.lineno, local, typing_only))
            inner_local = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner_local, typing_only)

    visit(tree, False, False)
    return out


ALL = modules()
IMPORTS = {name: imports(name, path) for name, path in ALL.items()}


def _owner(target: str) -> str | None:
    """The tether module an import lands in (the longest known prefix)."""
    parts = target.split(".")
    for n in range(len(parts), 1, -1):
        candidate = ".".join(parts[:n])
        if candidate in ALL:
            return candidate
    return None


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[1])


def _heavy(module: str, seen: set[str] | None = None) -> bool:
    """Whether importing ``module`` imports a HEAVY module at import time."""
    seen = seen if seen is not None else set()
    if module in seen:
        return False
    seen.add(module)
    for imp in IMPORTS.get(module, []):
        if imp.local or imp.typing_only:
            continue
        if imp.target.split(".")[0] in HEAVY:
            return True
        owner = _owner(imp.target)
        if owner and _heavy(owner, seen):
            return True
    return False


def test_no_import_points_up_a_layer() -> None:
    up = [
        f"{imp.source}:{imp.line} imports {imp.target}"
        for found in IMPORTS.values()
        for imp in found
        if ((owner := _owner(imp.target)) and _layer(owner) > _layer(imp.source))
        # The facade (`from tether import X`) sits above every layer.
        or imp.target == "tether"
        or (imp.target.startswith("tether.") and imp.target.split(".")[1] not in LAYERS)
    ]
    assert not up, "imports that point up a layer:\n" + "\n".join(up)


def test_no_module_imports_itself_round_a_cycle() -> None:
    # Module-level imports only: an import under TYPE_CHECKING never runs.
    graph: dict[str, set[str]] = {name: set() for name in ALL}
    for name, found in IMPORTS.items():
        for imp in found:
            owner = _owner(imp.target)
            if owner and owner != name and not imp.typing_only:
                graph[name].add(owner)
                # Importing a.b.c runs a/__init__ and a/b/__init__ first.
                parent = owner.rsplit(".", 1)[0]
                while parent in ALL and parent != name and not name.startswith(parent + "."):
                    graph[name].add(parent)
                    parent = parent.rsplit(".", 1)[0]
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_no_function_imports_late_but_for_a_listed_reason() -> None:
    dodged = []
    for found in IMPORTS.values():
        for imp in found:
            if not imp.local or imp.typing_only:
                continue
            top = imp.target.split(".")[0]
            if top in HEAVY:
                continue  # listed with its reason
            owner = _owner(imp.target)
            if owner is None:
                continue  # the standard library or a third party: not a layering matter
            allowed = any(imp.source.startswith(m) for m in LATE) and _heavy(owner)
            if not allowed:
                dodged.append(f"{imp.source}:{imp.line} imports {imp.target} inside a function")
    assert not dodged, "late imports (hoist them, or list the reason in LATE):\n" + "\n".join(
        dodged
    )


def test_the_walk_sees_every_package_and_its_imports() -> None:
    # The walk itself can fail silently; make it prove it saw real imports.
    assert {name.split(".")[1] for name in ALL} == set(LAYERS)
    gate = {imp.target for imp in IMPORTS["tether.runtime.gate"]}
    assert any(t.startswith("tether.memory") for t in gate)
    assert _heavy("tether.runtime.actor")
    assert not _heavy("tether.memory.store")
