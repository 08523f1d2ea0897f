"""Stage code dependencies: the import closure of each pipeline script, checked against ``dvc.yaml``.

    python -m repro.provenance            # list stages whose code deps differ from their closure
    python -m repro.provenance --write    # rewrite those deps in dvc.yaml (other deps kept in place)

A stage's code is its script (``python -m pipeline.<name>`` in ``cmd``) plus every module of
``repro`` (and ``pipeline``) it can import: module-level imports, imports inside functions (lazy
ones run too), ``from repro.x import y`` where ``y`` is a submodule, relative imports, and modules
named in string constants such as ``"repro.models.longlora:ModelConfig"`` (the schemas that
:mod:`repro.config` imports with ``importlib``). Every package ``__init__.py`` on the way is
included, and so are data files a module names by file name next to itself (``paper_numbers.yaml``).
DVC reruns a stage when any of these change, so the committed results are those of the code
that produced them.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

PACKAGES = ("repro", "pipeline")
_MODULE_STRING = re.compile(r"^(?:%s)(?:\.\w+)*(?::\w+)?$" % "|".join(PACKAGES))
_CMD_SCRIPT = re.compile(r"python\s+-m\s+(pipeline(?:\.\w+)+)")
_ROOTS = {"repro": "src", "pipeline": "."}


def _module_file(module: str, root: Path) -> Path | None:
    """The file of a dotted module of :data:`PACKAGES` under ``root`` (a module or a package), else None."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root / _ROOTS[parts[0]] / Path(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    if rel.parts[0] == "src":
        rel = rel.relative_to("src")
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _referenced_modules(path: Path, root: Path) -> tuple[set[str], set[Path]]:
    """Dotted modules a file may import (anywhere in it) and data files it names next to itself."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path, root)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    modules: set[str] = set()
    data: set[Path] = set()
    siblings = {p.name: p for p in path.parent.iterdir() if p.is_file() and p.suffix not in (".py", ".pyc")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            modules.add(target)
            modules.update(f"{target}.{alias.name}" for alias in node.names)  # submodules, if they are
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_STRING.match(node.value):
                modules.add(node.value.split(":")[0])
            elif node.value in siblings:
                data.add(siblings[node.value])
    return modules, data


def _with_parents(module: str) -> Iterable[str]:
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def import_closure(script: str | Path, root: str | Path = ".") -> set[str]:
    """Repo-relative POSIX paths of ``script`` and every project file it can import or read by name.

    Args:
        script: the stage script, relative to ``root`` (e.g. ``pipeline/train.py``).
        root: the repository root (``src/repro`` and ``pipeline/`` below it).
    """
    root = Path(root).resolve()
    start = (root / script).resolve()
    if not start.is_file():
        raise FileNotFoundError(f"stage script not found: {script}")
    seen: set[Path] = set()
    todo = [start]
    for module in _with_parents(_module_name(start, root)):
        if (f := _module_file(module, root)) is not None:
            todo.append(f)
    files: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        files.add(path)
        if path.suffix != ".py":
            continue
        modules, data = _referenced_modules(path, root)
        files.update(data)
        for module in modules:
            for name in _with_parents(module):
                found = _module_file(name, root)
                if found is not None and found not in seen:
                    todo.append(found)
    return {p.relative_to(root).as_posix() for p in files}


def is_code_dep(dep: str) -> bool:
    """Whether a ``dvc.yaml`` dep is project code (``src/`` or ``pipeline/``) rather than data or models."""
    return dep.startswith(("src/", "pipeline/")) or dep in ("src", "pipeline")


def expand_dep(dep: str, root: str | Path = ".") -> set[str]:
    """A declared dep as the files DVC hashes (a folder: every file below it, caches excepted)."""
    root = Path(root)
    path = root / dep
    if path.is_dir():
        return {p.relative_to(root).as_posix() for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    return {dep}


def as_deps(files: set[str], root: str | Path = ".") -> list[str]:
    """The closure ``files`` as ``dvc.yaml`` deps: a folder whose every file is in ``files`` stands for them.

    Folders are the largest such ones below ``src/repro`` and ``pipeline`` (caches never count, see
    :func:`expand_dep`), so a stage that imports most of the package lists a few folders and files
    instead of some seventy files, and ``dvc.lock`` (which DVC parses and rewrites after every stage)
    stays small. ``expand_dep`` of the result is exactly ``files``.
    """
    root = Path(root)
    out: list[str] = []

    def visit(folder: Path) -> None:
        rel = folder.relative_to(root).as_posix()
        below = expand_dep(rel, root)
        if below and below <= files and rel not in ("src", "."):
            out.append(rel)
            return
        for child in sorted(folder.iterdir()):
            child_rel = child.relative_to(root).as_posix()
            if child.is_dir() and child.name != "__pycache__":
                if any(f.startswith(child_rel + "/") for f in files):
                    visit(child)
            elif child_rel in files:
                out.append(child_rel)

    for top in sorted({f.split("/")[0] for f in files}):
        (visit(root / top) if (root / top).is_dir() else out.append(top))
    return sorted(out)


def stage_scripts(dvc_yaml: str | Path = "dvc.yaml") -> dict[str, tuple[str, list[str]]]:
    """``{stage: (script path, declared deps)}`` for every stage of ``dvc.yaml`` (``foreach`` by its template)."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    out = {}
    for name, body in stages.items():
        spec = body.get("do", body)
        match = _CMD_SCRIPT.search(str(spec.get("cmd", "")))
        if not match:
            raise ValueError(f"dvc.yaml stage '{name}': cmd does not run `python -m pipeline.<script>`")
        out[name] = (match.group(1).replace(".", "/") + ".py", [str(d) for d in spec.get("deps", [])])
    return out


def code_dep_drift(root: str | Path = ".") -> dict[str, tuple[set[str], set[str]]]:
    """Per stage, (files in the closure but not declared, declared code files not in the closure)."""
    root = Path(root)
    drift = {}
    for stage, (script, deps) in stage_scripts(root / "dvc.yaml").items():
        closure = import_closure(script, root)
        declared = set().union(*(expand_dep(d, root) for d in deps if is_code_dep(d))) if deps else set()
        missing, extra = closure - declared, declared - closure
        if missing or extra:
            drift[stage] = (missing, extra)
    return drift


def rewrite_code_deps(root: str | Path = ".") -> list[str]:
    """Replace each stage's code deps in ``dvc.yaml`` by its closure (:func:`as_deps`; other deps keep their place).

    Returns:
        The names of the stages whose deps changed.
    """
    root = Path(root)
    path = root / "dvc.yaml"
    lines = path.read_text().splitlines(keepends=True)
    scripts = stage_scripts(path)
    stage_line = re.compile(r"^  ([A-Za-z_][\w-]*):\s*$")
    dep_line = re.compile(r"^(\s+)- (\S+)\s*$")
    out: list[str] = []
    changed, stage, in_deps, inserted = [], None, False, False
    for line in lines:
        if m := stage_line.match(line):
            stage, in_deps = m.group(1), False
        elif stage and re.match(r"^\s+deps:\s*$", line):
            in_deps, inserted = True, False
            out.append(line)
            continue
        elif in_deps and (m := dep_line.match(line)):
            if is_code_dep(m.group(2)):
                if not inserted:
                    closure = as_deps(import_closure(scripts[stage][0], root), root)
                    out.extend(f"{m.group(1)}- {f}\n" for f in closure)
                    inserted = True
                    declared = [d for d in scripts[stage][1] if is_code_dep(d)]
                    if declared != closure:
                        changed.append(stage)
                continue
        else:
            in_deps = False
        out.append(line)
    path.write_text("".join(out))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the code deps of dvc.yaml")
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    if args.write:
        changed = rewrite_code_deps(args.root)
        print("rewrote deps of: " + (", ".join(changed) or "(none)"))
    drift = code_dep_drift(args.root)
    for stage, (missing, extra) in drift.items():
        print(f"{stage}: missing {sorted(missing)}; not imported {sorted(extra)}")
    return 1 if drift else 0


if __name__ == "__main__":
    sys.exit(main())
