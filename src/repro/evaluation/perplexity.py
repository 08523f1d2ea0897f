"""Sliding-window perplexity for long-context causal LMs (LongLoRA §4.1, Tables 3-5).

The main metric mirrors ``eval.py`` of the LongLoRA reference repository: for an evaluation length
``L`` and a stride ``S`` (256 there), window ``i`` feeds ``x = tokens[i : i+L]`` and is scored
against ``y = tokens[i+1 : i+L+1]`` for every start ``i`` in ``range(0, len(tokens) - L, S)``.
Every position of a window is scored, a window's loss is its mean token cross-entropy, and the
perplexity is ``exp(mean of window losses)``. Two details differ from the reference script and
are deliberate: the reference drops the last start index (``all_ix.pop()``) although that window
fits, and it passes ``labels=x`` so the model's internal shift scores ``L - 1`` tokens; here every
start of the range is kept and all ``L`` targets of ``y`` are scored, as the window definition says.

A second number is reported under separate keys (``ppl_newest``): the strided evaluation of Press
et al. (2021) as in the Hugging Face perplexity guide, in which the first window scores all its
tokens and each later window only the tokens no earlier window scored (its last ``S``), and the
perplexity is ``exp(sum NLL / count)`` over those tokens. Both numbers come from one forward pass
per window.

The model is used as given (switching S2-Attn back to full attention for evaluation, as the paper
does, is the caller's job). Logits are never materialised for a whole batch in float32: the
decoder's hidden states go through the LM head in chunks along the sequence, and only models
without a separable decoder/head fall back to ``model(...).logits``.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LMEvalConfig:
    """Long-context evaluation settings (``longlora.eval`` in params.yaml).

    Attributes:
        lengths: evaluation context lengths for perplexity (LongLoRA Table 3 uses 2048..target).
        stride: sliding-window stride ``S`` (256 in LongLoRA's eval.py).
        batch_size: windows per forward pass.
        max_windows: cap on windows per length; ``0`` means no cap. A cap keeps an evenly spaced,
            deterministic subset (see :func:`select_windows`), so CPU runs stay affordable.
        ce_chunk_size: sequence positions per chunk when applying the LM head and cross-entropy.
        bf16: use bf16 autocast; honoured only when the model sits on a CUDA device.
        passkey_lengths: target prompt lengths (tokens) for passkey retrieval (LongLoRA §4.2).
        passkey_trials: seeded trials per passkey length.
        passkey_seed: seed of the key/position generator (independent of the model).
        passkey_max_new_tokens: greedy tokens generated per trial (the key's digits + 1 at least).
    """

    lengths: list[int] = field(default_factory=lambda: [2048, 4096, 8192])
    stride: int = 256
    batch_size: int = 1
    max_windows: int = 0
    ce_chunk_size: int = 1024
    bf16: bool = True
    passkey_lengths: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192])
    passkey_trials: int = 10
    passkey_seed: int = 0
    passkey_max_new_tokens: int = 8

    def __post_init__(self) -> None:
        for name in ("stride", "batch_size", "ce_chunk_size", "passkey_trials", "passkey_max_new_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"longlora.eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_windows is None:
            self.max_windows = 0
        if int(self.max_windows) < 0:
            raise ValueError(f"longlora.eval.max_windows must be >= 0 (0 = no cap), got {self.max_windows}")
        for name in ("lengths", "passkey_lengths"):
            bad = [v for v in getattr(self, name) if int(v) < 1]
            if bad:
                raise ValueError(f"longlora.eval.{name} must hold positive lengths, got {bad}")


def build_lm_eval_config(cfg: Mapping[str, Any] | LMEvalConfig) -> LMEvalConfig:
    """Build an :class:`LMEvalConfig` from a mapping (e.g. a DictConfig), rejecting unknown keys."""
    if isinstance(cfg, LMEvalConfig):
        return cfg
    known = {f.name for f in fields(LMEvalConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise KeyError(f"unknown key(s) in longlora.eval: {unknown}; expected a subset of {sorted(known)}")
    kwargs = {k: (list(v) if k in ("lengths", "passkey_lengths") else v) for k, v in cfg.items()}
    return LMEvalConfig(**kwargs)


@dataclass
class PerplexityResult:
    """Perplexity at one evaluation length.

    Attributes:
        length: evaluation length ``L``.
        stride: window stride ``S``.
        ppl: ``exp(loss)``, LongLoRA's metric.
        loss: mean over windows of each window's mean token cross-entropy (nats).
        n_windows: windows evaluated (after any ``max_windows`` cap).
        n_tokens_scored: ``n_windows * L`` (every position of every window).
        tokens_per_s: input tokens forwarded per second of wall time.
        ppl_newest: ``exp(loss_newest)``, the Press et al. / HF-guide strided perplexity.
        loss_newest: summed NLL of the newest tokens divided by ``n_tokens_newest``.
        n_tokens_newest: tokens scored by the newest-tokens variant.
    """

    length: int
    stride: int
    ppl: float
    loss: float
    n_windows: int
    n_tokens_scored: int
    tokens_per_s: float
    ppl_newest: float
    loss_newest: float
    n_tokens_newest: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict of all fields."""
        return asdict(self)

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat metric keys in the project's style, e.g. ``eval/ppl@8192``."""
        at = f"@{self.length}"
        return {
            f"{prefix}/ppl{at}": self.ppl,
            f"{prefix}/loss{at}": self.loss,
            f"{prefix}/ppl_newest{at}": self.ppl_newest,
            f"{prefix}/tokens_per_s{at}": self.tokens_per_s,
        }


def window_starts(n_tokens: int, length: int, stride: int) -> list[int]:
    """Start indices ``range(0, n_tokens - length, stride)`` (LongLoRA eval.py, without the pop).

    Raises:
        ValueError: if the stream has fewer than ``length + 1`` tokens.
    """
    if n_tokens < length + 1:
        raise ValueError(f"eval set has {n_tokens} tokens, needs at least L+1 = {length + 1} for L={length}")
    return list(range(0, n_tokens - length, stride))


def select_windows(starts: Sequence[int], max_windows: int) -> list[int]:
    """Evenly spaced, deterministic subset of ``starts`` of size ``max_windows`` (0 = keep all).

    Picks positions ``j * (n - 1) // (k - 1)`` for ``j = 0..k-1``: the first and last windows are
    always kept and, because the spacing is at least one, no window is picked twice.
    """
    n, k = len(starts), int(max_windows)
    if k <= 0 or k >= n:
        return list(starts)
    if k == 1:
        return [starts[0]]
    return [starts[j * (n - 1) // (k - 1)] for j in range(k)]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for parameter-free modules)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def autocast_context(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked for, a no-op everywhere else."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """The (decoder, lm_head) pair when logits are exactly ``lm_head(decoder(x).last_hidden_state)``.

    Unwraps peft models (LoRA layers are injected in place, so the pieces still carry them). Models
    whose config rescales or soft-caps logits return ``None`` and use the plain forward instead.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_decoder = getattr(inner, "get_decoder", None)
    get_head = getattr(inner, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return None
    try:
        decoder, head = get_decoder(), get_head()
    except (AttributeError, NotImplementedError):
        return None
    config = getattr(inner, "config", None)
    if any(getattr(config, k, None) not in (None, 1, 1.0) for k in ("final_logit_softcapping", "logit_scale")):
        return None
    if decoder is None or decoder is inner or not isinstance(head, nn.Linear):
        return None
    return decoder, head


def token_nll(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Per-token negative log-likelihood of targets ``y`` given inputs ``x``.

    Args:
        model: causal LM; called as ``model(input_ids=x)``.
        x: [B, L] input ids.
        y: [B, L] target ids (``x`` shifted left by one in the stream).
        chunk_size: positions per chunk through the LM head.

    Returns:
        [B, L] float32 NLL.
    """
    parts = _decoder_and_head(model)
    if parts is not None:
        decoder, head = parts
        hidden = decoder(input_ids=x, use_cache=False).last_hidden_state  # [B, L, H]
        logits_of = lambda lo, hi: head(hidden[:, lo:hi])  # noqa: E731  [B, c, V]
    else:
        full = model(input_ids=x).logits  # [B, L, V] (fallback: no separable head)
        logits_of = lambda lo, hi: full[:, lo:hi]  # noqa: E731
    out = []
    for lo in range(0, x.shape[1], chunk_size):
        hi = min(lo + chunk_size, x.shape[1])
        logits = logits_of(lo, hi).float()  # [B, c, V]
        nll = F.cross_entropy(logits.flatten(0, 1), y[:, lo:hi].flatten(), reduction="none")  # [B*c]
        out.append(nll.view(x.shape[0], hi - lo))  # [B, c]
    return torch.cat(out, dim=1)  # [B, L]


class PerplexityEvaluator:
    """Sliding-window perplexity over one token stream, at one or several lengths.

    Args:
        config: evaluation settings (``stride``, ``batch_size``, ``max_windows``, ``ce_chunk_size``, ``bf16``).
    """

    def __init__(self, config: LMEvalConfig | Mapping[str, Any] | None = None) -> None:
        self.config = build_lm_eval_config(config) if config is not None else LMEvalConfig()

    def _batches(self, tokens: torch.Tensor, starts: list[int], length: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches of windows, each [b, L]."""
        bs = self.config.batch_size
        for k in range(0, len(starts), bs):
            chunk = starts[k : k + bs]
            x = torch.stack([tokens[i : i + length] for i in chunk])  # [b, L]
            y = torch.stack([tokens[i + 1 : i + length + 1] for i in chunk])  # [b, L]
            yield x, y

    def evaluate(self, model: nn.Module, tokens: torch.Tensor | Sequence[int], length: int) -> PerplexityResult:
        """Perplexity of ``model`` on ``tokens`` at evaluation length ``length``.

        Args:
            model: causal LM returning ``.logits`` (or exposing a decoder and LM head).
            tokens: 1-D token stream (tensor, array or list of ints).
            length: evaluation length ``L``.

        Raises:
            ValueError: if the stream is shorter than ``L + 1`` tokens or not one-dimensional.
        """
        cfg = self.config
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-D stream, got shape {tuple(tokens.shape)}")
        starts = select_windows(window_starts(tokens.numel(), length, cfg.stride), cfg.max_windows)
        device = model_device(model)
        was_training = model.training
        model.eval()
        window_losses: list[torch.Tensor] = []
        newest_sum, newest_count, prev_start = 0.0, 0, None
        t0 = time.perf_counter()
        try:
            with torch.inference_mode(), autocast_context(device, cfg.bf16):
                for b, (x, y) in enumerate(self._batches(tokens, starts, length)):
                    nll = token_nll(model, x.to(device), y.to(device), cfg.ce_chunk_size).double().cpu()  # [b, L]
                    window_losses.append(nll.mean(dim=1))  # [b]
                    for row, start in enumerate(starts[b * cfg.batch_size : b * cfg.batch_size + x.shape[0]]):
                        # Tokens no earlier (selected) window scored: all for the first, else the last min(gap, L).
                        new = length if prev_start is None else min(start - prev_start, length)
                        newest_sum += float(nll[row, length - new :].sum())
                        newest_count += new
                        prev_start = start
        finally:
            model.train(was_training)
        elapsed = max(time.perf_counter() - t0, 1e-9)
        loss = float(torch.cat(window_losses).mean())
        loss_newest = newest_sum / newest_count
        return PerplexityResult(
            length=length,
            stride=cfg.stride,
            ppl=math.exp(loss),
            loss=loss,
            n_windows=len(starts),
            n_tokens_scored=len(starts) * length,
            tokens_per_s=len(starts) * length / elapsed,
            ppl_newest=math.exp(loss_newest),
            loss_newest=loss_newest,
            n_tokens_newest=newest_count,
        )

    def evaluate_lengths(
        self, model: nn.Module, tokens: torch.Tensor | Sequence[int], lengths: Sequence[int] | None = None
    ) -> list[PerplexityResult]:
        """:meth:`evaluate` at each of ``lengths`` (default: ``config.lengths``), in order."""
        lengths = self.config.lengths if lengths is None else lengths
        return [self.evaluate(model, tokens, int(length)) for length in lengths]


def build_perplexity_evaluator(config: LMEvalConfig | Mapping[str, Any] | None = None) -> PerplexityEvaluator:
    """Factory for :class:`PerplexityEvaluator` from a config object or mapping."""
    return PerplexityEvaluator(config)
