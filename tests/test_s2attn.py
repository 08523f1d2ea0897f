"""Tests of S2-Attn (LongLoRA §3.2): pure tensor functions and the transformers registration.

Every S2 output is checked against an independent dense computation: a per-head boolean mask built from
group ids and in-group order, applied with a plain softmax.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from repro.models.attention.registry import (
    S2_ATTN_NAME,
    apply_attention,
    register_s2_attention,
    use_full_attention,
)
from repro.models.attention.s2attn import s2_attention
from repro.schemas import S2AttnConfig

torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------------------------
def dense_mask(num_heads: int, seq_len: int, group: int, shifted_from: int, wrap: bool) -> torch.Tensor:
    """(H, T, T) allowed[h, i, j] from group ids and in-group order; heads >= shifted_from are shifted by G/2."""
    pos = torch.arange(seq_len)
    masks = []
    for h in range(num_heads):
        if h < shifted_from:
            gid, order = pos // group, pos
        elif wrap:  # rolled by -G/2: token t sits at rolled index (t - G/2) mod T
            order = (pos - group // 2) % seq_len
            gid = order // group
        else:  # boundaries at G/2 + kG, no wrap: ids 0 (first half-group) .. T/G (last half-group)
            gid, order = (pos + group // 2) // group, pos
        masks.append((gid[:, None] == gid[None, :]) & (order[None, :] <= order[:, None]))
    return torch.stack(masks)


def dense_attention(q, k, v, allowed):
    """Softmax attention with an explicit (H, T, T) mask and explicitly repeated KV heads."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5  # (B, H, T, T)
    scores = scores.masked_fill(~allowed[None], float("-inf"))
    return scores.softmax(-1) @ v


def roll_reference(q, k, v, group, shifted_from, steps):
    """The reference repository's recipe: roll half the heads, cut into groups, causal SDPA, roll back."""
    b, h, t, d = q.shape
    rep = h // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)

    def roll(x, s):
        return torch.cat([x[:, :shifted_from], torch.roll(x[:, shifted_from:], s, dims=2)], dim=1)

    grouped = [roll(x, steps).reshape(b, h, t // group, group, d) for x in (q, k, v)]
    out = F.scaled_dot_product_attention(*grouped, is_causal=True).reshape(b, h, t, d)
    return roll(out, -steps)


def qkv(batch=2, heads=4, kv_heads=2, seq=32, dim=8, dtype=torch.float32):
    return (torch.randn(batch, heads, seq, dim, dtype=dtype), torch.randn(batch, kv_heads, seq, dim, dtype=dtype),
            torch.randn(batch, kv_heads, seq, dim, dtype=dtype))


# ---------------------------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (9, 3)])
def test_one_group_without_shift_is_full_causal(heads, kv_heads):
    q, k, v = qkv(heads=heads, kv_heads=kv_heads)
    out = s2_attention(q, k, v, S2AttnConfig(group_size_ratio=1.0, shift="none"))
    rep = heads // kv_heads
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1),
                                              is_causal=True)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("direction,steps", [("left", -8), ("right", 8)])
@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (9, 3), (6, 6)])
def test_wrap_matches_reference_roll(direction, steps, heads, kv_heads):
    q, k, v = qkv(heads=heads, kv_heads=kv_heads, seq=64)
    out = s2_attention(q, k, v, S2AttnConfig(wrap=True, direction=direction))  # G = 16
    torch.testing.assert_close(out, roll_reference(q, k, v, 16, heads // 2, steps))


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("shift,ratio", [("heads", 0.25), ("none", 0.25), ("heads", 0.5), ("heads", 1.0)])
def test_matches_dense_masked_attention(wrap, shift, ratio):
    q, k, v = qkv(heads=4, kv_heads=2, seq=32)
    out = s2_attention(q, k, v, S2AttnConfig(group_size_ratio=ratio, shift=shift, wrap=wrap))
    shifted_from = 4 if shift == "none" else 2
    allowed = dense_mask(4, 32, int(32 * ratio), shifted_from, wrap)
    torch.testing.assert_close(out, dense_attention(q, k, v, allowed))


@pytest.mark.parametrize("wrap", [False, True])
def test_gradient_support_is_the_own_group(wrap):
    seq, group = 32, 8
    q, k, v = (x.requires_grad_() for x in qkv(batch=1, heads=2, kv_heads=2, seq=seq))
    out = s2_attention(q, k, v, S2AttnConfig(wrap=wrap))
    allowed = dense_mask(2, seq, group, 1, wrap)
    for head, pos in [(1, 0), (1, 5), (1, 13), (1, 30), (0, 3), (0, 12), (0, 31)]:
        q.grad = k.grad = v.grad = None
        out[0, head, pos].sum().backward(retain_graph=True)
        key_grad = k.grad[0, head].abs().sum(-1)  # (T,)
        torch.testing.assert_close(key_grad[~allowed[head, pos]], torch.zeros_like(key_grad[~allowed[head, pos]]),
                                   rtol=0, atol=0)
        value_grad = v.grad[0, head].abs().sum(-1)
        assert (value_grad[allowed[head, pos]] > 0).all()
        assert (value_grad[~allowed[head, pos]] == 0).all()
        assert (k.grad[0, 1 - head] == 0).all() and (q.grad[0, :, pos + 1:] == 0).all()
    # shifted head 1 at position 13: leak-free group [12, 20); wrap: same interior group
    assert allowed[1, 13].nonzero().flatten().tolist() == list(range(12, 14))
    assert allowed[0, 12].nonzero().flatten().tolist() == [8, 9, 10, 11, 12]


@pytest.mark.parametrize("shift", ["heads", "layers", "none"])
def test_leak_free_does_not_see_future_tokens_but_wrap_does(shift):
    q, k, v = qkv(batch=1, heads=4, kv_heads=2, seq=32)
    t = 5  # inside the first half-group (G = 8)
    q2, k2, v2 = (x.clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, :, t + 1:] = torch.randn_like(x[:, :, t + 1:])
    for layer in (0, 1):
        cfg = S2AttnConfig(shift=shift)
        before = s2_attention(q, k, v, cfg, layer_idx=layer)[:, :, :t + 1]
        after = s2_attention(q2, k2, v2, cfg, layer_idx=layer)[:, :, :t + 1]
        torch.testing.assert_close(before, after, rtol=0, atol=0)
    wrap = S2AttnConfig(wrap=True, shift="heads")
    before = s2_attention(q, k, v, wrap)[:, 2:, :t + 1]  # shifted heads
    after = s2_attention(q2, k2, v2, wrap)[:, 2:, :t + 1]
    assert (before - after).abs().max() > 1e-3  # the first tokens attend to the sequence's last tokens


@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (32, 8)])
@pytest.mark.parametrize("cfg", [S2AttnConfig(), S2AttnConfig(wrap=True), S2AttnConfig(shift="none"),
                                 S2AttnConfig(shift="layers")])
def test_gqa_equals_repeated_kv_heads(heads, kv_heads, cfg):
    q, k, v = qkv(heads=heads, kv_heads=kv_heads, seq=32, dim=4)
    rep = heads // kv_heads
    for layer in (0, 1):
        out = s2_attention(q, k, v, cfg, layer_idx=layer)
        full_kv = s2_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), cfg, layer_idx=layer)
        torch.testing.assert_close(out, full_kv)


def test_shift_layers_alternates():
    q, k, v = qkv(heads=4, kv_heads=2, seq=32)
    cfg = S2AttnConfig(shift="layers")
    torch.testing.assert_close(s2_attention(q, k, v, cfg, layer_idx=0),
                               dense_attention(q, k, v, dense_mask(4, 32, 8, 4, False)))
    torch.testing.assert_close(s2_attention(q, k, v, cfg, layer_idx=3),
                               dense_attention(q, k, v, dense_mask(4, 32, 8, 0, False)))
    with pytest.raises(ValueError, match="layer_idx"):
        s2_attention(q, k, v, cfg)


def test_padded_lengths_equal_each_sample_alone():
    q, k, v = qkv(batch=2, heads=4, kv_heads=2, seq=32)
    out = s2_attention(q, k, v, S2AttnConfig(), lengths=torch.tensor([32, 16]))
    alone = s2_attention(q[1:, :, :16], k[1:, :, :16], v[1:, :, :16], S2AttnConfig())
    torch.testing.assert_close(out[1:, :, :16], alone)
    torch.testing.assert_close(out[:1], s2_attention(q[:1], k[:1], v[:1], S2AttnConfig()))
    assert (out[1, :, 16:] == 0).all()


def test_bad_lengths_and_fields_raise_clear_errors():
    q, k, v = qkv(seq=30)
    with pytest.raises(ValueError, match="not divisible by the group size 7"):
        s2_attention(q, k, v, S2AttnConfig())
    q, k, v = qkv(seq=36)  # G = 9, odd
    with pytest.raises(ValueError, match="odd"):
        s2_attention(q, k, v, S2AttnConfig())
    s2_attention(q, k, v, S2AttnConfig(shift="none"))  # no half shift needed: fine
    for field, value in [("pattern", "dense"), ("shift", "tokens"), ("direction", "up"), ("backend", "xformers"),
                         ("group_size_ratio", 0.0), ("group_size_ratio", 2), ("wrap", "yes")]:
        with pytest.raises(ValueError, match=field):
            S2AttnConfig(**{field: value})
    with pytest.raises(ValueError, match="group_sise"):
        S2AttnConfig.from_dict({"group_sise": 0.25})


def test_flash_backend_on_cpu_raises_clear_error():
    q, k, v = qkv()
    with pytest.raises(RuntimeError, match="flash"):
        s2_attention(q, k, v, S2AttnConfig(backend="flash"))


def sdpa_varlen(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=True):
    """Stand-in for flash_attn_varlen_func: causal SDPA on each [cu[i], cu[i+1]) segment of packed tokens."""
    assert torch.equal(cu_q, cu_k) and cu_q.dtype == torch.int32 and causal
    assert int((cu_q[1:] - cu_q[:-1]).max()) <= max_q
    out = torch.empty_like(q)
    for lo, hi in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=False):
        seg = [x[lo:hi].transpose(0, 1) for x in (q, k, v)]  # (heads, L, D)
        out[lo:hi] = F.scaled_dot_product_attention(*seg, is_causal=True, scale=softmax_scale,
                                                    enable_gqa=True).transpose(0, 1)
    return out


@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("heads,kv_heads,unshifted", [(4, 2, 2), (9, 3, 4), (4, 2, 0), (4, 2, 4)])
def test_flash_wrapper_cu_seqlens_match_dense(wrap, heads, kv_heads, unshifted):
    from repro.models.attention.flash_varlen import s2_flash as _s2_flash

    q, k, v = qkv(batch=3, heads=heads, kv_heads=kv_heads, seq=32)
    out = _s2_flash(q, k, v, 8, unshifted, wrap, None, 0.0, varlen=sdpa_varlen).transpose(1, 2)
    torch.testing.assert_close(out, dense_attention(q, k, v, dense_mask(heads, 32, 8, unshifted, wrap)))


def reference_flash_cu_seqlens(bsz: int, q_len: int, group: int) -> torch.Tensor:
    """``cu_q_lens`` as LongLoRA's ``forward_flashattn`` builds them for ``bsz * 2`` half-head sequences.

    Sequence ``2b`` holds batch ``b``'s first half of the heads (groups at ``kG``), sequence ``2b + 1`` the
    shifted half (boundaries at ``kG + G/2``, no roll): the reference's default training path
    (``fine-tune.py --use_flash_attn True``).
    """
    starts = torch.arange(0, 2 * bsz * q_len + 1, q_len, dtype=torch.int32)  # unpad_input's cu_q_lens
    tmp = torch.arange(0, q_len, group, dtype=torch.int32)
    tmp = torch.stack([tmp, tmp + group // 2]).repeat(bsz, 1) + starts[:-1].unsqueeze(-1)
    return torch.cat([tmp, starts[1:].unsqueeze(-1)], dim=-1).view(-1)


@pytest.mark.parametrize("heads,seq,group", [(4, 32, 8), (8, 64, 16)])
def test_leak_free_default_equals_the_reference_flash_path(heads, seq, group):
    """wrap=False is the reference's flash layout: the same cu_seqlens on packed half-head sequences, in fp64
    (equal to a few fp64 ulps: the two compute the same sums in another order)."""
    torch.manual_seed(0)
    q, k, v = qkv(batch=2, heads=heads, kv_heads=heads, seq=seq, dtype=torch.float64)
    b, h, t, d = q.shape
    # [B, H, T, D] -> the reference's [B * 2, T, H / 2, D] (first half of the heads, then the shifted half), packed
    packed = [x.transpose(1, 2).reshape(b, t, 2, h // 2, d).permute(0, 2, 1, 3, 4).reshape(b * 2 * t, h // 2, d)
              for x in (q, k, v)]
    out = sdpa_varlen(*packed, reference_flash_cu_seqlens(b, t, group), reference_flash_cu_seqlens(b, t, group),
                      group, group)
    ref = out.reshape(b, 2, t, h // 2, d).permute(0, 1, 3, 2, 4).reshape(b, h, t, d)
    ours = s2_attention(q, k, v, S2AttnConfig(group_size_ratio=group / seq))
    assert (ours - ref).abs().max().item() <= 4e-15
    rolled = s2_attention(q, k, v, S2AttnConfig(group_size_ratio=group / seq, wrap=True))
    assert (rolled - ref).abs().max().item() > 1e-3  # the roll is another layout (the non-flash path)


@pytest.mark.gpu
@pytest.mark.parametrize("cfg", [S2AttnConfig(backend="flash"), S2AttnConfig(backend="flash", wrap=True),
                                 S2AttnConfig(backend="flash", shift="none")])
def test_flash_equals_sdpa_on_gpu(cfg):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("flash_attn", reason="flash-attn is not installed")
    q, k, v = (x.cuda() for x in qkv(batch=2, heads=32, kv_heads=8, seq=1024, dim=128, dtype=torch.bfloat16))
    flash = s2_attention(q, k, v, cfg)
    sdpa = s2_attention(q, k, v, dataclasses.replace(cfg, backend="sdpa"))
    torch.testing.assert_close(flash.float(), sdpa.float(), atol=2e-2, rtol=2e-2)


# ---------------------------------------------------------------------------------------------------------------
# transformers registration
# ---------------------------------------------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                      max_position_embeddings=256)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 128, (2, 64), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def logits(model, ids, **kwargs):
    return model(input_ids=ids, **kwargs).logits


def test_registration_switches_only_the_chosen_model(tokens, tmp_path):
    model, other = tiny_llama(), tiny_llama()
    reference = logits(model, tokens)
    apply_attention(model, S2AttnConfig())
    assert model.config._attn_implementation == S2_ATTN_NAME
    s2_logits = logits(model, tokens)
    assert (s2_logits - reference).abs().max() > 1e-4
    assert other.config._attn_implementation == "sdpa"
    torch.testing.assert_close(logits(other, tokens), reference, rtol=0, atol=0)
    register_s2_attention()
    register_s2_attention()
    torch.testing.assert_close(logits(model, tokens), s2_logits, rtol=0, atol=0)
    use_full_attention(model)
    assert model.config._attn_implementation == "sdpa" and model.config.s2_attn == S2AttnConfig().to_dict()
    torch.testing.assert_close(logits(model, tokens), reference, rtol=0, atol=0)
    apply_attention(model)  # restores the stored settings
    torch.testing.assert_close(logits(model, tokens), s2_logits, rtol=0, atol=0)

    model.save_pretrained(tmp_path)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.s2_attn == S2AttnConfig().to_dict()
    apply_attention(loaded)
    torch.testing.assert_close(logits(loaded, tokens), s2_logits)


def test_one_group_without_shift_equals_sdpa_model(tokens):
    model = tiny_llama()
    reference = logits(model, tokens)
    apply_attention(model, S2AttnConfig(group_size_ratio=1.0, shift="none"))
    torch.testing.assert_close(logits(model, tokens), reference)
    apply_attention(model, {"pattern": "full"})
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="ratio"):
        apply_attention(model, {"ratio": 0.5})


def test_model_padding_right_exact_left_raises(tokens):
    model = apply_attention(tiny_llama(), S2AttnConfig())
    mask = torch.ones_like(tokens)
    mask[1, 32:] = 0
    batch = logits(model, tokens, attention_mask=mask)
    torch.testing.assert_close(batch[1, :32], logits(model, tokens[1:, :32])[0])
    torch.testing.assert_close(batch[0], logits(model, tokens[:1])[0])
    with pytest.raises(ValueError, match="right padding"):
        logits(model, tokens, attention_mask=mask.flip(-1))


def test_generation_with_cache_raises_until_full_attention(tokens):
    model = apply_attention(tiny_llama(), S2AttnConfig())
    with pytest.raises(ValueError, match="use_full_attention"):
        model.generate(tokens[:1, :64], max_new_tokens=2, do_sample=False)
    use_full_attention(model)
    assert model.generate(tokens[:1, :64], max_new_tokens=2, do_sample=False).shape == (1, 66)


@pytest.mark.parametrize("wrap", [False, True])
def test_only_pattern2_shifts_every_head(wrap):
    """Table 6's "only pattern 2": shift='all' is the dense mask with every head shifted."""
    q, k, v = qkv(heads=4, kv_heads=2, seq=32)
    out = s2_attention(q, k, v, S2AttnConfig(shift="all", wrap=wrap))
    torch.testing.assert_close(out, dense_attention(q, k, v, dense_mask(4, 32, 8, 0, wrap)))


@pytest.mark.parametrize("shift", ["heads", "all"])
def test_left_and_right_roll_are_identical_when_the_group_divides_the_length(shift):
    """Rolling by -G/2 or +G/2 gives the same groups when G divides T: why a right-roll variant is redundant."""
    q, k, v = qkv(heads=4, kv_heads=2, seq=64)
    left = s2_attention(q, k, v, S2AttnConfig(shift=shift, wrap=True, direction="left"))
    right = s2_attention(q, k, v, S2AttnConfig(shift=shift, wrap=True, direction="right"))
    torch.testing.assert_close(left, right)
