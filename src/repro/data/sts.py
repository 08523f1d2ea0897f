"""STS readers: STS12–16 (every subset), STS-B and SICK-R, from disk (two layouts), the hub, or a grammar.

SimCSE (Gao et al., 2021, §5 and Appendix B) evaluates with SentEval on seven tasks. The *SentEval
layout* is the one SimCSE's ``SentEval/data/downstream/download_dataset.sh`` produces:

* ``STS1x-en-test/STS.input.<subset>.txt`` (two tab-separated sentences per line) line-aligned with
  ``STS.gs.<subset>.txt`` (one gold score per line; STS15/16 leave it blank for unscored pairs,
  which SentEval drops -- here they are dropped *and counted*);
* ``STSBenchmark/sts-{train,dev,test}.csv``: tab-separated, score in column 5, sentences in 6 and 7;
* ``SICK/SICK_{train,trial,test_annotated}.txt``: header line, then ``pair_ID A B score label``.

SentEval tokenises every sentence with ``str.split`` and SimCSE's batcher joins the tokens with one
space, so sentences are whitespace-normalised the same way here. The *TSV layout* is a flat folder of
``<task>_<split>.tsv`` files with the header ``score sentence1 sentence2 source line`` (``source`` is the
subset for STS12–16); it is what :func:`write_sts_tsv` produces and what the pipeline evaluates.
"""

from __future__ import annotations

import csv
import logging
import math
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from repro.data.sentences import SLOTS, Slots, SyntheticGrammar, render, sample_slots

log = logging.getLogger(__name__)

#: SentEval task name -> short metric key.
TASK_KEYS = MappingProxyType({
    "STS12": "sts12", "STS13": "sts13", "STS14": "sts14", "STS15": "sts15", "STS16": "sts16",
    "STSBenchmark": "stsb", "SICKRelatedness": "sickr",
})
STS_YEARLY = ("STS12", "STS13", "STS14", "STS15", "STS16")
#: Subsets exactly as SentEval lists them (STS13's SMT subset is licence-restricted and absent).
SENTEVAL_SUBSETS = MappingProxyType({
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
})
SPLITS = MappingProxyType({"STSBenchmark": ("train", "dev", "test"),
                           "SICKRelatedness": ("train", "trial", "test")})
SICK_FILES = MappingProxyType({"train": "SICK_train.txt", "trial": "SICK_trial.txt",
                               "test": "SICK_test_annotated.txt"})
SICK_TEST_PAIRS = 4927  # SICK_test_annotated.txt (SemEval-2014 task 1 test), as SentEval scores it
SENTEVAL_REPO, SENTEVAL_ARCHIVE = "princeton-nlp/datasets-for-simcse", "senteval.tar"
TSV_HEADER = ("score", "sentence1", "sentence2", "source", "line")
#: Weight of each grammar slot in the synthetic gold score (sums to 5, the STS maximum).
SLOT_WEIGHTS = MappingProxyType({"subject": 1.5, "adjective": 0.5, "verb": 1.5, "object": 1.0,
                                 "place": 0.5})


class STSPairs(NamedTuple):
    """Line-aligned sentence pairs with gold similarity in [0, 5]."""

    s1: list[str]
    s2: list[str]
    gold: list[float]


def _append(pairs: STSPairs, a: str, b: str, gold: float) -> None:
    pairs.s1.append(a)
    pairs.s2.append(b)
    pairs.gold.append(gold)


class STSTask(Mapping):
    """``{subset_or_split: STSPairs}`` for one task, plus how many pairs were skipped per subset.

    Args:
        name: SentEval task name (``STS12`` … ``SICKRelatedness``).
        subsets: pairs per subset (STS12–16) or per split (STS-B, SICK-R).
        skipped: pairs without gold dropped as SentEval does, per subset.
        note: provenance label carried into reports (e.g. "synthetic stand-in").
    """

    def __init__(self, name: str, subsets: dict[str, STSPairs], skipped: dict[str, int] | None = None,
                 note: str = "") -> None:
        self.name = canonical_task(name)
        self._subsets = dict(subsets)
        self.skipped = dict(skipped or {})
        self.note = note

    def __getitem__(self, key: str) -> STSPairs:
        if key not in self._subsets:
            raise KeyError(f"{self.name} has no subset/split {key!r}; available: {sorted(self._subsets)}")
        return self._subsets[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._subsets)

    def __len__(self) -> int:
        return len(self._subsets)

    @property
    def key(self) -> str:
        """Short metric key (``sts12`` … ``sickr``)."""
        return TASK_KEYS[self.name]


def canonical_task(name: str) -> str:
    """Map ``STS12``/``sts12``/``stsb``/``sickr``/… to the SentEval task name."""
    for long, short in TASK_KEYS.items():
        if name.lower() in (long.lower(), short):
            return long
    raise ValueError(f"unknown STS task {name!r}; expected one of {list(TASK_KEYS)} or {list(TASK_KEYS.values())}")


def _normalise(text: str) -> str:
    """SentEval's ``s.split()`` followed by SimCSE's ``' '.join``."""
    return " ".join(text.split())


def _score(raw: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{where}: score {raw!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 <= value <= 5.0):
        raise ValueError(f"{where}: score {value} outside [0, 5]")
    return value


def _pair(a: str, b: str, where: str) -> tuple[str, str]:
    a, b = _normalise(a), _normalise(b)
    if not a or not b:
        raise ValueError(f"{where}: empty sentence")
    return a, b


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"STS file not found: {path}")
    return path.read_text(encoding="utf-8").splitlines()


def _read_senteval_yearly(name: str, root: Path) -> STSTask:
    folder = root / f"{name}-en-test"
    subsets, skipped = {}, {}
    for subset in SENTEVAL_SUBSETS[name]:
        inp, gs = folder / f"STS.input.{subset}.txt", folder / f"STS.gs.{subset}.txt"
        inputs, golds = _lines(inp), _lines(gs)
        if len(inputs) != len(golds):
            raise ValueError(f"{inp} has {len(inputs)} lines but {gs} has {len(golds)}; they must align")
        pairs, n_skip = STSPairs([], [], []), 0
        for i, (text, raw) in enumerate(zip(inputs, golds, strict=False), start=1):
            cols = text.split("\t")
            if len(cols) != 2:
                raise ValueError(f"{inp}:{i}: expected 2 tab-separated sentences, got {len(cols)} columns")
            if not raw.strip():
                n_skip += 1  # SentEval: raw_scores != '' filter
                continue
            a, b = _pair(cols[0], cols[1], f"{inp}:{i}")
            _append(pairs, a, b, _score(raw.strip(), f"{gs}:{i}"))
        subsets[subset], skipped[subset] = pairs, n_skip
        if n_skip:
            log.info("%s/%s: skipped %d pairs without gold score (as SentEval)", name, subset, n_skip)
    return STSTask(name, subsets, skipped)


def _read_senteval_split(name: str, root: Path, split: str) -> STSPairs:
    if name == "STSBenchmark":
        path, skip_header, ncols, cols = root / "STSBenchmark" / f"sts-{split}.csv", False, 7, (4, 5, 6)
    else:
        path, skip_header, ncols, cols = root / "SICK" / SICK_FILES[split], True, 5, (3, 1, 2)
    pairs = STSPairs([], [], [])
    for i, text in enumerate(_lines(path), start=1):
        if skip_header and i == 1:
            continue
        row = text.split("\t")
        # The original STS-B release appends licence columns to some rows; SentEval ignores them.
        if len(row) < ncols:
            raise ValueError(f"{path}:{i}: expected {ncols} tab-separated columns, got {len(row)}")
        a, b = _pair(row[cols[1]], row[cols[2]], f"{path}:{i}")
        _append(pairs, a, b, _score(row[cols[0]].strip(), f"{path}:{i}"))
    return pairs


def _read_tsv(path: Path) -> list[tuple[float, str, str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"STS file not found: {path}")
    rows = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or tuple(header[:3]) != TSV_HEADER[:3]:
            raise ValueError(f"{path}:1: header must start with {TSV_HEADER[:3]}, got {header!r}")
        for i, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}:{i}: expected {len(header)} columns, got {len(row)}")
            a, b = _pair(row[1], row[2], f"{path}:{i}")
            source = row[3] if len(row) > 3 else ""
            rows.append((_score(row[0].strip(), f"{path}:{i}"), a, b, source))
    return rows


def _tsv_path(root: Path, name: str, split: str) -> Path:
    prefix = "sick" if name == "SICKRelatedness" else TASK_KEYS[name]
    return root / f"{prefix}_{split}.tsv"


def _splits_for(name: str, splits: tuple[str, ...] | None) -> tuple[str, ...]:
    allowed = SPLITS[name]
    splits = allowed if splits is None else tuple(splits)
    for split in splits:
        if split not in allowed:
            raise ValueError(f"{name} has no split {split!r}; expected one of {allowed}")
    return splits


def read_sts_task(name: str, root: str | Path, layout: str = "senteval",
                  splits: tuple[str, ...] | None = None) -> STSTask:
    """Read one STS task from disk.

    Args:
        name: ``STS12`` … ``STS16``, ``STSBenchmark`` or ``SICKRelatedness`` (short keys accepted).
        root: the SentEval ``downstream`` folder (containing ``STS/``'s children directly, i.e.
            ``STS12-en-test``, ``STSBenchmark``, ``SICK``) or, for ``layout="tsv"``, the TSV folder.
        layout: ``"senteval"`` or ``"tsv"``.
        splits: for STS-B / SICK-R, which splits to read (default: all); ignored for STS12–16.

    Returns:
        An :class:`STSTask` mapping each subset (STS12–16) or split to ``(s1, s2, gold)``.

    Raises:
        FileNotFoundError: a missing subset or split file (named).
        ValueError: ``file:line`` for a malformed row, a score outside [0, 5] or an empty sentence.
    """
    name, root = canonical_task(name), Path(root)
    if layout not in ("senteval", "tsv"):
        raise ValueError(f"unknown STS layout {layout!r}; expected 'senteval' or 'tsv'")
    if layout == "senteval":
        if name in STS_YEARLY:
            return _read_senteval_yearly(name, root)
        return STSTask(name, {s: _read_senteval_split(name, root, s) for s in _splits_for(name, splits)})
    if name in STS_YEARLY:
        subsets: dict[str, STSPairs] = {}
        for score, a, b, source in _read_tsv(_tsv_path(root, name, "test")):
            pairs = subsets.setdefault(source or "test", STSPairs([], [], []))
            _append(pairs, a, b, score)
        return STSTask(name, subsets)
    out = {}
    for split in _splits_for(name, splits):
        rows = _read_tsv(_tsv_path(root, name, split))
        out[split] = STSPairs([r[1] for r in rows], [r[2] for r in rows], [r[0] for r in rows])
    return STSTask(name, out)


def write_sts_tsv(task: STSTask, root: str | Path) -> list[Path]:
    """Write a task in the TSV layout (one file per split; STS12–16 subsets go to ``source``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    groups = {"test": list(task)} if task.name in STS_YEARLY else {s: [s] for s in task}
    written = []
    for split, subsets in groups.items():
        path = _tsv_path(root, task.name, split)
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None,
                                lineterminator="\n")
            writer.writerow(TSV_HEADER)
            line = 0
            for subset in subsets:
                source = subset if task.name in STS_YEARLY else task.name
                for a, b, g in zip(*task[subset], strict=False):
                    writer.writerow((repr(float(g)), a, b, source, line))
                    line += 1
        written.append(path)
    return written


_HUB_SPLIT = MappingProxyType({"dev": "validation", "trial": "validation"})


def load_sts_hub(name: str, splits: tuple[str, ...] | None = None,
                 stsb_repo: str = "sentence-transformers/stsb", local_root: str | Path | None = None) -> STSTask:
    """Load an STS task from the hub with ``datasets.load_dataset``.

    Repos: ``mteb/sts12-sts`` … ``mteb/sts16-sts`` (test split, read as one ``test`` subset: no
    subset column is used, so 'mean'/'wmean' coincide with 'all' for hub copies),
    ``sentence-transformers/stsb`` (scores in [0, 1], rescaled ×5) or ``mteb/stsbenchmark-sts``
    (scores in [0, 5]) for STS-B. SICK-R is *not* read from ``mteb/sickr-sts``: that repo's only split holds
    all of SICK (~9.9k pairs, train + trial + test), while SentEval scores ``SICK_test_annotated.txt``
    (:data:`SICK_TEST_PAIRS` pairs). SICK-R's test split is therefore that file, taken from ``senteval.tar`` of
    ``princeton-nlp/datasets-for-simcse`` -- the archive SimCSE's ``SentEval/data/downstream/download_dataset.sh``
    fetches -- and its pair count is checked.

    ``local_root``: a folder holding the repos laid out as on the hub (``<root>/mteb/sts12-sts/test.jsonl``
    …); ``datasets.load_dataset`` then reads ``<root>/<repo>`` with the same split names, offline.
    """
    import datasets

    name = canonical_task(name)
    if name in STS_YEARLY:
        repo, wanted, scale = f"mteb/{TASK_KEYS[name]}-sts", ("test",), 1.0
    elif name == "STSBenchmark":
        repo, wanted = stsb_repo, _splits_for(name, splits)
        scale = 5.0 if stsb_repo == "sentence-transformers/stsb" else 1.0
    else:
        wanted = _splits_for(name, splits or ("test",))
        if wanted != ("test",):
            raise ValueError(f"SICK-R from the hub provides the test split only (SentEval's {SICK_FILES['test']}), "
                             f"asked for {wanted}")
        return STSTask(name, {"test": load_sick_test_hub(local_root)})
    out = {}
    for split in wanted:
        source = repo
        if local_root is not None:
            source = str(Path(local_root) / repo)
            if not Path(source).is_dir():
                raise FileNotFoundError(f"{source}: no local copy of hub repo {repo} (key 'simcse.data.hub_local_root')")
        ds = datasets.load_dataset(source, split=_HUB_SPLIT.get(split, split))
        for column in ("sentence1", "sentence2", "score"):
            if column not in ds.column_names:
                raise ValueError(f"{repo}[{split}] lacks column {column!r}; has {ds.column_names}")
        pairs = STSPairs([], [], [])
        for i, row in enumerate(ds):
            a, b = _pair(row["sentence1"], row["sentence2"], f"{repo}[{split}] row {i}")
            _append(pairs, a, b, _score(str(float(row["score"]) * scale), f"{repo}[{split}] row {i}"))
        out[split] = pairs
    return STSTask(name, out)


def load_sick_test_hub(local_root: str | Path | None = None, expected_pairs: int | None = SICK_TEST_PAIRS) -> STSPairs:
    """SICK-R's test pairs as SentEval scores them: ``SICK/SICK_test_annotated.txt`` from ``senteval.tar``.

    The archive is ``princeton-nlp/datasets-for-simcse``/``senteval.tar`` (what SimCSE's
    ``download_dataset.sh`` downloads and untars into ``SentEval/data/downstream``); it is fetched with
    :func:`repro.data.hub_files.hub_dataset_file` (``local_root``: a folder laid out as the hub repo).

    Raises:
        FileNotFoundError: the archive has no ``SICK/SICK_test_annotated.txt`` member.
        ValueError: the file does not hold ``expected_pairs`` scored pairs (4,927 in SICK's test split);
            ``None`` skips the check.
    """
    import tarfile
    import tempfile

    from repro.data.hub_files import hub_dataset_file

    archive = Path(hub_dataset_file(SENTEVAL_REPO, SENTEVAL_ARCHIVE, local_root=local_root))
    member_name = f"SICK/{SICK_FILES['test']}"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and
                   (m.name == member_name or m.name.endswith("/" + member_name))]
        if not members:
            raise FileNotFoundError(f"{archive}: no member {member_name!r} (SentEval's SICK-R test file)")
        data = tar.extractfile(members[0]).read()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "SICK" / SICK_FILES["test"]
        path.parent.mkdir()
        path.write_bytes(data)
        pairs = _read_senteval_split("SICKRelatedness", Path(tmp), "test")
    if expected_pairs is not None and len(pairs.gold) != expected_pairs:
        raise ValueError(f"{archive}:{members[0].name} holds {len(pairs.gold)} SICK-R test pairs; SentEval's "
                         f"SICK_test_annotated has {expected_pairs}")
    return pairs


def _perturb(base: Slots, rng: random.Random, grammar: SyntheticGrammar) -> tuple[Slots, float]:
    """Change each slot with one per-pair probability; gold = summed weight of unchanged slots."""
    p_change, values, gold = rng.random(), list(base[:len(SLOTS)]), 0.0
    for i, slot in enumerate(SLOTS):
        if rng.random() < p_change:
            n = grammar.n_concepts(slot)
            values[i] = (values[i] + 1 + rng.randrange(n - 1)) % n
        else:
            gold += SLOT_WEIGHTS[slot]
    return Slots(*values), gold


def synthetic_sts_task(name: str, seed: int, n_pairs: int, grammar: SyntheticGrammar | None = None,
                       n_subsets: int = 3) -> STSTask:
    """A grammar stand-in for an STS task (tiny profile only; NOT comparable to any real score).

    Each pair renders a random slot tuple and a perturbed copy with independent synonym choices;
    the gold score (0–5) is the weighted count of concepts the two share (:data:`SLOT_WEIGHTS`).
    STS12–16 get ``n_subsets`` subsets of unequal size (so 'mean' and 'wmean' differ), STS-B gets
    ``dev`` and ``test`` splits (``dev`` is for model selection), SICK-R ``test`` and ``trial`` (its dev set).
    """
    name, grammar = canonical_task(name), grammar or SyntheticGrammar()
    rng = random.Random(f"{seed}/{name}")
    if name in STS_YEARLY:
        weights = list(range(1, n_subsets + 1))
        sizes = [max(2, n_pairs * w // sum(weights)) for w in weights]
        parts = {f"synthetic-{chr(97 + i)}": size for i, size in enumerate(sizes)}
    else:
        # test first: adding SICK-R's trial (dev) split leaves the test pairs as they were
        parts = {"dev": n_pairs, "test": n_pairs} if name == "STSBenchmark" else {"test": n_pairs, "trial": n_pairs}
    subsets = {}
    for part, size in parts.items():
        pairs = STSPairs([], [], [])
        for _ in range(size):
            base = sample_slots(rng, grammar)
            other, gold = _perturb(base, rng, grammar)
            _append(pairs, render(base, grammar, rng), render(other, grammar, rng), gold)
        subsets[part] = pairs
    return STSTask(name, subsets, note="synthetic stand-in (grammar pairs, gold from shared slots)")
