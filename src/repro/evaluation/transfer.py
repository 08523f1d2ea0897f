"""SentEval transfer tasks on frozen sentence embeddings (SimCSE Table 2 / Appendix E).

The seven tasks SimCSE reports — MR, CR, SUBJ, MPQA, SST-2, TREC, MRPC — scored the way SentEval's
scikit-learn path does (``senteval/tools/validation.py`` with ``usepytorch=False``): a logistic
regression on the frozen embeddings, its L2 strength C picked by inner cross-validation.

* MR, CR, SUBJ, MPQA (no given split): 10-fold cross-validation (``InnerKFoldClassifier``): in each
  outer fold, C ∈ {2^-2 … 2^3} is chosen by an inner k-fold on the outer training part, then the
  model is refit on it and tested on the held-out fold; the score is the mean test accuracy.
* TREC and MRPC (given train/test): C ∈ {2^-1 … 2^5} chosen by k-fold on the training set
  (``KFoldClassifier``), refit, tested on the given test set; MRPC features are ``[|u−v|, u∗v]``
  and it also reports F1.
* SST-2 (given train/dev/test): C ∈ {2^-2 … 2^3} chosen on dev (``SplitClassifier``), tested on test.

Files are read as SentEval reads them (latin-1 where SentEval does); the folder is
``../shared/data/senteval_transfer`` (SentEval's ``data/downstream`` layout).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from repro.schemas import TASKS, TransferConfig

log = logging.getLogger(__name__)
CV_TASKS = ("MR", "CR", "SUBJ", "MPQA")
_BINARY = {"MR": ("MR/rt-polarity.pos", "MR/rt-polarity.neg"), "CR": ("CR/custrev.pos", "CR/custrev.neg"),
           "SUBJ": ("SUBJ/subj.objective", "SUBJ/subj.subjective"), "MPQA": ("MPQA/mpqa.pos", "MPQA/mpqa.neg")}
EncodeFn = Callable[[list[str]], "np.ndarray"]


def _lines(path: Path, encoding: str = "latin-1") -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"transfer data file missing: {path} (key 'simcse.transfer.data_dir')")
    return [line.strip() for line in path.read_text(encoding=encoding).splitlines() if line.strip()]


def load_task(name: str, root: str | Path) -> dict[str, tuple[list, np.ndarray]]:
    """Split name → (inputs, labels); inputs are sentences, or (s1, s2) pairs for MRPC."""
    root = Path(root)
    if name in _BINARY:
        pos, neg = (_lines(root / rel) for rel in _BINARY[name])
        return {"all": (pos + neg, np.array([1] * len(pos) + [0] * len(neg)))}
    if name == "SST2":
        out = {}
        for split in ("train", "dev", "test"):
            rows = [line.rsplit("\t", 1) for line in _lines(root / "SST/binary" / f"sentiment-{split}", "utf-8")]
            out[split] = ([r[0].strip() for r in rows], np.array([int(r[1]) for r in rows]))
        return out
    if name == "TREC":
        out, classes = {}, ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
        for split, fname in (("train", "train_5500.label"), ("test", "TREC_10.label")):
            rows = [(line.split(":")[0], line.split(":", 1)[1].split(" ", 1)[1]) for line in _lines(root / "TREC" / fname)]
            out[split] = ([s for _, s in rows], np.array([classes.index(c) for c, _ in rows]))
        return out
    if name == "MRPC":
        out = {}
        for split in ("train", "test"):
            rows = [line.split("\t") for line in _lines(root / "MRPC" / f"msr_paraphrase_{split}.txt", "utf-8-sig")[1:]]
            out[split] = ([(r[3], r[4]) for r in rows], np.array([int(r[0]) for r in rows]))
        return out
    raise ValueError(f"unknown transfer task {name!r}; valid: {TASKS}")


def _subsample(x: list, y: np.ndarray, cap: int | None, seed: int) -> tuple[list, np.ndarray]:
    if cap is None or len(x) <= cap:
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:cap])
    return [x[i] for i in idx], y[idx]


def _logreg(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, random_state=seed, max_iter=1000)


def _cv_pick(x: np.ndarray, y: np.ndarray, grid: Sequence[float], k: int, seed: int) -> float:
    """The C with the best mean k-fold accuracy on (x, y) (SentEval's inner loop)."""
    from sklearn.model_selection import KFold

    folds = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(x))
    scores = [np.mean([_logreg(c, seed).fit(x[tr], y[tr]).score(x[te], y[te]) for tr, te in folds]) for c in grid]
    return grid[int(np.argmax(scores))]


def _embed(encode: EncodeFn, sentences: list[str]) -> np.ndarray:
    return np.asarray(encode(list(sentences)), dtype=np.float64)


def evaluate_task(name: str, encode: EncodeFn, cfg: TransferConfig) -> dict[str, float]:
    """Accuracy ×100 (and F1 ×100 for MRPC) of one task under the SentEval protocol."""
    from sklearn.metrics import f1_score
    from sklearn.model_selection import KFold

    data = {s: _subsample(*xy, cfg.max_examples, cfg.seed) for s, xy in load_task(name, cfg.data_dir).items()}
    if name in CV_TASKS:
        sents, y = data["all"]
        x = _embed(encode, sents)
        accs = []
        for tr, te in KFold(n_splits=cfg.kfold, shuffle=True, random_state=cfg.seed).split(x):
            c = _cv_pick(x[tr], y[tr], [2.0**t for t in range(-2, 4)], cfg.inner_kfold, cfg.seed)
            accs.append(_logreg(c, cfg.seed).fit(x[tr], y[tr]).score(x[te], y[te]))
        return {"acc": 100 * float(np.mean(accs)), "n": len(y)}
    if name == "SST2":
        xs = {s: (_embed(encode, data[s][0]), data[s][1]) for s in data}
        grid = [2.0**t for t in range(-2, 4)]
        dev = [_logreg(c, cfg.seed).fit(*xs["train"]).score(*xs["dev"]) for c in grid]
        c = grid[int(np.argmax(dev))]
        return {"acc": 100 * _logreg(c, cfg.seed).fit(*xs["train"]).score(*xs["test"]), "n": len(xs["test"][1])}
    feats = {}
    for split, (inputs, y) in data.items():
        if name == "MRPC":
            a, b = _embed(encode, [p[0] for p in inputs]), _embed(encode, [p[1] for p in inputs])
            feats[split] = (np.c_[np.abs(a - b), a * b], y)
        else:
            feats[split] = (_embed(encode, inputs), y)
    c = _cv_pick(*feats["train"], [2.0**t for t in range(-1, 6)], cfg.inner_kfold, cfg.seed)
    clf = _logreg(c, cfg.seed).fit(*feats["train"])
    out = {"acc": 100 * clf.score(*feats["test"]), "n": len(feats["test"][1])}
    if name == "MRPC":
        out["f1"] = 100 * float(f1_score(feats["test"][1], clf.predict(feats["test"][0])))
    return out


def evaluate_transfer(encode: EncodeFn, cfg: TransferConfig) -> dict[str, float]:
    """Flat metrics ``transfer/<task>`` (accuracy ×100), ``transfer/MRPC_f1`` and ``transfer/avg``."""
    if not Path(cfg.data_dir).is_dir():
        raise FileNotFoundError(f"simcse.transfer.data_dir is not a folder: {cfg.data_dir}")
    metrics: dict[str, float] = {}
    for name in cfg.tasks:
        res = evaluate_task(name, encode, cfg)
        metrics[f"transfer/{name}"] = res["acc"]
        if "f1" in res:
            metrics[f"transfer/{name}_f1"] = res["f1"]
        log.info("transfer %s: %.2f (n=%d)", name, res["acc"], res["n"])
    accs = [metrics[f"transfer/{t}"] for t in cfg.tasks]
    metrics["transfer/avg"] = float(np.mean(accs))
    return metrics
