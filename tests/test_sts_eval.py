"""STSEvaluator on fixed embeddings, checked against scipy computed here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from repro.data.sts import TASK_KEYS, STSPairs, STSTask, synthetic_sts_task
from repro.evaluation.sts import STSEvaluator, format_sts_table


class TableEncoder:
    """encode_fn backed by a fixed sentence -> vector table; records every call."""

    def __init__(self, sentences, dim=8, seed=0, as_tensor=False):
        rng = np.random.default_rng(seed)
        self.table = {s: rng.normal(size=dim) for s in sorted(sentences)}
        self.calls: list[list[str]] = []
        self.as_tensor = as_tensor

    def __call__(self, batch):
        self.calls.append(list(batch))
        out = np.stack([self.table[s] for s in batch])
        return torch.tensor(out) if self.as_tensor else out

    def cos(self, s1, s2):
        a, b = self.table[s1], self.table[s2]
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _pairs(prefix, n, rng):
    # Overlapping sentences across subsets/tasks so deduplication matters.
    s1 = [f"{prefix} w{rng.integers(0, 12)} {'x ' * int(rng.integers(0, 4))}".strip() for _ in range(n)]
    s2 = [f"shared w{rng.integers(0, 12)}" for _ in range(n)]
    return STSPairs(s1, s2, [float(g) for g in rng.uniform(0, 5, size=n)])


def _tasks(seed=1):
    rng = np.random.default_rng(seed)
    sts12 = STSTask("STS12", {"A": _pairs("a", 9, rng), "B": _pairs("b", 23, rng), "C": _pairs("a", 14, rng)},
                    skipped={"A": 0, "B": 3, "C": 0})
    stsb = STSTask("STSBenchmark", {"dev": _pairs("d", 30, rng), "test": _pairs("t", 25, rng)})
    sick = STSTask("SICKRelatedness", {"test": _pairs("s", 20, rng)})
    return [sts12, stsb, sick]


def _spearman(enc, pairs):
    sims = [enc.cos(a, b) for a, b in zip(pairs.s1, pairs.s2, strict=False)]
    return spearmanr(sims, pairs.gold).statistic * 100


@pytest.mark.parametrize("as_tensor", [False, True])
def test_scores_match_scipy_and_aggregations(as_tensor):
    tasks = _tasks()
    evaluator = STSEvaluator(tasks, batch_size=7)
    enc = TableEncoder(evaluator.sentences(), as_tensor=as_tensor)
    result = evaluator.evaluate(enc)
    sts12 = tasks[0]
    subset_sp = {k: _spearman(enc, p) for k, p in sts12.items()}
    sizes = {k: len(p.gold) for k, p in sts12.items()}
    cat = STSPairs(*(sum((list(getattr(p, f)) for p in sts12.values()), []) for f in ("s1", "s2", "gold")))
    m = result.metrics
    assert m["sts12/all"] == pytest.approx(_spearman(enc, cat))
    assert m["sts12/mean"] == pytest.approx(sum(subset_sp.values()) / 3)
    assert m["sts12/wmean"] == pytest.approx(sum(subset_sp[k] * sizes[k] for k in sizes) / sum(sizes.values()))
    for k, v in subset_sp.items():
        assert result.nested["sts12"]["subsets"][k]["spearman"] == pytest.approx(v)
    assert result.nested["sts12"]["skipped"] == {"A": 0, "B": 3, "C": 0}
    assert m["stsb/test"] == pytest.approx(_spearman(enc, tasks[1]["test"]))
    assert m["stsb/dev"] == pytest.approx(_spearman(enc, tasks[1]["dev"]))
    assert m["sickr/test"] == pytest.approx(_spearman(enc, tasks[2]["test"]))
    assert "avg" not in m  # only 3 of the 7 tasks
    assert evaluator.dev_spearman(enc) == pytest.approx(m["stsb/dev"])


def test_each_unique_sentence_encoded_once_in_length_sorted_batches():
    evaluator = STSEvaluator(_tasks(), batch_size=5)
    enc = TableEncoder(evaluator.sentences())
    result = evaluator.evaluate(enc)
    seen = [s for call in enc.calls for s in call]
    expected = {s for t in _tasks() for p in t.values() for s in (*p.s1, *p.s2)}
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
    assert result.n_sentences == len(expected)
    assert all(len(call) <= 5 for call in enc.calls)
    lengths = [len(s.split()) for s in seen]
    assert lengths == sorted(lengths)


def test_avg_over_seven_tasks_and_table():
    tasks = [synthetic_sts_task(name, seed=3, n_pairs=30) for name in TASK_KEYS]
    evaluator = STSEvaluator(tasks, note="synthetic")
    enc = TableEncoder(evaluator.sentences(), dim=4, seed=5)
    result = evaluator.evaluate(enc)
    main = [result.metrics[f"{k}/all"] for k in ("sts12", "sts13", "sts14", "sts15", "sts16")]
    main += [result.metrics["stsb/test"], result.metrics["sickr/test"]]
    assert result.metrics["avg"] == pytest.approx(np.mean(main))
    ref = {"sts12": 68.4, "sts13/all": 82.41, "stsb": 76.85, "avg": 76.25}
    table = format_sts_table(result, reference=ref, reference_label="paper")
    lines = table.splitlines()
    assert lines[2].startswith("| paper | 68.40 | 82.41 | – | – | – | 76.85 | – | 76.25 |")
    assert f"{result.metrics['avg']:.2f}" in lines[3] and "all (SimCSE setting)" in lines[3]
    assert f"{result.metrics['sts14/wmean']:.2f}" in lines[5]
    assert "synthetic" in table


def test_bad_encoder_output_and_missing_dev():
    evaluator = STSEvaluator(_tasks()[:1])
    with pytest.raises(ValueError, match=r"encode_fn must return shape \(N="):
        evaluator.evaluate(lambda batch: np.zeros((len(batch) + 1, 3)))
    with pytest.raises(KeyError, match="dev"):
        evaluator.dev_spearman(lambda batch: np.ones((len(batch), 3)))
