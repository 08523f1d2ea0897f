"""The real `dvc repro` on the tiny profile (shrunk step counts) in a temporary copy of the repo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repro.tracking import find_offline_runs, read_offline_run
from tests.integration._checkout import copy_checkout, stage_env

pytestmark = pytest.mark.slow

# Fewer steps and smaller data than the default tiny profile; same code and stages. The synthetic stand-ins
# (data=synthetic, sentence_data=synthetic, synthetic transfer tasks) keep every stage to seconds.
SHRINK = [
    "data=synthetic", "sentence_data=synthetic", "simcse.transfer.data_dir=synthetic",
    "simcse.transfer.tasks=[MR,CR,SUBJ,MPQA,SST2,TREC,MRPC]", "simcse.pretrain.steps=10",
    "simcse.pretrain.ckpt_every_n_steps=5",
    "longlora.base.pretrain_steps=20", "longlora.train.max_steps=12", "longlora.train.ckpt_every_n_steps=6",
    "longlora.train.log_every_n_steps=2",
    "longlora.eval.max_windows=4", "longlora.eval.passkey_trials=2", "longlora.data.train.num_docs=300",
    "simcse.train.max_steps=12", "simcse.train.eval_every_n_steps=6", "simcse.data.n_sentences=300",
    "simcse.data.n_triplets=200", "simcse.data.n_sts_pairs=60",
]


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def repro_copy(tmp_path_factory, repo_root):
    dest = tmp_path_factory.mktemp("repo") / "main"
    copy_checkout(repo_root, dest)
    env = stage_env()
    _run([sys.executable, "-m", "repro.compose", *SHRINK, "-o", str(dest / "params.yaml")], dest, env)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", "commit", "-qm", "copy"]):
        _run(cmd, dest, env)
    # as `make repro` runs it: two workers, one in a copy
    first = _run([sys.executable, "-m", "tools.lanes", "run", "--jobs", "2"], dest, env)
    assert "over 2 workers" in first.stdout and "[w0] dvc repro" in first.stdout and "[w1] dvc repro" in first.stdout
    return dest, env, first


def test_parallel_workers_end_as_one_dvc_repro(repro_copy):
    """What worker 1 ran in its copy is adopted here (dvc commit); its W&B runs moved here; copy removed."""
    dest, env, first = repro_copy
    timed = [line.split("\t") for line in (dest / ".cache/lanes/stages.tsv").read_text().splitlines()[1:]]
    assert {row[0] for row in timed if row[2] == "ran"} >= {"0", "1"}  # both workers ran stages
    status = _run([sys.executable, "-m", "dvc", "status"], dest, env)
    assert "up to date" in status.stdout, status.stdout
    records = sorted(dest.glob("metrics/**/runs/*.json"))
    assert len(records) >= 20
    for record in records:  # every stage's W&B run is in this checkout's wandb/
        assert (dest / json.loads(record.read_text())["offline_dir"]).is_dir(), record
    assert not (dest / ".cache/lanes/worker1").exists()


def test_repro_produces_metrics_plots_and_reports(repro_copy):
    dest, _, _ = repro_copy
    ev = json.loads((dest / "metrics/longlora/eval.json").read_text())
    assert ev["eval/pi_extension_context"] == 768
    for model, extended in (("base_pi", "base_pi_extended"), ("finetuned", "finetuned_pi_extended")):
        assert any(k.startswith(f"{model}/") and "/ppl@512" in k for k in ev)
        # within the trained 512: the model as trained; beyond it: the PI-only extension, a curve of its own
        assert f"{model}/passkey@512" in ev and f"{model}/passkey@768" not in ev
        assert f"{extended}/passkey@768" in ev and f"{extended}/passkey@512" not in ev
        assert f"{extended}/synthetic_validation/ppl@768" in ev
        for set_name in ("synthetic_validation", "synthetic_test", "synthetic_facts_sampled"):  # the three roles
            assert f"{model}/{set_name}/ppl@512" in ev and f"{model}/{set_name}/ppl_s2@512" in ev
    train = json.loads((dest / "metrics/longlora/train.json").read_text())
    assert train["train/steps"] == 12 and train["train/pi_factor"] == 4
    for run in ("unsup", "sup"):
        sts = json.loads((dest / f"metrics/simcse/eval_{run}.json").read_text())
        assert {"sts/sts12/all", "sts/stsb/test", "sts/sickr/test", "sts/avg"} <= set(sts)
    before = json.loads((dest / "metrics/simcse/pretrained.json").read_text())
    assert before["pretrain/steps"] == 10 and before["before/init"] == "mlm"
    for pooler in ("avg", "avg_first_last", "cls_before_pooler"):  # the encoder before SimCSE, every pooler
        assert f"before/{pooler}/sts/avg" in before
    page = (dest / "reports/simcse.md").read_text()
    assert "The encoder before SimCSE" in page and "BERT-base (first-last avg.)" in page
    ablation = json.loads((dest / "metrics/ablations/simcse_dropout/p0_1.json").read_text())
    assert "sts/stsb/test" in ablation and "sts/sickr/test" not in ablation  # simcse.eval.ablation_tasks: [stsb]
    for plot in ("longlora/ppl_vs_length.csv", "longlora/passkey.csv", "longlora/train_loss.csv"):
        assert (dest / "plots" / plot).stat().st_size > 0
    page = (dest / "reports/longlora.md").read_text()
    assert "Passkey retrieval" in page and "Claims checked" in page
    figures = list((dest / "reports/figures").glob("*.png"))
    assert figures and all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figures)


def test_second_repro_reruns_nothing(repro_copy):
    dest, env, _ = repro_copy
    again = _run([sys.executable, "-m", "dvc", "repro"], dest, env)
    assert "Running stage" not in again.stdout, again.stdout


def test_wandb_offline_runs_hold_what_was_logged(repro_copy):
    dest, _, _ = repro_copy
    runs = [read_offline_run(d) for d in find_offline_runs(dest / "wandb")]
    by_kind = {(r["run"]["project"], r["run"]["job_type"]) for r in runs}
    assert {("repro-longlora", "base"), ("repro-longlora", "train"), ("repro-longlora", "evaluate"),
            ("repro-simcse", "train"), ("repro-simcse", "evaluate")} <= by_kind
    train = next(r for r in runs if r["run"]["project"] == "repro-longlora" and r["run"]["job_type"] == "train")
    assert train["config"]["longlora"]["train"]["max_steps"] == 12
    losses = [h["train/loss"] for h in train["history"] if "train/loss" in h]
    assert len(losses) == 12 // 2  # one row per logging step (log_every_n_steps=2)
    final = json.loads((dest / "metrics/longlora/train.json").read_text())
    assert train["summary"]["train/steps"] == final["train/steps"]
    assert any("train/tokens_per_s" in h for h in train["history"])
    assert any("train/peak_mem_mb" in h for h in train["history"])


def _changed_stages_with(cfg, dest: Path, env: dict) -> set[str]:
    """Stages `dvc status` reports as changed with ``cfg`` as params.yaml (restored afterwards)."""
    params = dest / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(OmegaConf.to_yaml(cfg))
        return set(json.loads(_run([sys.executable, "-m", "dvc", "status", "--json"], dest, env).stdout))
    finally:
        params.write_text(original)


def test_changing_one_param_reruns_only_its_stages(repro_copy):
    dest, env, _ = repro_copy
    cfg = OmegaConf.load(dest / "params.yaml")
    cfg.simcse.runs.sup.temperature = 0.1  # one run's config changes
    changed = _changed_stages_with(cfg, dest, env)
    assert "simcse_train@sup" in changed
    assert not {s for s in changed if s.startswith("longlora")}
    assert "simcse_train@unsup" not in changed


def test_changing_one_ablation_variant_reruns_only_that_variant(repro_copy):
    dest, env, _ = repro_copy
    cfg = OmegaConf.load(dest / "params.yaml")
    cfg.ablations.simcse_hard_negative.variants.alpha1.simcse.train.hard_negative_weight = 0.5
    changed = _changed_stages_with(cfg, dest, env)
    ablation_stages = {s for s in changed if s.startswith("ablate_")}
    assert ablation_stages == {"ablate_simcse_hard_negative@alpha1"}, changed


def test_ablation_report_lists_every_variant(repro_copy):
    dest, _, _ = repro_copy
    page = (dest / "reports/ablations.md").read_text()
    cfg = OmegaConf.load(dest / "params.yaml")
    for name, spec in cfg.ablations.items():
        if name in ("name", "variant"):
            continue
        for variant in spec.variants:
            assert variant in page, f"{name}/{variant} missing from reports/ablations.md"
    for f in (dest / "metrics/ablations").rglob("*.json"):
        if f.parent.name != "runs":
            assert json.loads(f.read_text())["status"] == "ok", f


def test_hydra_multirun_is_one_wandb_run_per_job_in_one_group(repro_copy):
    dest, env, _ = repro_copy
    before = set(find_offline_runs(dest / "wandb"))
    _run([sys.executable, "-m", "pipeline.train", "-m", "experiment=longlora_tiny", "attention=full,s2",
          "hydra.sweep.dir=multirun/attn", *SHRINK], dest, env)
    jobs = sorted((dest / "multirun" / "attn").glob("[0-9]*"))
    assert len(jobs) == 2
    for job in jobs:
        assert "finetuned/synthetic_validation/ppl@512" in json.loads((job / "metrics/longlora/eval.json").read_text())
    new = [read_offline_run(d) for d in set(find_offline_runs(dest / "wandb")) - before]
    train_runs = [r for r in new if r["run"]["job_type"] == "train"]
    assert len(train_runs) == 2
    assert len({r["run"]["group"] for r in new}) == 1 and new[0]["run"]["group"].startswith("longlora_tiny")
    assert {r["config"]["longlora"]["attention"]["pattern"] for r in train_runs} == {"full", "s2"}


def test_sweep_through_the_submitit_launcher(repro_copy):
    """hydra/launcher=local (submitit_local, as submitit_slurm submits to a cluster): 2 jobs, 2 W&B runs, 1 group."""
    dest, env, _ = repro_copy
    before = set(find_offline_runs(dest / "wandb"))
    _run([sys.executable, "-m", "pipeline.train_simcse", "-m", "hydra/launcher=local",
          "simcse.train.temperature=0.05,0.1", "hydra.sweep.dir=multirun/submitit", *SHRINK], dest, env)
    new = [read_offline_run(d) for d in set(find_offline_runs(dest / "wandb")) - before]
    train_runs = [r for r in new if r["run"]["job_type"] == "train"]
    assert len(train_runs) == 2, [r["run"] for r in new]
    assert len({r["run"]["group"] for r in train_runs}) == 1
    assert {r["config"]["simcse"]["train"]["temperature"] for r in train_runs} == {0.05, 0.1}
