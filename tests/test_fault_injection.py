"""Fault injection on the real training stages, driven as a user drives them: ``python -m pipeline.<stage>``.

Each case copies one shared, shrunk workspace per trainer (composed ``params.yaml``, prepared data, base model) into
its own folder, runs the stage in a subprocess, injects one fault, and checks what the stage does about it:

* ``kill -9`` at seeded points (before the first checkpoint, and a seeded delay after seeded checkpoints), then a
  rerun: the final weights, the training-curve CSV and the final metrics (all but time, throughput, memory and
  ``train/resumed``; for SimCSE the best STS-B dev Spearman among them) equal an uninterrupted run's bit for bit;
* a truncated ``last.ckpt`` after a kill: the rerun names the corrupt file, falls back to the newest intact older
  checkpoint (LongLoRA's periodic ``step<N>.ckpt``, SimCSE's best-dev ``best-step=<N>.ckpt``) and still ends
  bit-exact;
* a diverging config (NaN loss): non-zero exit naming step and value, ``status: failed`` in the metrics file and
  in W&B (exit code of the offline run), checkpoints kept and finite, no export;
* truncated prepared data: a clear error naming the file;
* a W&B API key without a usable server (a closed port; a server that accepts the connection and never answers;
  one that answers with HTML; one that answers the probe but not W&B's requests): the stage falls back to offline
  within about ``wandb.init_timeout_s`` with one warning line;
* a config change after a kill: a new checkpoint folder (no resume of the old one), and abandoned folders older
  than ``run.ckpt_keep_days`` pruned by the next training stage.

The kill/resume and truncated-checkpoint cases are parametrized over :data:`STAGES` (one :class:`TrainStage` per
trainer: LongLoRA's ``pipeline.train``, SimCSE's ``pipeline.train_simcse --run unsup``), so another trainer joins
them by adding its description there; the other cases use the LongLoRA stages.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch  # here, not on the first poll of a kill loop: importing it takes longer than a SimCSE run

from repro.tracking import find_offline_runs, read_offline_run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
STAGE_TIMEOUT_S = 600


@dataclass(frozen=True)
class TrainStage:
    """One trainer under fault injection: how to build its inputs, run it, and compare its results.

    Attributes:
        id: test id.
        overrides: Hydra overrides shrinking the run (composed once into ``params.yaml``).
        prepare: pipeline modules run once, in order, to build the training inputs.
        train: the pipeline module under test.
        args: its arguments after ``--params params.yaml`` (``--run unsup``).
        max_steps / ckpt_every: the optimizer steps and the checkpoint period the overrides set.
        ckpt_parent: folder (relative to the workspace) of the per-config checkpoint folders.
        weights: folder of the final weights (``*.safetensors`` and ``*.pt`` state dicts, compared tensor by tensor).
        curves: CSV files compared byte for byte.
        metrics: the stage's metrics JSON; every key but ``timing`` must equal the uninterrupted run's.
        timing: metrics that measure the machine (time, throughput, memory) or the attempt (``train/resumed``).
        lr_key: config key of the learning rate (a config change).
        kill_points: ``(kind, step, delay_s)``: ``("fresh", 0, 0.0)`` kills once the Trainer is built, before any
            checkpoint; ``("ckpt", k, d)`` kills ``d`` seconds after a checkpoint of step ``k`` or later appears.
    """

    id: str
    overrides: tuple[str, ...]
    prepare: tuple[str, ...]
    train: str
    args: tuple[str, ...]
    max_steps: int
    ckpt_every: int
    ckpt_parent: str
    weights: str
    curves: tuple[str, ...]
    metrics: str
    timing: tuple[str, ...]
    lr_key: str
    kill_points: tuple[tuple[str, int, float], ...]


# Seeded kill points: the kill lands somewhere in the steps after the checkpoint that triggers it.
_rng = random.Random(20261201)
LONGLORA = TrainStage(
    id="longlora",
    overrides=(
        "data=synthetic",  # the fault paths, not the data, are under test: the small synthetic corpus is fastest
        "longlora.base.pretrain_steps=5", "longlora.data.train.num_docs=60",
        "longlora.data.eval_sets.synthetic_validation.num_docs=10", "longlora.data.eval_sets.synthetic_test.num_docs=10",
        "longlora.data.eval_sets.synthetic_facts_sampled.num_docs=40",
        "longlora.data.eval_sets.synthetic_facts_sampled.sample_docs=4",
        "longlora.train.max_steps=12", "longlora.train.global_batch_size=4", "longlora.train.batch_size=2",
        "longlora.train.ckpt_every_n_steps=2", "longlora.train.log_every_n_steps=1",
        "longlora.train.warmup_steps=2", "run.accelerator=cpu",
    ),
    prepare=("pipeline.prepare_lm", "pipeline.base"),
    train="pipeline.train",
    args=(),
    max_steps=12,
    ckpt_every=2,
    ckpt_parent="models/longlora-checkpoints",
    weights="models/longlora/finetuned/adapter",
    curves=("plots/longlora/train_loss.csv",),
    metrics="metrics/longlora/train.json",
    timing=("train/tokens_per_s", "train/peak_mem_mb", "train/wall_s", "train/resumed"),
    lr_key="longlora.train.lr",
    kill_points=(("fresh", 0, 0.0), *(("ckpt", k, round(_rng.uniform(0.0, 0.25), 3))
                                      for k in sorted(_rng.sample(range(2, 12 - 4, 2), 2)))),
)
# SimCSE: STS-B dev evaluation (model selection, best-step=<N>.ckpt plus last.ckpt) every 8 steps, last.ckpt also
# every 4 steps between evaluations. A step takes ~50 ms here, so kill delays are shorter than LongLoRA's.
SIMCSE = TrainStage(
    id="simcse",
    overrides=(
        "sentence_data=synthetic", "simcse.pretrain.steps=0",  # random init: no simcse_pretrain stage before
        "simcse.data.n_sentences=400", "simcse.data.n_triplets=50", "simcse.data.n_sts_pairs=40",
        "simcse.data.vocab_size=300", "simcse.train.batch_size=32", "simcse.train.max_steps=24",
        "simcse.train.eval_every_n_steps=8", "simcse.train.ckpt_every_n_steps=4", "simcse.train.eval_batch_size=64",
        "simcse.eval.batch_size=64", "run.accelerator=cpu",
    ),
    prepare=("pipeline.prepare_sentences",),
    train="pipeline.train_simcse",
    args=("--run", "unsup"),
    max_steps=24,
    ckpt_every=4,
    ckpt_parent="models/simcse-checkpoints",
    weights="models/simcse/unsup",
    curves=("plots/simcse/train_unsup.csv",),
    metrics="metrics/simcse/train_unsup.json",
    timing=("train/sentences_per_s", "train/peak_mem_mb", "train/wall_s", "train/resumed"),
    lr_key="simcse.train.lr",
    # the step-4 periodic checkpoint (before the first evaluation), then one after an evaluation
    kill_points=(("fresh", 0, 0.0), ("ckpt", 4, round(_rng.uniform(0.0, 0.08), 3)),
                 ("ckpt", _rng.choice([12, 16, 20]), round(_rng.uniform(0.0, 0.08), 3))),
)
STAGES = [LONGLORA, SIMCSE]
KILLS = [(stage, *point) for stage in STAGES for point in stage.kill_points]


def _env(**extra: str | None) -> dict[str, str]:
    """The stages' environment: offline, one thread, this checkout on the path; a None value unsets a variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'src'}")
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def _run(args: list[str], cwd: Path, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=STAGE_TIMEOUT_S)
    if ok:
        assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def _compose(stage: TrainStage, folder: Path, *extra: str) -> None:
    _run([PY, "-m", "repro.compose", *stage.overrides, *extra, "-o", str(folder / "params.yaml")], REPO)


def _stage(module: str, folder: Path, env: dict | None = None, ok: bool = True,
           args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return _run([PY, "-m", module, "--params", "params.yaml", *args], folder, env, ok)


def _train(stage: TrainStage, folder: Path, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    return _stage(stage.train, folder, env, ok, stage.args)


def _checkpoints(folder: Path, stage: TrainStage) -> list[Path]:
    return sorted((folder / stage.ckpt_parent).glob("*/*.ckpt"))


def _saved_step(path: Path) -> int | None:
    """The optimizer step a checkpoint holds: from its name (``step000004``, ``best-step=8``), else from the file
    (``last.ckpt``); None while it cannot be read (being written, or torn)."""
    named = re.search(r"step=?(\d+)\.ckpt$", path.name)
    if named:
        return int(named.group(1))
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # noqa: BLE001 (a torn file: whatever torch raises)
        return None


def _run_and_kill(stage: TrainStage, folder: Path, fired: Callable[[str], bool], delay_s: float) -> str:
    """Start the stage, SIGKILL it ``delay_s`` after ``fired(output so far)`` holds; return its output."""
    log = folder / f"killed-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([PY, "-m", stage.train, "--params", "params.yaml", *stage.args], cwd=folder,
                                env=_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + STAGE_TIMEOUT_S
            while proc.poll() is None and not fired(log.read_text(errors="replace")):
                assert time.monotonic() < deadline, "kill point never reached"
                time.sleep(0.005)
            time.sleep(delay_s)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            try:  # the stage's own helpers (W&B's service) go with it, as with a killed job's cgroup
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    text = log.read_text(errors="replace")
    log.unlink()
    assert proc.returncode == -signal.SIGKILL, f"the stage ended (rc {proc.returncode}) before the kill:\n{text[-3000:]}"
    return text


def _ckpt_at_least(folder: Path, stage: TrainStage, step: int) -> Callable[[str], bool]:
    """Fires once a checkpoint of ``step`` or later is on disk (each file version is read once)."""
    seen: dict[tuple[Path, int, int], int | None] = {}

    def fired(_output: str) -> bool:
        for path in _checkpoints(folder, stage):
            try:
                stat = path.stat()
            except FileNotFoundError:  # replaced or removed meanwhile
                continue
            key = (path, stat.st_mtime_ns, stat.st_size)
            if key not in seen or seen[key] is None:
                seen[key] = _saved_step(path)
            if seen[key] is not None and seen[key] >= step:
                return True
        return False

    return fired


def _trainer_built(_output: str) -> bool:
    return "GPU available:" in _output  # Lightning's first line when the Trainer is constructed


def _weights(folder: Path) -> dict[str, object]:
    """The tensors of every ``*.safetensors`` file and ``*.pt`` state dict in ``folder``."""
    from safetensors.torch import load_file

    files = sorted([*folder.glob("*.safetensors"), *folder.glob("*.pt")])
    assert files, f"no *.safetensors or *.pt in {folder}"
    tensors = {}
    for f in files:
        state = load_file(str(f)) if f.suffix == ".safetensors" else torch.load(f, map_location="cpu")
        tensors.update({f"{f.name}:{k}": v for k, v in state.items()})
    return tensors


def _assert_same_results(got: Path, ref: Path, stage: TrainStage) -> None:
    a, b = _weights(got / stage.weights), _weights(ref / stage.weights)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"trained weights differ from the uninterrupted run: {differ[:5]}"
    for curve in stage.curves:
        assert (got / curve).read_bytes() == (ref / curve).read_bytes(), f"{curve} differs from the uninterrupted run"
    final = {k: v for k, v in _metrics(got, stage).items() if k not in stage.timing}
    expected = {k: v for k, v in _metrics(ref, stage).items() if k not in stage.timing}
    assert final == expected, f"{stage.metrics} differs from the uninterrupted run"  # JSON floats round-trip exactly


def _note(case: str, what: str) -> None:
    """One line of what the fault did (shown with ``pytest -s`` and on failure): the README's table."""
    print(f"[fault] {case}: {what}")


def _saved_steps(paths: list[Path]) -> dict[str, int | str]:
    return {p.name: "unreadable" if (step := _saved_step(p)) is None else step for p in paths}


def _metrics(folder: Path, stage: TrainStage) -> dict:
    return json.loads((folder / stage.metrics).read_text())


class Workspaces:
    """Prepared inputs and the uninterrupted reference run, built once per stage and copied per case."""

    def __init__(self, root: Path):
        self.root, self._prepared, self._reference = root, {}, {}

    def prepared(self, stage: TrainStage) -> Path:
        if stage.id not in self._prepared:
            folder = self.root / f"{stage.id}-prepared"
            folder.mkdir()
            _compose(stage, folder)
            for module in stage.prepare:
                _stage(module, folder)
            shutil.rmtree(folder / "wandb", ignore_errors=True)
            self._prepared[stage.id] = folder
        return self._prepared[stage.id]

    def copy(self, stage: TrainStage, name: str) -> Path:
        folder = self.root / f"{stage.id}-{name}"
        shutil.copytree(self.prepared(stage), folder)
        return folder

    def reference(self, stage: TrainStage) -> Path:
        if stage.id not in self._reference:
            folder = self.copy(stage, "uninterrupted")
            _train(stage, folder)
            assert len(list(csv.DictReader((folder / stage.curves[0]).open()))) == stage.max_steps
            assert _metrics(folder, stage)["train/resumed"] is False
            self._reference[stage.id] = folder
        return self._reference[stage.id]


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory) -> Workspaces:
    return Workspaces(tmp_path_factory.mktemp("faults"))


# --- 1. kill -9 and rerun ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage,kind,step,delay_s", KILLS, ids=[f"{s.id}-{k}{n}+{d}s" for s, k, n, d in KILLS])
def test_kill_and_rerun_is_bit_exact(workspaces, stage, kind, step, delay_s):
    ref = workspaces.reference(stage)
    folder = workspaces.copy(stage, f"kill-{kind}{step}")
    fired = _trainer_built if kind == "fresh" else _ckpt_at_least(folder, stage, step)
    _run_and_kill(stage, folder, fired, delay_s)
    left = _checkpoints(folder, stage)
    if kind == "fresh":
        assert not left, f"killed before the first checkpoint, yet found {left}"
    else:
        assert left, "killed after a checkpoint, yet none is left to resume from"
    _note(f"{stage.id} kill {kind}{step}+{delay_s}s", f"left {_saved_steps(left)}")
    out = _train(stage, folder)
    assert _metrics(folder, stage)["train/resumed"] is (kind != "fresh"), out.stderr[-2000:]
    _assert_same_results(folder, ref, stage)
    runs = find_offline_runs(folder / "wandb")
    assert len(runs) == 2 and len({r.name.rsplit("-", 1)[1] for r in runs}) == 1, runs  # one W&B run, resumed
    final = read_offline_run(runs[-1])
    assert final["complete"] and final["exit_code"] == 0
    assert not (folder / stage.ckpt_parent).exists() or not any((folder / stage.ckpt_parent).iterdir()), \
        "a finished run leaves its checkpoint folder behind"


# --- 2. truncated last.ckpt --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.id)
def test_truncated_last_checkpoint_falls_back_and_stays_bit_exact(workspaces, stage):
    """The kill comes after the last kill point's checkpoint; beside ``last.ckpt`` there is then an older one to fall
    back to: LongLoRA's periodic ``step<N>.ckpt``, SimCSE's best-dev ``best-step=<N>.ckpt`` (a full training state)."""
    ref = workspaces.reference(stage)
    folder = workspaces.copy(stage, "truncated")
    kill_step = stage.kill_points[-1][1]
    _run_and_kill(stage, folder, _ckpt_at_least(folder, stage, kill_step), 0.0)
    last = next(p for p in _checkpoints(folder, stage) if p.name == "last.ckpt")
    older = [p for p in _checkpoints(folder, stage) if p.name != "last.ckpt"]
    assert older, "no checkpoint beside last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    out = _train(stage, folder)
    log = out.stdout + out.stderr
    assert f"checkpoint {last} is corrupt or truncated" in log or \
        f"checkpoint {last.relative_to(folder)} is corrupt or truncated" in log, log[-3000:]
    fallback = re.search(r"resuming from (\S+\.ckpt) instead", log)
    assert fallback and Path(fallback.group(1)).name in {p.name for p in older}, log[-3000:]
    _note(f"{stage.id} truncated last.ckpt",
          f"left {_saved_steps(older)} | " + " | ".join(line for line in log.splitlines() if "repro WARNING" in line))
    assert _metrics(folder, stage)["train/resumed"] is True
    _assert_same_results(folder, ref, stage)


# --- 3. divergence (NaN) -----------------------------------------------------------------------------------------

# A huge learning rate with clipping off: after the first non-zero update (warm-up step 2) the weights are ~1e6
# and the next forward pass is non-finite, after the step-2 checkpoint has been written.
DIVERGING = ("longlora.train.lr=1e6", "longlora.train.gradient_clip_val=0")


def test_divergence_fails_the_stage_and_the_run_and_keeps_checkpoints(workspaces):
    stage = LONGLORA
    folder = workspaces.copy(stage, "nan")
    _compose(stage, folder, *DIVERGING)
    out = _train(stage, folder, ok=False)
    assert out.returncode != 0, "a diverging run exited 0"
    found = re.search(r"non-finite (?:training loss|gradient norm) (nan|inf|-inf) at step (\d+)", out.stderr)
    assert found, out.stderr[-3000:]
    step = int(found.group(2))
    _note("nan train", f"rc {out.returncode}: {found.group(0)}; kept {_saved_steps(_checkpoints(folder, stage))}")
    metrics = _metrics(folder, stage)
    assert metrics["status"] == "failed" and f"at step {step}" in metrics["error"], metrics
    assert metrics["train/steps"] == step - 1
    runs = find_offline_runs(folder / "wandb")
    assert len(runs) == 1, runs
    record = read_offline_run(runs[0])
    assert record["complete"] and record["exit_code"] not in (None, 0), record["exit_code"]
    assert record["summary"]["status"] == "failed"
    kept = _checkpoints(folder, stage)
    assert kept, "the divergence guard deleted the checkpoints"
    for path in kept:
        state = torch.load(path, map_location="cpu", weights_only=False)
        assert state["global_step"] < step
        assert all(torch.isfinite(v).all() for v in state["state_dict"].values()), f"{path} holds non-finite weights"
    assert not (folder / "models/longlora/finetuned").exists(), "a diverged run exported weights"
    assert not any((folder / c).exists() for c in stage.curves)


def test_diverging_base_pretraining_fails_its_stage_and_run(workspaces):
    """The base stage (the tiny model's pretraining) shares the guard; its W&B run must not end as a success."""
    stage = LONGLORA
    folder = workspaces.copy(stage, "nan-base")
    shutil.rmtree(folder / "models/longlora/base")
    _compose(stage, folder, "longlora.base.pretrain_steps=12", "longlora.base.lr=1e6")
    out = _stage("pipeline.base", folder, ok=False)
    assert out.returncode != 0, "a diverging base pretraining exited 0"
    assert re.search(r"DivergenceError: non-finite \S+ \S+ (nan|inf|-inf) at step \d+", out.stderr), out.stderr[-3000:]
    (run,) = find_offline_runs(folder / "wandb")
    record = read_offline_run(run)
    _note("nan base", f"rc {out.returncode}: {out.stderr.strip().splitlines()[-1]}; W&B exit {record['exit_code']}")
    assert record["run"]["job_type"] == "base"
    assert record["complete"] and record["exit_code"] not in (None, 0), record["exit_code"]
    assert not (folder / "models/longlora/base").exists(), "a diverged base model was saved"
    assert list((folder / "models/longlora-checkpoints").glob("base-*/*.ckpt")), "the base checkpoints were deleted"


# --- 4. corrupt prepared data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target,module", [
    ("data/longlora/train.npy", "pipeline.train"),
    ("data/longlora/eval/synthetic_validation.npy", "pipeline.evaluate"),
], ids=["train.npy", "eval.npy"])
def test_truncated_prepared_data_fails_naming_the_file(workspaces, target, module):
    folder = workspaces.copy(LONGLORA, f"corrupt-{Path(target).stem}")
    path = folder / target
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    out = _stage(module, folder, ok=False)
    assert out.returncode != 0
    error = out.stderr.strip().splitlines()[-1]
    assert target in error and "corrupt" in error, out.stderr[-3000:]
    _note(f"corrupt {target}", f"rc {out.returncode}: {error}")
    assert not list((folder / "wandb").glob("offline-run-*")), "a W&B run was started for unreadable inputs"


# --- 5. W&B key without network ----------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_time(line: str) -> float:
    stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
    assert stamp, line
    return time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")) + int(stamp.group(2)) / 1000


# "refused": nothing listens; the others are tests/conftest.py's FakeWandbServer kinds: "silent" accepts the
# connection and never answers; "http-garbage" answers the probe, then W&B's requests with HTML; "probe-only"
# answers the probe and never W&B's requests (wandb.init waits for its init_timeout, set to wandb.init_timeout_s).
SERVERS = ["refused", "silent", "http-garbage", "probe-only"]


@pytest.mark.parametrize("server", SERVERS)
def test_wandb_key_without_network_falls_back_offline_with_one_warning(workspaces, fake_wandb_server, server):
    stage, timeout_s = LONGLORA, 2
    folder = workspaces.copy(stage, f"no-network-{server}")
    _compose(stage, folder, f"wandb.init_timeout_s={timeout_s}")
    url = f"http://127.0.0.1:{_closed_port()}" if server == "refused" else fake_wandb_server(server).url
    env = _env(WANDB_MODE=None, WANDB_API_KEY="f" * 40, WANDB_BASE_URL=url)
    start = time.monotonic()
    out = _train(stage, folder, env)
    wall = time.monotonic() - start
    lines = (out.stdout + out.stderr).splitlines()
    warnings = [line for line in lines if re.search(r"w(?:and)?&?b", line, re.I) and re.search(r"warn", line, re.I)]
    assert len(warnings) == 1 and "unreachable" in warnings[0], warnings
    # From the fallback decision to a running Trainer: W&B's own 90 s init timeout would sit in between.
    built = next(line for line in lines if "GPU available:" in line and re.match(r"\d{4}-", line))
    gap = _log_time(built) - _log_time(warnings[0])
    _note(f"W&B key, server {server}", f"{warnings[0]} | trainer built {gap:.1f} s later; stage wall {wall:.1f} s")
    assert gap < 30, (warnings[0], built)
    assert wall < 75, wall  # W&B's own init_timeout alone is 90 s
    runs = find_offline_runs(folder / "wandb")
    assert len(runs) == 1, runs
    record = read_offline_run(runs[0])
    assert record["complete"] and record["exit_code"] == 0
    assert record["run"]["job_type"] == "train" and record["summary"]["train/steps"] == stage.max_steps
    assert _metrics(folder, stage)["status"] == "ok"


# --- 6. config change after a kill; pruning of abandoned folders -------------------------------------------------


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.id)
def test_changed_config_does_not_resume_and_stale_folders_are_pruned(workspaces, stage):
    import yaml

    folder = workspaces.copy(stage, "config-change")
    _run_and_kill(stage, folder, _ckpt_at_least(folder, stage, stage.ckpt_every), 0.0)
    parent = folder / stage.ckpt_parent
    (killed,) = [p for p in parent.iterdir()]
    killed_files = {p.name: p.stat().st_mtime_ns for p in killed.iterdir()}
    abandoned = parent / "finetune-abandoned0000"
    shutil.copytree(killed, abandoned)
    keep_days = float(yaml.safe_load((folder / "params.yaml").read_text())["run"]["ckpt_keep_days"])
    past = time.time() - (keep_days + 1) * 86400
    for path in [*abandoned.rglob("*"), abandoned]:
        os.utime(path, (past, past))
    _compose(stage, folder, f"{stage.lr_key}=5e-4")  # neither trainer's default
    out = _train(stage, folder)
    log = out.stdout + out.stderr
    assert _metrics(folder, stage)["train/resumed"] is False
    assert "Restoring states from the checkpoint" not in log
    assert f"removed abandoned checkpoint folder {abandoned}" in log, log[-3000:]
    rows = list(csv.DictReader((folder / stage.curves[0]).open()))
    # the new lr: LongLoRA's is constant after warmup, SimCSE's decays linearly from it
    assert len(rows) == stage.max_steps and max(float(r["lr"]) for r in rows) == pytest.approx(5e-4, rel=0.05)
    # The new config's own folder went when it finished; the killed run's stays for a resume; the abandoned one
    # (older than run.ckpt_keep_days) was pruned.
    _note("config change", f"left {sorted(p.name for p in parent.iterdir())} (killed {killed.name})")
    assert sorted(parent.iterdir()) == [killed]
    assert {p.name: p.stat().st_mtime_ns for p in killed.iterdir()} == killed_files
