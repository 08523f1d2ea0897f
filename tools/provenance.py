"""The project's code read from its source: the script each DVC stage runs, what it imports, and import circles.

A stage's code is its script (``python -m pipeline.<name>`` in ``cmd``, :func:`stage_scripts`) plus every
project module it can import (:func:`import_closure`): module-level imports, imports inside functions (lazy
ones run too), ``from repro.x import y`` where ``y`` is a submodule, relative imports, and modules named in
string constants such as ``"repro.models.longlora:ModelConfig"`` (the schemas that :mod:`repro.config` imports
with ``importlib``). Every package ``__init__.py`` on the way is included, and so are data files a module names
by file name next to itself (``paper_numbers.yaml``). ``tests/test_code_deps.py`` checks these files against
the deps of ``dvc.yaml``, so DVC reruns a stage whenever the code that produced its results changes.

:func:`import_graph` and :func:`find_cycles` read the package's imports as a graph (real import statements only,
module-level and function-level) and report the circles in it (``tests/test_import_graph.py``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import yaml

# Top-level packages of the repository and the folder each lives in (``tools`` so that a stage importing a
# tool shows up in its closure, outside ``src/repro``).
ROOTS = {"repro": "src", "pipeline": ".", "tools": "."}
_MODULE_STRING = re.compile(rf"^(?:{'|'.join(ROOTS)})(?:\.\w+)*(?::\w+)?$")
_CMD_SCRIPT = re.compile(r"python\s+-m\s+(pipeline(?:\.\w+)+)")


def module_file(module: str, base: Path) -> Path | None:
    """The file of dotted ``module`` (a module or a package) in the folder ``base`` that holds its top package.

    Args:
        module: e.g. ``"repro.models.longlora"``.
        base: the folder holding the top-level package (``src`` for ``repro``).

    Returns:
        ``base/repro/models/longlora.py`` or ``.../__init__.py`` when it exists, else None.
    """
    path = base / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, base: Path) -> str:
    """The dotted name of the module file ``path`` below ``base`` (a package by its ``__init__.py``)."""
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every import statement of a module, anywhere in it, as ``(imported module, names taken from it)``.

    ``import a.b`` gives ``("a.b", ())``; ``from a.b import c, d`` gives ``("a.b", ("c", "d"))``, where ``c``
    may be a submodule; relative imports come resolved against ``module``.

    Args:
        tree: the parsed module.
        module: its dotted name.
        is_package: whether it is a package's ``__init__.py`` (relative imports then start at itself).
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, tuple(alias.name for alias in node.names if alias.name != "*")


def _with_parents(module: str) -> Iterable[str]:
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def _project_file(module: str, root: Path) -> Path | None:
    top = module.split(".")[0]
    return module_file(module, root / ROOTS[top]) if top in ROOTS else None


def _project_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    return module_name(path, root / "src" if rel.parts[0] == "src" else root)


def _referenced(path: Path, root: Path) -> tuple[set[str], set[Path]]:
    """Dotted modules a file may import (anywhere in it, or by string) and data files it names next to itself."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules: set[str] = set()
    for target, names in imports(tree, _project_name(path, root), path.name == "__init__.py"):
        modules.add(target)
        modules.update(f"{target}.{name}" for name in names)  # submodules, if they are
    siblings = {p.name: p for p in path.parent.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")}
    data: set[Path] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_STRING.match(node.value):
                modules.add(node.value.split(":")[0])
            elif node.value in siblings:
                data.add(siblings[node.value])
    return modules, data


def import_closure(script: str | Path, root: str | Path = ".") -> set[str]:
    """Repo-relative POSIX paths of ``script`` and every project file it can import or read by name.

    Args:
        script: the stage script, relative to ``root`` (e.g. ``pipeline/train.py``).
        root: the repository root (``src/repro``, ``pipeline/`` and ``tools/`` below it).

    Raises:
        FileNotFoundError: ``script`` does not exist.
    """
    root = Path(root).resolve()
    start = (root / script).resolve()
    if not start.is_file():
        raise FileNotFoundError(f"stage script not found: {script}")
    todo = [start] + [f for m in _with_parents(_project_name(start, root)) if (f := _project_file(m, root))]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.suffix != ".py":
            continue
        modules, data = _referenced(path, root)
        seen.update(data)
        todo.extend(f for m in modules for name in _with_parents(m) if (f := _project_file(name, root)))
    return {p.relative_to(root).as_posix() for p in seen}


def stage_scripts(dvc_yaml: str | Path = "dvc.yaml") -> dict[str, tuple[str, list[str]]]:
    """``{stage: (script path, declared deps)}`` for every stage of ``dvc.yaml`` (``foreach`` by its template).

    Raises:
        ValueError: a stage's ``cmd`` does not run ``python -m pipeline.<script>``.
    """
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    out = {}
    for name, body in stages.items():
        spec = body.get("do", body)
        match = _CMD_SCRIPT.search(str(spec.get("cmd", "")))
        if not match:
            raise ValueError(f"dvc.yaml stage '{name}': cmd does not run `python -m pipeline.<script>`")
        out[name] = (match.group(1).replace(".", "/") + ".py", [str(d) for d in spec.get("deps", [])])
    return out


def import_graph(base: str | Path, package: str) -> dict[str, set[str]]:
    """The import graph of ``package`` (in the folder ``base``): ``{module: modules of the package it imports}``.

    Edges come from import statements only (module-level and inside functions): ``import a.b`` reaches ``a.b``;
    ``from a import b`` reaches the submodule ``a.b`` when there is one, else ``a`` itself. A package's
    ``__init__`` that runs on the way is no edge (importing a submodule of a package being initialised is no
    circle), nor is a module importing itself.

    Args:
        base: the folder holding the package (``src`` for ``repro``).
        package: the top-level package name.
    """
    base = Path(base)
    graph: dict[str, set[str]] = {}
    for path in sorted((base / package).rglob("*.py")):
        name = module_name(path, base)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = graph.setdefault(name, set())
        for target, names in imports(tree, name, path.name == "__init__.py"):
            if target.split(".")[0] != package:
                continue
            subs = [f"{target}.{n}" for n in names if module_file(f"{target}.{n}", base)]
            whole = [target] if len(subs) < len(names) or not names else []
            edges.update(m for m in subs + whole if m != name and module_file(m, base))
    return graph


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` with two or more nodes, each sorted, in sorted order.

    Args:
        graph: ``{node: nodes it points to}``; nodes only pointed to are allowed.
    """
    nodes = sorted(set(graph) | {m for targets in graph.values() for m in targets})
    succ = {n: sorted(set(graph.get(n, ()))) for n in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in nodes:  # Tarjan's algorithm, iterative (no recursion limit on deep graphs)
        if start in index:
            continue
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(succ[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The import circles of ``graph``: one per strongly connected component of two or more modules.

    Each cycle is a closed path ``[a, b, ..., a]`` that starts at the component's first module in sorted order,
    found by a breadth-first search inside the component, so it is a shortest circle through that module (the
    component may hold more circles: :func:`strongly_connected` lists all of its modules).

    Args:
        graph: ``{node: nodes it points to}``; nodes only pointed to are allowed.
    """
    cycles = []
    for component in strongly_connected(graph):
        members, first = set(component), component[0]
        parent: dict[str, str] = {}  # node -> the node it was reached from
        frontier = [first]
        while frontier and first not in parent:
            reached = []
            for node in frontier:
                for m in sorted(set(graph.get(node, ()))):
                    if m in members and m not in parent:
                        parent[m] = node
                        reached.append(m)
            frontier = reached
        path, node = [first], parent[first]
        while node != first:
            path.append(node)
            node = parent[node]
        cycles.append([first, *reversed(path[1:]), first])
    return cycles
