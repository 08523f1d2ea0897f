"""Causal-LM loss over the sequence in chunks, so the T x vocabulary logits never exist at once.

At 32k tokens the logits of Llama-2 (vocabulary 32,000) take 4 GiB in fp32, more than a LongLoRA step's
activations with checkpointing. :func:`chunked_causal_lm_loss` projects ``chunk_size`` positions at a time
through the LM head inside a non-reentrant activation checkpoint, so the forward keeps one chunk of logits and
the backward recomputes one chunk at a time. The value is Hugging Face's ``ForCausalLMLoss`` (logits up-cast to
fp32, position t predicts label t + 1, ``-100`` ignored, mean over the counted tokens), which the reference
``fine-tune.py`` trains with through ``LlamaForCausalLM``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


def _chunk_loss_sum(hidden: Tensor, targets: Tensor, head: nn.Module | Tensor, bias: Tensor | None) -> Tensor:
    """Sum of the cross-entropy of one chunk: hidden (B, c, E), targets (B, c) -> scalar (fp32)."""
    logits = head(hidden) if isinstance(head, nn.Module) else F.linear(hidden, head, bias)  # (B, c, V)
    logits = logits.float()
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_causal_lm_loss(hidden: Tensor, head: Tensor | nn.Module, labels: Tensor, chunk_size: int,
                           bias: Tensor | None = None, recompute: bool = True) -> Tensor:
    """Mean next-token cross-entropy of ``hidden @ head.T`` against ``labels``, computed in chunks.

    Args:
        hidden: (B, T, E) final hidden states (after the last norm).
        head: the LM head weight (V, E), or the LM head module itself (e.g. a LoRA-wrapped linear).
        labels: (B, T) token ids; position t is scored against ``labels[:, t + 1]``; ``-100`` is ignored.
        chunk_size: positions per chunk (> 0).
        bias: optional (V,) bias of the head (with a weight tensor).
        recompute: checkpoint each chunk so the backward holds no full logits either (default).

    Returns:
        Scalar fp32 loss, equal to the unchunked ``ForCausalLMLoss`` (NaN when no token is counted).
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    targets = labels[:, 1:]  # (B, T-1)
    steps = targets.shape[1]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, steps, chunk_size):
        stop = min(start + chunk_size, steps)  # the last position predicts nothing
        h = hidden[:, start:stop]  # (B, c, E), a view
        t = targets[:, start:stop]  # (B, c)
        if recompute and torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss_sum, h, t, head, bias, use_reentrant=False)
        else:
            total = total + _chunk_loss_sum(h, t, head, bias)
    return total / (targets != IGNORE_INDEX).sum()


def _base(model: nn.Module) -> nn.Module:
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def causal_lm_loss(model: nn.Module, input_ids: Tensor, labels: Tensor, chunk_size: int = 0) -> Tensor:
    """Training loss of a (peft-wrapped) transformers causal LM; chunked when ``chunk_size > 0``.

    ``chunk_size == 0`` returns the model's own loss (``model(input_ids, labels=labels).loss``). Otherwise the
    decoder runs without its LM head (``base.model``) and :func:`chunked_causal_lm_loss` scores its hidden states.
    """
    if chunk_size <= 0:
        return model(input_ids=input_ids, labels=labels, use_cache=False).loss  # no KV cache in training
    base = _base(model)
    decoder = getattr(base, base.base_model_prefix)
    out: Any = decoder(input_ids=input_ids, use_cache=False)
    head = base.get_output_embeddings()
    plain = type(head) is nn.Linear
    return chunked_causal_lm_loss(out.last_hidden_state, head.weight if plain else head, labels, chunk_size,
                                  bias=head.bias if plain else None)
