"""Unsupervised SimCSE training sentences: hub wiki1m, a local text file, or a synthetic grammar.

Unsupervised SimCSE (Gao et al., 2021, §3) trains on one million sentences sampled from English
Wikipedia (``wiki1m_for_simcse.txt`` in the ``princeton-nlp/datasets-for-simcse`` dataset repo, one
sentence per line; the reference ``train.py`` reads it with ``load_dataset("text")``). This module
reads that file from the hub or from a local path, and provides a small deterministic grammar that
stands in for real text in the tiny profile. The grammar is shared with the synthetic NLI triplets
(:mod:`repro.data.nli`) and the synthetic STS sets (:mod:`repro.data.sts`), so all three speak the
same vocabulary and their gold relations follow from the slots they share.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from repro.data.hub_files import hub_dataset_file
from repro.schemas import WIKI1M_FILE, WIKI1M_REPO

log = logging.getLogger(__name__)

SLOTS = ("subject", "adjective", "verb", "object", "place")


@dataclass(frozen=True)
class SyntheticGrammar:
    """Word lists for ``the <adjective> <subject> <verb> the <object> <place>``.

    Every entry is a *concept*: a tuple of interchangeable surface forms (synonyms). Verbs are
    ``(third_person, base)`` pairs so a sentence can be negated ("does not chase"). Two renderings of
    the same concepts are paraphrases; the synthetic gold scores count shared concepts, not words.
    """

    subjects: tuple[tuple[str, ...], ...] = (
        ("dog", "hound"), ("man", "gentleman"), ("woman", "lady"), ("child", "kid"),
        ("cat", "kitten"), ("teacher", "instructor"), ("doctor", "physician"), ("farmer", "grower"),
        ("student", "pupil"), ("bird", "sparrow"), ("chef", "cook"), ("driver", "motorist"),
    )
    adjectives: tuple[tuple[str, ...], ...] = (
        ("big", "large"), ("small", "little"), ("happy", "cheerful"), ("old", "elderly"),
        ("quick", "fast"), ("quiet", "silent"), ("angry", "furious"), ("tired", "weary"),
    )
    verbs: tuple[tuple[tuple[str, str], ...], ...] = (
        (("chases", "chase"), ("pursues", "pursue")), (("eats", "eat"), ("consumes", "consume")),
        (("carries", "carry"), ("holds", "hold")), (("watches", "watch"), ("observes", "observe")),
        (("buys", "buy"), ("purchases", "purchase")), (("cleans", "clean"), ("washes", "wash")),
        (("repairs", "repair"), ("fixes", "fix")), (("throws", "throw"), ("tosses", "toss")),
    )
    objects: tuple[tuple[str, ...], ...] = (
        ("ball", "sphere"), ("car", "automobile"), ("book", "novel"), ("apple", "fruit"),
        ("bicycle", "bike"), ("box", "crate"), ("letter", "note"), ("stone", "rock"),
        ("cup", "mug"), ("picture", "photo"),
    )
    places: tuple[tuple[str, ...], ...] = (
        ("in the park", "in the garden"), ("near the river", "by the stream"),
        ("at home", "in the house"), ("on the street", "on the road"),
        ("in the city", "in town"), ("at the market", "at the bazaar"),
    )

    def n_concepts(self, slot: str) -> int:
        """Number of concepts available for ``slot`` (one of :data:`SLOTS`)."""
        return len(self._table(slot))

    def _table(self, slot: str) -> tuple:
        tables = {"subject": self.subjects, "adjective": self.adjectives, "verb": self.verbs,
                  "object": self.objects, "place": self.places}
        if slot not in tables:
            raise KeyError(f"unknown grammar slot {slot!r}; expected one of {SLOTS}")
        return tables[slot]

    def surface(self, slot: str, concept: int, form: int) -> tuple[str, ...] | str:
        """Surface form ``form`` (wrapped modulo the synonym count) of a concept."""
        forms = self._table(slot)[concept]
        return forms[form % len(forms)]


class Slots(NamedTuple):
    """Concept indices of one synthetic sentence; ``None`` means the modifier is dropped."""

    subject: int
    adjective: int | None
    verb: int
    object: int
    place: int | None
    negated: bool = False


def sample_slots(rng: random.Random, grammar: SyntheticGrammar) -> Slots:
    """Draw one concept per slot uniformly (modifiers always present, verb affirmative)."""
    return Slots(*(rng.randrange(grammar.n_concepts(s)) for s in SLOTS))


def render(slots: Slots, grammar: SyntheticGrammar, rng: random.Random) -> str:
    """Turn slots into a sentence, picking a random synonym for every concept.

    Example: ``Slots(0, 1, 2, 3, 4)`` -> ``"the little hound holds the fruit in the city ."``.
    """
    words = ["the"]
    if slots.adjective is not None:
        words.append(grammar.surface("adjective", slots.adjective, rng.randrange(2)))
    words.append(grammar.surface("subject", slots.subject, rng.randrange(2)))
    third, base = grammar.surface("verb", slots.verb, rng.randrange(2))
    words.extend(["does", "not", base] if slots.negated else [third])
    words.extend(["the", grammar.surface("object", slots.object, rng.randrange(2))])
    if slots.place is not None:
        words.append(grammar.surface("place", slots.place, rng.randrange(2)))
    return " ".join(words) + " ."


def synthetic_sentences(n: int, seed: int, grammar: SyntheticGrammar | None = None) -> list[str]:
    """``n`` grammar sentences, identical for identical ``(n, seed)``.

    Stand-in for wiki1m in the tiny profile: it only has to give the encoder something to
    contrast, not to be natural text. Duplicates are allowed (as in wiki1m).
    """
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    grammar = grammar or SyntheticGrammar()
    rng = random.Random(seed)
    return [render(sample_slots(rng, grammar), grammar, rng) for _ in range(n)]


def read_sentence_file(path: str | Path, max_sentences: int | None = None) -> list[str]:
    """Read one sentence per line (the wiki1m format), stripping surrounding whitespace.

    Blank lines are skipped and their number is logged (``load_dataset("text")`` in the reference
    ``train.py`` keeps them as empty examples; an empty sentence carries no training signal).

    Args:
        path: UTF-8 text file.
        max_sentences: keep only the first ``max_sentences`` non-blank lines.

    Raises:
        FileNotFoundError: naming the missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sentence file not found: {path}")
    sentences: list[str] = []
    blank = 0
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            text = line.strip()
            if not text:
                blank += 1
                continue
            sentences.append(text)
            if max_sentences is not None and len(sentences) >= max_sentences:
                break
    if blank:
        log.info("%s: skipped %d blank lines", path, blank)
    if not sentences:
        raise ValueError(f"{path}: no sentences (file is empty or blank)")
    return sentences


def load_wiki1m_hub(
    repo_id: str = WIKI1M_REPO,
    filename: str = WIKI1M_FILE,
    max_sentences: int | None = None,
    revision: str | None = None,
    local_root: str | Path | None = None,
) -> list[str]:
    """Download ``wiki1m_for_simcse.txt`` from the hub dataset repo and read it.

    Mirrors the reference ``data/download_wiki.sh`` (the same file, fetched via ``hf_hub_download``
    so the hub cache and ``HF_HUB_OFFLINE`` apply).
    """
    path = hub_dataset_file(repo_id, filename, revision, local_root)
    return read_sentence_file(path, max_sentences=max_sentences)
