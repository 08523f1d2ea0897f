"""Contrastive losses on sentence embeddings (SimCSE, Gao et al., EMNLP 2021, §2–§4).

Everything here is a function of embedding tensors, so it is testable without a model. The
behaviour mirrors ``cl_forward`` in the reference repository (princeton-nlp/SimCSE,
``simcse/models.py``): cosine similarities divided by a temperature, in-batch negatives, optional
hard negatives appended as extra columns, cross-entropy against the diagonal, and an all-gather that
keeps the local slice differentiable when training on several devices.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = ["contrastive_logits", "gather_with_grad", "info_nce"]


def gather_with_grad(z: Tensor) -> Tensor:
    """All-gather embeddings across ranks, keeping the gradient for this rank's slice.

    ``torch.distributed.all_gather`` returns tensors without autograd history, so, as the reference
    repository does, the slice that belongs to this rank is replaced by the original (differentiable)
    tensor before concatenating. Every rank must hold the same number of rows.

    Args:
        z: local embeddings, shape [N, d].

    Returns:
        [world_size * N, d] embeddings ordered by rank; ``z`` itself when torch.distributed is not
        available or not initialised (single process).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return z
    world = dist.get_world_size()
    if world == 1:
        return z
    gathered = [torch.zeros_like(z) for _ in range(world)]
    dist.all_gather(gathered, z.contiguous())
    gathered[dist.get_rank()] = z  # restore the autograd graph for the local slice
    return torch.cat(gathered, dim=0)  # [world * N, d]


def _cosine_matrix(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pairwise cosine similarity [Na, Nb] without materialising [Na, Nb, d].

    Matches ``nn.CosineSimilarity`` (x·y / max(‖x‖‖y‖, eps)) used by the reference.
    """
    dots = a @ b.transpose(0, 1)  # [Na, Nb]
    norms = a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True).transpose(0, 1)  # [Na, Nb]
    return dots / norms.clamp_min(eps)


def _check_pair(name: str, z1: Tensor, other: Tensor) -> None:
    if other.dim() != 2 or other.shape != z1.shape:
        raise ValueError(
            f"info_nce: '{name}' must have the shape of z1 {tuple(z1.shape)} ([N, d]); got {tuple(other.shape)}"
        )


def contrastive_logits(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.05,
    hard_negatives: Tensor | None = None,
    hard_negative_weight: float = 0.0,
    similarity: str = "cos",
) -> Tensor:
    """Similarity logits of SimCSE's contrastive objective (paper Eq. 1 and Eq. 5).

    Args:
        z1: anchors h_i, shape [N, d].
        z2: positives h_i^+, shape [N, d]; row j is a negative for every anchor i != j.
        temperature: τ; cosine similarities are divided by it.
        hard_negatives: optional h_i^- (supervised SimCSE), shape [N, d].
        hard_negative_weight: added to the logit of each anchor's *own* hard negative (the diagonal
            of the hard-negative block), as the reference's ``--hard_negative_weight`` does. The paper
            writes the weight as α in exp(sim/τ) terms; the added value is log α, so the default 0.0
            means α = 1 (hard negatives weighted like any other negative).
        similarity: "cos" (cosine / τ, the paper) or "dot" (plain dot product, no temperature:
            the "N/A" row of Table D.1).

    Returns:
        Logits [N, N] (unsupervised) or [N, 2N] (with hard negatives: columns N..2N-1 are
        sim(z1_i, z3_j)/τ, plus the weight where i == j).
    """
    if z1.dim() != 2:
        raise ValueError(f"info_nce: 'z1' must be [N, d]; got shape {tuple(z1.shape)}")
    if temperature <= 0:
        raise ValueError(f"info_nce: 'temperature' must be > 0; got {temperature}")
    _check_pair("z2", z1, z2)
    if similarity not in ("cos", "dot"):
        raise ValueError(f"info_nce: 'similarity' must be 'cos' or 'dot'; got {similarity!r}")

    def sim(a: Tensor, b: Tensor) -> Tensor:
        return a @ b.transpose(0, 1) if similarity == "dot" else _cosine_matrix(a, b) / temperature

    logits = sim(z1, z2)  # [N, N]
    if hard_negatives is None:
        return logits
    _check_pair("hard_negatives", z1, hard_negatives)
    hard = sim(z1, hard_negatives)  # [N, N]
    if hard_negative_weight != 0.0:
        # Only the diagonal moves; written as a masked add so that log α = -inf (α = 0, the
        # 'no hard negative' row of Table 7) gives -inf there and not -inf·0 = NaN elsewhere.
        diagonal = torch.eye(hard.shape[0], device=hard.device, dtype=torch.bool)
        hard = hard + torch.where(diagonal, torch.full_like(hard, hard_negative_weight), torch.zeros_like(hard))
    return torch.cat([logits, hard], dim=1)  # [N, 2N]


def info_nce(
    z1: Tensor,
    z2: Tensor,
    temperature: float = 0.05,
    hard_negatives: Tensor | None = None,
    hard_negative_weight: float = 0.0,
    similarity: str = "cos",
) -> Tensor:
    """SimCSE's InfoNCE loss with in-batch negatives (paper §3 Eq. 1, §4 Eq. 5).

    ℓ_i = −log softmax_j(logits)[i, i] with logits from :func:`contrastive_logits`; the loss is the
    mean over the N anchors (labels ``arange(N)``, ``nn.CrossEntropyLoss`` as in the reference).

    Args:
        z1: anchors, shape [N, d].
        z2: positives, shape [N, d].
        temperature: τ (0.05 in the paper).
        hard_negatives: optional hard negatives, shape [N, d].
        hard_negative_weight: log α added to each anchor's own hard-negative logit (0.0 ↔ α = 1).
        similarity: "cos" or "dot" (see :func:`contrastive_logits`).

    Returns:
        Scalar loss.
    """
    logits = contrastive_logits(z1, z2, temperature, hard_negatives, hard_negative_weight, similarity)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits.float(), labels)
