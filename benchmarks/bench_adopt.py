"""How ``tools.lanes`` should take the stages a copy ran into the checkout: a table of two ways.

    python benchmarks/bench_adopt.py                       # 29 stages from a copy, a 212 kB dvc.lock
    python benchmarks/bench_adopt.py --stages 29 --lock-kb 20 --out-kb 2250 --files 42

A toy pipeline (one source stage ``prep`` and ``--stages`` stages that read its output, each writing
a folder of ``--files`` files, ``--out-kb`` in all, like an ablation variant of the tiny profile, and
reading a code folder of ``--src-files`` files, as each stage reads ``src/repro``) is
built in a temporary git + DVC repository. Each stage lists its own params subtree, padded so that
``dvc.lock`` has about ``--lock-kb`` (the default pipeline's is 212 kB for 55 entries; DVC rewrites
the whole file after each stage). ``prep`` runs in the checkout, the other stages in a copy made by
:func:`tools.lanes.sync_copy` (sharing the DVC cache), then the checkout takes them in, from the same
starting state, by:

* ``commit``: their outputs moved here, ``dvc commit --force --no-relink <stages>``
  (:func:`tools.lanes.adopt`, what ``tools.lanes`` does);
* ``commit, relink``: the same with DVC's default ``--relink`` (outputs linked from the cache again);
* ``run-cache``: ``dvc repro``, which finds each stage in the run-cache and checks its outputs out.

Each row also checks the result: ``dvc status --json`` empty, no stage run again (each toy stage
appends to a log), and the lock entries equal to those DVC wrote in the copy. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import lanes  # noqa: E402

STAGE_CMD = ("python -c \"import os,pathlib,sys; d=pathlib.Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True); "
             "[(d/f'f{{i}}.bin').write_bytes((sys.argv[1] + f'/{{i:05d}}').encode() * ({size} // 12)) "
             "for i in range({files})]; "
             "(d/'prep.txt').write_text(pathlib.Path('prep.txt').read_text()); "
             "open(os.environ['TOY_RUNS'], 'a').write(sys.argv[1] + chr(10))\" out/s{i}")


def build(root: Path, stages: int, lock_kb: float, out_kb: float, files: int, src_files: int,
          env: dict) -> list[str]:
    """The toy repository in ``root``, committed to git; the names of the stages after ``prep``."""
    root.mkdir(parents=True)
    for i in range(src_files):  # a code folder every stage depends on, as each stage lists src/repro
        (root / "src" / f"m{i // 20}").mkdir(parents=True, exist_ok=True)
        (root / "src" / f"m{i // 20}" / f"f{i}.py").write_text(f"# module {i}\n" + "x = 1\n" * 300)
    names = [f"s{i}" for i in range(stages)]
    pad_keys = max(0, int(lock_kb * 1000 / (stages + 1) / 80) - 8)  # ~80 bytes a key in dvc.lock
    params = {"pad": {n: {f"k{j}": f"{n}-{j}-" + "x" * 56 for j in range(pad_keys)} for n in names}}
    (root / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    body = "stages:\n  prep:\n    cmd: python -c \"import pathlib; pathlib.Path('prep.txt').write_text('p')\"\n"
    body += "    outs:\n      - prep.txt\n"
    size = int(out_kb * 1000 / files)
    for i, name in enumerate(names):
        body += (f"  {name}:\n    cmd: {STAGE_CMD.format(i=i, size=size, files=files)}\n    deps:\n      - prep.txt\n"
                 + ("      - src\n" if src_files else "")
                 + f"    params:\n      - pad.{name}\n    outs:\n      - out/{name}\n")
    (root / "dvc.yaml").write_text(body)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "-c", "user.email=b@example.invalid", "-c", "user.name=b", "commit",
                                       "-qm", "toy"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return names


def _clone_state(src: Path, dest: Path) -> None:
    """``src`` as it stands (working tree, dvc.lock, its own DVC cache) copied to ``dest``."""
    shutil.copytree(src, dest, symlinks=True)


def _check(root: Path, env: dict, runs: Path, ran_before: int, expected: dict) -> str:
    status = json.loads(subprocess.run(["dvc", "status", "--json"], cwd=root, env=env, capture_output=True,
                                       text=True, check=True).stdout)
    reruns = len(runs.read_text().splitlines()) - ran_before
    entries = lanes.lock_entries(root)
    same = all(entries.get(name) == entry for name, entry in expected.items())
    return (f"status {'clean' if not status else 'NOT clean: ' + ', '.join(status)}; {reruns} reruns; "
            f"entries {'as in the copy' if same else 'DIFFER from the copy'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, default=29, help="stages the copy runs (default 29)")
    parser.add_argument("--lock-kb", type=float, default=212.0, help="size of dvc.lock to aim at (default 212)")
    parser.add_argument("--out-kb", type=float, default=2250.0, help="output size of a stage (default 2250)")
    parser.add_argument("--files", type=int, default=42, help="files in a stage's output folder (default 42)")
    parser.add_argument("--src-files", type=int, default=100, help="files of the code folder each stage reads")
    parser.add_argument("--keep", type=Path, default=None, help="build in this folder and leave it there")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-adopt-"))
    runs = work / "runs.log"
    env = {**os.environ, "TOY_RUNS": str(runs),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    os.environ.update({"TOY_RUNS": str(runs), "PATH": env["PATH"]})  # lanes.adopt runs dvc with this environment
    base, copy = work / "base", work / "base-copy"
    names = build(base, args.stages, args.lock_kb, args.out_kb, args.files, args.src_files, env)
    runs.touch()
    subprocess.run(["dvc", "repro", "prep"], cwd=base, env=env, check=True, capture_output=True)
    lanes.sync_copy(base, copy, ["prep"])
    began = time.perf_counter()
    subprocess.run(["dvc", "repro", "--single-item", *names], cwd=copy, env=env, check=True, capture_output=True)
    copy_s = time.perf_counter() - began
    expected = {n: e for n, e in lanes.lock_entries(copy).items() if n in names}
    lock_kb = (copy / "dvc.lock").stat().st_size / 1000
    ran_before = len(runs.read_text().splitlines())

    def by_commit(root: Path, their_copy: Path, relink: bool) -> None:
        if not relink:
            lanes.adopt(root, {their_copy: names})
            return
        for name in names:
            lanes._replace(their_copy / "out" / name, root / "out" / name)
        lanes.dvc(root, "commit", "--force", *names)

    ways = {
        "commit (`dvc commit -f --no-relink`)": lambda root, c: by_commit(root, c, relink=False),
        "commit, relink (`dvc commit -f`)": lambda root, c: by_commit(root, c, relink=True),
        "run-cache (`dvc repro`)": lambda root, c: subprocess.run(["dvc", "repro"], cwd=root, env=env, check=True,
                                                                 capture_output=True),
    }
    rows = []
    for i, (label, adopt) in enumerate(ways.items()):
        root, their_copy = work / f"way{i}", work / f"way{i}-copy"
        _clone_state(base, root)
        _clone_state(copy, their_copy)
        lanes.dvc(their_copy, "cache", "dir", "--local", str(root / ".dvc" / "cache"))
        began = time.perf_counter()
        adopt(root, their_copy)
        seconds = time.perf_counter() - began
        rows.append((label, seconds, _check(root, env, runs, ran_before, expected)))
        print(f"{label}: {seconds:.1f} s", file=sys.stderr, flush=True)
    print(f"{args.stages} stages run in a copy ({copy_s:.0f} s there), each {args.files} files / {args.out_kb:.0f} kB; "
          f"dvc.lock {lock_kb:.0f} kB; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}\n")
    print("| adoption | wall s | s per stage | check |")
    print("|---|---:|---:|---|")
    for label, seconds, check in rows:
        print(f"| {label} | {seconds:.1f} | {seconds / args.stages:.2f} | {check} |")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
