"""Run the DVC pipeline on several cores: what ``make repro`` runs.

    python -m tools.lanes run                # one worker per core a CPU run can use (`make repro`)
    python -m tools.lanes run --jobs 1       # plain `dvc repro`
    python -m tools.lanes plan               # print the batches without running anything

``dvc repro`` runs one stage at a time, and a tiny-profile stage uses one core (``run.num_threads``),
while most stages are independent of each other: the LongLoRA and SimCSE chains meet only in the
report, and every ablation variant needs only its chain's data (and base model). This module drives
DVC through its commands only, and DVC writes every ``dvc.lock`` entry. With ``--jobs`` of 2 or more:

1. The stage graph is ``dvc dag --dot`` (Graphviz DOT, edges from a stage to the stages that read its
   outputs) and the stale stages are the keys of ``dvc status --json``, plus every stage downstream
   of one (DVC decides there whether its inputs really changed). They are cut into *batches*: a stage
   that other stale stages need is a batch of its own; the others are grouped by their stale upstream
   stages, at most ``--batch`` to a batch. A batch is ready once its stale upstream stages are done.
   Stages that join several source stages (the report) are left for step 4.
2. ``jobs`` workers take ready batches, stages with dependents first. Worker 0 works in this checkout;
   worker ``i`` in a copy of the working tree under ``.cache/lanes/worker<i>/`` (git-tracked and
   untracked-but-not-ignored files) whose DVC cache is this checkout's (``dvc cache dir --local``),
   and where ``dvc checkout`` has put the outputs of the up-to-date stages its batches read. A batch
   is ``dvc repro --single-item <its stages>`` in the worker's folder, after ``dvc repro
   --single-item`` of the upstream stages that another worker ran (DVC takes them from the
   run-cache those workers filled). Each worker's DVC output goes to ``.cache/lanes/worker<i>.log``.
   A stage's wall time is read from the worker's ``dvc.lock``, which DVC rewrites after each stage:
   from one rewrite to the rewrite that holds the stage's new entry (``.cache/lanes/stages.tsv``;
   ``benchmarks/bench_repro.py --lanes`` prints it as a table).
3. When every batch has succeeded, the copies' W&B offline runs move into this checkout's
   ``wandb/``, and this checkout *adopts* the stages the copies ran: their outputs (the paths their
   entries in the copy's ``dvc.lock`` list) move here, and ``dvc commit --force --no-relink <those
   stages>`` has DVC hash their dependencies and outputs here and write their entries. Each entry
   must then equal the one DVC wrote in the copy; a stage whose entry differs (a dependency changed
   here while the copy ran it) runs again here (``dvc repro --force --single-item``). DVC rewrites
   the whole ``dvc.lock`` for each stage either way, so adopting costs about 0.7 s a stage at this
   pipeline's ~210 kB lock; ``dvc repro`` taking each stage from the run-cache instead was ~10%
   slower (``benchmarks/bench_adopt.py``, 29 stages: 19–22 s by commit, 21–24 s by run-cache).
4. A last ``dvc repro`` here checks every stage and runs the rest. ``dvc.lock``, the outputs and
   ``dvc status`` end as after a plain ``dvc repro``.

A stage runs as the same process with the same inputs in any worker, so its results do not depend on
where it ran. When a batch fails, no new batch starts, the failing log's end is printed, and the copies
are kept with their git-ignored files (training checkpoints under ``models/*-checkpoints/``, ``.cache/``);
the next run refreshes their other files and resumes there. After a success the copies are removed.

``--jobs`` defaults to the cores a CPU run can use (``os.cpu_count() // run.num_threads``), and to 1
when the run uses an accelerator or several devices (workers would share them). Everything after
``--`` is passed to every ``dvc repro`` of a batch and to the last one (e.g. ``-- --force``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path

LANES_DIR = Path(".cache") / "lanes"
_FORCE = ("-f", "--force")


class LanesError(RuntimeError):
    """A DVC command failed, or what DVC printed or wrote is not in the documented form."""


def _dvc_exe() -> str:
    return shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))


def dvc(cwd: Path, *args: str) -> str:
    """The standard output of ``dvc <args>`` run in ``cwd``.

    Raises:
        LanesError: naming the command, the folder and the end of DVC's error output, when it fails.
    """
    proc = subprocess.run([_dvc_exe(), *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise LanesError(f"tools.lanes: `dvc {' '.join(args)}` failed in {cwd} (exit {proc.returncode}):\n"
                         f"{(proc.stderr or proc.stdout).strip()[-3000:]}")
    return proc.stdout


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1].replace('\\"', '"')
    return name


def stage_graph(root: Path) -> dict[str, set[str]]:
    """Every stage of ``root``'s pipeline and the stages whose outputs it reads, from ``dvc dag --dot``.

    Raises:
        LanesError: when the output is not a DOT graph.
    """
    import pydot

    text = dvc(root, "dag", "--dot")
    if not text.strip():
        return {}
    parsed = pydot.graph_from_dot_data(text)
    if not parsed:
        raise LanesError(f"tools.lanes: `dvc dag --dot` in {root} printed no DOT graph:\n{text[:2000]}")
    graph: dict[str, set[str]] = {}
    for node in parsed[0].get_nodes():
        if (name := _unquote(node.get_name())) not in ("node", "edge", "graph"):  # DOT's default-attribute lines
            graph.setdefault(name, set())
    for edge in parsed[0].get_edges():  # upstream -> downstream
        upstream, downstream = _unquote(edge.get_source()), _unquote(edge.get_destination())
        graph.setdefault(upstream, set())
        graph.setdefault(downstream, set()).add(upstream)
    return graph


def stale_stages(root: Path) -> set[str]:
    """The stages ``dvc status --json`` reports as changed in ``root``."""
    text = dvc(root, "status", "--json").strip()
    try:
        return set(json.loads(text or "{}"))
    except json.JSONDecodeError as exc:
        raise LanesError(f"tools.lanes: `dvc status --json` in {root} printed no JSON ({exc}):\n{text[:2000]}") from exc


def lock_entries(folder: Path) -> dict[str, dict]:
    """The ``stages`` of ``folder/dvc.lock`` (as DVC wrote them), or nothing when there is no lock file."""
    import yaml

    path = folder / "dvc.lock"
    if not path.is_file():
        return {}
    data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
    return data.get("stages") or {}


@dataclass
class Batch:
    """Stages run by one ``dvc repro``, once the stale stages in ``needs`` have been run."""

    stages: list[str]
    needs: frozenset[str]
    has_dependents: bool


@dataclass
class Plan:
    """Batches in the order workers take them, the stages left for the last run, and what copies read.

    Attributes:
        batches: in the order workers take them.
        rest: stages left for the last ``dvc repro`` (they join several source stages).
        checkout: up-to-date stages whose outputs some batch reads (checked out in each copy).
        order: every stage, each after the stages it reads.
    """

    batches: list[Batch] = field(default_factory=list)
    rest: list[str] = field(default_factory=list)
    checkout: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)


def make_plan(graph: dict[str, set[str]], stale: set[str], batch_size: int = 4) -> Plan:
    """The batches of ``stale`` (and what lies downstream of it) in ``graph``; see the module doc."""
    order = list(TopologicalSorter(graph).static_order())
    upstream: dict[str, set[str]] = {}
    for stage in order:
        upstream[stage] = set().union(*(upstream[u] | {u} for u in graph[stage]))
    data_files = {s for s in graph if s.endswith(".dvc")}  # `dvc add`ed data: nothing to run
    stale = {s for s in graph if s in stale or upstream[s] & stale}
    sources = {s for s in graph if s not in data_files and not upstream[s] - data_files}
    result = Plan(order=[s for s in order if s not in data_files])
    keyed: dict[frozenset, list[str]] = {}
    dependents: set[str] = set()
    read: set[str] = set()
    for stage in result.order:
        if stage not in stale:
            continue
        if len((upstream[stage] | {stage}) & sources) > 1:
            result.rest.append(stage)
            continue
        needs = frozenset(upstream[stage] & stale - data_files)
        dependents |= needs
        keyed.setdefault(needs, []).append(stage)
        read |= upstream[stage] - stale - data_files
    result.checkout = [s for s in result.order if s in read]
    for needs, names in keyed.items():
        # a stage that others wait for is a batch of its own, so that they can start as soon as it is done
        result.batches += [Batch([n], needs, True) for n in names if n in dependents]
        leaves = [n for n in names if n not in dependents]
        result.batches += [Batch(leaves[i:i + batch_size], needs, False) for i in range(0, len(leaves), batch_size)]
    result.batches.sort(key=lambda b: not b.has_dependents)  # stable: stages others wait for first
    return result


def plan(root: Path, batch_size: int = 4, force: bool = False) -> Plan:
    """The batches of the stale stages of ``root``'s pipeline (every stage with ``force``)."""
    graph = stage_graph(root)
    return make_plan(graph, set(graph) if force else stale_stages(root), batch_size)


def _listed(folder: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=folder,
                         capture_output=True, check=True).stdout.decode()
    return [rel for rel in out.split("\0") if rel and (folder / rel).is_file()]


def copy_tree(src: Path, dest: Path) -> None:
    """The working tree's files that git tracks or would track (not ignored), copied to ``dest``, a git repo."""
    for rel in _listed(src):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dest / rel)
    if not (dest / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=dest, check=True)


def sync_copy(src: Path, dest: Path, checkout: list[str] = ()) -> None:
    """Make ``dest`` a copy of ``src``'s working tree that shares ``src``'s DVC cache.

    Files that git would list in ``dest`` but that ``src`` no longer has are removed; git-ignored
    files (outputs, checkpoints, ``.cache/``) stay, except DVC's own state (``.dvc/tmp``). Then
    ``dvc checkout`` puts the outputs of the ``checkout`` stages (up to date in ``src``, so in the
    cache) in place.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if (dest / ".git").exists():
        for rel in set(_listed(dest)) - set(_listed(src)):
            (dest / rel).unlink()
    shutil.rmtree(dest / ".dvc" / "tmp", ignore_errors=True)
    copy_tree(src, dest)
    dvc(dest, "cache", "dir", "--local", dvc(src, "cache", "dir").strip())
    if checkout:
        dvc(dest, "checkout", "--force", *checkout)


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


class _Timings:
    """Rows of ``stages.tsv``: who ran what, when (seconds since the run began) and for how long."""

    def __init__(self, path: Path):
        self.path, self.start, self.lock = path, time.monotonic(), threading.Lock()
        path.write_text("worker\tstage\thow\tstart_s\twall_s\n")

    def add(self, worker: int | str, stage: str, how: str, began: float, ended: float) -> None:
        with self.lock, open(self.path, "a") as f:
            f.write(f"{worker}\t{stage}\t{how}\t{began - self.start:.1f}\t{ended - began:.1f}\n")


def _run_watched(command: list[str], cwd: Path, env: dict, log, poll_s: float = 0.5) -> tuple[int, list]:
    """Run ``command``; its exit status, and ``(stage, started, ended)`` of each stage whose lock entry it changed.

    DVC rewrites ``cwd/dvc.lock`` after each stage it runs or restores, so a stage ended at the first
    rewrite whose entry for it is the final one, and began at the rewrite before (or at the start).
    """
    before = lock_entries(cwd)
    path = cwd / "dvc.lock"
    stamps: list[tuple[float, dict]] = []
    last_stat, stable = None, False
    began = time.monotonic()
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    while True:
        try:
            code = proc.wait(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:
            pass
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        now = (stat.st_mtime_ns, stat.st_size)
        if now != last_stat:  # read it once it has stopped changing (DVC may still be writing it)
            last_stat, stable = now, False
        elif not stable:
            stable = True
            try:
                stamps.append((time.monotonic(), lock_entries(cwd)))
            except Exception:  # noqa: BLE001 - a file caught mid-write; the next rewrite is read again
                stable = False
    ended = time.monotonic()
    final = lock_entries(cwd)
    stamps.append((ended, final))
    changed = [name for name, entry in final.items() if before.get(name) != entry]
    finished = sorted((next(t for t, entries in stamps if entries.get(name) == final[name]), name) for name in changed)
    rows, previous = [], began
    for at, name in finished:
        rows.append((name, previous, at))
        previous = at
    return code, rows


def _worker(index: int, cwd: Path, root: Path, queue: _Queue, the_plan: Plan, dvc_args: list[str],
            timings: _Timings, env: dict[str, str]) -> None:
    """Take batches until none is left; each: fetch the upstream stages others ran, then ``dvc repro -s``."""
    with open(root / LANES_DIR / f"worker{index}.log", "w") as log:
        have: set[str] = set()  # stale stages that are up to date in this folder
        while (batch := queue.take()) is not None:
            fetch = [s for s in the_plan.order if s in batch.needs and s not in have]
            steps = [(["repro", "--single-item", *fetch], "fetched")] if fetch else []
            steps.append((["repro", "--single-item", *dvc_args, *batch.stages], "ran"))
            code, started = 0, time.monotonic()
            for args, how in steps:
                print(f"[w{index}] dvc {' '.join(args)}", flush=True)
                log.write(f"tools.lanes: dvc {' '.join(args)}\n")
                log.flush()
                code, rows = _run_watched([_dvc_exe(), *args], cwd, env, log)
                for stage, began, ended in rows:
                    timings.add(index, stage, how, began, ended)
                if code:
                    break
            have.update(fetch)
            if not code:
                have.update(batch.stages)
                print(f"[w{index}] done in {time.monotonic() - started:.0f} s: {' '.join(batch.stages)}", flush=True)
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


def _replace(src: Path, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), dest)


def adopt(root: Path, ran: dict[Path, list[str]]) -> tuple[list[str], list[str]]:
    """Take the stages ``ran[copy]`` that ``dvc repro`` ran in each copy into ``root``.

    A stage whose entry in the copy's ``dvc.lock`` equals ``root``'s is up to date here already.
    For the others their outputs (the paths of that entry) replace ``root``'s, and ``dvc commit
    --force --no-relink`` writes their entries here, from the files here.

    Returns:
        The stages adopted, and those among them whose new entry differs from the copy's (a
        dependency here is not the one the copy ran them with), which the caller runs again.

    Raises:
        LanesError: a stage is missing from its copy's ``dvc.lock``, or an output it lists is missing.
    """
    here = lock_entries(root)
    taken: dict[str, dict] = {}
    for copy, stages in ran.items():
        theirs = lock_entries(copy)
        for stage in stages:
            if stage not in theirs:
                raise LanesError(f"tools.lanes: stage {stage} ran in {copy} but {copy / 'dvc.lock'} "
                                 "has no entry for it")
            if theirs[stage] == here.get(stage):
                continue
            for out in theirs[stage].get("outs", []):
                if not (copy / out["path"]).exists():
                    raise LanesError(f"tools.lanes: {copy / out['path']}, an output of stage {stage} in "
                                     f"{copy / 'dvc.lock'}, is missing")
            for out in theirs[stage].get("outs", []):
                _replace(copy / out["path"], root / out["path"])
            taken[stage] = theirs[stage]
    if not taken:
        return [], []
    dvc(root, "commit", "--force", "--no-relink", *taken)
    now = lock_entries(root)
    return list(taken), [stage for stage, entry in taken.items() if now.get(stage) != entry]


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


def _copy_env(copy: Path) -> dict[str, str]:
    """The environment of a worker in ``copy``: it runs the copy's own code (what its ``dvc.lock`` records)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(copy / "src"), str(copy), env.get("PYTHONPATH")]))
    return env


def run(root: Path, jobs: int, dvc_args: list[str], batch_size: int = 4) -> int:
    """Run the pipeline of ``root`` with ``jobs`` workers (module doc); the exit status."""
    forced = any(a in _FORCE for a in dvc_args)
    the_plan = plan(root, batch_size, forced) if jobs > 1 else Plan()
    if len(the_plan.batches) < 2:
        return subprocess.call([_dvc_exe(), "repro", *dvc_args], cwd=root)
    workers = [root] + [root / LANES_DIR / f"worker{i}" for i in range(1, min(jobs, len(the_plan.batches)))]
    stages = sum(len(b.stages) for b in the_plan.batches)
    print(f"tools.lanes: {stages} stages in {len(the_plan.batches)} batches over {len(workers)} workers "
          f"(logs: {LANES_DIR}/worker<i>.log); then dvc repro here", flush=True)
    (root / LANES_DIR).mkdir(parents=True, exist_ok=True)
    timings = _Timings(root / LANES_DIR / "stages.tsv")
    for copy in workers[1:]:
        began = time.monotonic()
        sync_copy(root, copy, the_plan.checkout)
        timings.add("sync", f"(copy of the tree, dvc checkout of {len(the_plan.checkout)} stages: {copy.name})",
                    "ran", began, time.monotonic())
    queue = _Queue(the_plan.batches)
    threads = [threading.Thread(target=_worker, args=(i, cwd, root, queue, the_plan, dvc_args, timings,
                                                      dict(os.environ) if i == 0 else _copy_env(cwd)), daemon=True)
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
    adopted, differ = adopt(root, {copy: queue.done_by.get(i, []) for i, copy in enumerate(workers) if i})
    timings.add("adopt", f"(outputs moved, dvc commit of {len(adopted)} stages from the copies)", "ran", began,
                time.monotonic())
    print(f"tools.lanes: batches done ({moved} W&B runs moved to wandb/, {len(adopted)} stages adopted from the "
          f"copies in {time.monotonic() - began:.1f} s); dvc repro here runs "
          f"{' '.join(the_plan.rest) or 'nothing else'}", flush=True)
    final = [a for a in dvc_args if a not in _FORCE]  # --force would run every stage again
    began = time.monotonic()
    code = 0
    if differ:
        print(f"tools.lanes: {' '.join(differ)}: the dependencies here differ from those the copy ran them "
              "with (changed during the run?); running them again here", file=sys.stderr, flush=True)
        code = subprocess.call([_dvc_exe(), "repro", "--force", "--single-item", *final, *differ], cwd=root)
    if code == 0 and forced and the_plan.rest:
        code = subprocess.call([_dvc_exe(), "repro", "--force", "--single-item", *final, *the_plan.rest], cwd=root)
    if code == 0:
        code = subprocess.call([_dvc_exe(), "repro", *final], cwd=root)
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
    try:
        root = (Path.cwd() / dvc(Path.cwd(), "root").strip()).resolve()
        jobs = default_jobs(root) if args.jobs == "auto" else int(args.jobs)
        if args.cmd == "plan":
            the_plan = plan(root, args.batch, any(a in _FORCE for a in dvc_args))
            print(f"{jobs} workers")
            if the_plan.checkout:
                print(f"each copy: dvc checkout {' '.join(the_plan.checkout)}")
            for batch in the_plan.batches:
                print(f"after {' '.join(sorted(batch.needs)) or '(nothing)'}: dvc repro -s {' '.join(batch.stages)}")
            print(f"then dvc repro in {root}, running {' '.join(the_plan.rest) or 'nothing else'}")
            return 0
        return run(root, jobs, dvc_args, args.batch)
    except LanesError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
