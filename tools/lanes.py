"""Run the DVC pipeline on several cores: what ``make repro`` runs.

    python -m tools.lanes run                # as many workers as a CPU run can use (`make repro`)
    python -m tools.lanes run --jobs 1       # plain `dvc repro` (with the warm stage start)
    python -m tools.lanes plan               # print the batches without running anything

``dvc repro`` runs one stage at a time, and a tiny-profile stage uses one core (``run.num_threads``),
while most stages are independent of each other: the LongLoRA and SimCSE chains meet only in the
report, and every ablation variant needs only its chain's data (and base model). With ``--jobs`` of 2
or more:

1. The stale stages (``dvc status``) are cut into *batches*: a stage that other stale stages need
   is a batch of its own; the others are grouped by their stale upstream stages, at most ``--batch``
   to a batch. A batch is ready once the batches of its upstream stages
   have finished. Stages that join several source stages (the report) are left for step 3.
2. ``jobs`` workers take ready batches, stages with dependents first. Worker 0 works in this checkout;
   worker ``i`` in a copy of the working tree under ``.cache/lanes/worker<i>/`` (git-tracked and
   untracked-but-not-ignored files, plus hard links to the up-to-date outputs its stages read) whose
   DVC cache is this checkout's (``.dvc/config.local``). A batch is ``dvc repro <its stages>`` in the
   worker's folder, with the stages handed to the worker's warm server (:mod:`repro.warm`); DVC
   takes the upstream stages that another worker ran from its run-cache. So every stage's outputs
   and run-cache entry end in the one DVC cache. Each worker's output goes to
   ``.cache/lanes/worker<i>.log``; stage starts and errors are echoed with the worker's number, and
   each stage's wall time goes to ``.cache/lanes/stages.tsv`` (``benchmarks/bench_repro.py --lanes``
   prints it as a table).
3. When every batch has succeeded, the copies' W&B offline runs move into this checkout's
   ``wandb/``, and this checkout *adopts* the stages the copies ran: their outputs move here and their
   entries of the copies' ``dvc.lock`` (written by DVC there, for the same files) go into this
   ``dvc.lock`` in one write. ``dvc repro`` would otherwise restore them one at a time from the
   run-cache, and DVC rewrites the whole lock file after each stage (~2.5 s each at this pipeline's
   ~400 kB lock; ~90 s for the ~30 stages of a second worker). A last ``dvc repro`` here then checks
   every stage against its lock entry (one whose files differ runs again, or comes from the run-cache)
   and runs the rest. ``dvc.lock``, the outputs and ``dvc status`` end as after a plain ``dvc repro``.

A stage runs as the same process with the same inputs in any worker, so its results do not depend on
where it ran. When a batch fails, no new batch starts, the failing log's end is printed, and the copies
are kept, so the checkpoints under their ``.cache/`` survive; the next run refreshes their files and
resumes there. After a success the copies are removed.

``--jobs`` defaults to the cores a CPU run can use (``os.cpu_count() // run.num_threads``), and to 1
when the run uses an accelerator or several devices (workers would share them). Everything after
``--`` is passed to every ``dvc repro`` (e.g. ``-- --force``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from repro.warm import warm_server

LANES_DIR = Path(".cache") / "lanes"
_ECHO = re.compile(r"^(Running stage|ERROR|Stage '.*' is cached|Traceback|repro\.warm:)")
_FORCE = ("-f", "--force")


@dataclass
class Batch:
    """Stages run by one ``dvc repro``, once the stale stages in ``needs`` have been run."""

    stages: list[str]
    needs: frozenset[str]
    has_dependents: bool


@dataclass
class Plan:
    """Batches in the order workers take them, the stages left for the last run, and what copies read."""

    batches: list[Batch] = field(default_factory=list)
    rest: list[str] = field(default_factory=list)
    upstream_outs: set[str] = field(default_factory=set)


def _stage_name(stage) -> str:
    return stage.addressing.split("dvc.yaml:")[-1]


def plan(root: Path, batch_size: int = 4, force: bool = False) -> Plan:
    """The batches of the stale stages of ``root``'s pipeline (every stage with ``force``); see the module doc."""
    import networkx as nx
    from dvc.repo import Repo

    repo = Repo(str(root))
    try:
        graph = repo.index.graph  # edges: stage -> a stage it depends on
        stale = ({_stage_name(s) for s in graph} if force
                 else {name.split("dvc.yaml:")[-1] for name in repo.status()})
        order = list(reversed(list(nx.topological_sort(graph))))
        sources = {s for s in graph if graph.out_degree(s) == 0}
        result = Plan()
        keyed: dict[frozenset, list[str]] = {}
        dependents: set[str] = set()
        for stage in order:
            name = _stage_name(stage)
            if name not in stale:
                continue
            upstream = nx.descendants(graph, stage)
            if len(upstream & sources | ({stage} & sources)) > 1:
                result.rest.append(name)
                continue
            needs = frozenset(_stage_name(s) for s in upstream if _stage_name(s) in stale)
            dependents |= needs
            keyed.setdefault(needs, []).append(name)
            result.upstream_outs |= {out.def_path for s in upstream if _stage_name(s) not in stale for out in s.outs}
    finally:
        repo.close()
    for needs, names in keyed.items():
        # a stage that others wait for is a batch of its own, so that they can start as soon as it is done
        result.batches += [Batch([n], needs, True) for n in names if n in dependents]
        leaves = [n for n in names if n not in dependents]
        result.batches += [Batch(leaves[i:i + batch_size], needs, False) for i in range(0, len(leaves), batch_size)]
    result.batches.sort(key=lambda b: not b.has_dependents)  # stable: stages others wait for first
    return result


def copy_tree(src: Path, dest: Path) -> None:
    """The working tree's files that git tracks or would track (not ignored), copied to ``dest``, a git repo."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=src,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (src / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)


def sync_copy(src: Path, dest: Path, outputs: set[str] = frozenset()) -> None:
    """Make ``dest`` a copy of ``src``'s working tree sharing ``src``'s DVC cache; keep ``dest/.cache``.

    ``outputs`` (paths of up-to-date stage outputs the copy's stages read) are hard-linked (else copied),
    so DVC in the copy finds those stages up to date instead of running them again.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for entry in dest.iterdir():  # files deleted in src must not linger; checkpoints (.cache/) stay
        if entry.name in (".cache", "wandb"):
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    copy_tree(src, dest)
    for rel in sorted(outputs):
        _link_tree(src / rel, dest / rel)
    cache = (src / ".dvc" / "cache").resolve()
    (dest / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache}\n")


def _link_tree(src: Path, dest: Path) -> None:
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else []
    for path in files:
        target = dest / path.relative_to(src) if path != src else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def _dvc() -> str:
    return shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))


class _Queue:
    """Batches handed to workers when their upstream stages are done; stops handing out after a failure."""

    def __init__(self, batches: list[Batch]):
        self.pending = list(batches)
        self.done: set[str] = set()
        self.done_by: dict[int, list[str]] = {}
        self.failed: list[tuple[int, list[str], int]] = []
        self.cond = threading.Condition()

    def take(self) -> Batch | None:
        with self.cond:
            while True:
                if self.failed or not self.pending:
                    return None
                ready = next((b for b in self.pending if b.needs <= self.done), None)
                if ready:
                    self.pending.remove(ready)
                    return ready
                self.cond.wait()

    def finish(self, worker: int, batch: Batch, code: int) -> None:
        with self.cond:
            if code:
                self.failed.append((worker, batch.stages, code))
            else:
                self.done.update(batch.stages)
                self.done_by.setdefault(worker, []).extend(batch.stages)
            self.cond.notify_all()


_STAGE_LINE = re.compile(r"^(?:Running stage '(?P<ran>[^']+)'|Stage '(?P<cached>[^']+)' is cached)")


class _Timings:
    """Wall time of each stage a worker ran (from its "Running stage" line to the next stage or batch end)."""

    def __init__(self, path: Path):
        self.path, self.start, self.lock = path, time.monotonic(), threading.Lock()
        path.write_text("worker\tstage\thow\tstart_s\twall_s\n")

    def add(self, worker: int | str, stage: str, how: str, began: float, ended: float) -> None:
        with self.lock, open(self.path, "a") as f:
            f.write(f"{worker}\t{stage}\t{how}\t{began - self.start:.1f}\t{ended - began:.1f}\n")


def _worker(index: int, cwd: Path, root: Path, queue: _Queue, dvc_args: list[str], timings: _Timings) -> None:
    env = dict(os.environ)
    if cwd != root:  # the copy runs its own code (what its dvc.lock records)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd / "src"), str(cwd), env.get("PYTHONPATH")]))
    log_path = root / LANES_DIR / f"worker{index}.log"
    with open(log_path, "w") as log, warm_server(cwd, env) as warm_env:
        while (batch := queue.take()) is not None:
            log.write(f"tools.lanes: dvc repro {' '.join(batch.stages)}\n")
            log.flush()
            proc = subprocess.Popen([_dvc(), "repro", *dvc_args, *batch.stages], cwd=cwd, env=warm_env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
            current = None  # (stage, how, started)
            for line in proc.stdout:
                log.write(line)
                log.flush()
                last = line.rstrip("\n").split("\r")[-1]
                if _ECHO.match(last):
                    print(f"[w{index}] {last}", flush=True)
                if m := _STAGE_LINE.match(last):
                    now = time.monotonic()
                    if current:
                        timings.add(index, *current, now)
                    current = (m.group("ran") or m.group("cached"), "ran" if m.group("ran") else "cached", now)
            code = proc.wait()
            if current:
                timings.add(index, *current, time.monotonic())
            queue.finish(index, batch, code)


def _move_wandb_runs(src: Path, dest: Path) -> int:
    if not src.is_dir():
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    moved = 0
    for run in sorted(src.glob("offline-run-*")) + sorted(src.glob("run-*")):
        if run.is_dir() and not (dest / run.name).exists():
            shutil.move(str(run), dest / run.name)
            moved += 1
    return moved


def adopt(root: Path, copy: Path, stages: list[str]) -> int:
    """Take ``stages``, run by ``dvc repro`` in ``copy``, into ``root``: outputs moved, lock entries merged.

    Each stage's entry of ``copy/dvc.lock`` (its deps, params and outs with their hashes) goes into
    ``root/dvc.lock`` (one write, by DVC's own YAML writer) and each of its outputs replaces ``root``'s.
    A stage missing from the copy's lock is left to the last ``dvc repro``. Returns the stages adopted.
    """
    import yaml
    from dvc.utils.serialize import modify_yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    entries = (yaml.load((copy / "dvc.lock").read_text(), Loader=loader) or {}).get("stages", {})
    taken = {name: entries[name] for name in stages if name in entries}
    for entry in taken.values():
        for out in entry.get("outs", []):
            src, dest = copy / out["path"], root / out["path"]
            if not src.exists():
                raise FileNotFoundError(f"tools.lanes: {src} (an output in {copy / 'dvc.lock'}) is missing")
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), dest)
            _merge_gitignore(src.parent / ".gitignore", dest.parent / ".gitignore")
    if taken:
        with modify_yaml(str(root / "dvc.lock")) as data:
            data.setdefault("schema", "2.0")
            data["stages"] = data.get("stages") or {}
            data["stages"].update(taken)
    return len(taken)


def _merge_gitignore(src: Path, dest: Path) -> None:
    """Add to ``dest`` the lines of ``src`` it lacks: the entries DVC wrote for an adopted stage's outputs."""
    if not src.is_file():
        return
    have = dest.read_text().splitlines() if dest.is_file() else []
    new = [line for line in src.read_text().splitlines() if line and line not in have]
    if new:
        dest.write_text("".join(f"{line}\n" for line in [*have, *new]))


def default_jobs(root: Path) -> int:
    """Cores a CPU run can use, or 1 when stages use an accelerator or several devices (see module doc)."""
    from omegaconf import OmegaConf

    params = root / "params.yaml"
    run = OmegaConf.load(params).get("run", {}) if params.is_file() else {}
    threads = int(run.get("num_threads", 0) or 0)
    accelerator = str(run.get("accelerator", "auto"))
    if int(run.get("devices", 1) or 1) * int(run.get("num_nodes", 1) or 1) > 1 or threads <= 0:
        return 1
    if accelerator not in ("cpu", "auto"):
        return 1
    if accelerator == "auto":
        import torch

        if torch.cuda.is_available():
            return 1
    return max(1, (os.cpu_count() or 1) // threads)


def _warm_repro(stages: list[str], dvc_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "repro.warm", "run", "--", _dvc(), "repro", *dvc_args, *stages]


def run(root: Path, jobs: int, dvc_args: list[str], batch_size: int = 4) -> int:
    """Run the pipeline of ``root`` with ``jobs`` workers (module doc); the exit status."""
    forced = any(a in _FORCE for a in dvc_args)
    the_plan = plan(root, batch_size, forced) if jobs > 1 else Plan()
    if len(the_plan.batches) < 2:
        return subprocess.call(_warm_repro([], dvc_args), cwd=root)
    workers = [root] + [root / LANES_DIR / f"worker{i}" for i in range(1, min(jobs, len(the_plan.batches)))]
    stages = sum(len(b.stages) for b in the_plan.batches)
    print(f"tools.lanes: {stages} stages in {len(the_plan.batches)} batches over {len(workers)} workers "
          f"(logs: {LANES_DIR}/worker<i>.log); then dvc repro here", flush=True)
    (root / LANES_DIR).mkdir(parents=True, exist_ok=True)
    for copy in workers[1:]:
        sync_copy(root, copy, the_plan.upstream_outs)
    queue = _Queue(the_plan.batches)
    timings = _Timings(root / LANES_DIR / "stages.tsv")
    threads = [threading.Thread(target=_worker, args=(i, cwd, root, queue, dvc_args, timings), daemon=True)
               for i, cwd in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    moved = sum(_move_wandb_runs(copy / "wandb", root / "wandb") for copy in workers[1:])
    if queue.failed:
        for index, failed_stages, code in queue.failed:
            tail = (root / LANES_DIR / f"worker{index}.log").read_text(errors="replace").splitlines()[-40:]
            print(f"tools.lanes: worker {index} failed (exit {code}) in {' '.join(failed_stages)}; its log ends:",
                  file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)
        print("tools.lanes: fix the error and rerun; the copies (and their checkpoints) are kept", file=sys.stderr)
        return 1
    began = time.monotonic()
    adopted = sum(adopt(root, copy, queue.done_by.get(i, [])) for i, copy in enumerate(workers) if i)
    timings.add("adopt", f"(outputs and lock entries of {adopted} stages from the copies)", "ran", began,
                time.monotonic())
    print(f"tools.lanes: batches done ({moved} W&B runs moved to wandb/, {adopted} stages adopted from the copies); "
          f"dvc repro here checks every stage and runs {' '.join(the_plan.rest) or 'nothing else'}", flush=True)
    final = [a for a in dvc_args if a not in _FORCE]  # --force would run every stage again
    began = time.monotonic()
    code = subprocess.call(_warm_repro([], final), cwd=root)
    if code == 0 and forced and the_plan.rest:
        code = subprocess.call(_warm_repro(the_plan.rest, [*final, "--force", "--single-item"]), cwd=root)
    timings.add("last", "(last dvc repro: status checks, " + (" ".join(the_plan.rest) or "nothing else") + ")",
                "ran", began, time.monotonic())
    print(f"tools.lanes: {time.monotonic() - timings.start:.0f} s in all, the last dvc repro "
          f"{time.monotonic() - began:.0f} s", flush=True)
    if code == 0:
        for copy in workers[1:]:
            shutil.rmtree(copy, ignore_errors=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="python -m tools.lanes {run,plan} [--jobs N] [--batch K] [-- DVC_ARGS...]")
    parser.add_argument("cmd", choices=["run", "plan"])
    parser.add_argument("--jobs", default="auto", help="workers (default: auto, see above)")
    parser.add_argument("--batch", type=int, default=4, help="at most this many stages per dvc repro (default 4)")
    argv = list(sys.argv[1:] if argv is None else argv)
    dvc_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    from repro.cli import find_repo_root

    root = find_repo_root()
    jobs = default_jobs(root) if args.jobs == "auto" else int(args.jobs)
    if args.cmd == "plan":
        the_plan = plan(root, args.batch, any(a in _FORCE for a in dvc_args))
        print(f"{jobs} workers")
        for batch in the_plan.batches:
            print(f"after {' '.join(sorted(batch.needs)) or '(nothing)'}: dvc repro {' '.join(batch.stages)}")
        print(f"then dvc repro in {root} (run-cache for the above), running {' '.join(the_plan.rest) or 'nothing else'}")
        return 0
    return run(root, jobs, dvc_args, args.batch)


if __name__ == "__main__":
    sys.exit(main())
