"""Passkey retrieval (LongLoRA §4.2, Figure 4; prompt format of Mohtashami & Jaggi, 2023).

For each target length the evaluator runs ``trials`` seeded trials. A trial draws a random 5-digit
key and an insertion position from a generator seeded by ``(passkey_seed, length)``, so keys and
positions depend on the seed and the length only, never on the model. The number of filler
sentences is chosen once per length by a search with the actual tokenizer: the largest count whose
prompt is at most the target length in tokens. The model completes the prompt greedily and a trial
is correct when the first run of digits in the generated text (whitespace removed) equals the key.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from repro.data.passkey_format import build_passkey_prompt
from repro.evaluation.perplexity import LMEvalConfig, autocast_context, build_lm_eval_config, model_device

_PROBE_KEY = "00000"


@dataclass
class PasskeyTrial:
    """One passkey trial.

    Attributes:
        length: target prompt length in tokens.
        prompt_tokens: actual prompt length in tokens (<= ``length``).
        n_filler: filler sentences in the prompt.
        key: the 5-digit key.
        position: fillers placed before the key line.
        generated: decoded new tokens.
        correct: whether the first run of digits in ``generated`` equals ``key``.
    """

    length: int
    prompt_tokens: int
    n_filler: int
    key: str
    position: int
    generated: str
    correct: bool


@dataclass
class PasskeyResult:
    """Per-length accuracy plus every trial's record."""

    accuracy: dict[int, float]
    trials: list[PasskeyTrial]

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat metric keys, e.g. ``eval/passkey_acc@8192``."""
        return {f"{prefix}/passkey_acc@{length}": acc for length, acc in self.accuracy.items()}

    def records(self) -> list[dict[str, Any]]:
        """Trials as plain dicts (for a CSV/JSON plot file)."""
        return [asdict(t) for t in self.trials]


def passkey_is_correct(generated: str, key: str) -> bool:
    """True when the first run of digits in ``generated``, whitespace removed, equals ``key``."""
    match = re.search(r"\d+", re.sub(r"\s+", "", generated))
    return match is not None and match.group(0) == key


def draw_trials(seed: int, length: int, trials: int, n_filler: int) -> list[tuple[str, int]]:
    """Seeded ``(key, position)`` pairs for one length.

    Keys are uniform over 10000..99999 (always five digits); positions over ``0..n_filler``.
    The generator is seeded by ``(seed, length)`` so each length gets its own reproducible draws.
    """
    rng = np.random.default_rng([int(seed), int(length)])
    return [(str(int(rng.integers(10_000, 100_000))), int(rng.integers(0, n_filler + 1))) for _ in range(trials)]


class PasskeyEvaluator:
    """Greedy passkey retrieval accuracy at several prompt lengths.

    Args:
        tokenizer: a Hugging Face tokenizer (callable, with ``decode``); its special tokens count
            towards the prompt length, since the model sees them.
        config: evaluation settings (``passkey_*`` fields and ``bf16``).
    """

    def __init__(self, tokenizer: Any, config: LMEvalConfig | Mapping[str, Any] | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = build_lm_eval_config(config) if config is not None else LMEvalConfig()

    def count_tokens(self, text: str) -> int:
        """Number of token ids the tokenizer produces for ``text`` (special tokens included)."""
        return len(self.tokenizer(text)["input_ids"])

    def filler_count(self, length: int) -> int:
        """Largest filler count whose prompt has at most ``length`` tokens (exponential + binary search).

        Raises:
            ValueError: if even a prompt without filler exceeds ``length``.
        """
        fits = lambda n: self.count_tokens(build_passkey_prompt(_PROBE_KEY, n, 0)) <= length  # noqa: E731
        if not fits(0):
            need = self.count_tokens(build_passkey_prompt(_PROBE_KEY, 0, 0))
            raise ValueError(f"passkey length {length} is too short: the prompt without filler has {need} tokens")
        lo, hi = 0, 1  # invariant: fits(lo) and, after the doubling, not fits(hi)
        while fits(hi):
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo

    def _prompt_ids(self, key: str, n_filler: int, position: int, length: int) -> tuple[list[int], int]:
        """Token ids of the trial's prompt, dropping fillers if this key tokenises longer than the probe."""
        while True:
            ids = list(self.tokenizer(build_passkey_prompt(key, n_filler, min(position, n_filler)))["input_ids"])
            if len(ids) <= length or n_filler == 0:
                return ids, n_filler
            n_filler -= 1

    def _pad_token_id(self, model: nn.Module) -> int:
        for owner in (self.tokenizer, getattr(model, "generation_config", None), getattr(model, "config", None)):
            for name in ("pad_token_id", "eos_token_id"):
                value = getattr(owner, name, None)
                if isinstance(value, (list, tuple)):
                    value = value[0] if value else None
                if value is not None:
                    return int(value)
        return 0

    def evaluate(self, model: nn.Module, lengths: Sequence[int] | None = None) -> PasskeyResult:
        """Run all trials at each length (default: ``config.passkey_lengths``).

        Each trial is one greedy ``model.generate`` call (``do_sample=False``) of
        ``passkey_max_new_tokens`` tokens; trials are looped, so no padding enters the prompt.
        """
        cfg = self.config
        lengths = cfg.passkey_lengths if lengths is None else lengths
        device = model_device(model)
        pad_id = self._pad_token_id(model)
        was_training = model.training
        model.eval()
        records: list[PasskeyTrial] = []
        accuracy: dict[int, float] = {}
        try:
            for length in (int(v) for v in lengths):
                n_filler = self.filler_count(length)
                correct = 0
                for key, position in draw_trials(cfg.passkey_seed, length, cfg.passkey_trials, n_filler):
                    ids, used_filler = self._prompt_ids(key, n_filler, position, length)
                    input_ids = torch.tensor([ids], dtype=torch.long, device=device)  # [1, T]
                    with torch.inference_mode(), autocast_context(device, cfg.bf16):
                        out = model.generate(
                            input_ids=input_ids,
                            attention_mask=torch.ones_like(input_ids),
                            max_new_tokens=cfg.passkey_max_new_tokens,
                            do_sample=False,
                            pad_token_id=pad_id,
                        )  # [1, T + new]
                    text = self.tokenizer.decode(out[0, len(ids) :].tolist(), skip_special_tokens=True)
                    ok = passkey_is_correct(text, key)
                    correct += int(ok)
                    records.append(
                        PasskeyTrial(length, len(ids), used_filler, key, min(position, used_filler), text, ok)
                    )
                accuracy[length] = correct / cfg.passkey_trials
        finally:
            model.train(was_training)
        return PasskeyResult(accuracy=accuracy, trials=records)


def build_passkey_evaluator(tokenizer: Any, config: LMEvalConfig | Mapping[str, Any] | None = None) -> PasskeyEvaluator:
    """Factory for :class:`PasskeyEvaluator`."""
    return PasskeyEvaluator(tokenizer, config)
