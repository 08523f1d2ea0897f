"""Entry-point plumbing: repo paths from the working tree, sweep groups and per-job run names."""

import subprocess
import sys
from pathlib import Path

from repro.cli import find_repo_root, job_tags, sweep_group, swept_keys

ROOT = Path(__file__).resolve().parents[1]


def _project(folder: Path) -> Path:
    (folder / "conf").mkdir(parents=True)
    (folder / "dvc.yaml").write_text("stages: {}\n")
    return folder


def test_repo_root_is_the_checkout_around_the_working_directory(tmp_path):
    clone = _project(tmp_path / "second-clone")
    (clone / "src" / "deep").mkdir(parents=True)
    assert find_repo_root(clone / "src" / "deep") == clone.resolve()
    # a folder with only git/dvc metadata is the fallback; outside any checkout, the package's own
    other = tmp_path / "bare"
    (other / ".dvc").mkdir(parents=True)
    assert find_repo_root(other) == other.resolve()


def test_repo_root_follows_the_cwd_of_a_fresh_process(tmp_path):
    clone = _project(tmp_path / "clone")
    out = subprocess.run([sys.executable, "-c", "from repro.cli import REPO_ROOT; print(REPO_ROOT)"], cwd=clone,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out) == clone.resolve() != ROOT


def test_sweep_group_names_the_swept_overrides_and_the_date():
    argv = ["-m", "simcse.run=unsup", "simcse.train.temperature=0.01,0.05,0.1"]
    assert swept_keys(argv) == ["simcse.train.temperature"]
    group = sweep_group("default", argv, "multirun/2026-12-01/10-42-07")
    assert group == "default-sweep-simcse.train.temperature=0.01,0.05,0.1-2026-12-01_10-42-07"
    long = sweep_group("x", ["-m", "a.b=" + ",".join(map(str, range(200)))], "multirun/2026-12-01/10-42-07")
    assert len(long) <= 128 and long.endswith("-2026-12-01_10-42-07")


def test_jobs_of_a_sweep_get_distinct_tags_from_their_swept_values():
    argv = ["-m", "simcse.run=unsup", "simcse.train.temperature=0.01,0.05", "ablations.variant=p0,p1"]
    jobs = [["simcse.run=unsup", f"simcse.train.temperature={t}", "ablations.variant=p0"] for t in ("0.01", "0.05")]
    tags = [job_tags(argv, j) for j in jobs]
    assert tags == [(("temperature", "0.01"),), (("temperature", "0.05"),)]
    assert swept_keys(["x=range(1,4)", "y=3", "--flag"]) == ["x"]
