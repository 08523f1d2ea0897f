"""Passkey retrieval as passkey_retrivial.py: prompts, seeds, test points, exact token match."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from torch import nn

from repro.data.passkey_format import (
    FILLER, QUESTION, TASK_DESCRIPTION, garbage, garbage_length, generate_passkey_prompt, information_line,
)
from repro.evaluation.passkey import PasskeyEvaluator, passkey_points
from repro.schemas import LMEvalConfig

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


def reference_prompt(n_garbage: int, seed: int) -> tuple[str, str]:
    """The reference's recipe, written out here with NumPy's global legacy generator."""
    state = np.random.get_state()
    np.random.seed(seed)
    n_prefix = np.random.randint(0, n_garbage)
    filler = " ".join([FILLER] * 5000)
    key = np.random.randint(1, 50000)
    np.random.set_state(state)
    lines = [TASK_DESCRIPTION, filler[:n_prefix], f"The pass key is {key}. Remember it. {key} is the pass key.",
             filler[: n_garbage - n_prefix], QUESTION]
    return "\n".join(lines), str(key)


@pytest.mark.parametrize("n_garbage,seed", [(1, 0), (3072, 0), (3072, 7), (14336, 3), (119808, 9)])
def test_prompt_is_the_reference_prompt(n_garbage, seed):
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    assert generate_passkey_prompt(n_garbage, seed) == reference_prompt(n_garbage, seed)
    assert (np.random.get_state()[1] == before).all()  # the global generator is untouched


def test_prompt_pieces_and_errors():
    prompt, key = generate_passkey_prompt(500, 1)
    lines = prompt.split("\n")
    assert lines[0] == TASK_DESCRIPTION and lines[2] == information_line(key) and lines[4] == QUESTION
    assert len(lines[1]) + len(lines[3]) == 500 and 1 <= int(key) < 50000
    assert len({generate_passkey_prompt(500, k)[1] for k in range(10)}) > 5  # seeds give different keys
    assert garbage(0) == "" and garbage(len(FILLER) + 3) == FILLER + " Th"
    with pytest.raises(ValueError, match="n_garbage must be >= 1"):
        generate_passkey_prompt(0, 0)


def test_garbage_lengths_and_points_follow_the_reference():
    interval = 1000
    expected = [int(3.75 * (i + 1) * interval // 1024 * 1024) for i in range(48)]
    assert [garbage_length(i, interval) for i in range(48)] == expected
    assert passkey_points(1000, 32000) == list(range(1000, 32001, 1000))
    assert passkey_points(1000, 48500)[-1] == 48000
    ev = PasskeyEvaluator(None, LMEvalConfig(passkey_interval=64, passkey_garbage_quantum=16))
    assert ev.n_garbage(128) == int(3.75 * 128 // 16 * 16)
    with pytest.raises(ValueError, match="not a multiple of passkey_interval=64"):
        ev.n_garbage(100)


class FakeGenerator(nn.Module):
    """``generate`` appends the tokens of a string computed from the key found in the prompt."""

    def __init__(self, tokenizer, answer):
        super().__init__()
        self.tokenizer, self.answer = tokenizer, answer
        self.calls: list[dict] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, num_beams, do_sample, pad_token_id):
        self.calls.append(dict(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample,
                               prompt_len=input_ids.shape[1]))
        prompt = self.tokenizer.decode(input_ids[0].tolist())
        key = re.search(r"pass key is ((?:\d\s*)+)\.", prompt).group(1).replace(" ", "")
        new = self.tokenizer(self.answer(key), add_special_tokens=False)["input_ids"][:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([new], dtype=torch.long)], dim=1)


@pytest.mark.parametrize(
    "answer,expected",
    [
        (lambda k: k, 1.0),
        (lambda k: k[:-1] + str((int(k[-1]) + 1) % 10), 0.0),  # last digit wrong
        (lambda k: "." + k, 0.0),  # the right digits, shifted by one token: not an exact match
    ],
)
def test_accuracy_with_fake_model(word_tokenizer, answer, expected):
    cfg = LMEvalConfig(passkey_trials=4, passkey_interval=64, passkey_garbage_quantum=16)
    model = FakeGenerator(word_tokenizer, answer)
    res = PasskeyEvaluator(word_tokenizer, cfg).evaluate(model, [64, 128])
    assert res.accuracy == {64: expected, 128: expected}
    assert len(res.trials) == 8 and [t.seed for t in res.trials] == [0, 1, 2, 3] * 2
    for trial, call in zip(res.trials, model.calls):
        prompt, key = generate_passkey_prompt(trial.n_garbage, trial.seed)
        assert trial.key == key
        assert call["prompt_len"] == trial.prompt_tokens == len(word_tokenizer(prompt)["input_ids"])
        assert call["max_new_tokens"] == len(key)  # one token per digit with this tokenizer
        assert call["num_beams"] == 1 and call["do_sample"] is False
    assert res.mean_tokens[64] == sum(t.prompt_tokens for t in res.trials[:4]) // 4
    assert res.metrics()["eval/passkey_acc@128"] == expected
    assert res.rows()[1] == {"target": 128, "length": res.mean_tokens[128], "accuracy": expected}


def test_tiny_model_end_to_end(word_tokenizer, make_tiny_llama):
    model = make_tiny_llama(len(word_tokenizer), 1024).train()
    cfg = LMEvalConfig(passkey_trials=3, passkey_interval=64, passkey_garbage_quantum=16)
    ev = PasskeyEvaluator(word_tokenizer, cfg)
    res = ev.evaluate(model, ev.points(130))
    assert set(res.accuracy) == {64, 128}
    assert model.training  # the train/eval mode is restored
    for target in (64, 128):
        trials = [t for t in res.trials if t.target == target]
        assert res.accuracy[target] == sum(t.correct for t in trials) / 3
        assert all(len(t.generated.split()) <= len(t.key) for t in trials)
    assert len(res.records()) == 6 and set(res.records()[0]) >= {"target", "prompt_tokens", "key", "seed"}
