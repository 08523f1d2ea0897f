"""Values derived from the config, computed in one place and without torch.

The composed config states what the papers state (a target context, a group-size ratio, evaluation
lengths); the numbers the code runs with follow from them by the rules below. They are pure
functions so that :mod:`repro.check` can verify a config before any stage runs (``dvc repro``
deletes a stage's outputs before its command starts) and the report can restate them, with the
model, attention and evaluation code importing them from here:

* the Position Interpolation factor ``ceil(target / original)`` (:func:`pi_factor`; LongLoRA §4.1,
  Chen et al. 2023's PI as the reference ``fine-tune.py`` sets it);
* the S2-Attn group size ``int(T * group_size_ratio)``, which must divide the context and be even for
  the half-group shift (:func:`group_size_for`; LongLoRA §3.2);
* the perplexity lengths up to the training context (:func:`eval_lengths`; LongLoRA Table 3) and the
  last passkey test point, 1.5 x the context by default (:func:`passkey_max_tokens`; §4.2).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from repro.schemas import LMEvalConfig


def pi_factor(target_context: int, original_context: int) -> int:
    """Position Interpolation factor ``ceil(target / original)``, never below 1.

    As the reference ``fine-tune.py``: the factor is ``ceil(model_max_length / orig_ctx_len)`` and scaling only
    happens when the target exceeds the original context (a shorter target keeps factor 1).

    Raises:
        ValueError: If either length is not positive.
    """
    if target_context <= 0 or original_context <= 0:
        raise ValueError(f"pi_factor needs positive lengths: target_context={target_context}, "
                         f"original_context={original_context}")
    return max(1, math.ceil(target_context / original_context))


def group_size_for(seq_len: int, ratio: float, needs_half: bool) -> int:
    """G = int(T * ratio), checked to divide T (and to be even when a half-group shift is needed)."""
    group = int(seq_len * ratio)
    if group < 1:
        raise ValueError(f"group_size_ratio={ratio} gives group size {group} for sequence length {seq_len}")
    if seq_len % group != 0:
        raise ValueError(f"sequence length {seq_len} is not divisible by the group size {group} "
                         f"(= int({seq_len} * group_size_ratio={ratio})); pad or pack to a multiple")
    if needs_half and group % 2 != 0:
        raise ValueError(f"group size {group} (sequence length {seq_len} * group_size_ratio={ratio}) is odd; "
                         f"the half-group shift needs an even group size")
    return group


def eval_lengths(cfg: LMEvalConfig, context_length: int) -> list[int]:
    """Perplexity lengths for a model trained at ``context_length``: configured ones up to it, plus it."""
    return sorted({int(n) for n in cfg.lengths if int(n) <= context_length} | {int(context_length)})


def extension_lengths(cfg: LMEvalConfig, context_length: int) -> list[int]:
    """Perplexity lengths beyond ``context_length`` (``extend_lengths``), for the PI-only extension."""
    return sorted({int(n) for n in cfg.extend_lengths if int(n) > context_length})


def passkey_max_tokens(cfg: LMEvalConfig, context_length: int) -> int:
    """The last passkey test point: ``passkey_max_tokens`` or, when 0, 1.5 x the training context."""
    return int(cfg.passkey_max_tokens) or (3 * int(context_length)) // 2
