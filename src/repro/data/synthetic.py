"""A deterministic synthetic corpus with measurable long-range dependencies (CPU "tiny" profile).

This corpus is a stand-in for RedPajama (LongLoRA §4.1, training data) at a scale where a ~100k-parameter
Llama can be trained on a CPU in minutes. It is not natural language and says nothing about real-text
perplexity; its only purpose is that *context length matters measurably*:

* **Fact documents.** A few facts are stated at the start ("the code of ravens47 ."), then come
  low-entropy filler sentences drawn from a tiny grammar, and every fact is recalled exactly once
  ("remember , the code of ravens47 .") at a uniformly random sentence position. The digits of a
  recall are unpredictable (about ln 10 nats each) unless the statement lies inside the model's
  attention window. Half of the fact documents have no filler (copy-dense: they teach copying within
  an original context of 128); the other half draw their filler length uniformly from
  ``0..filler_sentences``, so recall distances span from a few tokens to well beyond 128 (up to ~450
  tokens with the tiny profile's sizes): a model trained or extended to 512 tokens genuinely gets
  lower perplexity than one limited to 128.
* **Copyable by an induction head.** A 2-layer model copies with an induction head: "find the earlier
  occurrence of the current token and predict the token that followed it". The format keeps that
  single-token cue unambiguous: the subject is glued to its code (the pre-tokenizer splits digits off,
  so the subject token directly precedes the first digit, with no shared separator in between), and
  the code digits of a document are dealt from shuffled decks of the ten digits, so with at most ten
  code digits per document every digit occurs in one statement only and has a single successor.
* **Passkey documents.** The prompt of :mod:`repro.data.passkey_format` (task description, filler cut
  at a random character, the information line, the rest of the filler, the question, newline-joined)
  followed by the key, so the answer
  completes the question exactly as the passkey evaluation asks it (LongLoRA §4.2; Mohtashami & Jaggi,
  2023). Training on them makes passkey retrieval learnable at these sizes.

The vocabulary is a few dozen words plus digits, so a 512-entry byte-level BPE covers every word with
one or two tokens. Everything is drawn from ``random.Random(seed)``, so a seed fixes the corpus on every
platform.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from repro.data.passkey_format import FILLER, build_passkey_prompt

FACT_SUBJECTS = (
    "ravens", "otters", "foxes", "herons", "wolves", "badgers",
    "owls", "hares", "lynxes", "moles", "crows", "seals",
)
FILLER_ADJECTIVES = ("old", "small", "quiet", "red")
FILLER_NOUNS = ("stone", "river", "tree", "house", "road", "hill", "field", "boat")
FILLER_VERBS = ("stands", "waits", "rests", "sleeps")
# Share of fact documents with filler; the others recall their facts right after stating them, which
# keeps copy events dense enough for a tiny model to learn copying within a few hundred steps.
LONG_FACT_FRACTION = 0.5
# Bumped whenever the generated text changes, so caches built by an older generator are rebuilt.
GENERATOR_VERSION = 3


def fact_statement(subject: str, code: str) -> str:
    """The sentence that states a fact at the start of a fact document (subject glued to its code)."""
    return f"the code of {subject}{code} ."


def fact_recall(subject: str, code: str) -> str:
    """The sentence that recalls a fact later in the document; its digits need the statement."""
    return f"remember , the code of {subject}{code} ."


def _filler_sentence(rng: random.Random) -> str:
    """One sentence of the low-entropy filler grammar ("the <adj> <noun> <verb> .")."""
    adj = rng.choice(FILLER_ADJECTIVES)
    noun = rng.choice(FILLER_NOUNS)
    verb = rng.choice(FILLER_VERBS)
    return f"the {adj} {noun} {verb} ."


def _dealt_codes(rng: random.Random, count: int, digits: int) -> list[str]:
    """``count`` codes of ``digits`` digits dealt from shuffled decks of "0".."9" (no repeat within a deck)."""
    dealt: list[str] = []
    while len(dealt) < count * digits:
        dealt.extend(rng.sample("0123456789", 10))
    return ["".join(dealt[i * digits : (i + 1) * digits]) for i in range(count)]


def fact_document(
    rng: random.Random, num_facts: int, code_digits: int, filler_sentences: int
) -> str:
    """Facts stated first, then filler with each fact recalled once at a random sentence position.

    Args:
        rng: the random source (consumed).
        num_facts: how many distinct facts the document states (at most ``len(FACT_SUBJECTS)``).
        code_digits: digits per code; ``num_facts * code_digits <= 10`` keeps every digit unique.
        filler_sentences: most filler sentences between and around the recalls. With probability
            ``LONG_FACT_FRACTION`` the document's count is drawn uniformly from ``0..filler_sentences``;
            otherwise it has none (a copy-dense document).
    """
    subjects = rng.sample(FACT_SUBJECTS, num_facts)
    codes = _dealt_codes(rng, num_facts, code_digits)
    # Half of the documents are copy-dense (recalls right after the statements), half long.
    n_filler = rng.randint(0, filler_sentences) if rng.random() < LONG_FACT_FRACTION else 0
    body = [_filler_sentence(rng) for _ in range(n_filler)]
    # Insert recalls from the back so earlier insertion indices stay valid.
    slots = sorted(((rng.randint(0, n_filler), i) for i in range(num_facts)), reverse=True)
    for slot, i in slots:
        body.insert(slot, fact_recall(subjects[i], codes[i]))
    head = [fact_statement(s, c) for s, c in zip(subjects, codes, strict=False)]
    return " ".join(head + body)


def passkey_document(rng: random.Random, max_filler: int) -> str:
    """A passkey prompt (random key, filler length and insertion point) completed by its key.

    The key is drawn from ``1..49999`` as in the reference; the filler holds ``n_filler`` sentences' worth
    of characters, with ``n_filler`` uniform in ``1..max_filler`` with probability ``LONG_FACT_FRACTION``,
    else 1, split at a uniformly random character.
    """
    passkey = str(rng.randint(1, 49999))
    # As for facts: half of the documents are short (one filler), so copying is learnt within 128 tokens.
    n_filler = rng.randint(1, max_filler) if rng.random() < LONG_FACT_FRACTION else 1
    n_garbage = n_filler * (len(FILLER) + 1)
    n_prefix = rng.randint(0, n_garbage)
    return f"{build_passkey_prompt(passkey, n_prefix, n_garbage - n_prefix)} {passkey}."


def generate_documents(
    seed: int,
    num_docs: int,
    passkey_fraction: float = 0.25,
    num_facts: int = 6,
    code_digits: int = 5,
    filler_sentences: int = 60,
    passkey_max_filler: int = 18,
) -> Iterator[str]:
    """Yield ``num_docs`` synthetic documents, fully determined by the arguments.

    Args:
        seed: seed of the ``random.Random`` that draws everything.
        num_docs: number of documents.
        passkey_fraction: probability that a document is a passkey document (else a fact document).
        num_facts: facts per fact document.
        code_digits: digits per fact code (the tiny profile uses 5 facts x 2 digits, so no digit repeats).
        filler_sentences: most filler sentences per fact document (~6 tokens each; drawn per document).
        passkey_max_filler: most filler repetitions in a passkey document (~25 tokens each).

    Raises:
        ValueError: naming the argument that is out of range.
    """
    if num_docs < 0:
        raise ValueError(f"num_docs must be >= 0, got {num_docs}")
    if not 0.0 <= passkey_fraction <= 1.0:
        raise ValueError(f"passkey_fraction must lie in [0, 1], got {passkey_fraction}")
    if not 1 <= num_facts <= len(FACT_SUBJECTS):
        raise ValueError(f"num_facts must lie in [1, {len(FACT_SUBJECTS)}], got {num_facts}")
    if code_digits < 1:
        raise ValueError(f"code_digits must be >= 1, got {code_digits}")
    if filler_sentences < 0:
        raise ValueError(f"filler_sentences must be >= 0, got {filler_sentences}")
    if passkey_max_filler < 1:
        raise ValueError(f"passkey_max_filler must be >= 1, got {passkey_max_filler}")
    rng = random.Random(seed)
    for _ in range(num_docs):
        if rng.random() < passkey_fraction:
            yield passkey_document(rng, passkey_max_filler)
        else:
            yield fact_document(rng, num_facts, code_digits, filler_sentences)
