"""No import circles in ``src/repro``, counting imports inside functions too.

A circle that only a lazy import closes still ties the two modules together (neither can be read, tested or
moved alone) and breaks as soon as someone hoists the import. The graph is read from the source
(:func:`tools.provenance.import_graph`), so nothing is imported to build it.
"""

from __future__ import annotations

from pathlib import Path

from tools.provenance import find_cycles, import_graph, strongly_connected

ROOT = Path(__file__).resolve().parents[1]


def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _package(root: Path, files: dict[str, str]) -> Path:
    """A package ``pkg`` under ``root/src`` with ``files`` (paths relative to the package folder)."""
    _write(root, "src/pkg/__init__.py")
    for rel, text in files.items():
        _write(root, f"src/pkg/{rel}", text)
    return root / "src"


def test_a_circle_closed_by_an_import_inside_a_function_is_found(tmp_path):
    src = _package(tmp_path, {
        "a.py": "from pkg.b import helper\n",
        "b.py": "import os\n\ndef helper():\n    from pkg import a  # lazy, still a circle\n    return a\n",
        "c.py": "import pkg.a\n",  # points into the circle, is not part of it
    })
    graph = import_graph(src, "pkg")
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_relative_imports_and_submodules_named_in_from_imports_are_edges(tmp_path):
    src = _package(tmp_path, {
        "sub/__init__.py": "from . import leaf\n",
        "sub/leaf.py": "from ..top import VALUE\nfrom pkg.sub import leaf as again\n",
        "sub/other.py": "from .leaf import name, more\nfrom pkg.sub import other2, leaf\n",
        "sub/extra.py": "name = 1\n",
        "top.py": "VALUE = 1\n\ndef f():\n    from .sub.extra import name\n",
    })
    graph = import_graph(src, "pkg")
    assert graph["pkg.sub"] == {"pkg.sub.leaf"}  # a submodule: the edge goes to it, not to the package
    assert graph["pkg.sub.leaf"] == {"pkg.top"}  # importing itself is no edge
    assert graph["pkg.sub.other"] == {"pkg.sub.leaf", "pkg.sub"}  # other2 is a name of pkg.sub, leaf a module
    assert graph["pkg.top"] == {"pkg.sub.extra"}
    assert find_cycles(graph) == []
    _write(tmp_path, "src/pkg/sub/extra.py", "from .other import name\n")  # closes other -> leaf -> top -> extra
    assert find_cycles(import_graph(src, "pkg")) == [
        ["pkg.sub", "pkg.sub.leaf", "pkg.top", "pkg.sub.extra", "pkg.sub.other", "pkg.sub"]]


def test_a_dag_has_no_circle(tmp_path):
    src = _package(tmp_path, {
        "a.py": "import json\nfrom pkg import b, c\n",
        "b.py": "from pkg.c import x\n\ndef f():\n    import pkg.d\n",
        "c.py": "x = 1\n",
        "d.py": "from pkg.c import x\n",
    })
    graph = import_graph(src, "pkg")
    assert graph["pkg.a"] == {"pkg.b", "pkg.c"} and graph["pkg.b"] == {"pkg.c", "pkg.d"}
    assert find_cycles(graph) == []


def test_cycle_finder_reports_each_circle_once_as_a_shortest_closed_path():
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "x": {"y"}, "y": {"z"}, "z": {"x", "w"}, "w": set(),
             "s": {"s"}}  # a self-import is no circle between modules
    assert find_cycles(graph) == [["a", "b", "a"], ["x", "y", "z", "x"]]
    assert strongly_connected(graph) == [["a", "b", "c"], ["x", "y", "z"]]  # a -> b -> c -> a is in it too


def test_src_repro_has_no_import_circle():
    graph = import_graph(ROOT / "src", "repro")
    cycles, components = find_cycles(graph), strongly_connected(graph)
    assert not cycles, f"{len(cycles)} import circle(s) in src/repro:\n" + "\n".join(
        " -> ".join(c) + (f"  (all of: {', '.join(m)})" if len(m) > len(c) - 1 else "")
        for c, m in zip(cycles, components, strict=True))
