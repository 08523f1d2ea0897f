"""Provenance: what a stage script imports, which script each stage runs, and every committed result is an output."""

import subprocess
from pathlib import Path

import pytest

from tools.provenance import import_closure, stage_scripts

ROOT = Path(__file__).resolve().parents[1]


def _write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture()
def mini_repo(tmp_path):
    """A small project: each way a module can be reached is used once, plus modules that are not reached."""
    _write(tmp_path, "pipeline/__init__.py")
    _write(tmp_path, "pipeline/job.py", "from repro.cli import run\n\ndef main():\n    from repro.a import b\n")
    _write(tmp_path, "src/repro/__init__.py")
    _write(tmp_path, "src/repro/cli.py", "import os\nSCHEMA = 'repro.e:Thing'\n")
    _write(tmp_path, "src/repro/a/__init__.py")
    _write(tmp_path, "src/repro/a/b.py", "from .d import x\nTABLE = 'table.yaml'\n")
    _write(tmp_path, "src/repro/a/d.py", "x = 1\n")
    _write(tmp_path, "src/repro/a/table.yaml", "k: 1\n")
    _write(tmp_path, "src/repro/a/unused.yaml", "k: 2\n")
    _write(tmp_path, "src/repro/e.py", "class Thing: ...\n")
    _write(tmp_path, "src/repro/z.py", "import repro.a.b\n")  # imports others, imported by nobody
    _write(tmp_path, "tools/__init__.py")
    _write(tmp_path, "tools/t.py", "import repro.z\n")  # a tool: reached only when a stage imports it
    return tmp_path


def test_closure_follows_lazy_relative_string_and_package_imports(mini_repo):
    assert import_closure("pipeline/job.py", mini_repo) == {
        "pipeline/__init__.py", "pipeline/job.py", "src/repro/__init__.py", "src/repro/cli.py",
        "src/repro/a/__init__.py", "src/repro/a/b.py", "src/repro/a/d.py", "src/repro/a/table.yaml",
        "src/repro/e.py",
    }


def test_closure_reaches_a_tool_and_what_it_imports(mini_repo):
    _write(mini_repo, "pipeline/job.py", "def main():\n    from tools import t\n")
    assert import_closure("pipeline/job.py", mini_repo) == {
        "pipeline/__init__.py", "pipeline/job.py", "tools/__init__.py", "tools/t.py", "src/repro/__init__.py",
        "src/repro/z.py", "src/repro/a/__init__.py", "src/repro/a/b.py", "src/repro/a/d.py", "src/repro/a/table.yaml",
    }


def test_closure_of_a_missing_script_raises(mini_repo):
    with pytest.raises(FileNotFoundError, match="pipeline/nope.py"):
        import_closure("pipeline/nope.py", mini_repo)


def test_stage_scripts_reads_cmd_and_deps_of_plain_and_foreach_stages(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  plain:\n    cmd: python -m pipeline.job --params params.yaml\n"
        "    deps:\n      - src/repro\n      - data/in\n"
        "  many:\n    foreach: [a, b]\n    do:\n      cmd: python -m pipeline.sub.run --name ${item}\n"
        "      deps:\n        - pipeline/sub/run.py\n")
    assert stage_scripts(tmp_path / "dvc.yaml") == {
        "plain": ("pipeline/job.py", ["src/repro", "data/in"]),
        "many": ("pipeline/sub/run.py", ["pipeline/sub/run.py"]),
    }
    (tmp_path / "dvc.yaml").write_text("stages:\n  odd:\n    cmd: bash run.sh\n")
    with pytest.raises(ValueError, match="stage 'odd'"):
        stage_scripts(tmp_path / "dvc.yaml")


def test_every_committed_result_file_is_a_declared_stage_output():
    from dvc.repo import Repo

    outs = [str(o.def_path) for stage in Repo(str(ROOT)).index.stages for o in stage.outs]
    files = subprocess.run(["git", "ls-files", "metrics", "plots", "reports"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    assert files, "no committed results to check"
    # the real-model CPU study (make real-cpu) is not a DVC stage: tools/real_cpu.py declares its own outputs
    from tools import real_cpu

    study = {real_cpu.PAGE.relative_to(real_cpu.REPO).as_posix(),
             *(f"{real_cpu.METRICS.relative_to(real_cpu.REPO).as_posix()}/{step}.json" for step in real_cpu.STEPS)}
    undeclared = [f for f in files if f not in study
                  and not any(f == o or f.startswith(o.rstrip("/") + "/") for o in outs)]
    assert not undeclared, f"written by a stage but not a declared output: {undeclared}"
