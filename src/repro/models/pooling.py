"""Poolers that turn token states into one sentence embedding (SimCSE, Gao et al., 2021, §6.3).

Mirrors the ``Pooler`` and ``MLPLayer`` of the reference repository (princeton-nlp/SimCSE,
``simcse/models.py``):

* ``cls``: the first token's state, then an MLP head (Linear(d, d) + tanh) that is randomly
  initialised and trained; with ``mlp_only_train`` (unsupervised SimCSE) the head is used only in
  training and dropped at test time (§3, "we use the MLP layer only during training").
* ``cls_before_pooler``: the first token's state, no head.
* ``avg``: masked mean of the last layer.
* ``avg_first_last``: masked mean of (first Transformer layer + last layer) / 2. As in the current
  reference code, "first" is ``hidden_states[1]`` (the output of layer 1), not the embedding output
  ``hidden_states[0]``.
* ``avg_top2``: masked mean of the last two layers.

Decoder-only backbones add ``mean`` (masked mean of the last layer) and ``last`` (state of the last
non-padding token, correct for left and right padding alike).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["POOLERS", "MLPHead", "Pooler", "masked_mean", "last_token", "needs_hidden_states"]

POOLERS: tuple[str, ...] = ("cls", "cls_before_pooler", "avg", "avg_first_last", "avg_top2", "mean", "last")
_NEEDS_ALL_LAYERS = ("avg_first_last", "avg_top2")


def check_pooler(name: str) -> str:
    """Return ``name`` if it is a known pooler, else raise a ValueError naming the valid ones."""
    if name not in POOLERS:
        raise ValueError(f"unknown pooler {name!r} (key 'pooler'); valid poolers: {', '.join(POOLERS)}")
    return name


def needs_hidden_states(name: str) -> bool:
    """Whether the pooler reads intermediate layers (the backbone must return ``hidden_states``)."""
    return check_pooler(name) in _NEEDS_ALL_LAYERS


def masked_mean(states: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of token states over positions where ``attention_mask`` is 1.

    Args:
        states: [B, T, d] token states.
        attention_mask: [B, T], 1 for real tokens, 0 for padding.

    Returns:
        [B, d] means (a row with no real token gives zeros instead of NaN).
    """
    mask = attention_mask.to(states.dtype).unsqueeze(-1)  # [B, T, 1]
    total = (states * mask).sum(dim=1)  # [B, d]
    count = mask.sum(dim=1).clamp_min(1.0)  # [B, 1]
    return total / count


def last_token(states: Tensor, attention_mask: Tensor) -> Tensor:
    """State of the last real token of each row, for left- or right-padded batches.

    The index is the last position whose mask is 1: with right padding that is ``len - 1``, with
    left padding it is ``T - 1``.

    Args:
        states: [B, T, d] token states.
        attention_mask: [B, T], 1 for real tokens, 0 for padding.

    Returns:
        [B, d] states.
    """
    seq_len = attention_mask.shape[1]
    # argmax over the reversed mask finds the first 1 from the end (argmax returns the first max)
    from_end = attention_mask.flip(1).to(torch.int64).argmax(dim=1)  # [B]
    index = (seq_len - 1 - from_end).view(-1, 1, 1).expand(-1, 1, states.shape[-1])  # [B, 1, d]
    return states.gather(1, index).squeeze(1)  # [B, d]


class MLPHead(nn.Module):
    """Linear(d, d) + tanh over the CLS state (the reference's ``MLPLayer``; BERT's pooler shape)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, features: Tensor) -> Tensor:
        """[B, d] -> [B, d]."""
        return self.activation(self.dense(features))


class Pooler(nn.Module):
    """Parameter-free pooling of backbone outputs into [B, d] (the MLP head lives in the encoder).

    Args:
        name: one of :data:`POOLERS`.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = check_pooler(name)

    def forward(
        self,
        last_hidden_state: Tensor,
        attention_mask: Tensor,
        hidden_states: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Pool token states.

        Args:
            last_hidden_state: [B, T, d] states of the last layer.
            attention_mask: [B, T] mask (1 = token, 0 = padding).
            hidden_states: per-layer states ``(embeddings, layer 1, ..., layer L)``, each [B, T, d];
                required for ``avg_first_last`` and ``avg_top2``.

        Returns:
            [B, d] sentence embeddings.
        """
        name = self.name
        if name in ("cls", "cls_before_pooler"):
            return last_hidden_state[:, 0]  # [B, d]
        if name in ("avg", "mean"):
            return masked_mean(last_hidden_state, attention_mask)
        if name == "last":
            return last_token(last_hidden_state, attention_mask)
        if hidden_states is None or len(hidden_states) < 3:
            raise ValueError(
                f"pooler {name!r} needs hidden_states (embeddings + at least 2 layers); "
                "call the backbone with output_hidden_states=True"
            )
        if name == "avg_first_last":
            pair = (hidden_states[1] + hidden_states[-1]) / 2.0  # [B, T, d]
        else:  # avg_top2
            pair = (hidden_states[-2] + hidden_states[-1]) / 2.0  # [B, T, d]
        return masked_mean(pair, attention_mask)
