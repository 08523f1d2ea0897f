"""Synthetic stand-ins for the seven SentEval transfer tasks, in SentEval's own file layout.

The tiny profile has no SentEval data (the default ``dvc repro`` runs offline on any machine), so its
transfer stage reads these files instead: sentences from the synthetic grammar of
:mod:`repro.data.sentences`, each task labelled by a property of the sentence's concepts. They exercise
the exact SentEval readers and protocol (10-fold CV for MR/CR/SUBJ/MPQA, given splits for SST-2, TREC
and MRPC); the accuracies say nothing about SimCSE's Table 2.

=====  =======================================================  ==============================
task   label                                                    files (as SentEval's downstream)
=====  =======================================================  ==============================
MR     adjective concept in the first half of the list           MR/rt-polarity.{pos,neg}
CR     negated verb ("does not ...")                             CR/custrev.{pos,neg}
SUBJ   subject is an animal (dog, cat, bird)                     SUBJ/subj.{subjective,objective}
MPQA   the phrase "the <adjective> <subject>": adjective half    MPQA/mpqa.{pos,neg}
SST-2  verb concept in the first half (train/dev/test splits)    SST/binary/sentiment-{split}
TREC   place concept (6 classes) of a where-question             TREC/{train_5500,TREC_10}.label
MRPC   paraphrase (same concepts) or one concept changed         MRPC/msr_paraphrase_{train,test}.txt
=====  =======================================================  ==============================
"""

from __future__ import annotations

import random
from pathlib import Path

from repro.data.sentences import Slots, SyntheticGrammar, render, sample_slots

_TREC_CLASSES = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
_ANIMALS = {0, 4, 9}  # dog, cat, bird in SyntheticGrammar.subjects


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


def write_synthetic_transfer(root: str | Path, n: int = 400, seed: int = 0) -> Path:
    """Write the seven tasks under ``root`` (``n`` examples per binary task and per split); return ``root``."""
    root, g, rng = Path(root), SyntheticGrammar(), random.Random(seed)
    half_adj, half_verb = g.n_concepts("adjective") // 2, g.n_concepts("verb") // 2

    def sentence(**fixed) -> tuple[Slots, str]:
        slots = sample_slots(rng, g)._replace(**fixed)
        return slots, render(slots, g, rng)

    def binary(label_of, rel_pos: str, rel_neg: str, **fixed) -> None:
        pos, neg = [], []
        while len(pos) < n // 2 or len(neg) < n // 2:
            if "negated" in fixed and fixed["negated"] is None:
                slots, text = sentence(negated=rng.random() < 0.5)
            else:
                slots, text = sentence()
            (pos if label_of(slots) else neg).append(text)
        _write(root / rel_pos, pos[: n // 2])
        _write(root / rel_neg, neg[: n // 2])

    binary(lambda s: s.adjective < half_adj, "MR/rt-polarity.pos", "MR/rt-polarity.neg")
    binary(lambda s: s.negated, "CR/custrev.pos", "CR/custrev.neg", negated=None)
    binary(lambda s: s.subject in _ANIMALS, "SUBJ/subj.subjective", "SUBJ/subj.objective")
    pos, neg = [], []
    while len(pos) < n // 2 or len(neg) < n // 2:
        s = sample_slots(rng, g)
        adjective = g.surface('adjective', s.adjective, rng.randrange(2))
        phrase = f"the {adjective} {g.surface('subject', s.subject, rng.randrange(2))}"
        (pos if s.adjective < half_adj else neg).append(phrase)
    _write(root / "MPQA/mpqa.pos", pos[: n // 2])
    _write(root / "MPQA/mpqa.neg", neg[: n // 2])
    for split in ("train", "dev", "test"):
        rows = []
        for _ in range(n):
            slots, text = sentence()
            rows.append(f"{text}\t{int(slots.verb < half_verb)}")
        _write(root / "SST/binary" / f"sentiment-{split}", rows)
    for fname in ("train_5500.label", "TREC_10.label"):
        rows = []
        for _ in range(n):
            slots, text = sentence()
            question = "where does " + text.removeprefix("the ").replace(" .", " ?")
            rows.append(f"{_TREC_CLASSES[slots.place]}:other {question}")
        _write(root / "TREC" / fname, rows)
    for split in ("train", "test"):
        rows = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        for i in range(n):
            slots, first = sentence()
            same = rng.random() < 0.5
            if not same:
                slot = rng.choice(["subject", "verb", "object"])
                other = (getattr(slots, slot) + 1 + rng.randrange(g.n_concepts(slot) - 1)) % g.n_concepts(slot)
                slots = slots._replace(**{slot: other})
            rows.append(f"{int(same)}\t{2 * i}\t{2 * i + 1}\t{first}\t{render(slots, g, rng)}")
        _write(root / "MRPC" / f"msr_paraphrase_{split}.txt", rows)
    return root
