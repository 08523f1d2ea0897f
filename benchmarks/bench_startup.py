"""What a fork server for stage processes would save a stage, and the default ``make repro``: a table.

    python benchmarks/bench_startup.py                 # 3 repeats per script, the model against 856 s
    python benchmarks/bench_startup.py --repeats 5 --wall 900 --workers 2

For each stage script under ``pipeline/`` it measures the *cold* start-up: the time from spawning the
stage process (``python -m pipeline.<script> --params params.yaml``, exactly as DVC runs it) to the
moment its work begins. "Work begins" is where :func:`repro.cli.run_stage` calls the stage's task,
after the config has been loaded and validated; here the task is replaced by a probe that reads the
clocks there (*to task*), then imports the script's import closure (every module the script and the
``repro``/``pipeline`` modules it reaches import, at module level or inside functions, found by
walking their source) and reads them again (*closure*: imports a stage may reach later, which a
forked child pays too unless the server preloaded them). Wall and CPU seconds (user + system) are the
minimum over the repeats, since other processes may share the machine; start-up is CPU-bound, so the
two agree, and on this 2-core VM both rise with the load.

Against it, what a stage handed to a fork server that has imported the heavy modules once would
still pay: at least the *floor*, a fresh interpreter importing ``repro.cli`` only; and the server's
own start-up, importing :data:`PRELOAD` once. The model: ``stages × (cold to task − floor)`` summed
over the scripts, divided by the workers that run stages side by side, minus one server start-up (one
per worker, side by side), against the measured wall time of the default ``make repro``; an upper
bound, since a real hand-over costs more than the floor. Stage counts come from ``dvc stage list
--name-only`` (``foreach`` expanded) and each stage's ``cmd`` in ``dvc.yaml``. Nothing is asserted.

Such a server, ``repro.warm``, ran every stage until it was measured with the first version of this
script (same probe, min of 5, load average about 1 on 2 cores): cold 5.0–5.7 s to the task, handed
over 0.27–0.36 s (the floor: 0.11 s), server start-up 5.4 s; 259 s over the 54 stages, 124 s of the
856 s run on 2 workers = 14.5% (CPU seconds: 15.1%), under the 15% it had to save to stay. Two
earlier runs, with the machine busier (load average 2–4), modelled 15.6% and 18.5%: the margin is
within this machine's noise, and the busier the cores, the more a fresh interpreter costs.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CMD_SCRIPT = re.compile(r"python\s+-m\s+(pipeline\.\w+)")  # the dvc.yaml cmd lines this project writes
# A stage process under the probe: run_stage's task is replaced by one that imports the closure
# (BENCH_STARTUP_MODULES, comma-separated) and prints the wall clock at each of the two points.
PROBE = """
import importlib, os, sys, time
import repro.cli as cli
def _probe(task):
    def run(cfg, ctx):
        reached, reached_cpu = time.time(), time.process_time()
        for name in filter(None, os.environ.get("BENCH_STARTUP_MODULES", "").split(",")):
            try:
                importlib.import_module(name)
            except Exception:
                pass
        print("BENCH", reached, time.time(), reached_cpu, time.process_time(), os.getpid(), flush=True)
        sys.stdout.flush()
        os._exit(0)
    return run
cli._resolve = _probe
"""
STAGE_RUNNER = PROBE + "import runpy; runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)\n"
# What a fork server would import once (the list repro.warm preloaded).
PRELOAD = (
    "torch", "transformers", "lightning", "lightning.pytorch.loggers", "repro.config", "repro.workflows.longlora",
    "repro.workflows.longlora_eval", "repro.workflows.simcse", "repro.workflows.ablations", "repro.lit.causal_lm",
    "repro.lit.simcse", "repro.lit.history", "repro.reporting", "repro.reports.longlora", "repro.reports.simcse",
    "repro.reports.ablations",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": env.get("WANDB_MODE", "offline")})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def stage_counts(root: Path = ROOT) -> Counter:
    """How many stages of the pipeline (``foreach`` expanded) run each ``pipeline/`` script."""
    import yaml

    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    names = subprocess.run([dvc, "stage", "list", "--name-only"], cwd=root, capture_output=True, text=True,
                           check=True).stdout.split()
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    counts: Counter = Counter()
    for name in names:
        spec = stages[name.split("@")[0]]
        cmd = str(spec.get("cmd") or spec.get("do", {}).get("cmd", ""))
        if m := CMD_SCRIPT.search(cmd):
            counts[m.group(1)] += 1
        else:
            raise ValueError(f"dvc.yaml: stage {name}'s cmd runs no pipeline script: {cmd!r}")
    return counts


def _module_file(module: str, root: Path) -> Path | None:
    base = root / "src" if module.split(".")[0] == "repro" else root
    for path in (base / Path(*module.split(".")).with_suffix(".py"), base / Path(*module.split(".")) / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Modules ``path`` imports anywhere (module level or in functions), ``TYPE_CHECKING`` blocks aside."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(filter(None, [*parts, base]))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules; others fail harmlessly
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                m := re.fullmatch(r"((?:repro|pipeline)(?:\.\w+)+):\w+", node.value)):  # run_stage("module:task")
            found.add(m.group(1))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_closure(script: str, root: Path = ROOT) -> list[str]:
    """Every module the stage script ``script`` (``pipeline.x``) can import, through ``repro``/``pipeline`` code."""
    seen, todo, closure = set(), [script], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module, root)
        if module.split(".")[0] in ("repro", "pipeline"):
            if path is None:
                continue  # a name imported from a module, not a module
            closure.add(module)
            todo.extend(_imports(path, module))
        else:
            closure.add(module)
    return sorted(closure - {script})


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _spawn(args: list[str], env: dict[str, str]) -> tuple[float, float, str, str, int]:
    """Wall and CPU seconds of ``python <args>`` to its end, its output, error output and exit status."""
    cpu_before, began = _children_cpu(), time.time()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    return time.time() - began, _children_cpu() - cpu_before, proc.stdout, proc.stderr, proc.returncode


def _spawn_stage(script: str, env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds from spawning the stage process to the probe (``*_task``) and past the closure."""
    began = time.time()
    _, _, out, err, code = _spawn(["-c", STAGE_RUNNER, script, "--params", "params.yaml"], env)
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"{script}: the probe did not report (exit {code}):\n{err[-3000:]}")
    reached, imported, reached_cpu, imported_cpu, _pid = map(float, line.split()[1:])
    return {"task": reached - began, "closure": imported - began, "cpu_task": reached_cpu, "cpu_closure": imported_cpu}


def measure(scripts: list[str], repeats: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per script the minimum cold start-up (wall, CPU; to task, closure); the minimum floor and preload."""
    env = _env()
    closures = {s: ",".join(import_closure(s)) for s in scripts}
    best: dict[str, dict[str, float]] = {s: {} for s in scripts}
    other = {"floor": float("inf"), "floor_cpu": float("inf"), "preload": float("inf"), "preload_cpu": float("inf")}
    for rep in range(repeats):
        for name, code in (("floor", "import repro.cli"),
                           ("preload", f"import importlib; [importlib.import_module(m) for m in {PRELOAD!r}]")):
            wall, cpu, _, err, status = _spawn(["-c", code], env)
            if status:
                raise RuntimeError(f"{name}: `python -c {code!r}` failed:\n{err[-3000:]}")
            other[name], other[f"{name}_cpu"] = min(other[name], wall), min(other[f"{name}_cpu"], cpu)
        for script in scripts:
            got = _spawn_stage(script, {**env, "BENCH_STARTUP_MODULES": closures[script]})
            for key, value in got.items():
                best[script][key] = min(value, best[script].get(key, float("inf")))
            print(f"repeat {rep + 1}: {script} wall {got['task']:.2f} / {got['closure']:.2f} s, CPU "
                  f"{got['cpu_task']:.2f} / {got['cpu_closure']:.2f} s (load {os.getloadavg()[0]:.1f})",
                  file=sys.stderr, flush=True)
    return best, other


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wall", type=float, default=856.0, help="wall s of the default make repro (14 min 16 s)")
    parser.add_argument("--workers", type=int, default=2, help="workers that ran it side by side")
    parser.add_argument("--threshold", type=float, default=0.15, help="share of --wall a fork server must save")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    counts = stage_counts()
    load_before = os.getloadavg()
    best, other = measure(sorted(counts), args.repeats)
    load_after = os.getloadavg()
    floor, floor_cpu = other["floor"], other["floor_cpu"]
    print(f"Cold start-up of a stage process, min of {args.repeats}, in seconds: wall from spawning it to the "
          f"moment run_stage calls the task / past the script's import closure, and CPU (user + system) over the "
          f"same spans. Floor (interpreter + repro.cli): {floor:.2f} s wall, {floor_cpu:.2f} s CPU.\n")
    print("| script | stages | cold wall | cold CPU | saving at most (wall to task − floor) | × stages |")
    print("|---|---:|---:|---:|---:|---:|")
    saved = {"wall": 0.0, "CPU": 0.0}
    for script in sorted(counts):
        b, n = best[script], counts[script]
        wall, cpu = b["task"] - floor, b["cpu_task"] - floor_cpu
        saved["wall"] += n * wall
        saved["CPU"] += n * cpu
        print(f"| `{script.replace('.', '/')}.py` | {n} | {b['task']:.2f} / {b['closure']:.2f} | "
              f"{b['cpu_task']:.2f} / {b['cpu_closure']:.2f} | {wall:.2f} | {n * wall:.0f} |")
    print(f"| all | {sum(counts.values())} | | | | {saved['wall']:.0f} |")
    overhead = other["preload"]
    print(f"\nA fork server's start-up (importing PRELOAD once): {overhead:.2f} s wall "
          f"({other['preload_cpu']:.2f} s CPU), once per run (one server per worker, side by side).")
    for label, seconds in saved.items():
        wall_saved = seconds / args.workers - overhead
        verdict = "≥" if wall_saved >= args.threshold * args.wall else "<"
        print(f"At most ({label}, to task): {seconds:.0f} s / {args.workers} workers − {overhead:.1f} s = "
              f"{wall_saved:.0f} s of {args.wall:.0f} s = {100 * wall_saved / args.wall:.1f}% ({verdict} "
              f"{100 * args.threshold:.0f}% = {args.threshold * args.wall:.0f} s).")
    print(f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in load_before)}; after: "
          f"{', '.join(f'{x:.1f}' for x in load_after)} on {os.cpu_count()} cores.")
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "best": best, **other}, indent=1))


if __name__ == "__main__":
    main()
