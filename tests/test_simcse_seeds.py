"""Seed aggregation for ablations (mean ± std; 'held' only beyond the spread) and Table D.1's dot-product row."""

from __future__ import annotations

import statistics

import pytest
import torch

from repro.losses import info_nce
from repro.reports.simcse import mean_std
from repro.seeds import aggregate_seeds, ordering_held


def test_aggregate_seeds_mean_and_sample_std():
    per_seed = [{"sts/avg": 60.0, "status": "ok", "train/steps": 10}, {"sts/avg": 62.0, "status": "ok", "train/steps": 10},
                {"sts/avg": 67.0, "status": "ok", "train/steps": 10}]
    out = aggregate_seeds(per_seed, [1, 2, 3])
    assert out["sts/avg"] == pytest.approx(statistics.mean([60, 62, 67]))
    assert out["sts/avg/std"] == pytest.approx(statistics.stdev([60, 62, 67]))
    assert out["sts/avg/per_seed"] == [60.0, 62.0, 67.0] and out["seeds"] == [1, 2, 3]
    assert "status" not in out and out["train/steps/std"] == 0.0
    assert mean_std(out, "sts/avg") == f"{out['sts/avg']:.2f} ± {out['sts/avg/std']:.2f}"


def test_ordering_held_only_beyond_the_spread():
    assert ordering_held((70.0, 1.0), (65.0, 1.0))
    assert not ordering_held((70.0, 3.0), (66.0, 2.0))  # means ordered, spreads overlap
    assert not ordering_held((60.0, 0.0), (65.0, 0.0))


def test_dot_similarity_uses_plain_dot_products():
    gen = torch.Generator().manual_seed(0)
    z1, z2, z3 = (torch.randn(5, 8, generator=gen) for _ in range(3))
    logits = torch.cat([z1 @ z2.T, z1 @ z3.T], dim=1)
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(5))
    torch.testing.assert_close(info_nce(z1, z2, 0.05, z3, similarity="dot"), expected)
    with pytest.raises(ValueError, match="similarity"):
        info_nce(z1, z2, similarity="l2")
