"""Where the time of the default `dvc repro` goes: a per-stage table.

    python benchmarks/bench_repro.py --startup     # start-up of each stage script only (seconds, cheap)
    python benchmarks/bench_repro.py               # every stage, timed one by one, in a temporary copy
    python benchmarks/bench_repro.py --keep DIR    # the same, in DIR (left there for inspection)
    python benchmarks/bench_repro.py --lanes       # the per-stage table of the last `make repro` (no run)

The full mode copies the working tree (git-tracked and untracked-but-not-ignored files) into a
temporary folder and runs ``dvc repro --single-item --force <stage>`` for each stage in dependency
order, so each row is one stage's wall time including DVC's own work (hashing deps, saving outputs)
and the stage process's start-up. ``--startup`` measures, per stage script, what a stage pays before
its task starts: a fresh interpreter importing the script and validating ``params.yaml`` (which
imports every schema module), split by ``-X importtime`` into torch, transformers, lightning and the
rest. Both print Markdown tables. Nothing is asserted.
"""

from __future__ import annotations

import argparse
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
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]  # run as a script from a checkout (tools/ too)

from bench_startup import stage_counts  # noqa: E402

from tools.lanes import copy_tree, stage_graph  # noqa: E402
from tools.provenance import stage_scripts  # noqa: E402

HEAVY = ("torch", "transformers", "lightning", "wandb", "peft", "datasets")
STARTUP_CODE = (
    "import importlib, sys; from omegaconf import OmegaConf; from repro.config import validate; "
    "importlib.import_module(sys.argv[1]); validate(OmegaConf.load('params.yaml'))"
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": env.get("WANDB_MODE", "offline")})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _import_times(stderr: str) -> tuple[dict[str, float], float]:
    """Seconds per package from ``-X importtime`` output, and the total of all top-level imports.

    A package's time is the cumulative time of each import of one of its modules made from outside the
    package (``transformers`` imports some submodules lazily, later, from other packages' code).
    """
    lines = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( +)(\S+)", line)
        if m:
            lines.append((len(m.group(2)), m.group(3).split(".")[0], int(m.group(1)) / 1e6))
    per_package: Counter = Counter()
    total = 0.0
    for i, (indent, root, cumulative) in enumerate(lines):
        parent = next((r for ind, r, _ in lines[i + 1:] if ind < indent), None)  # children print first
        if parent != root:
            per_package[root] += cumulative
        if indent == 1:
            total += cumulative
    return dict(per_package), total


def _stage_counts(root: Path) -> Counter:
    """How many stages (``foreach`` expanded) run each pipeline script (``pipeline/x.py``)."""
    return Counter({module.replace(".", "/") + ".py": n for module, n in stage_counts(root).items()})


def startup_table(root: Path = ROOT) -> list[dict]:
    """One row per stage script: wall seconds to import it and validate the config, and the heavy imports."""
    counts = _stage_counts(root)
    rows = []
    for script, n_stages in sorted(counts.items()):
        module = script[:-3].replace("/", ".")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", STARTUP_CODE, module], cwd=root,
                              env=_env(), capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode:
            raise RuntimeError(f"{script}: start-up failed:\n{proc.stderr[-2000:]}")
        packages, imports = _import_times(proc.stderr)
        rows.append({"script": script, "stages": n_stages, "wall_s": wall,
                     **{name: packages.get(name, 0.0) for name in HEAVY[:3]}, "imports_s": imports})
    return rows


def stage_order(root: Path) -> list[str]:
    """Stage addresses (``name`` or ``name@key``) in an order where every stage follows what it needs."""
    from graphlib import TopologicalSorter

    return list(TopologicalSorter(stage_graph(root)).static_order())


def run_stages(root: Path, pattern: str | None) -> list[dict]:
    """Time ``dvc repro -s -f`` of each stage in ``root``, in dependency order."""
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    return _time_stages(root, pattern, dvc, _env())


def _time_stages(root: Path, pattern: str | None, dvc: str, env: dict) -> list[dict]:
    rows = []
    for stage in stage_order(root):
        if pattern and not re.search(pattern, stage):
            continue
        start = time.perf_counter()
        proc = subprocess.run([dvc, "repro", "--single-item", "--force", stage], cwd=root, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        rows.append({"stage": stage, "wall_s": wall, "ok": proc.returncode == 0})
        print(f"{stage}: {wall:.1f} s{'' if proc.returncode == 0 else ' FAILED'}", file=sys.stderr, flush=True)
        if proc.returncode:
            print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
            break
    return rows


def _script_of(stage: str, scripts: dict) -> str:
    return scripts[stage.split("@")[0]][0]


def lanes_table(path: Path) -> None:
    """The stages of the last ``make repro`` (``tools.lanes`` writes ``stages.tsv``): per stage, then per family."""
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    print("| worker | stage | how | start s | wall s |")
    print("|---|---|---|---:|---:|")
    for worker, stage, how, start, wall in sorted(rows, key=lambda r: float(r[3])):
        print(f"| {worker} | `{stage}` | {how} | {float(start):.0f} | {float(wall):.1f} |")
    families: dict[str, list[float]] = {}
    for worker, stage, how, _start, wall in rows:
        if how == "ran" and worker not in ("last", "adopt", "sync"):
            families.setdefault(re.sub(r"@.*$", "", stage), []).append(float(wall))
    print("\n| stages | count | wall s (sum) | mean s |")
    print("|---|---:|---:|---:|")
    for family, walls in sorted(families.items(), key=lambda kv: -sum(kv[1])):
        print(f"| `{family}` | {len(walls)} | {sum(walls):.0f} | {sum(walls) / len(walls):.1f} |")
    busy: dict[str, float] = {}
    for worker, _stage, _how, _start, wall in rows:
        busy[worker] = busy.get(worker, 0.0) + float(wall)
    end = max(float(r[3]) + float(r[4]) for r in rows)
    print("\n" + "; ".join(f"worker {w}: {b:.0f} s busy" for w, b in busy.items())
          + f"; {end:.0f} s ({end / 60:.1f} min) from the first stage to the end")
    training_table(ROOT)


def training_table(root: Path) -> None:
    """The trainings inside those stages, from the metrics files they wrote (``train/wall_s``: the fit alone)."""
    import json

    import yaml

    params = yaml.safe_load((root / "params.yaml").read_text())
    rows: dict[str, list[float]] = {}

    def add(family: str, seconds: float, count: int = 1) -> None:
        got = rows.setdefault(family, [0.0, 0])
        got[0] += seconds * count
        got[1] += count

    for name in ("longlora/train.json", "simcse/train_unsup.json", "simcse/train_sup.json"):
        if (f := root / "metrics" / name).is_file() and "train/wall_s" in (m := json.loads(f.read_text())):
            add("main trainings (longlora_train, simcse_train)", float(m["train/wall_s"]))
    for f in sorted((root / "metrics" / "ablations").glob("*/*.json")):
        m, ablation = json.loads(f.read_text()), f.parent.name
        if "train/wall_s" in m:
            seeds = len(params.get("ablations", {}).get(ablation, {}).get("seeds") or [1])
            add(f"ablate_{ablation}", float(m["train/wall_s"]), seeds)
    if not rows:
        return
    print("\n| trainings (fit only, from metrics/) | runs | s (sum) |")
    print("|---|---:|---:|")
    for family, (seconds, count) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
        print(f"| `{family}` | {count} | {seconds:.0f} |")
    total = sum(v[0] for v in rows.values())
    print(f"| all | {sum(v[1] for v in rows.values())} | {total:.0f} |")
    print(f"\nOn {os.cpu_count()} cores these fits alone need {total / (os.cpu_count() or 1):.0f} s "
          "(the tiny base's pretraining, evaluation and DVC's own work come on top).")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--startup", action="store_true", help="only the start-up table (no stage is run)")
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder and leave it there")
    parser.add_argument("--stages", default=None, help="only stages matching this regex (their inputs must exist)")
    parser.add_argument("--skip-startup", action="store_true", help="no start-up table (the stage table only)")
    parser.add_argument("--lanes", nargs="?", const=ROOT / ".cache/lanes/stages.tsv", type=Path, default=None,
                        metavar="TSV", help="print the per-stage table of the last `make repro` (tools.lanes) and exit")
    args = parser.parse_args(argv)
    if args.lanes:
        lanes_table(args.lanes)
        return

    startup = [] if args.skip_startup else startup_table()
    print("| script | stages | start-up s | torch s | transformers s | lightning s | all imports s |")
    print("|---|---|---|---|---|---|---|")
    for r in startup:
        print(f"| `{r['script']}` | {r['stages']} | {r['wall_s']:.2f} | {r['torch']:.2f} | {r['transformers']:.2f} | "
              f"{r['lightning']:.2f} | {r['imports_s']:.2f} |")
    per_script = {r["script"]: r["wall_s"] for r in startup}
    n_stages = sum(r["stages"] for r in startup)
    total_startup = sum(r["wall_s"] * r["stages"] for r in startup)
    print(f"\n{n_stages} stages; start-up alone ≈ {total_startup:.0f} s ({total_startup / 60:.1f} min) of process "
          "start and imports, paid once per stage.")
    if args.startup:
        return

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench-repro-"))
    workdir.mkdir(parents=True, exist_ok=True)
    copy_tree(ROOT, workdir)
    scripts = stage_scripts(workdir / "dvc.yaml")
    start = time.perf_counter()
    rows = run_stages(workdir, args.stages)
    total = time.perf_counter() - start
    print("\n| stage | wall s | of which start-up s (est.) | rest s |")
    print("|---|---|---|---|")
    for r in rows:
        su = per_script.get(_script_of(r["stage"], scripts), 0.0)
        print(f"| `{r['stage']}` | {r['wall_s']:.1f} | {su:.1f} | {r['wall_s'] - su:.1f} |"
              + ("" if r["ok"] else " FAILED |"))
    print(f"\nall {len(rows)} stages: {total:.0f} s ({total / 60:.1f} min) wall on {os.cpu_count()} CPUs")
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
