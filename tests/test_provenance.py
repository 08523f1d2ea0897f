"""Provenance: each stage's code deps are its script's import closure; every committed result is a declared output."""

import subprocess
from pathlib import Path

import pytest

from tools.provenance import code_dep_drift, import_closure, rewrite_code_deps, stage_scripts

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
    return tmp_path


def test_closure_follows_lazy_relative_string_and_package_imports(mini_repo):
    assert import_closure("pipeline/job.py", mini_repo) == {
        "pipeline/__init__.py", "pipeline/job.py", "src/repro/__init__.py", "src/repro/cli.py",
        "src/repro/a/__init__.py", "src/repro/a/b.py", "src/repro/a/d.py", "src/repro/a/table.yaml",
        "src/repro/e.py",
    }


def test_rewrite_replaces_code_deps_and_keeps_data_deps(mini_repo):
    (mini_repo / "dvc.yaml").write_text(
        "stages:\n  job:\n    cmd: python -m pipeline.job --params params.yaml\n    deps:\n"
        "      - pipeline/job.py\n      - src/repro/z.py\n      - data/in\n    outs:\n      - out\n")
    assert set(code_dep_drift(mini_repo)) == {"job"}
    assert rewrite_code_deps(mini_repo) == ["job"]
    assert code_dep_drift(mini_repo) == {}
    deps = stage_scripts(mini_repo / "dvc.yaml")["job"][1]
    assert deps == ["pipeline/__init__.py", "pipeline/job.py", "src/repro", "data/in"]


def test_every_stage_lists_exactly_its_import_closure():
    drift = code_dep_drift(ROOT)
    assert not drift, "dvc.yaml deps differ from the import closure (fix with `python -m tools.provenance --write`):\n" + \
        "\n".join(f"{s}: missing {sorted(m)}, not imported {sorted(e)}" for s, (m, e) in drift.items())


def test_every_committed_result_file_is_a_declared_stage_output():
    from dvc.repo import Repo

    outs = [str(o.def_path) for stage in Repo(str(ROOT)).index.stages for o in stage.outs]
    files = subprocess.run(["git", "ls-files", "metrics", "plots", "reports"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    assert files, "no committed results to check"
    undeclared = [f for f in files if not any(f == o or f.startswith(o.rstrip("/") + "/") for o in outs)]
    assert not undeclared, f"written by a stage but not a declared output: {undeclared}"


def test_the_package_is_one_folder_dep_and_dvcignored_tools_are_never_hashed(mini_repo):
    from tools.provenance import as_deps, expand_dep

    (mini_repo / "src/repro/a/__pycache__").mkdir()
    (mini_repo / "src/repro/a/__pycache__/d.cpython-311.pyc").write_bytes(b"\0")  # caches never count
    (mini_repo / ".dvcignore").write_text("/.cache/\n__pycache__/\n/src/repro/z.py\n")
    closure = import_closure("pipeline/job.py", mini_repo)
    deps = as_deps(closure, mini_repo)
    assert deps == ["pipeline/__init__.py", "pipeline/job.py", "src/repro"]
    held = set().union(*(expand_dep(d, mini_repo) for d in deps))
    assert held >= closure and held - closure == {"src/repro/a/unused.yaml"}  # z.py: hidden; no cache file
    (mini_repo / "dvc.yaml").write_text(
        "stages:\n  job:\n    cmd: python -m pipeline.job --params params.yaml\n    deps:\n"
        + "".join(f"      - {d}\n" for d in deps))
    assert code_dep_drift(mini_repo) == {}
    _write(mini_repo, "pipeline/job.py", "import repro.z\n")  # a stage importing a hidden module: reported
    assert code_dep_drift(mini_repo)["job"][0] == {"src/repro/z.py"}
    (mini_repo / ".dvcignore").write_text("__pycache__/\n/src/repro/[xyz].py\n")  # any DVC pattern counts
    assert "src/repro/z.py" not in expand_dep("src/repro", mini_repo)
    assert code_dep_drift(mini_repo)["job"][0] == {"src/repro/z.py"}


def test_dvc_hashes_the_package_folder_without_the_dvcignored_tools(tmp_path):
    """What the one-folder dep relies on: DVC's folder hash skips what .dvcignore names, and only that."""
    import os
    import sys

    root = tmp_path / "r"
    _write(root, "src/repro/core.py", "x = 1\n")
    _write(root, "src/repro/tool.py", "y = 1\n")
    _write(root, "dvc.yaml", "stages:\n  s:\n    cmd: python -c \"open('out.txt', 'w').write('o')\"\n"
                             "    deps:\n      - src/repro\n    outs:\n      - out.txt\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["git", "init", "-q"], [*dvc, "init", "-q"], [*dvc, "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    (root / ".dvcignore").write_text("/src/repro/tool.py\n")
    subprocess.run([*dvc, "repro", "-q"], cwd=root, env=env, check=True, capture_output=True)

    def status() -> str:
        return subprocess.run([*dvc, "status"], cwd=root, env=env, check=True, capture_output=True, text=True).stdout

    assert "up to date" in status()
    _write(root, "src/repro/tool.py", "y = 2\n")
    assert "up to date" in status()  # the hidden tool changed: nothing to rerun
    _write(root, "src/repro/core.py", "x = 2\n")
    assert "modified:           src/repro" in status()
