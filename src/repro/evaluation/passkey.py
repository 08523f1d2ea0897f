"""Passkey retrieval as LongLoRA's ``passkey_retrivial.py`` measures it (§4.2, Figure 4).

Test points lie every ``interval`` tokens up to ``max_tokens`` (``range(max_tokens // interval)``). Point
``i`` uses ``n_garbage = int(3.75 * (i + 1) * interval // 1024 * 1024)`` filler characters (the reference's
rough characters-per-token ratio), and trial ``k`` of ``num_tests`` builds its prompt with seed ``k``
(:func:`repro.data.passkey_format.generate_passkey_prompt`), so every model sees the same prompts. The
prompt is tokenised as the reference does (the tokenizer's special tokens included), the key alone
without special tokens (the reference's ``input_ids[:, 1:]`` drops Llama's BOS), the model generates
greedily exactly as many tokens as the key has, and a trial is correct when those tokens equal the key's
tokens one for one. A point reports its accuracy and the mean prompt length in tokens
(``total_tokens // num_tests``, the reference's x-axis).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

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
        correct: whether the generated token ids equal the key's token ids.
    """

    target: int
    seed: int
    n_garbage: int
    prompt_tokens: int
    key: str
    generated: str
    correct: bool


@dataclass
class PasskeyResult:
    """Per-test-point accuracy and mean prompt length, plus every trial's record."""

    accuracy: dict[int, float]
    mean_tokens: dict[int, int]
    trials: list[PasskeyTrial]

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat metric keys, e.g. ``eval/passkey_acc@8192`` (keyed by the test point)."""
        return {f"{prefix}/passkey_acc@{target}": acc for target, acc in self.accuracy.items()}

    def rows(self) -> list[dict[str, Any]]:
        """One row per test point: ``target``, ``length`` (mean prompt tokens, the reference's x-axis), ``accuracy``."""
        return [{"target": t, "length": self.mean_tokens[t], "accuracy": a} for t, a in self.accuracy.items()]

    def records(self) -> list[dict[str, Any]]:
        """Trials as plain dicts (for a CSV/JSON plot file)."""
        return [asdict(t) for t in self.trials]


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
        """One trial: the seeded prompt, greedy generation of the key's length, exact token match."""
        n_garbage = self.n_garbage(target)
        prompt, key = generate_passkey_prompt(n_garbage, seed)
        ids = list(self.tokenizer(prompt)["input_ids"])
        key_ids = list(self.tokenizer(key, add_special_tokens=False)["input_ids"])
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)  # [1, T]
        with torch.inference_mode(), autocast_context(device, self.config.bf16):
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 max_new_tokens=len(key_ids), num_beams=1, do_sample=False,
                                 pad_token_id=pad_id)  # [1, T + len(key)]
        new = out[0, len(ids) :].tolist()
        correct = new == key_ids
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return PasskeyTrial(target, seed, n_garbage, len(ids), key, text, correct)

    def evaluate(self, model: nn.Module, targets: Sequence[int]) -> PasskeyResult:
        """Run ``passkey_trials`` trials (seeds ``0..trials-1``) at each test point in ``targets``."""
        cfg = self.config
        device = model_device(model)
        pad_id = self._pad_token_id(model)
        was_training = model.training
        model.eval()
        records: list[PasskeyTrial] = []
        accuracy: dict[int, float] = {}
        mean_tokens: dict[int, int] = {}
        try:
            for target in (int(t) for t in targets):
                trials = [self.trial(model, target, k, device, pad_id) for k in range(cfg.passkey_trials)]
                records += trials
                accuracy[target] = sum(t.correct for t in trials) / cfg.passkey_trials
                mean_tokens[target] = sum(t.prompt_tokens for t in trials) // cfg.passkey_trials
        finally:
            model.train(was_training)
        return PasskeyResult(accuracy=accuracy, mean_tokens=mean_tokens, trials=records)


def build_passkey_evaluator(tokenizer: Any, config: LMEvalConfig | Mapping[str, Any] | None = None) -> PasskeyEvaluator:
    """Factory for :class:`PasskeyEvaluator`."""
    return PasskeyEvaluator(tokenizer, config)
