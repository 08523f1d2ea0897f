"""STS evaluation with the SentEval protocol as SimCSE runs it (Gao et al., 2021, §5, Appendix B).

For every pair the system score is the cosine similarity of the two sentence embeddings; a task's
score is Spearman's rank correlation with the gold scores, ×100. SimCSE's ``evaluation.py`` reports,
for STS12–16, the *'all'* setting of its modified SentEval: the system and gold scores of every
subset are concatenated and one Spearman is taken. Appendix B contrasts it with the unweighted mean
of subset correlations (*'mean'*, what SentEval reports by default) and the size-weighted mean
(*'wmean'*); all three are reported here, each under its own key. STS-B and SICK-R use the test split
(no training on them: the "unsupervised transfer" setting). ``avg`` is the plain mean of the seven
'all'/test scores, as in SimCSE's Table 5.

Unlike SentEval (which encodes every subset separately), each unique sentence is encoded exactly
once across all tasks, in batches of sentences sorted by length, so the encoder pads little.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr

from repro.data.sts import STS_YEARLY, TASK_KEYS, STSTask, canonical_task, read_sts_task

log = logging.getLogger(__name__)

EncodeFn = Callable[[list[str]], Any]  # list[str] -> Tensor | ndarray of shape (N, d)
TABLE_COLUMNS = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr")
TABLE_HEADERS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R", "Avg.")
HOLDOUT_NOTE = ("shared-data copy with ~20% of test pairs held out: not comparable to published "
                "full-test numbers")


def _to_numpy(out: Any, n: int) -> np.ndarray:
    """Turn an encoder output (torch tensor or array-like) into a float64 (n, d) array."""
    if hasattr(out, "detach"):
        out = out.detach().float().cpu().numpy()
    arr = np.asarray(out, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"encode_fn must return shape (N={n}, d), got {arr.shape}")
    return arr


def encode_unique(sentences: Iterable[str], encode_fn: EncodeFn, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Encode each distinct sentence once, in length-sorted batches.

    Sorting by (token count, text) mirrors SentEval's sort-by-length (it reduces padding) and makes
    the batches deterministic.

    Returns:
        ``{sentence: embedding (d,)}``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    unique = sorted(set(sentences), key=lambda s: (len(s.split()), s))
    table: dict[str, np.ndarray] = {}
    for start in range(0, len(unique), batch_size):
        batch = unique[start:start + batch_size]
        emb = _to_numpy(encode_fn(batch), len(batch))  # (B, d)
        table.update(zip(batch, emb, strict=False))
    return table


def cosine_scores(table: Mapping[str, np.ndarray], s1: Sequence[str], s2: Sequence[str]) -> np.ndarray:
    """Row-wise cosine similarity of the embeddings of ``s1[i]`` and ``s2[i]`` (NaN -> 0, as SentEval)."""
    a = np.stack([table[s] for s in s1])  # (N, d)
    b = np.stack([table[s] for s in s2])  # (N, d)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sims = (a * b).sum(axis=1) / denom  # (N,)
    return np.nan_to_num(sims)


def _corr(sys: np.ndarray, gold: Sequence[float]) -> dict[str, float]:
    gold = np.asarray(gold, dtype=np.float64)
    if len(gold) < 2:
        raise ValueError(f"need at least 2 pairs for a correlation, got {len(gold)}")
    return {"spearman": float(spearmanr(sys, gold).statistic) * 100,
            "pearson": float(pearsonr(sys, gold).statistic) * 100, "n": int(len(gold))}


@dataclass(frozen=True)
class STSResult:
    """Outcome of :meth:`STSEvaluator.evaluate`.

    Attributes:
        nested: per task, per subset/split ``{"spearman", "pearson", "n"}`` plus, for STS12–16,
            ``"all"``, ``"mean"``, ``"wmean"`` and ``"skipped"`` (pairs without gold, per subset).
        metrics: flat Spearman×100 keys ``sts12/all``, ``sts12/mean``, ``sts12/wmean``, …,
            ``stsb/test``, ``stsb/dev`` (when loaded), ``sickr/test`` and ``avg`` (all 7 present).
        note: provenance of the data (e.g. holdout or synthetic), to print beside the numbers.
        n_sentences: distinct sentences encoded.
    """

    nested: dict[str, Any]
    metrics: dict[str, float]
    note: str = ""
    n_sentences: int = 0


class STSEvaluator:
    """SentEval-style STS evaluation over any ``encode_fn(list[str]) -> (N, d)``.

    Args:
        tasks: the tasks to evaluate (STS12–16 with their subsets; STS-B / SICK-R with their splits).
        batch_size: sentences per ``encode_fn`` call.
        note: provenance label copied into results and tables.
    """

    def __init__(self, tasks: Iterable[STSTask], batch_size: int = 128, note: str = "") -> None:
        self.tasks = {t.key: t for t in tasks}
        if not self.tasks:
            raise ValueError("STSEvaluator needs at least one task")
        self.batch_size = batch_size
        notes = [note] + [t.note for t in self.tasks.values() if t.note]
        self.note = "; ".join(dict.fromkeys(n for n in notes if n))

    @classmethod
    def from_dir(cls, root: str | Path, layout: str = "senteval", tasks: Sequence[str] = tuple(TASK_KEYS),
                 batch_size: int = 128, note: str = "", with_dev: bool = True,
                 with_sick_dev: bool = False) -> STSEvaluator:
        """Read the tasks from a SentEval or TSV folder (see :func:`repro.data.sts.read_sts_task`).

        STS-B is read with its ``test`` (and, with ``with_dev``, ``dev``) split, SICK-R with ``test``
        (and, with ``with_sick_dev``, ``trial``: SICK-R dev for the reference's ``eval_avg_sts``).
        """
        loaded = []
        for name in tasks:
            name = canonical_task(name)
            splits = None
            if name == "STSBenchmark":
                splits = ("dev", "test") if with_dev else ("test",)
            elif name == "SICKRelatedness":
                splits = ("trial", "test") if with_sick_dev else ("test",)
            loaded.append(read_sts_task(name, root, layout, splits=splits))
        return cls(loaded, batch_size=batch_size, note=note)

    def sentences(self) -> set[str]:
        """Every distinct sentence the evaluation will encode."""
        return {s for task in self.tasks.values() for pairs in task.values() for s in (*pairs.s1, *pairs.s2)}

    def evaluate(self, encode_fn: EncodeFn) -> STSResult:
        """Encode all sentences once and score every task (see the module docstring)."""
        table = encode_unique(self.sentences(), encode_fn, self.batch_size)
        nested: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        for key, task in self.tasks.items():
            per = {sub: (cosine_scores(table, p.s1, p.s2), p.gold) for sub, p in task.items()}
            scores = {sub: _corr(sys, gold) for sub, (sys, gold) in per.items()}
            if task.name in STS_YEARLY:
                all_sys = np.concatenate([sys for sys, _ in per.values()])
                all_gold = np.concatenate([np.asarray(g, dtype=np.float64) for _, g in per.values()])
                sp = np.array([s["spearman"] for s in scores.values()])
                sizes = np.array([s["n"] for s in scores.values()], dtype=np.float64)
                nested[key] = {"subsets": scores, "all": _corr(all_sys, all_gold),
                               "mean": float(sp.mean()), "wmean": float((sp * sizes).sum() / sizes.sum()),
                               "skipped": dict(task.skipped)}
                metrics[f"{key}/all"] = nested[key]["all"]["spearman"]
                metrics[f"{key}/mean"] = nested[key]["mean"]
                metrics[f"{key}/wmean"] = nested[key]["wmean"]
            else:
                nested[key] = scores
                metrics.update({f"{key}/{split}": s["spearman"] for split, s in scores.items()})
        main = [metrics.get(f"{k}/all", metrics.get(f"{k}/test")) for k in TABLE_COLUMNS]
        if all(v is not None for v in main):
            metrics["avg"] = float(np.mean(main))
            nested["avg"] = metrics["avg"]
        else:
            log.info("avg not reported: needs all 7 tasks, have %s", sorted(self.tasks))
        return STSResult(nested, metrics, self.note, len(table))

    def dev_spearman(self, encode_fn: EncodeFn) -> float:
        """STS-B dev Spearman×100: SimCSE's model-selection metric (``eval_stsb_spearman``)."""
        task = self.tasks.get("stsb")
        if task is None or "dev" not in task:
            raise KeyError("dev_spearman needs STSBenchmark with its 'dev' split loaded")
        dev = task["dev"]
        table = encode_unique([*dev.s1, *dev.s2], encode_fn, self.batch_size)
        return _corr(cosine_scores(table, dev.s1, dev.s2), dev.gold)["spearman"]


def _reference_value(reference: Mapping[str, float], column: str) -> float | None:
    for key in (column, f"{column}/all", f"{column}/test", column.upper()):
        if key in reference:
            return float(reference[key])
    return None


def _fmt(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def format_sts_table(result: STSResult, reference: Mapping[str, float] | None = None,
                     reference_label: str = "reference", label: str = "ours") -> str:
    """Markdown table of Spearman×100 in SimCSE Table 5's column order.

    Rows: ``all`` (SimCSE's reported setting), ``mean`` and ``wmean`` for STS12–16 (Appendix B);
    STS-B and SICK-R are the test split in every row. An optional reference row takes a dict keyed by
    ``sts12`` … ``sickr``, ``avg`` (``sts12/all``-style keys are accepted too).
    """
    m = result.metrics
    lines = ["| | " + " | ".join(TABLE_HEADERS) + " |", "|---" * (len(TABLE_HEADERS) + 1) + "|"]
    if reference is not None:
        ref = [_reference_value(reference, c) for c in TABLE_COLUMNS]
        ref.append(_reference_value(reference, "avg"))
        lines.append(f"| {reference_label} | " + " | ".join(_fmt(v) for v in ref) + " |")
    for agg, desc in (("all", "all (SimCSE setting)"), ("mean", "mean of subsets"),
                      ("wmean", "size-weighted mean")):
        row = [m.get(f"{c}/{agg}", m.get(f"{c}/test")) for c in TABLE_COLUMNS]
        present = [v for v in row if v is not None]
        avg = float(np.mean(present)) if len(present) == len(row) else None
        lines.append(f"| {label}, {desc} | " + " | ".join(_fmt(v) for v in [*row, avg]) + " |")
    if result.note:
        lines.append(f"\nData: {result.note}.")
    return "\n".join(lines)
