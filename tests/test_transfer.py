"""SentEval transfer tasks: readers on the real files, and the protocol against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest

from repro.evaluation.transfer import TASKS, evaluate_task, load_task
from repro.schemas import TransferConfig


def test_readers_give_senteval_sizes(shared_data):
    root = shared_data / "senteval_transfer"
    sizes = {name: {s: len(y) for s, (_, y) in load_task(name, root).items()} for name in TASKS}
    assert sizes["MR"] == {"all": 10662} and sizes["SUBJ"] == {"all": 10000}
    assert sizes["TREC"] == {"train": 5452, "test": 500}
    assert sizes["MRPC"] == {"train": 4076, "test": 1725}
    assert sizes["SST2"]["test"] == 1821


def _bag_of_words_encoder(vocab_from: list[str]):
    vocab = {w: i for i, w in enumerate(sorted({w for s in vocab_from for w in s.lower().split()}))}

    def encode(sentences):
        out = np.zeros((len(sentences), len(vocab)))
        for i, s in enumerate(sentences):
            for w in s.lower().split():
                if w in vocab:
                    out[i, vocab[w]] += 1
        return out

    return encode


def test_cv_protocol_matches_an_independent_nested_cv(shared_data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

    cfg = TransferConfig(tasks=["CR"], data_dir=str(shared_data / "senteval_transfer"), kfold=3, inner_kfold=3,
                         max_examples=600)
    from repro.evaluation.transfer import _subsample

    sents, y = _subsample(*load_task("CR", cfg.data_dir)["all"], 600, cfg.seed)
    encode = _bag_of_words_encoder(sents)
    ours = evaluate_task("CR", encode, cfg)["acc"]
    inner = KFold(3, shuffle=True, random_state=cfg.seed)
    search = GridSearchCV(LogisticRegression(random_state=cfg.seed, max_iter=1000),
                          {"C": [2.0**t for t in range(-2, 4)]}, cv=inner)
    theirs = 100 * cross_val_score(search, encode(sents), y, cv=KFold(3, shuffle=True, random_state=cfg.seed)).mean()
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_unknown_task_names_the_key():
    with pytest.raises(ValueError, match="simcse.transfer.tasks"):
        TransferConfig(tasks=["MR", "IMDB"])
