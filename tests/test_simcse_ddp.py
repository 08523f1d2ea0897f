"""SimCSE under real 2-process DDP on CPU (Lightning strategy ddp, gloo).

The global batch (16) is split 8 + 8; in-batch negatives are gathered across ranks with the local slice
keeping its gradient, and the loss is scaled by the world size so that DDP's gradient average is the
gradient of the global-batch loss. With dropout 0 the loss curve must then equal a 1-process run with
the same global batch, up to float reassociation (tolerance 1e-4 absolute). The backbone is a BERT
saved *with* its pooler (as hub checkpoints are): the encoder drops it, as the reference builds BERT
with ``add_pooling_layer=False``; an unused pooler would fail DDP's gradient reduction. Side effects
(W&B run, export, metrics) must happen once.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "simcse_ddp_job.py"
TOL = 1e-4


def _train(out: Path, run: str, devices: int) -> list[float]:
    out.mkdir(parents=True, exist_ok=True)
    assets = out.parent / "assets"
    assets.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONPATH": str(SCRIPT.parents[2] / "src")}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), str(assets), run, str(devices)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with (out / "plots" / "simcse" / f"train_{run}.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["loss"]]
    return [float(r["loss"]) for r in rows]


@pytest.mark.parametrize("run", ["unsup", "sup"])
def test_ddp_two_processes_match_one_process(tmp_path, run):
    one = _train(tmp_path / "one", run, 1)
    two = _train(tmp_path / "two", run, 2)
    assert len(one) == len(two) == 6
    diff = max(abs(a - b) for a, b in zip(one, two, strict=True))
    print(f"{run}: max |loss_ddp - loss_1proc| = {diff:.2e} over {len(one)} steps")
    assert diff < TOL, (one, two)
    assert one[0] != one[-1]  # it trained
    out = tmp_path / "two"
    runs = [p for p in (out / "wandb").iterdir() if p.name.startswith("offline-run-")]
    assert len(runs) == 1, runs  # rank zero only
    assert len(list((out / "models" / "simcse").glob(f"{run}/hf/config.json"))) == 1
    assert (out / "metrics" / "simcse" / f"train_{run}.json").is_file()
    assert not list((out / "models" / "simcse-checkpoints").glob("*/last.ckpt"))  # cleaned up
