"""Passkey retrieval as LongLoRA's ``passkey_retrivial.py`` measures it (§4.2, Figure 4).

Test points lie every ``interval`` tokens up to ``max_tokens`` (``range(max_tokens // interval)``). Point
``i`` uses ``n_garbage = int(3.75 * (i + 1) * interval // 1024 * 1024)`` filler characters (the reference's
rough characters-per-token ratio), and trial ``k`` of ``num_tests`` builds its prompt with seed ``k``
(:func:`repro.data.passkey_format.generate_passkey_prompt`), so every model sees the same prompts. The
prompt is tokenised as the reference does (the tokenizer's defaults, special tokens included), the model
generates greedily exactly as many tokens as the answer has, and a trial is correct when those tokens
equal the answer's tokens one for one. A point reports its accuracy and the mean prompt length in tokens
(``total_tokens // num_tests``, the reference's x-axis).

**The answer's tokens.** The reference scores ``answer_ids = tokenizer(answer).input_ids[:, 1:]``: with
Llama's sentencepiece tokenizer the key ``"43568"`` becomes ``<s> ▁ 4 3 5 6 8`` and ``[:, 1:]`` drops only
the BOS, so the answer keeps the ``"▁"`` token, which is exactly how the space after the prompt's final
"The pass key is" is tokenised when the model continues it. A byte-level BPE (GPT-2 style, SmolLM2, the
tiny profile's tokenizer) adds no such prefix: the bare key is ``4 3 5 6 8`` while the continuation is
``Ġ 4 3 5 6 8``, so comparing with the bare key can never succeed. :func:`passkey_target_ids` therefore
takes the answer as the prompt's continuation: it tokenises ``prompt + " " + key`` with the same defaults
as the prompt and keeps the ids after the prompt's own ids. For Llama this is the reference's
``input_ids[:, 1:]``; for byte-level BPE it is the ``Ġ`` token followed by the key's tokens. The prompt's
ids must be a prefix of the full ids (a merge across the boundary would make the answer ill-defined, and
raises); ids that the tokenizer's post-processor appends after the text (an EOS or SEP) are dropped from
both, so the model reads the prompt as text to continue (Llama appends none, so there the input is the
reference's).

Beside that exact-id match (``correct``, the headline number, as the reference), each trial records a
digits match (``correct_digits``): the digits of the decoded generated text, joined, equal the key. It
tells "retrieved the key but tokenised it differently" apart from "did not retrieve the key".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from repro.data.passkey_format import garbage_length, generate_passkey_prompt
from repro.evaluation.perplexity import LMEvalConfig, autocast_context, build_lm_eval_config, model_device


@dataclass
class PasskeyTrial:
    """One passkey trial.

    Attributes:
        target: the test point (a multiple of ``interval``), in tokens.
        seed: the trial's seed (its index, as in the reference).
        n_garbage: filler characters in the prompt.
        prompt_tokens: prompt length in tokens.
        key: the key, as a string of digits.
        generated: decoded generated tokens.
        correct: whether the generated token ids equal the answer's ids (the prompt's continuation by
            ``" " + key``, see :func:`passkey_target_ids`); the reference's criterion.
        correct_digits: whether the digits of ``generated``, joined, equal ``key``.
        answer_tokens: length of the answer in tokens (the number of tokens generated).
    """

    target: int
    seed: int
    n_garbage: int
    prompt_tokens: int
    key: str
    generated: str
    correct: bool
    correct_digits: bool = False
    answer_tokens: int = 0


@dataclass
class PasskeyResult:
    """Per-test-point accuracies and mean prompt length, plus every trial's record.

    Attributes:
        accuracy: exact-id accuracy per test point (the reference's number).
        mean_tokens: mean prompt length in tokens per test point.
        trials: every trial.
        accuracy_digits: digits-match accuracy per test point (see :class:`PasskeyTrial`).
    """

    accuracy: dict[int, float]
    mean_tokens: dict[int, int]
    trials: list[PasskeyTrial]
    accuracy_digits: dict[int, float] | None = None

    def __post_init__(self) -> None:
        if self.accuracy_digits is None:
            self.accuracy_digits = _accuracy_by_target(self.trials, "correct_digits")

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat metric keys per test point: ``eval/passkey_acc@8192`` and ``eval/passkey_digits_acc@8192``."""
        out = {f"{prefix}/passkey_acc@{target}": acc for target, acc in self.accuracy.items()}
        out.update({f"{prefix}/passkey_digits_acc@{t}": acc for t, acc in self.accuracy_digits.items()})
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One row per test point: ``target``, ``length`` (mean prompt tokens, the reference's x-axis),
        ``accuracy`` (exact ids) and ``accuracy_digits``."""
        return [{"target": t, "length": self.mean_tokens[t], "accuracy": a,
                 "accuracy_digits": self.accuracy_digits.get(t, float("nan"))} for t, a in self.accuracy.items()]

    def records(self) -> list[dict[str, Any]]:
        """Trials as plain dicts (for a CSV/JSON plot file)."""
        return [asdict(t) for t in self.trials]


def _accuracy_by_target(trials: Sequence[PasskeyTrial], field: str) -> dict[int, float]:
    """Mean of the boolean ``field`` over the trials of each test point, in first-seen order."""
    hits: dict[int, list[bool]] = {}
    for t in trials:
        hits.setdefault(t.target, []).append(bool(getattr(t, field)))
    return {target: sum(v) / len(v) for target, v in hits.items()}


def _tokenizer_name(tokenizer: Any) -> str:
    name = getattr(tokenizer, "name_or_path", "") or ""
    return f"{type(tokenizer).__name__}({name!r})" if name else type(tokenizer).__name__


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    """``tokenizer(text)``'s ids without what the post-processor appends after the text (an EOS or SEP).

    The text's own ids are ``tokenizer(text, add_special_tokens=False)``; the default call places them
    after an optional prefix (Llama's BOS) and before an optional suffix. The prefix is kept, the suffix
    dropped.

    Raises:
        ValueError: if the plain ids do not occur inside the default call's ids.
    """
    full = list(tokenizer(text)["input_ids"])
    plain = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[: start + len(plain)]
    raise ValueError(
        f"tokenizer {_tokenizer_name(tokenizer)}: the ids of {text[-60:]!r} without special tokens are not a "
        "contiguous part of its ids with special tokens; cannot tell the text's ids from the added ones"
    )


def passkey_target_ids(tokenizer: Any, prompt: str, key: str) -> tuple[list[int], list[int]]:
    """The prompt's ids the model reads and the answer's ids: the continuation of the prompt by ``" " + key``.

    The reference's ``tokenizer(answer).input_ids[:, 1:]`` keeps Llama's ``"▁"`` token, i.e. the space
    between "The pass key is" and the key; tokenising ``prompt + " " + key`` and taking the ids after the
    prompt's own gives that same answer for Llama and the ``"Ġ"``-led answer a byte-level BPE emits.

    Args:
        tokenizer: a Hugging Face tokenizer (called with its defaults, as the reference does).
        prompt: the passkey prompt (ending in "The pass key is").
        key: the key, a string of digits.

    Returns:
        ``(prompt_ids, answer_ids)``: the prompt's ids (any BOS kept, any appended EOS/SEP dropped) and the
        ids that follow them in the tokenisation of ``prompt + " " + key``.

    Raises:
        ValueError: if the prompt's ids are not a prefix of the full ids (a merge across the boundary),
            or the continuation is empty; the message names the tokenizer, the prompt's end and the key.
    """
    prompt_ids = _text_ids(tokenizer, prompt)
    full_ids = _text_ids(tokenizer, f"{prompt} {key}")
    where = f"tokenizer {_tokenizer_name(tokenizer)}, prompt ending {prompt[-40:]!r}, key {key!r}"
    if full_ids[: len(prompt_ids)] != prompt_ids:
        at = next((i for i, (a, b) in enumerate(zip(prompt_ids, full_ids, strict=False)) if a != b), len(full_ids))
        raise ValueError(
            f"{where}: the prompt's {len(prompt_ids)} ids are not a prefix of the ids of prompt + ' ' + key "
            f"(they differ from position {at}: the tokens merge across the boundary), so the answer's ids "
            "are not the prompt's continuation"
        )
    answer_ids = full_ids[len(prompt_ids) :]
    if not answer_ids:
        raise ValueError(f"{where}: prompt + ' ' + key tokenises to no ids beyond the prompt's")
    return prompt_ids, answer_ids


def digits_match(generated: str, key: str) -> bool:
    """Whether the ASCII digits of ``generated``, joined, equal ``key`` (spaces and punctuation ignored)."""
    return re.sub(r"[^0-9]", "", generated) == key


def passkey_points(interval: int, max_tokens: int) -> list[int]:
    """The reference's test points ``(i + 1) * interval`` for ``i < max_tokens // interval``."""
    return [(i + 1) * int(interval) for i in range(int(max_tokens) // int(interval))]


class PasskeyEvaluator:
    """Greedy passkey retrieval accuracy at the reference's test points.

    Args:
        tokenizer: a Hugging Face tokenizer (callable, with ``decode``).
        config: evaluation settings (``passkey_*`` fields and ``bf16``).
    """

    def __init__(self, tokenizer: Any, config: LMEvalConfig | Mapping[str, Any] | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = build_lm_eval_config(config) if config is not None else LMEvalConfig()

    def points(self, max_tokens: int) -> list[int]:
        """Test points every ``passkey_interval`` tokens up to ``max_tokens``."""
        return passkey_points(self.config.passkey_interval, max_tokens)

    def n_garbage(self, target: int) -> int:
        """Filler characters for the test point ``target`` (a multiple of the interval)."""
        cfg = self.config
        interval = cfg.passkey_interval
        if target % interval:
            raise ValueError(f"passkey test point {target} is not a multiple of passkey_interval={interval}")
        return garbage_length(target // interval - 1, interval, cfg.passkey_chars_per_token,
                              cfg.passkey_garbage_quantum)

    def _pad_token_id(self, model: nn.Module) -> int:
        for owner in (self.tokenizer, getattr(model, "generation_config", None), getattr(model, "config", None)):
            for name in ("pad_token_id", "eos_token_id"):
                value = getattr(owner, name, None)
                if isinstance(value, (list, tuple)):
                    value = value[0] if value else None
                if value is not None:
                    return int(value)
        return 0

    def trial(self, model: nn.Module, target: int, seed: int, device: torch.device, pad_id: int) -> PasskeyTrial:
        """One trial: the seeded prompt, greedy generation of the answer's length, exact id match.

        The answer is the prompt's continuation by ``" " + key`` (:func:`passkey_target_ids`).
        """
        n_garbage = self.n_garbage(target)
        prompt, key = generate_passkey_prompt(n_garbage, seed)
        ids, answer_ids = passkey_target_ids(self.tokenizer, prompt, key)
        quantum = self.config.passkey_garbage_quantum
        while self.config.passkey_fit and len(ids) + len(answer_ids) > target and n_garbage > quantum:
            n_garbage -= quantum  # passkey_fit: the whole prompt and its answer within the test point
            prompt, key = generate_passkey_prompt(n_garbage, seed)
            ids, answer_ids = passkey_target_ids(self.tokenizer, prompt, key)
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)  # [1, T]
        with torch.inference_mode(), autocast_context(device, self.config.bf16):
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 max_new_tokens=len(answer_ids), num_beams=1, do_sample=False,
                                 pad_token_id=pad_id)  # [1, T + len(answer)]
        new = out[0, len(ids) :].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return PasskeyTrial(target, seed, n_garbage, len(ids), key, text, correct=new == answer_ids,
                            correct_digits=digits_match(text, key), answer_tokens=len(answer_ids))

    def evaluate(self, model: nn.Module, targets: Sequence[int]) -> PasskeyResult:
        """Run ``passkey_trials`` trials (seeds ``0..trials-1``) at each test point in ``targets``."""
        cfg = self.config
        device = model_device(model)
        pad_id = self._pad_token_id(model)
        was_training = model.training
        model.eval()
        records: list[PasskeyTrial] = []
        accuracy: dict[int, float] = {}
        accuracy_digits: dict[int, float] = {}
        mean_tokens: dict[int, int] = {}
        try:
            for target in (int(t) for t in targets):
                trials = [self.trial(model, target, k, device, pad_id) for k in range(cfg.passkey_trials)]
                records += trials
                accuracy[target] = sum(t.correct for t in trials) / cfg.passkey_trials
                accuracy_digits[target] = sum(t.correct_digits for t in trials) / cfg.passkey_trials
                mean_tokens[target] = sum(t.prompt_tokens for t in trials) // cfg.passkey_trials
        finally:
            model.train(was_training)
        return PasskeyResult(accuracy=accuracy, mean_tokens=mean_tokens, trials=records,
                             accuracy_digits=accuracy_digits)


def build_passkey_evaluator(tokenizer: Any, config: LMEvalConfig | Mapping[str, Any] | None = None) -> PasskeyEvaluator:
    """Factory for :class:`PasskeyEvaluator`."""
    return PasskeyEvaluator(tokenizer, config)
