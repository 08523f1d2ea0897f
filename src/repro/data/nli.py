"""Supervised SimCSE triplets ``(premise, entailment, contradiction)``.

Supervised SimCSE (Gao et al., 2021, §4, Table 4) trains on SNLI+MNLI triplets: each premise is
paired with an entailment hypothesis as the positive and a contradiction hypothesis as the hard
negative. The reference release ships them as ``nli_for_simcse.csv`` with the header
``sent0,sent1,hard_neg`` in the ``princeton-nlp/datasets-for-simcse`` dataset repo. This module reads
that CSV (hub or local, validated row by row) and generates grammar triplets for the tiny profile.
"""

from __future__ import annotations

import csv
import logging
import random
from pathlib import Path
from typing import NamedTuple

from repro.data.hub_files import hub_dataset_file
from repro.data.sentences import Slots, SyntheticGrammar, render, sample_slots
from repro.schemas import NLI_FILE, WIKI1M_REPO

log = logging.getLogger(__name__)

NLI_COLUMNS = ("sent0", "sent1", "hard_neg")


class NLITriplet(NamedTuple):
    """One supervised example: anchor, positive (entailment), hard negative (contradiction)."""

    sent0: str
    sent1: str
    hard_neg: str


def read_nli_csv(path: str | Path, max_triplets: int | None = None) -> list[NLITriplet]:
    """Read a ``sent0,sent1,hard_neg`` CSV (RFC 4180 quoting, as the reference file uses).

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: ``file:line`` for a wrong header, a wrong column count or an empty sentence.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NLI triplet file not found: {path}")
    triplets: list[NLITriplet] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != NLI_COLUMNS:
            raise ValueError(f"{path}:1: header must be {','.join(NLI_COLUMNS)}, got {header!r}")
        for row in reader:
            line = reader.line_num
            if len(row) != len(NLI_COLUMNS):
                raise ValueError(f"{path}:{line}: expected {len(NLI_COLUMNS)} columns, got {len(row)}")
            cells = [c.strip() for c in row]
            for name, cell in zip(NLI_COLUMNS, cells, strict=False):
                if not cell:
                    raise ValueError(f"{path}:{line}: empty sentence in column {name!r}")
            triplets.append(NLITriplet(*cells))
            if max_triplets is not None and len(triplets) >= max_triplets:
                break
    if not triplets:
        raise ValueError(f"{path}: no triplets after the header")
    return triplets


def write_nli_csv(triplets: list[NLITriplet], path: str | Path) -> None:
    """Write triplets with the reference header so :func:`read_nli_csv` (and ``train.py``) read them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(NLI_COLUMNS)
        writer.writerows(triplets)


def load_nli_hub(
    repo_id: str = WIKI1M_REPO,
    filename: str = NLI_FILE,
    max_triplets: int | None = None,
    revision: str | None = None,
    local_root: str | Path | None = None,
) -> list[NLITriplet]:
    """Download ``nli_for_simcse.csv`` (reference ``data/download_nli.sh``) and read it."""
    path = hub_dataset_file(repo_id, filename, revision, local_root)
    return read_nli_csv(path, max_triplets=max_triplets)


def entailment_of(slots: Slots, rng: random.Random) -> Slots:
    """A hypothesis entailed by ``slots``: same concepts, possibly one modifier dropped.

    Together with fresh synonym choices in :func:`render` this gives paraphrases ("the big dog
    chases the ball" -> "the large hound pursues the ball") and generalisations (dropped adjective
    or place), the two kinds of entailment SNLI hypotheses mostly are.
    """
    drop = rng.choice(("none", "adjective", "place"))
    if drop == "adjective":
        return slots._replace(adjective=None)
    if drop == "place":
        return slots._replace(place=None)
    return slots


def contradiction_of(slots: Slots, rng: random.Random, grammar: SyntheticGrammar) -> Slots:
    """A hypothesis contradicting ``slots``: another subject, or the verb negated."""
    if rng.random() < 0.5:
        shift = 1 + rng.randrange(grammar.n_concepts("subject") - 1)
        return slots._replace(subject=(slots.subject + shift) % grammar.n_concepts("subject"))
    return slots._replace(negated=not slots.negated)


def synthetic_triplets(n: int, seed: int, grammar: SyntheticGrammar | None = None) -> list[NLITriplet]:
    """``n`` NLI-style triplets from the grammar, identical for identical ``(n, seed)``.

    A stand-in for ``nli_for_simcse.csv`` in the tiny profile, not a natural-language dataset.
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    grammar = grammar or SyntheticGrammar()
    rng = random.Random(seed)
    out: list[NLITriplet] = []
    for _ in range(n):
        premise = sample_slots(rng, grammar)
        out.append(NLITriplet(
            render(premise, grammar, rng),
            render(entailment_of(premise, rng), grammar, rng),
            render(contradiction_of(premise, rng, grammar), grammar, rng),
        ))
    return out
