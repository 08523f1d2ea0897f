"""What the warm server (``repro.warm``) saves a stage, and the default ``make repro``: a table.

    python benchmarks/bench_startup.py                 # 3 repeats per script, the model against 856 s
    python benchmarks/bench_startup.py --repeats 5 --wall 900 --workers 2

For each stage script under ``pipeline/`` it measures the start-up, the wall time from spawning the
stage process (``python -m pipeline.<script> --params params.yaml``, exactly as DVC runs it) to the
moment its work begins, two ways:

* *cold*: a fresh interpreter, as under a plain ``dvc repro``;
* *warm*: the same command with ``REPRO_WARM_SOCKET`` set, so the stage process hands its run to a
  server that has imported ``repro.warm.PRELOAD`` once (the server's own start-up is timed apart).

"Work begins" is where :func:`repro.cli.run_stage` calls the stage's task, after the config has been
loaded and validated; here the task is replaced by a probe that first imports the script's import
closure (every module the script and the ``repro``/``pipeline`` modules it reaches import, at module
level or inside functions, found by walking their source), then reads the clocks. *To task* is what a
stage pays before its work for certain; *closure* adds the imports it may reach later (a stage may not
reach every lazy import), which a warm child pays too for modules the server did not preload. Each
figure is the minimum over the repeats, since other processes may share the machine. The CPU seconds
(user + system) over the same span, the stage process's plus, when warm, those of the server's forked
child, are the load-independent view: start-up is CPU-bound, so on an idle core its wall time is
about its CPU time.

The model: ``stages × (cold − warm)`` summed over the scripts, divided by the workers that run stages
side by side, minus the server start-ups a run waits for (``tools.lanes`` starts one per worker, side
by side, and the last ``dvc repro`` uses worker 0's: one start-up of wall time), against the measured
wall time of the default ``make repro``. Stage counts come from ``dvc stage list --name-only`` (``foreach`` expanded) and each stage's ``cmd`` in
``dvc.yaml``. Nothing is asserted.
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
import tempfile
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
SERVER_RUNNER = PROBE + ("from repro.warm import PRELOAD, serve\n"
                         "serve(sys.argv[1], PRELOAD, ready=lambda: print('ready', flush=True))\n")


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


def _spawn_stage(script: str, env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds from spawning the stage process to the probe (``*_task``) and past the closure.

    CPU is the stage process's (user + system, from the kernel's accounting of its finished children)
    plus, when a warm server ran the stage, that of the forked child up to the probe (a child's CPU
    clock starts at the fork).
    """
    import resource

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    cpu_before, began = children_cpu(), time.time()
    proc = subprocess.Popen([sys.executable, "-c", STAGE_RUNNER, script, "--params", "params.yaml"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=600)
    process_cpu = children_cpu() - cpu_before
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"{script}: the probe did not report (exit {proc.returncode}):\n{err[-3000:]}")
    if "no warm start" in err:
        raise RuntimeError(f"{script}: the warm server declined: {err.strip()[-500:]}")
    reached, imported, reached_cpu, imported_cpu, pid = map(float, line.split()[1:])
    if int(pid) == proc.pid:  # ran in the stage process: its own CPU clock says it all
        cpu_task, cpu_closure = reached_cpu, imported_cpu
    else:  # the stage process waited for a forked child of the server
        cpu_task, cpu_closure = process_cpu + reached_cpu, process_cpu + imported_cpu
    return {"task": reached - began, "closure": imported - began, "cpu_task": cpu_task, "cpu_closure": cpu_closure}


def measure(scripts: list[str], repeats: int) -> tuple[dict[str, dict[str, float]], float]:
    """Per script the minimum cold and warm start-up (to task, with closure); and the server's start-up.

    Each repeat starts a server, then runs every script cold and warm in turn, so that both see the
    same load on the machine.
    """
    env = _env()
    closures = {s: ",".join(import_closure(s)) for s in scripts}
    best: dict[str, dict[str, float]] = {s: {} for s in scripts}
    server_s = float("inf")
    for rep in range(repeats):
        folder = tempfile.mkdtemp(prefix="bench-startup-")
        sock = os.path.join(folder, "sock")
        began = time.time()
        server = subprocess.Popen([sys.executable, "-c", SERVER_RUNNER, sock], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, text=True)
        try:
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError("the warm server did not start")
            server_s = min(server_s, time.time() - began)
            for script in scripts:
                stage_env = {**env, "BENCH_STARTUP_MODULES": closures[script]}
                for how, extra in (("cold", {}), ("warm", {"REPRO_WARM_SOCKET": sock})):
                    got = _spawn_stage(script, {**stage_env, **extra})
                    for key, value in got.items():
                        best[script][f"{how}_{key}"] = min(value, best[script].get(f"{how}_{key}", float("inf")))
                    print(f"repeat {rep + 1}: {script} {how} wall {got['task']:.2f} / {got['closure']:.2f} s, "
                          f"CPU {got['cpu_task']:.2f} / {got['cpu_closure']:.2f} s (load {os.getloadavg()[0]:.1f})",
                          file=sys.stderr, flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
            shutil.rmtree(folder, ignore_errors=True)
    return best, server_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wall", type=float, default=856.0, help="wall s of the default make repro (14 min 16 s)")
    parser.add_argument("--workers", type=int, default=2, help="workers that ran it side by side")
    parser.add_argument("--server-starts", type=float, default=1.0,
                        help="server start-ups a run waits for, in wall time (default 1; see the module doc)")
    parser.add_argument("--threshold", type=float, default=0.15, help="share of --wall the server must save")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    counts = stage_counts()
    load_before = os.getloadavg()
    best, server_s = measure(sorted(counts), args.repeats)
    load_after = os.getloadavg()
    print(f"Start-up of a stage process, min of {args.repeats}, in seconds: wall from spawning it to the moment "
          "run_stage calls the task, and CPU (user + system) over the same span; cold = a fresh interpreter, "
          "warm = handed to the warm server. Saving = cold − warm, to the task / past the script's import closure.\n")
    print("| script | stages | cold wall | warm wall | cold CPU | warm CPU | saving wall | saving CPU | "
          "saving × stages (wall) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    saved = {"wall, to task": 0.0, "wall, closure": 0.0, "CPU, to task": 0.0, "CPU, closure": 0.0}
    for script in sorted(counts):
        b, n = best[script], counts[script]
        wall = (b["cold_task"] - b["warm_task"], b["cold_closure"] - b["warm_closure"])
        cpu = (b["cold_cpu_task"] - b["warm_cpu_task"], b["cold_cpu_closure"] - b["warm_cpu_closure"])
        for key, value in zip(saved, (*wall, *cpu)):
            saved[key] += n * value
        print(f"| `{script.replace('.', '/')}.py` | {n} | {b['cold_task']:.2f} | {b['warm_task']:.2f} | "
              f"{b['cold_cpu_task']:.2f} | {b['warm_cpu_task']:.2f} | {wall[0]:.2f} / {wall[1]:.2f} | "
              f"{cpu[0]:.2f} / {cpu[1]:.2f} | {n * wall[0]:.0f} / {n * wall[1]:.0f} |")
    print(f"| all | {sum(counts.values())} | | | | | | | {saved['wall, to task']:.0f} / {saved['wall, closure']:.0f} |")
    overhead = server_s * args.server_starts
    print(f"\nWarm server start-up (imports PRELOAD): {server_s:.2f} s; {args.server_starts:g} of wall time per run "
          f"(each worker starts its own, side by side; the last dvc repro uses worker 0's): {overhead:.1f} s.")
    for label, seconds in saved.items():
        wall_saved = seconds / args.workers - overhead
        verdict = "keep" if wall_saved >= args.threshold * args.wall else "delete"
        print(f"Modelled saving ({label}): {seconds:.0f} s / {args.workers} workers − {overhead:.1f} s = "
              f"{wall_saved:.0f} s of {args.wall:.0f} s = {100 * wall_saved / args.wall:.1f}% "
              f"(rule: ≥ {100 * args.threshold:.0f}% = {args.threshold * args.wall:.0f} s → {verdict}).")
    print(f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in load_before)}; after: "
          f"{', '.join(f'{x:.1f}' for x in load_after)} on {os.cpu_count()} cores.")
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "best": best, "server_s": server_s}, indent=1))


if __name__ == "__main__":
    main()
