"""InfoNCE and gather_with_grad against explicit per-element computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from repro.losses import contrastive_logits, gather_with_grad, info_nce


def _loop_info_nce(z1, z2, tau, z3=None, weight=0.0):
    """−log softmax of the diagonal, written with explicit cosines and exp/log sums."""
    n = z1.shape[0]

    def cos(a, b):
        return float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))

    total = 0.0
    for i in range(n):
        logits = [cos(z1[i], z2[j]) / tau for j in range(n)]
        if z3 is not None:
            logits += [cos(z1[i], z3[j]) / tau + (weight if i == j else 0.0) for j in range(n)]
        peak = max(logits)
        log_denominator = peak + math.log(sum(math.exp(v - peak) for v in logits))
        total += log_denominator - logits[i]
    return total / n


@pytest.fixture
def embeddings():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(6, 5, generator=gen, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_info_nce_matches_loop_without_hard_negatives(embeddings, tau):
    z1, z2, _ = embeddings
    assert info_nce(z1, z2, tau).item() == pytest.approx(_loop_info_nce(z1, z2, tau), rel=1e-6)


@pytest.mark.parametrize("weight", [0.0, 1.5, -0.7])
def test_info_nce_matches_loop_with_hard_negatives(embeddings, weight):
    z1, z2, z3 = embeddings
    got = info_nce(z1, z2, 0.1, hard_negatives=z3, hard_negative_weight=weight).item()
    assert got == pytest.approx(_loop_info_nce(z1, z2, 0.1, z3, weight), rel=1e-6)


def test_hard_negative_weight_only_touches_own_hard_negative(embeddings):
    z1, z2, z3 = embeddings
    base = contrastive_logits(z1, z2, 0.1, z3, 0.0)
    shifted = contrastive_logits(z1, z2, 0.1, z3, 2.0)
    assert base.shape == (6, 12)
    expected = base.clone()
    idx = torch.arange(6)
    expected[idx, idx + 6] += 2.0
    torch.testing.assert_close(shifted, expected)


def test_gradient_flows_to_all_inputs(embeddings):
    z1, z2, z3 = (z.clone().requires_grad_(True) for z in embeddings)
    info_nce(z1, z2, 0.05, hard_negatives=z3).backward()
    for z in (z1, z2, z3):
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_perfect_alignment_gives_lower_loss_than_random(embeddings):
    z1, z2, _ = embeddings
    assert info_nce(z1, z1.clone(), 0.05) < info_nce(z1, z2, 0.05)


def test_gather_with_grad_is_identity_without_distributed(embeddings):
    z = embeddings[0].clone().requires_grad_(True)
    out = gather_with_grad(z)
    assert out is z


def test_shape_mismatch_names_the_argument(embeddings):
    z1, z2, _ = embeddings
    with pytest.raises(ValueError, match="hard_negatives"):
        info_nce(z1, z2, hard_negatives=z2[:3])
    with pytest.raises(ValueError, match="z2"):
        info_nce(z1, z2[:, :2])


def test_alpha_zero_removes_the_hard_negative_exactly():
    """log α = -inf (α = 0) must equal InfoNCE with the anchor's own hard negative left out."""
    torch.manual_seed(0)
    z1, z2, z3 = (torch.randn(5, 8, requires_grad=True) for _ in range(3))
    loss = info_nce(z1, z2, temperature=0.05, hard_negatives=z3, hard_negative_weight=float("-inf"))
    sim = lambda a, b: F.cosine_similarity(a.unsqueeze(1), b.unsqueeze(0), dim=-1) / 0.05  # noqa: E731
    logits = torch.cat([sim(z1, z2), sim(z1, z3).masked_fill(torch.eye(5, dtype=torch.bool), float("-inf"))], dim=1)
    expected = F.cross_entropy(logits, torch.arange(5))
    assert torch.isfinite(loss) and torch.allclose(loss, expected)
    loss.backward()
    assert all(torch.isfinite(t.grad).all() for t in (z1, z2, z3))
