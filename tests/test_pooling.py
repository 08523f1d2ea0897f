"""Poolers on hand-made hidden states, against values computed by hand."""

from __future__ import annotations

import pytest
import torch

from repro.models.pooling import POOLERS, Pooler, last_token, masked_mean


def _states():
    # B=2, T=3, d=2; row 1 has one padding position (right-padded)
    layer0 = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], [[5.0, 5.0], [6.0, 6.0], [7.0, 7.0]]])
    layer1 = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[-1.0, 1.0], [1.0, -1.0], [100.0, 100.0]]])
    layer2 = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [4.0, 4.0]], [[0.0, 2.0], [2.0, 0.0], [-50.0, 9.0]]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return (layer0, layer1, layer2), mask


def test_cls_variants_take_first_token():
    hs, mask = _states()
    for name in ("cls", "cls_before_pooler"):
        torch.testing.assert_close(Pooler(name)(hs[-1], mask, hs), torch.tensor([[2.0, 0.0], [0.0, 2.0]]))


@pytest.mark.parametrize("name", ["avg", "mean"])
def test_avg_ignores_padding(name):
    hs, mask = _states()
    expected = torch.tensor([[(2 + 0 + 4) / 3, (0 + 2 + 4) / 3], [(0 + 2) / 2, (2 + 0) / 2]])
    torch.testing.assert_close(Pooler(name)(hs[-1], mask, hs), expected)


def test_avg_first_last_uses_layer_one_and_last():
    hs, mask = _states()
    # row 0: mean over 3 tokens of (layer1 + layer2) / 2
    row0 = [((1 + 2) / 2 + (3 + 0) / 2 + (5 + 4) / 2) / 3, ((2 + 0) / 2 + (4 + 2) / 2 + (6 + 4) / 2) / 3]
    row1 = [((-1 + 0) / 2 + (1 + 2) / 2) / 2, ((1 + 2) / 2 + (-1 + 0) / 2) / 2]
    torch.testing.assert_close(Pooler("avg_first_last")(hs[-1], mask, hs), torch.tensor([row0, row1]))


def test_avg_top2_uses_last_two_layers():
    hs = _states()[0] + (torch.full((2, 3, 2), 10.0),)  # 4 entries: top2 = layer2 and the constant layer
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    row0 = [((2 + 10) / 2 + (0 + 10) / 2 + (4 + 10) / 2) / 3, ((0 + 10) / 2 + (2 + 10) / 2 + (4 + 10) / 2) / 3]
    row1 = [(0 + 10) / 2, (2 + 10) / 2]
    torch.testing.assert_close(Pooler("avg_top2")(hs[-1], mask, hs), torch.tensor([row0, row1]))


def test_last_token_right_and_left_padding():
    states = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    torch.testing.assert_close(Pooler("last")(states, right), torch.stack([states[0, 1], states[1, 3]]))
    torch.testing.assert_close(last_token(states, left), torch.stack([states[0, 3], states[1, 3]]))


def test_masked_mean_all_padding_row_is_zero_not_nan():
    out = masked_mean(torch.ones(1, 2, 3), torch.zeros(1, 2))
    torch.testing.assert_close(out, torch.zeros(1, 3))


def test_unknown_pooler_lists_valid_names():
    with pytest.raises(ValueError, match="valid poolers: " + ", ".join(POOLERS)):
        Pooler("max")


def test_layer_poolers_require_hidden_states():
    hs, mask = _states()
    with pytest.raises(ValueError, match="hidden_states"):
        Pooler("avg_top2")(hs[-1], mask, None)
