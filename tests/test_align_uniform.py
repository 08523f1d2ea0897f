"""Alignment / uniformity against the formulas of Wang & Isola (2020) evaluated by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from repro.evaluation.align_uniform import align_uniform_stsb, alignment, uniformity


def test_alignment_identical_opposite_and_scale_invariant():
    x = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert alignment(x, x) == pytest.approx(0.0)
    assert alignment(x, -x) == pytest.approx(4.0)  # ||u - (-u)||^2 = 4 for unit u
    y = np.array([[0.0, 5.0], [3.0, 0.0]])  # orthogonal: squared distance 2
    assert alignment(3 * x, y) == pytest.approx(2.0)
    assert alignment(torch.tensor(x), torch.tensor(y), alpha=1) == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("k", [2, 3, 4, 7])
def test_uniformity_points_on_circle(k):
    angles = [2 * math.pi * i / k for i in range(k)]
    pts = np.array([[math.cos(a), math.sin(a)] for a in angles]) * 2.5
    vals = [math.exp(-2 * (2 - 2 * math.cos(angles[i] - angles[j]))) for i in range(k) for j in range(i + 1, k)]
    assert uniformity(pts) == pytest.approx(math.log(sum(vals) / len(vals)))
    if k == 2:
        assert uniformity(pts) == pytest.approx(-8.0)


def test_uniformity_needs_two_points():
    with pytest.raises(ValueError, match="at least 2"):
        uniformity(np.ones((1, 3)))


def test_align_uniform_stsb_uses_gold_above_4_and_all_sentences():
    rng = np.random.default_rng(0)
    sentences = [f"s{i}" for i in range(8)]
    table = {s: rng.normal(size=5) for s in sentences}
    pairs = [("s0", "s1"), ("s2", "s3"), ("s4", "s5"), ("s6", "s7"), ("s0", "s7")]
    gold = [4.5, 4.0, 5.0, 1.0, 4.2]
    calls = []

    def encode(batch):
        calls.extend(batch)
        return np.stack([table[s] for s in batch])

    out = align_uniform_stsb(encode, pairs, gold)
    unit = {s: v / np.linalg.norm(v) for s, v in table.items()}
    pos = [p for p, g in zip(pairs, gold, strict=False) if g > 4]
    align = np.mean([np.sum((unit[a] - unit[b]) ** 2) for a, b in pos])
    d = [np.exp(-2 * np.sum((unit[a] - unit[b]) ** 2)) for i, a in enumerate(sentences) for b in sentences[i + 1:]]
    assert out["align"] == pytest.approx(align)
    assert out["uniform"] == pytest.approx(np.log(np.mean(d)))
    assert out["n_positive"] == 3 and out["n_sentences"] == 8
    assert sorted(calls) == sentences
    with pytest.raises(ValueError, match="above 4"):
        align_uniform_stsb(encode, pairs, [1.0] * 5)
