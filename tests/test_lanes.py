"""tools.lanes on a toy DVC pipeline: batches follow the DAG, and two workers end as one ``dvc repro``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools import lanes

STAGE = ("python -c \"import pathlib,sys; pathlib.Path(sys.argv[2]).write_text(pathlib.Path(sys.argv[1]).read_text()"
         " + '{tag}')\" {dep} {out}")


def _stage(name: str, dep: str, out: str) -> str:
    cmd = STAGE.format(tag=name, dep=dep, out=out)
    return f"  {name}:\n    cmd: {cmd}\n    deps:\n      - {dep}\n    outs:\n      - {out}\n"


@pytest.fixture()
def toy_repo(tmp_path):
    """Two chains (a -> b -> c1..c3, x -> y1..y2) from two sources, joined by one stage."""
    root = tmp_path / "toy"
    root.mkdir()
    (root / "in_a.txt").write_text("A")
    (root / "in_x.txt").write_text("X")
    body = "stages:\n" + _stage("a", "in_a.txt", "a.txt") + _stage("b", "a.txt", "b.txt")
    body += "".join(_stage(f"c{i}", "b.txt", f"c{i}.txt") for i in (1, 2, 3))
    body += _stage("x", "in_x.txt", "x.txt") + "".join(_stage(f"y{i}", "x.txt", f"y{i}.txt") for i in (1, 2))
    body += ("  join:\n    cmd: cat c1.txt y1.txt > join.txt\n    deps:\n      - c1.txt\n      - y1.txt\n"
             "    outs:\n      - join.txt\n")
    (root / "dvc.yaml").write_text(body)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}  # tools/ of this checkout
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "config", "core.analytics", "false"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "toy"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return root, env


def test_plan_puts_waited_for_stages_first_and_leaves_the_join(toy_repo):
    root, _ = toy_repo
    plan = lanes.plan(root, batch_size=2)
    assert plan.rest == ["join"]
    by_stage = {s: b for b in plan.batches for s in b.stages}
    assert set(by_stage) == {"a", "b", "c1", "c2", "c3", "x", "y1", "y2"}
    for waited in ("a", "b", "x"):  # others need them: a batch of their own, before every leaf batch
        assert by_stage[waited].stages == [waited] and by_stage[waited].has_dependents
    assert by_stage["b"].needs == {"a"} and by_stage["c1"].needs == {"a", "b"} and by_stage["y2"].needs == {"x"}
    assert max(len(b.stages) for b in plan.batches) == 2
    first_leaf = next(i for i, b in enumerate(plan.batches) if not b.has_dependents)
    assert all(not b.has_dependents for b in plan.batches[first_leaf:])


def test_two_workers_leave_the_checkout_as_one_dvc_repro_would(toy_repo):
    root, env = toy_repo
    proc = subprocess.run([sys.executable, "-m", "tools.lanes", "run", "--jobs", "2", "--batch", "1"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[w1] Running stage" in proc.stdout  # the copy did work ...
    adopted = int(proc.stdout.split(" stages adopted from the copies")[0].rsplit(" ", 1)[-1])
    assert adopted >= 1  # ... taken here: outputs and lock entries, not run again
    assert "is cached - skipping run" not in proc.stdout.split("stages adopted")[1]
    assert "Running stage 'join'" in proc.stdout
    assert (root / "join.txt").read_text() == "Aabc1" + "Xxy1"  # c1 = A+a+b+c1, y1 = X+x+y1
    for i in (1, 2, 3):
        assert (root / f"c{i}.txt").read_text() == f"Aabc{i}"
    timed = [line.split("\t") for line in (root / ".cache/lanes/stages.tsv").read_text().splitlines()[1:]]
    assert {row[1] for row in timed if row[2] == "ran"} >= {"a", "b", "c1", "c2", "c3", "x", "y1", "y2"}
    assert all(float(row[4]) >= 0 for row in timed) and timed[-1][0] == "last"
    ran_by = {row[1]: row[0] for row in timed if row[2] == "ran" and row[0] in ("0", "1")}
    assert sum(1 for w in ran_by.values() if w == "1") == adopted
    last_run = proc.stdout.split("stages adopted")[1]
    assert all(f"Running stage '{s}'" not in last_run for s in ran_by), last_run  # nothing ran twice
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, env=env, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout
    # the adopted stages' outputs are git-ignored here as DVC ignores the outputs it writes itself
    porcelain = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root, env=env,
                               capture_output=True, text=True, check=True).stdout
    assert not [line for line in porcelain.splitlines() if line.startswith("??") and line.endswith(".txt")], porcelain
    assert not (root / ".cache/lanes/worker1").exists()
    again = subprocess.run([sys.executable, "-m", "tools.lanes", "run", "--jobs", "2"], cwd=root, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout


def test_a_failing_batch_stops_the_run_and_keeps_the_copy(toy_repo):
    root, env = toy_repo
    text = (root / "dvc.yaml").read_text().replace("cat c1.txt", "exit 3; cat c1.txt")
    text = text.replace(STAGE.format(tag="y2", dep="x.txt", out="y2.txt"), "exit 7")
    (root / "dvc.yaml").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "tools.lanes", "run", "--jobs", "2", "--batch", "1"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert "failed" in proc.stderr and "y2" in proc.stderr
    assert "Running stage 'join'" not in proc.stdout  # the last dvc repro does not run after a failure
    assert (root / ".cache/lanes/worker1/dvc.yaml").is_file()  # the copy (and its checkpoints) stays
