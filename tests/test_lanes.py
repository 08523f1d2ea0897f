"""tools.lanes on a toy DVC pipeline: batches follow the DAG, and two workers end as one ``dvc repro``.

Every toy stage appends its name and working directory to a log outside the repository, so the
tests count how often and where each stage ran without reading DVC's console output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tools import lanes

ROOT = Path(__file__).resolve().parents[1]
TOY_STAGES = {"a", "b", "c1", "c2", "c3", "x", "y1", "y2", "join"}
STAGE = ("python -c \"import os,pathlib,sys; p=pathlib.Path; p(sys.argv[2]).write_text(p(sys.argv[1]).read_text() "
         "+ '{tag}'); open(os.environ['TOY_RUNS'], 'a').write('{tag} ' + os.getcwd() + chr(10))\" {dep} {out}")


def _stage(name: str, dep: str, out: str) -> str:
    cmd = STAGE.format(tag=name, dep=dep, out=out)
    return f"  {name}:\n    cmd: {cmd}\n    deps:\n      - {dep}\n    outs:\n      - {out}\n"


def _toy_yaml() -> str:
    """Two chains (a -> b -> c1..c3, x -> y1..y2) from two sources, joined by one stage."""
    body = "stages:\n" + _stage("a", "in_a.txt", "a.txt") + _stage("b", "a.txt", "b.txt")
    body += "".join(_stage(f"c{i}", "b.txt", f"c{i}.txt") for i in (1, 2, 3))
    body += _stage("x", "in_x.txt", "x.txt") + "".join(_stage(f"y{i}", "x.txt", f"y{i}.txt") for i in (1, 2))
    join = ("python -c \"import os,pathlib; p=pathlib.Path; p('join.txt').write_text(p('c1.txt').read_text() + "
            "p('y1.txt').read_text()); open(os.environ['TOY_RUNS'], 'a').write('join ' + os.getcwd() + chr(10))\"")
    body += f"  join:\n    cmd: {join}\n    deps:\n      - c1.txt\n      - y1.txt\n    outs:\n      - join.txt\n"
    return body


def _git_commit(root: Path, env: dict) -> None:
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit",
                                       "-qm", "toy"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)


@pytest.fixture()
def toy_repo(tmp_path):
    """The toy pipeline in a git + DVC repository, an environment for it, and its run log."""
    root = tmp_path / "toy"
    root.mkdir()
    (root / "in_a.txt").write_text("A")
    (root / "in_x.txt").write_text("X")
    (root / "dvc.yaml").write_text(_toy_yaml())
    (root / ".gitignore").write_text("/ckpt/\n")
    runs = tmp_path / "runs.log"
    runs.touch()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TOY_RUNS": str(runs),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")]))}
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"],
                [sys.executable, "-m", "dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    _git_commit(root, env)
    return root, env, runs


def _lanes(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.lanes", "run", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900, check=False)


def _status(root: Path, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout)


def _ran(runs: Path) -> list[tuple[str, str]]:
    return [tuple(line.split(" ", 1)) for line in runs.read_text().splitlines()]


def test_stage_graph_and_stale_stages_come_from_dvc(toy_repo):
    root, _, _ = toy_repo
    graph = lanes.stage_graph(root)
    assert set(graph) == TOY_STAGES
    assert graph["b"] == {"a"} and graph["c2"] == {"b"} and graph["join"] == {"c1", "y1"} and graph["a"] == set()
    assert lanes.stale_stages(root) == TOY_STAGES  # nothing has run yet


def test_plan_puts_waited_for_stages_first_and_leaves_the_join(toy_repo):
    root, _, _ = toy_repo
    plan = lanes.plan(root, batch_size=2)
    assert plan.rest == ["join"]
    by_stage = {s: b for b in plan.batches for s in b.stages}
    assert set(by_stage) == TOY_STAGES - {"join"}
    for waited in ("a", "b", "x"):  # others need them: a batch of their own, before every leaf batch
        assert by_stage[waited].stages == [waited] and by_stage[waited].has_dependents
    assert by_stage["b"].needs == {"a"} and by_stage["c1"].needs == {"a", "b"} and by_stage["y2"].needs == {"x"}
    assert max(len(b.stages) for b in plan.batches) == 2
    first_leaf = next(i for i, b in enumerate(plan.batches) if not b.has_dependents)
    assert all(not b.has_dependents for b in plan.batches[first_leaf:])
    assert plan.checkout == []  # nothing is up to date yet


def test_plan_of_a_changed_input_takes_what_lies_downstream_and_checks_out_the_rest():
    graph = {"a": set(), "b": {"a"}, "c1": {"b"}, "c2": {"b"}, "x": set(), "y1": {"x"}, "join": {"c1", "y1"}}
    plan = lanes.make_plan(graph, {"b"}, batch_size=4)  # `dvc status` names b only (its input changed)
    assert [b.stages for b in plan.batches] == [["b"], ["c1", "c2"]]
    assert plan.rest == ["join"] and plan.checkout == ["a"]
    assert plan.batches[1].needs == {"b"}


def test_two_workers_leave_the_checkout_as_one_dvc_repro_would(toy_repo, tmp_path):
    root, env, runs = toy_repo
    plain = tmp_path / "plain"  # the same repository run by a plain `dvc repro`, for comparison
    subprocess.run(["git", "clone", "-q", str(root), str(plain)], check=True, capture_output=True)
    plain_env = {**env, "TOY_RUNS": str(tmp_path / "plain_runs.log")}
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=plain, env=plain_env, check=True, capture_output=True)

    proc = _lanes(root, env, "--jobs", "2", "--batch", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = _ran(runs)
    assert Counter(name for name, _ in ran) == Counter(TOY_STAGES)  # every stage once, none twice
    copy = str(root / ".cache/lanes/worker1")
    in_copy = {name for name, cwd in ran if cwd == copy}
    assert in_copy and {name for name, cwd in ran if cwd == str(root)} >= {"join"}  # both workers ran stages
    assert _status(root, env) == {}
    # the adopted stages' outputs are git-ignored here as DVC ignores the outputs it writes itself
    porcelain = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root, env=env,
                               capture_output=True, text=True, check=True).stdout
    assert not [line for line in porcelain.splitlines() if line.startswith("??") and line.endswith(".txt")], porcelain
    assert lanes.lock_entries(root) == lanes.lock_entries(plain)  # DVC's entries, as a plain dvc repro writes them
    for name in ("a", "b", "c1", "c2", "c3", "x", "y1", "y2", "join"):
        assert (root / f"{name}.txt").read_text() == (plain / f"{name}.txt").read_text()
    assert (root / "join.txt").read_text() == "Aabc1" + "Xxy1"
    timed = [line.split("\t") for line in (root / ".cache/lanes/stages.tsv").read_text().splitlines()[1:]]
    assert {row[1] for row in timed if row[2] == "ran" and row[0] in ("0", "1")} == TOY_STAGES - {"join"}
    assert all(float(row[4]) >= 0 for row in timed) and timed[-1][0] == "last"
    assert {row[1] for row in timed if row[0] == "1" and row[2] == "ran"} == in_copy
    assert not (root / ".cache/lanes/worker1").exists()

    again = _lanes(root, env, "--jobs", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(_ran(runs)) == len(ran)  # the second run runs nothing


def test_force_runs_every_stage_once_more(toy_repo):
    root, env, runs = toy_repo
    assert _lanes(root, env, "--jobs", "2").returncode == 0
    first = len(_ran(runs))
    proc = _lanes(root, env, "--jobs", "2", "--batch", "2", "--", "--force")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Counter(name for name, _ in _ran(runs)[first:]) == Counter(TOY_STAGES)
    assert _status(root, env) == {}


def test_a_failing_batch_stops_the_run_and_keeps_the_copy(toy_repo):
    root, env, runs = toy_repo
    text = (root / "dvc.yaml").read_text()
    text = text.replace(STAGE.format(tag="y2", dep="x.txt", out="y2.txt"), "exit 7")
    (root / "dvc.yaml").write_text(text)
    proc = _lanes(root, env, "--jobs", "2", "--batch", "1")
    assert proc.returncode == 1
    assert "failed" in proc.stderr and "y2" in proc.stderr
    assert "join" not in {name for name, _ in _ran(runs)}  # the last dvc repro does not run after a failure
    copy = root / ".cache/lanes/worker1"
    assert (copy / "dvc.yaml").is_file()  # the copy stays
    (copy / "ckpt").mkdir(exist_ok=True)
    (copy / "ckpt" / "last.ckpt").write_text("state")  # a git-ignored checkpoint ...
    (copy / "stray.txt").write_text("a file this checkout does not have")
    again = _lanes(root, env, "--jobs", "2", "--batch", "1")
    assert again.returncode == 1
    assert (copy / "ckpt" / "last.ckpt").read_text() == "state"  # ... survives the next run's refresh
    assert not (copy / "stray.txt").exists()


def test_adopting_a_stage_whose_input_changed_here_reports_it(toy_repo):
    """A stage the copy ran with other inputs than this checkout's is not taken as up to date."""
    root, env, _ = toy_repo
    subprocess.run([sys.executable, "-m", "dvc", "repro", "x"], cwd=root, env=env, check=True, capture_output=True)
    copy = root / ".cache/lanes/worker1"
    lanes.sync_copy(root, copy, ["x"])
    assert (copy / "x.txt").read_text() == "Xx"  # checked out from the shared cache
    subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", "y1", "y2"], cwd=copy, env=env, check=True,
                   capture_output=True)
    (root / "in_x.txt").write_text("X2")  # changes here while the copy ran
    subprocess.run([sys.executable, "-m", "dvc", "repro", "x"], cwd=root, env=env, check=True, capture_output=True)
    adopted, differ = lanes.adopt(root, {copy: ["y1", "y2"]})
    assert sorted(adopted) == ["y1", "y2"] and sorted(differ) == ["y1", "y2"]
    shutil.rmtree(copy)


def test_dvc_errors_name_the_command_and_folder(tmp_path):
    with pytest.raises(lanes.LanesError, match=r"`dvc status --json` failed in .*nowhere"):
        (tmp_path / "nowhere").mkdir()
        lanes.stale_stages(tmp_path / "nowhere")
