"""Sliding-window perplexity for long-context causal LMs (LongLoRA §4.1, Tables 2-6, Figure 5).

Two protocols are computed from one forward pass per window:

* ``ppl`` is exactly the number LongLoRA's ``eval.py`` prints. For an evaluation length ``L`` and a
  stride ``S`` (256 there) the window starts are ``range(0, N - L, S)`` with the last start dropped
  (``all_ix.pop()``). Window ``i`` is ``x = tokens[i : i+L]``, scored as ``model(input_ids=x, labels=x)``:
  the model shifts the labels, so each window scores its ``L - 1`` targets ``x[1:]``. A window's loss is
  the mean NLL of those targets and ``ppl = exp(mean of the window losses)``. (eval.py appends one loss
  per batch of windows and raises 2.71828 to the power; with ``batch_size=1``, or a batch size that
  divides the window count, the mean of batch means is the mean of window means, and 2.71828 differs
  from ``e`` by under 1e-6 relative.)
* ``ppl_newest`` is the strided perplexity of Press et al. (2021) as the Hugging Face perplexity guide
  computes it: windows begin at ``0, S, 2S, ...`` and end at ``min(begin + L, N)``, stopping after the
  first window that reaches the end of the stream (so the final window may be partial). Each window
  scores only the targets that no earlier window scored, so for ``S < L`` every token of the stream
  after the first is scored exactly once, the tail after the last full window included, each with up
  to ``L - 1`` tokens of context, and ``ppl_newest = exp(sum NLL / (N - 1))``. (For ``S >= L`` a
  window's first token has no prefix inside it and goes unscored, as in the guide.)

With ``max_windows`` set, both window lists are thinned to an evenly spaced subset (first and last
kept) and the Press variant then scores, per kept window, the targets no earlier kept window scored.

The model is used as given (switching S2-Attn back to full attention for evaluation, as the paper
does, is the caller's job). Logits are never materialised for a whole batch in float32: the
decoder's hidden states go through the LM head in chunks along the sequence, and only models
without a separable decoder/head fall back to ``model(...).logits``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from repro.schemas import LMEvalConfig


def build_lm_eval_config(cfg: Mapping[str, Any] | LMEvalConfig) -> LMEvalConfig:
    """Build an :class:`LMEvalConfig` from a mapping (e.g. a DictConfig), rejecting unknown keys."""
    if isinstance(cfg, LMEvalConfig):
        return cfg
    known = {f.name for f in fields(LMEvalConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise KeyError(f"unknown key(s) in longlora.eval: {unknown}; expected a subset of {sorted(known)}")
    kwargs = {k: (list(v) if k in ("lengths", "extend_lengths") else v) for k, v in cfg.items()}
    return LMEvalConfig(**kwargs)


@dataclass
class PerplexityResult:
    """Perplexity at one evaluation length.

    Attributes:
        length: evaluation length ``L``.
        stride: window stride ``S``.
        ppl: ``exp(loss)``, eval.py's number.
        loss: mean over eval.py's windows of each window's mean NLL over its ``L - 1`` targets (nats).
        n_windows: eval.py windows evaluated (after the pop and any ``max_windows`` cap).
        n_tokens_scored: ``n_windows * (L - 1)``.
        tokens_per_s: input tokens forwarded per second of wall time (both protocols' windows).
        ppl_newest: ``exp(loss_newest)``, the Press et al. / HF-guide strided perplexity.
        loss_newest: summed NLL of the Press windows' new targets divided by ``n_tokens_newest``.
        n_tokens_newest: targets the Press variant scored (``N - 1`` without a cap).
        n_windows_newest: Press windows evaluated, the final partial one included.
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
    n_windows_newest: int

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
    """eval.py's window starts: ``range(0, n_tokens - length, stride)`` with the last one dropped.

    LongLoRA's ``get_as_batch`` builds ``all_ix = list(range(0, len(data) - seq_length, sliding_window))``
    and then calls ``all_ix.pop()``, so the last start of the range is never evaluated.

    Raises:
        ValueError: if fewer than two starts exist (nothing would be left after the pop).
    """
    starts = list(range(0, n_tokens - length, stride))
    if len(starts) < 2:
        need = length + stride + 1
        raise ValueError(f"eval set has {n_tokens} tokens, needs at least {need} for L={length}, stride={stride} "
                         "(eval.py drops the last of range(0, N - L, stride), so two starts are needed)")
    starts.pop()
    return starts


def press_window_spans(n_tokens: int, length: int, stride: int) -> list[tuple[int, int]]:
    """``(begin, end)`` of each window of the Hugging Face perplexity guide (Press et al., 2021).

    Windows begin at ``0, S, 2S, ...`` and end at ``min(begin + L, N)``; the loop stops after the first
    window that reaches the end of the stream, so the final window may be shorter than ``L``.
    """
    if n_tokens < 2:
        raise ValueError(f"eval set has {n_tokens} tokens, needs at least 2")
    spans = []
    for begin in range(0, n_tokens, stride):
        end = min(begin + length, n_tokens)
        spans.append((begin, end))
        if end == n_tokens:
            break
    return spans


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


def token_nll(model: nn.Module, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Per-token negative log-likelihood of ``x[:, 1:]`` given the prefixes (``labels=x`` in Hugging Face).

    Position ``j`` of the result is ``-log p(x[:, j + 1] | x[:, :j + 1])``, the same targets that
    ``model(input_ids=x, labels=x).loss`` averages over (the model shifts the labels internally).

    Args:
        model: causal LM; called as ``model(input_ids=x)``.
        x: [B, T] input ids, T >= 2.
        chunk_size: positions per chunk through the LM head.

    Returns:
        [B, T - 1] float32 NLL.
    """
    y = x[:, 1:]  # [B, T-1] targets
    parts = _decoder_and_head(model)
    if parts is not None:
        decoder, head = parts
        hidden = decoder(input_ids=x, use_cache=False).last_hidden_state[:, :-1]  # [B, T-1, H]
        logits_of = lambda lo, hi: head(hidden[:, lo:hi])  # noqa: E731  [B, c, V]
    else:
        full = model(input_ids=x).logits[:, :-1]  # [B, T-1, V] (fallback: no separable head)
        logits_of = lambda lo, hi: full[:, lo:hi]  # noqa: E731
    out = []
    for lo in range(0, y.shape[1], chunk_size):
        hi = min(lo + chunk_size, y.shape[1])
        logits = logits_of(lo, hi).float()  # [B, c, V]
        nll = F.cross_entropy(logits.flatten(0, 1), y[:, lo:hi].flatten(), reduction="none")  # [B*c]
        out.append(nll.view(x.shape[0], hi - lo))  # [B, c]
    return torch.cat(out, dim=1)  # [B, T-1]


def press_scored_ranges(spans: Sequence[tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """Stream positions each Press window scores: ``begin -> [max(previous end, begin + 1), end)``.

    Mirrors the guide's ``trg_len = end_loc - prev_end_loc`` with ``labels[:, :-trg_len] = -100``: a window
    scores only targets no earlier window scored, and the first token of a window (no prefix) never.
    """
    out, prev_end = {}, 0
    for begin, end in spans:
        out[begin] = (max(prev_end, begin + 1), end)
        prev_end = end
    return out


class PerplexityEvaluator:
    """Sliding-window perplexity over one token stream, at one or several lengths.

    Args:
        config: evaluation settings (``stride``, ``batch_size``, ``max_windows``, ``ce_chunk_size``, ``precision``).
    """

    def __init__(self, config: LMEvalConfig | Mapping[str, Any] | None = None) -> None:
        self.config = build_lm_eval_config(config) if config is not None else LMEvalConfig()

    def windows(self, n_tokens: int, length: int) -> tuple[list[int], list[tuple[int, int]]]:
        """eval.py's starts and the Press spans, both thinned evenly by ``max_windows`` when it is set."""
        cfg = self.config
        starts = select_windows(window_starts(n_tokens, length, cfg.stride), cfg.max_windows)
        spans = press_window_spans(n_tokens, length, cfg.stride)
        if cfg.max_windows:
            picked = set(select_windows([b for b, _ in spans], cfg.max_windows))
            spans = [s for s in spans if s[0] in picked]
        return starts, spans

    def _forward_groups(self, tokens: torch.Tensor, begins: list[int], ends: dict[int, int]
                        ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Yield ``(begins, x)`` batches of equal-length windows, x [b, T]."""
        by_len: dict[int, list[int]] = {}
        for b in begins:
            by_len.setdefault(ends[b] - b, []).append(b)
        for size, group in sorted(by_len.items(), reverse=True):
            for k in range(0, len(group), self.config.batch_size):
                chunk = group[k : k + self.config.batch_size]
                yield chunk, torch.stack([tokens[b : b + size] for b in chunk])  # [b, T]

    def evaluate(self, model: nn.Module, tokens: torch.Tensor | Sequence[int], length: int,
                 press: bool = True) -> PerplexityResult:
        """Perplexity of ``model`` on ``tokens`` at evaluation length ``length``, under both protocols.

        Every window is forwarded once and serves both protocols: eval.py's windows (all of length
        ``L``) and the Press windows (the same starts, plus the start eval.py pops and the final,
        possibly shorter, window).

        Args:
            model: causal LM returning ``.logits`` (or exposing a decoder and LM head).
            tokens: 1-D token stream (tensor, array or list of ints).
            length: evaluation length ``L``.
            press: also compute the Press variant. ``False`` forwards eval.py's windows only (all of
                length ``L``), as testing with S2-Attn needs (its groups must divide the length);
                ``ppl_newest`` is then NaN.

        Raises:
            ValueError: if the stream is too short for two eval.py windows or not one-dimensional.
        """
        cfg = self.config
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-D stream, got shape {tuple(tokens.shape)}")
        if length < 2:
            raise ValueError(f"evaluation length must be >= 2 (one target), got {length}")
        n = tokens.numel()
        starts, spans = self.windows(n, length)
        spans = spans if press else []
        ranges = press_scored_ranges(spans)
        ref = set(starts)
        ends = {b: b + length for b in starts} | dict(spans)
        device = model_device(model)
        was_training = model.training
        model.eval()
        window_losses: list[float] = []
        newest_sum, newest_count, forwarded = 0.0, 0, 0
        t0 = time.perf_counter()
        try:
            with torch.inference_mode(), autocast_context(device, cfg.bf16):
                for begins, x in self._forward_groups(tokens, sorted(ends), ends):
                    nll = token_nll(model, x.to(device), cfg.ce_chunk_size).double().cpu()  # [b, T-1]
                    forwarded += x.numel()
                    for row, b in enumerate(begins):
                        if b in ref:  # eval.py: labels=x, the mean over the window's L-1 targets
                            window_losses.append(float(nll[row].mean()))
                        if b in ranges:  # target j of the window is stream position b + j + 1
                            lo, hi = ranges[b]
                            part = nll[row, max(lo - b - 1, 0) : max(hi - b - 1, 0)]
                            newest_sum += float(part.sum())
                            newest_count += part.numel()
        finally:
            model.train(was_training)
        elapsed = max(time.perf_counter() - t0, 1e-9)
        loss = sum(window_losses) / len(window_losses)
        loss_newest = newest_sum / newest_count if newest_count else math.nan
        return PerplexityResult(
            length=length,
            stride=cfg.stride,
            ppl=math.exp(loss),
            loss=loss,
            n_windows=len(starts),
            n_tokens_scored=len(starts) * (length - 1),
            tokens_per_s=forwarded / elapsed,
            ppl_newest=math.exp(loss_newest),
            loss_newest=loss_newest,
            n_tokens_newest=newest_count,
            n_windows_newest=len(spans),
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
