"""Each DVC stage depends on all of its code, and ``src/repro`` is the stages' code and nothing else.

A stage lists its ``pipeline/`` script and the package folder ``src/repro`` as deps (one folder entry, not the
~70 files of its import closure: DVC rewrites the whole ``dvc.lock`` after every stage). That is only sound when
every module the script can import (:func:`tools.provenance.import_closure`) lies under a declared dep and DVC
hashes it, i.e. ``.dvcignore`` does not hide it; tools that run beside the pipeline live in ``tools/``, outside
the folder, so editing them reruns nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.provenance import import_closure, stage_scripts

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = "src/repro"


def _hidden_by_dvcignore(root: Path):
    """``rel -> bool``: whether DVC's own ``.dvcignore`` rules (:class:`dvc.ignore.DvcIgnoreFilter`) hide a file."""
    from dvc.fs import LocalFileSystem
    from dvc.ignore import DvcIgnoreFilter

    ignore = DvcIgnoreFilter(LocalFileSystem(), str(root))
    return lambda rel: ignore.is_ignored_file(str(root / rel))


def _held(rel: str, deps: list[str]) -> bool:
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def code_dep_problems(root: Path) -> dict[str, list[str]]:
    """Per stage of ``root/dvc.yaml``, what is wrong with its code deps (stages without a problem left out).

    A stage must list ``src/repro`` and its script, and every file of its import closure must lie under
    ``src/repro`` or ``pipeline/``, be held by a declared dep and not be hidden by ``.dvcignore``.
    """
    root = root.resolve()
    hidden = _hidden_by_dvcignore(root)
    closures: dict[str, set[str]] = {}
    problems: dict[str, list[str]] = {}
    for stage, (script, deps) in stage_scripts(root / "dvc.yaml").items():
        if script not in closures:
            closures[script] = import_closure(script, root)
        found = [f"does not list {d}" for d in (PACKAGE_DIR, script) if d not in deps]
        for rel in sorted(closures[script]):
            if not rel.startswith((PACKAGE_DIR + "/", "pipeline/")):
                found.append(f"imports {rel}, outside {PACKAGE_DIR} and pipeline/")
            elif not _held(rel, deps):
                found.append(f"imports {rel}, which no declared dep holds")
            elif hidden(rel):
                found.append(f"imports {rel}, which .dvcignore hides from DVC")
        if found:
            problems[stage] = found
    return problems


def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _stage(script: str, deps: list[str]) -> str:
    return (f"stages:\n  job:\n    cmd: python -m {script[:-3].replace('/', '.')} --params params.yaml\n    deps:\n"
            + "".join(f"      - {d}\n" for d in deps) + "    outs:\n      - out\n")


@pytest.fixture()
def mini_repo(tmp_path):
    """A stage script reaching a package module lazily, a data dep, a tool module and a cache file."""
    _write(tmp_path, "pipeline/__init__.py")
    _write(tmp_path, "pipeline/job.py", "def main():\n    from repro.a import b\n")
    _write(tmp_path, "src/repro/__init__.py")
    _write(tmp_path, "src/repro/a/__init__.py")
    _write(tmp_path, "src/repro/a/b.py", "from . import c\n")
    _write(tmp_path, "src/repro/a/c.py")
    _write(tmp_path, "tools/__init__.py")
    _write(tmp_path, "tools/report.py", "import repro.a.b\n")
    _write(tmp_path, ".dvcignore", "__pycache__/\n*.pyc\n")
    _write(tmp_path, "dvc.yaml", _stage("pipeline/job.py", ["pipeline/__init__.py", "pipeline/job.py", "src/repro",
                                                            "data/in"]))
    return tmp_path


def test_a_stage_with_all_its_code_declared_passes(mini_repo):
    assert code_dep_problems(mini_repo) == {}


def test_a_stage_without_the_package_or_its_script_is_reported(mini_repo):
    _write(mini_repo, "dvc.yaml", _stage("pipeline/job.py", ["pipeline/__init__.py", "src/repro/a/b.py"]))
    assert code_dep_problems(mini_repo)["job"] == [
        "does not list src/repro", "does not list pipeline/job.py",
        "imports pipeline/job.py, which no declared dep holds",
        "imports src/repro/__init__.py, which no declared dep holds",
        "imports src/repro/a/__init__.py, which no declared dep holds",
        "imports src/repro/a/c.py, which no declared dep holds",
    ]


def test_a_stage_importing_a_tool_is_reported(mini_repo):
    _write(mini_repo, "pipeline/job.py", "def main():\n    from tools import report\n")
    assert code_dep_problems(mini_repo)["job"] == [
        "imports tools/__init__.py, outside src/repro and pipeline/",
        "imports tools/report.py, outside src/repro and pipeline/",
    ]


def test_a_stage_importing_a_dvcignored_module_is_reported(mini_repo):
    _write(mini_repo, ".dvcignore", "__pycache__/\n/src/repro/a/[c-e].py\n")  # any DVC pattern counts
    assert code_dep_problems(mini_repo)["job"] == ["imports src/repro/a/c.py, which .dvcignore hides from DVC"]


def test_every_stage_depends_on_all_of_its_code():
    problems = code_dep_problems(ROOT)
    assert not problems, "dvc.yaml code deps:\n" + "\n".join(f"{s}: {p}" for s, ps in problems.items() for p in ps)


def test_src_repro_holds_only_the_stages_code():
    """Every file of the package is in some stage's import closure; what no stage imports belongs in tools/."""
    scripts = {script for script, _ in stage_scripts(ROOT / "dvc.yaml").values()}
    used = set().union(*(import_closure(script, ROOT) for script in scripts))
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / PACKAGE_DIR).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert files - used == set(), "in src/repro but imported by no stage (move it to tools/)"


def test_dvcignore_keeps_caches_out_of_the_package_hash(tmp_path):
    """With the project's ``.dvcignore``, a new bytecode cache reruns nothing, and a source edit reruns the stage."""
    root = tmp_path / "r"
    _write(root, "src/repro/core.py", "x = 1\n")
    _write(root, "dvc.yaml", "stages:\n  s:\n    cmd: python -c \"open('out.txt', 'w').write('o')\"\n"
                             "    deps:\n      - src/repro\n    outs:\n      - out.txt\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["git", "init", "-q"], [*dvc, "init", "-q"], [*dvc, "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    shutil.copy2(ROOT / ".dvcignore", root / ".dvcignore")
    subprocess.run([*dvc, "repro", "-q"], cwd=root, env=env, check=True, capture_output=True)

    def status() -> str:
        return subprocess.run([*dvc, "status"], cwd=root, env=env, check=True, capture_output=True, text=True).stdout

    assert "up to date" in status()
    (root / "src/repro/__pycache__").mkdir()
    (root / "src/repro/__pycache__/core.cpython-311.pyc").write_bytes(b"\0")
    (root / "src/repro/core.pyc").write_bytes(b"\0")
    assert "up to date" in status()
    _write(root, "src/repro/core.py", "x = 2\n")
    assert "modified:           src/repro" in status()
