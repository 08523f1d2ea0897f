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

In ``dvc.yaml`` a stage lists its pipeline scripts and the package folder ``src/repro`` as one dep
(:func:`as_deps`), not the ~70 files of its closure: DVC parses and rewrites the whole ``dvc.lock``
after every stage, and a lock of 55 stages × 35 file entries (400 kB) took 2.3 s a write, half that
with one folder entry each. The folder is a superset of every closure by at most the config tools
(``repro.check``, ``repro.compose``, ``repro.dryrun``) that only the train stages import, so editing
those reruns the other stages too. The modules that run beside the pipeline and that no stage imports
(``repro.lanes``, ``repro.provenance``, ...) are listed in ``.dvcignore``, so DVC does not hash them
and editing them reruns nothing; a stage that imported one would be reported as missing it.
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


PACKAGE_DIR = "src/repro"


def expand_dep(dep: str, root: str | Path = ".") -> set[str]:
    """A declared dep as the files DVC hashes: a folder is every file below it that ``.dvcignore`` does not hide.

    The ignore rules are DVC's own (:class:`dvc.ignore.DvcIgnoreFilter`), so every pattern the project's
    ``.dvcignore`` holds (the caches, the tool modules) counts exactly as it does for DVC.
    """
    from dvc.fs import LocalFileSystem
    from dvc.ignore import DvcIgnoreFilter

    root = Path(root).resolve()
    path = root / dep
    if not path.is_dir():
        return {dep}
    fs = LocalFileSystem()
    ignore = DvcIgnoreFilter(fs, str(root))
    return {p.relative_to(root).as_posix() for p in path.rglob("*")
            if p.is_file() and not ignore.is_ignored_file(str(p))}


def as_deps(files: set[str], root: str | Path = ".") -> list[str]:
    """The closure ``files`` as ``dvc.yaml`` deps: ``src/repro`` for all of the package, other files one by one.

    ``expand_dep`` of the result holds every file of ``files`` (a file ``.dvcignore`` hides cannot be held:
    :func:`code_dep_drift` reports it), plus the package modules the stage does not import (module doc).
    """
    out = {PACKAGE_DIR if f.startswith(PACKAGE_DIR + "/") else f for f in files}
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
    """Per stage, (closure files that no declared dep holds, declared code deps other than :func:`as_deps`'s).

    A closure file that ``.dvcignore`` hides is always missing: DVC would not rerun the stage when it changes.
    """
    root = Path(root)
    drift = {}
    for stage, (script, deps) in stage_scripts(root / "dvc.yaml").items():
        closure = import_closure(script, root)
        code = [d for d in deps if is_code_dep(d)]
        declared = set().union(*(expand_dep(d, root) for d in code)) if code else set()
        missing, extra = closure - declared, set(code) - set(as_deps(closure, root))
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
