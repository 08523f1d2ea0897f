"""The synthetic LongLoRA corpus: determinism, passkey format, and long-range fact recalls."""

from __future__ import annotations

import re

import pytest

from repro.data.passkey_format import (
    FILLER,
    QUESTION,
    TASK_DESCRIPTION,
    build_passkey_prompt,
    information_line,
)
from repro.data.synthetic import generate_documents
from repro.data.tokenizer import build_tokenizer
from repro.schemas import TokenizerConfig

STATEMENT = re.compile(r"(?<!remember , )the code of ([a-z]+)(\d+) \.")
RECALL = re.compile(r"remember , the code of ([a-z]+)(\d+) \.")
KEY_LINE = re.compile(r"The pass key is (\d+)\. Remember it\. (\d+) is the pass key\.")


@pytest.fixture(scope="module")
def bpe():
    return build_tokenizer(TokenizerConfig(vocab_size=512), generate_documents(seed=0, num_docs=200))


def test_same_seed_same_corpus_and_different_seed_differs():
    a = list(generate_documents(seed=7, num_docs=30))
    b = list(generate_documents(seed=7, num_docs=30))
    c = list(generate_documents(seed=8, num_docs=30))
    assert a == b
    assert len(a) == 30
    assert sum(x != y for x, y in zip(a, c, strict=False)) >= 25


def test_passkey_documents_follow_the_shared_format_and_end_with_the_key():
    docs = list(generate_documents(seed=3, num_docs=40, passkey_fraction=1.0, passkey_max_filler=6))
    keys = set()
    for doc in docs:
        m = KEY_LINE.search(doc)
        assert m and m.group(1) == m.group(2)
        key = m.group(1)
        keys.add(key)
        prompt, completion = doc[: -len(key) - 2], doc[-len(key) - 2 :]
        assert completion == f" {key}."
        assert prompt.endswith(QUESTION) and prompt.startswith(TASK_DESCRIPTION)
        # Rebuild the prompt independently from its visible parts: same text, byte for byte.
        lines = prompt.split("\n")
        assert len(lines) == 5 and lines[0] == TASK_DESCRIPTION and lines[4] == QUESTION
        n_prefix, n_suffix = len(lines[1]), len(lines[3])
        assert 1 <= (n_prefix + n_suffix) / (len(FILLER) + 1) <= 6
        assert lines[1] == (" ".join([FILLER] * 7))[:n_prefix]
        assert prompt == build_passkey_prompt(key, n_prefix, n_suffix)
        assert information_line(key) in prompt
    assert len(keys) > 30  # keys vary


def test_fact_recalls_repeat_the_stated_code():
    for doc in generate_documents(seed=5, num_docs=20, passkey_fraction=0.0, num_facts=3):
        stated = dict(STATEMENT.findall(doc))
        recalled = RECALL.findall(doc)
        assert len(stated) == 3 and len(recalled) == 3
        for subject, code in recalled:
            assert stated[subject] == code


def test_code_digits_are_distinct_within_a_document_so_each_has_one_successor(bpe):
    """With <= 10 code digits per document, every digit occurs in one code only, and the token before
    the first digit is the subject itself (no shared separator): the cue an induction head copies from."""
    for doc in generate_documents(seed=9, num_docs=30, passkey_fraction=0.0, num_facts=5, code_digits=2):
        digits = "".join(code for _, code in STATEMENT.findall(doc))
        assert len(digits) == 10 and len(set(digits)) == 10
        for m in STATEMENT.finditer(doc):
            ids = bpe(doc[: m.end(2)], add_special_tokens=False)["input_ids"]
            before = bpe.decode(ids[-3:-2]).strip()
            assert before.isalpha() and m.group(1).endswith(before)  # the subject (its last piece) precedes
            assert [bpe.decode([i]) for i in ids[-2:]] == list(m.group(2))  # one token per digit


def test_half_of_the_fact_documents_are_copy_dense():
    docs = list(generate_documents(seed=4, num_docs=400, passkey_fraction=0.0))
    dense = [d for d in docs if "remember" in d and not re.search(r"the \w+ \w+ (stands|waits|rests|sleeps) \.", d)]
    assert 0.4 < len(dense) / len(docs) < 0.6


def test_vocabulary_is_small():
    words = {w for d in generate_documents(seed=1, num_docs=200) for w in re.findall(r"[A-Za-z]+", d)}
    # The passkey filler is cut at a character (as the reference cuts it), which adds word fragments.
    fragments = {w for w in words if any(f.startswith(w) and f != w for f in re.findall(r"[A-Za-z]+", FILLER))}
    assert len(words - fragments) < 80


def _token_index(offsets, char_pos: int) -> int:
    return next(i for i, (s, e) in enumerate(offsets) if s <= char_pos < e)


def test_recalls_reach_beyond_the_original_context_in_tokens(bpe):
    """Distances from statement to recall, measured in BPE tokens, span past 128 but stay in 512.

    Half of the documents are copy-dense (no filler), so about a quarter of all recalls lie beyond 128.
    """
    distances = []
    for doc in generate_documents(seed=11, num_docs=60, passkey_fraction=0.0):
        offsets = bpe(doc, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        stated = {m.group(1): m.start(2) for m in STATEMENT.finditer(doc)}
        for m in RECALL.finditer(doc):
            distances.append(_token_index(offsets, m.start(2)) - _token_index(offsets, stated[m.group(1)]))
    assert min(distances) > 0
    far = [d for d in distances if d > 128]
    assert len(far) / len(distances) > 0.2, "many recalls should need more than a 128-token window"
    assert sum(d <= 128 for d in distances) > 0, "some recalls should stay inside the original window"
    assert max(distances) < 512


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="passkey_fraction"):
        list(generate_documents(seed=0, num_docs=1, passkey_fraction=1.5))
    with pytest.raises(ValueError, match="num_facts"):
        list(generate_documents(seed=0, num_docs=1, num_facts=0))
