"""Alignment and uniformity of sentence embeddings (Wang & Isola, 2020; SimCSE §5, Figure 2).

On L2-normalised embeddings ``f``:

* alignment  = E_{(x, y) ~ positive pairs} ||f(x) - f(y)||^alpha  (alpha = 2; lower is better);
* uniformity = log E_{x, y ~ data, x != y} exp(-t ||f(x) - f(y)||^2)  (t = 2; lower is better).

SimCSE measures both on STS-B: positive pairs are those with gold score above 4, uniformity is taken
over all sentences of the set. Expectations over pairs are plain means, as in the reference
``align_loss``/``uniform_loss`` (``torch.pdist`` over distinct pairs for uniformity).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from repro.evaluation.sts import EncodeFn, encode_unique


def _as_tensor(x: Any) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to(torch.float64)
    if t.ndim != 2:
        raise ValueError(f"embeddings must have shape (N, d), got {tuple(t.shape)}")
    return t


def alignment(x: Any, y: Any, alpha: float = 2.0) -> float:
    """Mean ``||f(x_i) - f(y_i)||^alpha`` over positive pairs, after L2 normalisation.

    Args:
        x: (N, d) embeddings of the first sentence of each positive pair.
        y: (N, d) embeddings of the second sentence.
        alpha: exponent (2 in SimCSE / Wang & Isola).
    """
    x, y = F.normalize(_as_tensor(x), dim=1), F.normalize(_as_tensor(y), dim=1)
    if x.shape != y.shape or x.shape[0] == 0:
        raise ValueError(f"alignment needs two equal, non-empty (N, d) arrays, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    return float((x - y).norm(dim=1).pow(alpha).mean())  # (N,) -> scalar


def uniformity(x: Any, t: float = 2.0) -> float:
    """``log`` of the mean of ``exp(-t ||f(x_i) - f(x_j)||^2)`` over distinct pairs ``i < j``.

    Args:
        x: (N, d) embeddings, N >= 2.
        t: temperature (2 in SimCSE / Wang & Isola).
    """
    x = F.normalize(_as_tensor(x), dim=1)
    if x.shape[0] < 2:
        raise ValueError(f"uniformity needs at least 2 embeddings, got {x.shape[0]}")
    sq = torch.pdist(x, p=2).pow(2)  # (N*(N-1)/2,)
    return float(sq.mul(-t).exp().mean().log())


def align_uniform_stsb(encode_fn: EncodeFn, pairs: Sequence[tuple[str, str]], scores: Sequence[float],
                       threshold: float = 4.0, batch_size: int = 128) -> dict[str, float]:
    """Alignment over pairs with gold > ``threshold`` and uniformity over all distinct sentences.

    Args:
        encode_fn: ``list[str] -> (N, d)`` tensor or array.
        pairs: STS-B sentence pairs (SimCSE uses the STS-B dev set in its Figure 2).
        scores: gold scores aligned with ``pairs``.
        threshold: positive pairs have gold strictly above this (4 in SimCSE).

    Returns:
        ``{"align": ..., "uniform": ..., "n_positive": ..., "n_sentences": ...}``.
    """
    if len(pairs) != len(scores):
        raise ValueError(f"pairs ({len(pairs)}) and scores ({len(scores)}) must align")
    positives = [p for p, g in zip(pairs, scores, strict=False) if g > threshold]
    if not positives:
        raise ValueError(f"no pair has a gold score above {threshold}")
    sentences = sorted({s for p in pairs for s in p})
    table = encode_unique(sentences, encode_fn, batch_size)
    x = np.stack([table[a] for a, _ in positives])  # (P, d)
    y = np.stack([table[b] for _, b in positives])  # (P, d)
    allv = np.stack([table[s] for s in sentences])  # (S, d)
    return {"align": alignment(x, y), "uniform": uniformity(allv),
            "n_positive": len(positives), "n_sentences": len(sentences)}
