"""The tiny profile's SentEval-layout transfer stand-ins: read by the real loaders, learnable, balanced."""

from __future__ import annotations

import numpy as np

from repro.data.sentences import SyntheticGrammar
from repro.data.transfer_synthetic import write_synthetic_transfer
from repro.evaluation.transfer import TASKS, evaluate_task, load_task
from repro.schemas import TransferConfig


def test_every_task_loads_balanced_with_its_splits(tmp_path):
    root = write_synthetic_transfer(tmp_path / "t", n=200, seed=3)
    splits = {t: sorted(load_task(t, root)) for t in TASKS}
    assert splits["MR"] == ["all"] and splits["SST2"] == ["dev", "test", "train"]
    assert splits["TREC"] == ["test", "train"] and splits["MRPC"] == ["test", "train"]
    for task in ("MR", "CR", "SUBJ", "MPQA"):
        y = load_task(task, root)["all"][1]
        assert len(y) == 200 and y.sum() == 100
    assert set(load_task("TREC", root)["train"][1]) == set(range(6))


def test_labels_follow_the_stated_concepts(tmp_path):
    """A bag-of-words encoder (independent of any model) separates MR by its adjective words."""
    root = write_synthetic_transfer(tmp_path / "t", n=200, seed=0)
    g = SyntheticGrammar()
    pos_words = {w for concept in g.adjectives[: len(g.adjectives) // 2] for w in concept}
    texts, y = load_task("MR", root)["all"]
    predicted = np.array([int(any(w in t.split() for w in pos_words)) for t in texts])
    assert (predicted == y).all()
    vocab = sorted({w for t in texts for w in t.split()})

    def bow(sentences):
        return np.array([[t.split().count(w) for w in vocab] for t in sentences], dtype=float)

    cfg = TransferConfig(tasks=["MR"], data_dir=str(root), kfold=3, inner_kfold=2)
    assert evaluate_task("MR", bow, cfg)["acc"] > 90.0
