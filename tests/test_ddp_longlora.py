"""Real 2-process DDP (gloo, CPU) for the LongLoRA train stage: same loss curve as 1 process, one W&B run,
one export.

Both runs use the same *global* batch (4 blocks per optimizer step): one process runs 2 micro-batches of 2,
two processes run one micro-batch of 2 each. The data order is one stream split by rank, gradients are
averaged by DDP, and ``train/loss`` is the mean over the whole global batch, so the curves agree up to the
order of floating-point sums (tolerance 1e-4 absolute on losses of about 4).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repro.tracking import find_offline_runs, read_offline_run

pytestmark = pytest.mark.slow

SMALL = [
    "longlora.base.pretrain_steps=10", "longlora.data.train.num_docs=120", "longlora.train.max_steps=6",
    "longlora.train.global_batch_size=4", "longlora.train.batch_size=2", "longlora.train.ckpt_every_n_steps=3",
    "longlora.train.log_every_n_steps=1", "run.accelerator=cpu",
]


def _run(args, cwd: Path, env: dict) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


def _losses(folder: Path) -> list[float]:
    with (folder / "plots/longlora/train_loss.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, repo_root):
    root = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{repo_root}{os.pathsep}{repo_root / 'src'}"}
    one = root / "one"
    one.mkdir()
    _run([sys.executable, "-m", "repro.compose", *SMALL, "-o", str(one / "params.yaml")], repo_root, env)
    _run([sys.executable, "-m", "pipeline.prepare_lm", "--params", "params.yaml"], one, env)
    _run([sys.executable, "-m", "pipeline.base", "--params", "params.yaml"], one, env)
    shutil.rmtree(one / "wandb", ignore_errors=True)
    two = root / "two"
    shutil.copytree(one, two)
    _run([sys.executable, "-m", "repro.compose", *SMALL, "run.devices=2", "run.strategy=ddp",
          "-o", str(two / "params.yaml")], repo_root, env)
    return one, two, env


def test_two_process_ddp_matches_one_process(prepared):
    one, two, env = prepared
    _run([sys.executable, "-m", "pipeline.train", "--params", "params.yaml"], one, env)
    out = _run([sys.executable, "-m", "pipeline.train", "--params", "params.yaml"], two, env)
    a, b = _losses(one), _losses(two)
    assert len(a) == len(b) == 6
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)
    assert "world_size=2" in out or "ddp" in out.lower()
    runs = find_offline_runs(two / "wandb")
    assert len(runs) == 1, runs  # rank 1 does not track
    assert read_offline_run(runs[0])["run"]["job_type"] == "train"
    assert out.count("exported merged model") == 1  # rank 1 does not export
    assert (two / "models/longlora/finetuned/merged/config.json").is_file()
    assert not (two / "models/longlora-checkpoints").exists() or not any(
        (two / "models/longlora-checkpoints").iterdir())
