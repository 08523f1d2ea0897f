"""tools/real_cpu.py and its page: the STS subsample, step resumption, the committed page from its metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.evaluation.sts import STSEvaluator
from tools import real_cpu
from tools.real_cpu_page import write_page

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shipped_sts() -> STSEvaluator:
    return STSEvaluator.from_dir(REPO / real_cpu.STS_ROOT, layout="tsv", with_dev=False)


def test_sts_subsample_is_a_seeded_aligned_sample_of_every_subset(shipped_sts):
    spec = {"per_subset": 30, "per_split": 50, "seed": 3}
    a, b = real_cpu.sts_subsample(shipped_sts, spec), real_cpu.sts_subsample(shipped_sts, spec)
    other = real_cpu.sts_subsample(shipped_sts, {**spec, "seed": 4})
    assert set(a.tasks) == set(shipped_sts.tasks) == {"sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr"}
    for key, task in shipped_sts.tasks.items():
        cap = spec["per_split"] if key in ("stsb", "sickr") else spec["per_subset"]
        for sub, pairs in task.items():
            sample = a.tasks[key][sub]
            assert len(sample.gold) == min(cap, len(pairs.gold)), (key, sub)
            originals = set(zip(pairs.s1, pairs.s2, pairs.gold, strict=True))
            assert set(zip(sample.s1, sample.s2, sample.gold, strict=True)) <= originals   # gold stays with its pair
            assert sample == b.tasks[key][sub]   # the same seed, the same pairs
    assert any(other.tasks[k][s] != a.tasks[k][s] for k, t in a.tasks.items() for s in t)
    assert "seed 3" in a.note and "held out" not in a.note   # the sample names itself; the caller adds the holdout


def test_a_finished_step_is_skipped_until_its_inputs_change(tmp_path, monkeypatch):
    calls = []
    params = tmp_path / "work" / "params.yaml"

    def fake_prepare(step, extra, root):
        params.parent.mkdir(parents=True, exist_ok=True)
        params.write_text(f"seed: {extra[0] if extra else 0}\n")
        return params.parent

    monkeypatch.setattr(real_cpu, "prepare_work", fake_prepare)
    monkeypatch.setattr(real_cpu, "machine", lambda: {"cpu": "test"})
    monkeypatch.setitem(real_cpu.STEP_FUNCS, "native", lambda work: calls.append(work) or {"eval": {"x": len(calls)}})
    out = tmp_path / "metrics"
    real_cpu.run(["native"], metrics=out)
    real_cpu.run(["native"], metrics=out)
    assert len(calls) == 1   # unchanged fingerprint: skipped
    real_cpu.run(["native"], extra=("seed=1",), metrics=out)
    assert len(calls) == 2   # another composed config: rerun
    real_cpu.run(["native"], force=True, extra=("seed=1",), metrics=out)
    assert len(calls) == 3
    saved = json.loads((out / "native.json").read_text())
    assert saved["eval"] == {"x": 3} and saved["overrides"] == ["profile=real_cpu", "seed=1"]


def test_set_needs_out():
    with pytest.raises(SystemExit):
        real_cpu.main(["run", "--set", "longlora.train.max_steps=1"])


def test_page_names_missing_steps_and_shows_what_ran(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    native = {"eval": {"smollm2/pi_factor": 1, "smollm2_pi_extended/pi_factor": 2,
                       "smollm2/books_test/ppl@1024": 21.375, "smollm2/books_test/windows@1024": 2,
                       "smollm2/passkey@1024": 1.0, "smollm2/passkey_digits@1024": 1.0,
                       "smollm2_pi_extended/books_test/ppl@16384": 48.125,
                       "smollm2_pi_extended/passkey@16384": 0.0, "smollm2_pi_extended/passkey_digits@16384": 1 / 3},
              "wall_s": 90.0, "machine": {"cpu": "Test CPU", "cores": 2}}
    (metrics / "native.json").write_text(json.dumps(native))
    sts = {c: 50.0 + i for i, c in enumerate(("sts12/all", "sts13/all", "sts14/all", "sts15/all", "sts16/all",
                                               "stsb/test", "sickr/test", "avg"))}
    simcse = {"models": {"minilm": {"sts": {**sts, "avg": 77.125}, "pairs": 3400}},
              "train": {"train/steps": 30, "train/wall_s": 300.0, "train/best_stsb_dev": 61.0},
              "config": {"train": {"batch_size": 32, "lr": 5e-5}}, "sample_note": "a sample", "all_pairs_note": "all",
              "wall_s": 600.0, "machine": {"cpu": "Test CPU", "cores": 2}}
    (metrics / "simcse.json").write_text(json.dumps(simcse))
    text = write_page(metrics, tmp_path / "page.md")
    assert "21.38" in text and "48.12" in text and "1.00" in text
    assert "0.00 (0.33)" in text                  # exact-id and digits-decoded match side by side
    assert "16384 (PI only, factor 2)" in text
    assert "Not run yet:** longlora, full_ft" in text
    assert "Test CPU, 2 cores" in text and "not comparable" in text
    assert "| 77.12 | 3400 |" in text    # the model's own average, then its pair count
    paper_row = next(line for line in text.splitlines() if "SimCSE-BERT-base unsup" in line)
    assert "76.25" in paper_row and "81.57" not in paper_row   # Table 5's unsupervised row, not the supervised one


def test_committed_page_is_written_from_the_committed_metrics(tmp_path):
    metrics = REPO / "metrics" / "real_cpu"
    if not any(metrics.glob("*.json")):
        pytest.skip("no committed real_cpu metrics (make real-cpu writes them)")
    assert write_page(metrics, tmp_path / "page.md") == (REPO / "reports" / "real_cpu.md").read_text()
