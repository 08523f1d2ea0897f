"""Chunked causal-LM loss and checkpointing policies (long-context steps without T x vocab logits)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

from repro.models.activation_checkpointing import apply_checkpointing, checkpointed_layers
from repro.models.chunked_loss import causal_lm_loss, chunked_causal_lm_loss


def reference_loss(hidden, weight, labels, bias=None):
    """Unchunked: full logits, shift by one, mean cross-entropy over labels != -100 (HF's ForCausalLMLoss)."""
    logits = F.linear(hidden, weight, bias).float()  # (B, T, V)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100)


@pytest.mark.parametrize("chunk", [1, 5, 16, 64])
@pytest.mark.parametrize("recompute", [True, False])
def test_chunked_loss_and_gradients_equal_unchunked(chunk, recompute):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 33, 8, dtype=torch.float64, generator=g).requires_grad_()
    weight = torch.randn(50, 8, dtype=torch.float64, generator=g).requires_grad_()
    bias = torch.randn(50, dtype=torch.float64, generator=g).requires_grad_()
    labels = torch.randint(0, 50, (2, 33), generator=g)
    labels[0, 10:14] = -100
    loss = chunked_causal_lm_loss(hidden, weight, labels, chunk, bias=bias, recompute=recompute)
    expected = reference_loss(hidden, weight, labels, bias)
    torch.testing.assert_close(loss, expected.float(), rtol=1e-6, atol=1e-7)
    got = torch.autograd.grad(loss, (hidden, weight, bias))
    for a, b in zip(got, torch.autograd.grad(expected, (hidden, weight, bias)), strict=False):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_chunked_loss_never_holds_full_logits():
    """The largest tensor alive in forward + backward is one chunk of logits, not T x V."""
    t, v, chunk = 256, 1000, 32
    hidden = torch.randn(1, t, 16, requires_grad=True)
    weight = torch.randn(v, 16, requires_grad=True)
    labels = torch.randint(0, v, (1, t))
    largest = []

    def pack(x):
        largest.append(x.numel())
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        loss = chunked_causal_lm_loss(hidden, weight, labels, chunk)
    loss.backward()
    assert max(largest) < t * v / 4  # unchunked would save the (T-1) x V logits
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        reference_loss(hidden, weight, labels)
    assert max(largest) >= (t - 1) * v  # the check can see full logits


def tiny_llama(tie=False):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=97,
                                      max_position_embeddings=128, tie_word_embeddings=tie)
    return transformers.LlamaForCausalLM(config).double()


@pytest.mark.parametrize("tie", [False, True])
def test_model_loss_chunked_equals_model_loss_with_gradients(tie):
    model = tiny_llama(tie)
    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(1))
    own = causal_lm_loss(model, ids, ids, 0)
    grads = torch.autograd.grad(own, list(model.parameters()))
    chunked = causal_lm_loss(model, ids, ids, 7)
    torch.testing.assert_close(chunked.double(), own.double(), rtol=1e-6, atol=1e-7)
    for a, b in zip(torch.autograd.grad(chunked, list(model.parameters())), grads, strict=False):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("s2", [False, True])
def test_checkpointing_policies_select_layers_and_keep_gradients(s2):
    model = tiny_llama().train()
    if s2:  # S2-Attn's piecewise autograd function is recomputed by the layer checkpoints
        from repro.models.attention.registry import apply_attention
        from repro.schemas import S2AttnConfig

        apply_attention(model, S2AttnConfig())
    ids = torch.randint(0, 97, (1, 24), generator=torch.Generator().manual_seed(2))
    reference = torch.autograd.grad(causal_lm_loss(model, ids, ids), list(model.parameters()))
    for policy, expected in [("full", [True] * 4), ("alternate", [True, False, True, False]), ("none", [False] * 4)]:
        apply_checkpointing(model, policy)
        assert checkpointed_layers(model) == expected
        grads = torch.autograd.grad(causal_lm_loss(model, ids, ids, 5), list(model.parameters()))
        for a, b in zip(grads, reference, strict=False):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    apply_checkpointing(model, "none")  # again: nothing to switch off
    assert checkpointed_layers(model) == [False] * 4
    with pytest.raises(ValueError, match="longlora.train.activation_checkpointing"):
        apply_checkpointing(model, "model")  # the old 'defer to longlora.model' policy is gone


def test_causal_lm_module_applies_the_configured_policy():
    from repro.lit.causal_lm import CausalLMModule
    from repro.schemas import TrainConfig

    assert (TrainConfig().loss_chunk_size, TrainConfig().activation_checkpointing) == (0, "none")
    assert checkpointed_layers(CausalLMModule(tiny_llama(), TrainConfig()).model) == [False] * 4
    module = CausalLMModule(tiny_llama(), TrainConfig(loss_chunk_size=8, activation_checkpointing="alternate"))
    assert checkpointed_layers(module.model) == [True, False, True, False]
    with pytest.raises(ValueError, match="longlora.train.activation_checkpointing='sometimes' is not one of none"):
        TrainConfig(activation_checkpointing="sometimes")  # the schema rejects it, listing the policies
