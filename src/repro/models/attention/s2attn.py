"""Shifted sparse attention (S2-Attn) as pure tensor functions.

LongLoRA §3.2 (Chen et al., ICLR 2024): during fine-tuning, attention is computed inside groups of
``G = T * group_size_ratio`` tokens (causal inside each group); in half of the heads the groups are shifted
by ``G / 2`` so that information flows between neighbouring groups. Evaluation uses full attention.

All public functions take query/key/value in the (B, H, T, D) layout that transformers' attention functions
receive; key/value may have fewer heads than query (grouped-query attention, ``H % Hk == 0``). Head ``h`` of
the query reads key/value head ``h // (H // Hk)``, as transformers' ``repeat_kv`` does.

Two shifted-group layouts are provided (``S2AttnConfig.wrap``):

* ``wrap=False`` (default) cuts the shifted heads at ``G/2 + kG`` with no wrap-around: the first and the last
  half-groups are attended on their own. This is the reference's *training* path: ``fine-tune.py`` defaults to
  ``use_flash_attn=True``, and ``llama_attn_replace.forward_flashattn`` gives the shifted heads ``cu_seqlens``
  at ``kG + G/2`` without rolling (our output equals that layout to within 4e-15 in fp64, a few ulps:
  ``tests/test_s2attn.py``). Leak-free.
* ``wrap=True`` is the reference's non-flash path (``forward_noflashattn``) and the paper's Algorithm 1: the
  shifted heads are rolled along T by ``-G/2``, grouped, attended and rolled back, so the last half-group is
  attended *together with* the first half-group (the first ``G/2`` tokens see the last ``G/2`` tokens of the
  sequence: a leak from the end of the sequence).

The fast path never rolls, concatenates or repeats the full q/k/v (:mod:`repro.models.attention.piecewise`): each
kernel call reads a strided view of the token-major inputs (aligned heads: all groups in one call; shifted heads:
the interior ``[G/2, T - G/2)`` and the two half-groups; GQA by runs of query heads sharing key/value heads),
writes into one preallocated output, and its gradients land in preallocated gradients. The roll's wrapped group
(last half-group, then first half-group) is attended on the same views, its first half-group's softmax merged
from two kernel calls by their log-sum-exp. Over forward + backward this moves 8 query-sized tensors (MHA) or fewer
(GQA) outside the attention kernels, plus ``G/T`` times the shifted heads' share for the roll's merged rows and keys
(1/4 at G = T/4 with half the heads shifted; ``benchmarks/bench_attention.py``). Where no kernel returns the
log-sum-exp (flash-attn varlen, attention dropout, other devices) the wrapped group is concatenated instead
(G tokens of the shifted heads of q, k, v and the output gradient).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from repro.derived import group_size_for
from repro.models.attention.piecewise import (
    Kernel,
    LseKernel,
    PiecewiseAttention,
    Window,
    WrappedEnds,
    plan_pieces,
)
from repro.schemas import S2AttnConfig


def unshifted_heads(num_heads: int, shift: str, layer_idx: int | None) -> int:
    """Number of leading query heads that keep aligned groups; heads from this index on are shifted."""
    if shift == "none":
        return num_heads
    if shift == "heads":
        return num_heads // 2
    if shift == "all":  # Table 6 "only pattern 2": every head shifted
        return 0
    if layer_idx is None:
        raise ValueError("S2AttnConfig.shift='layers' needs the attention module's layer_idx")
    return num_heads if layer_idx % 2 == 0 else 0


# ----------------------------------------------------------------------------------------------------------------
# Building blocks on (B, H, T, D)
# ----------------------------------------------------------------------------------------------------------------
def shift(x: Tensor, half: int, first_shifted_head: int, direction: str = "left") -> Tensor:
    """Roll heads ``first_shifted_head ..`` along T by -half (left) or +half (right); the reference's shift."""
    steps = -half if direction == "left" else half
    return torch.cat([x[:, :first_shifted_head], x[:, first_shifted_head:].roll(steps, dims=2)], dim=1)


def unshift(x: Tensor, half: int, first_shifted_head: int, direction: str = "left") -> Tensor:
    """Inverse of :func:`shift`."""
    return shift(x, half, first_shifted_head, "right" if direction == "left" else "left")


def group(x: Tensor, group_size: int, start: int = 0, num_groups: int | None = None) -> Tensor:
    """Cut tokens ``[start, start + n*G)`` into groups stacked in the batch: (B, H, T, D) -> (B*n, H, G, D)."""
    b, h, t, d = x.shape
    n = (t - start) // group_size if num_groups is None else num_groups
    if start or n * group_size != t:
        x = x[:, :, start:start + n * group_size]  # (B, H, n*G, D), a view
    x = x.transpose(1, 2)  # (B, n*G, H, D), a view
    x = x.reshape(b * n, group_size, h, d)  # (B*n, G, H, D); no copy when the memory is token-major
    return x.transpose(1, 2)  # (B*n, H, G, D)


def ungroup(x: Tensor, batch: int) -> Tensor:
    """Inverse of :func:`group`: (B*n, H, G, D) -> (B, H, n*G, D)."""
    bn, h, g, d = x.shape
    x = x.transpose(1, 2).reshape(batch, (bn // batch) * g, h, d)  # (B, n*G, H, D)
    return x.transpose(1, 2)  # (B, H, n*G, D)


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None, dropout: float = 0.0) -> Tensor:
    """Causal attention inside each batch entry (= group): (N, H, L, D) x (N, Hk, L, D) -> (N, H, L, D).

    ``is_causal=True`` without a mask lets SDPA pick the FlashAttention kernel on GPUs; ``enable_gqa`` avoids
    materialising repeated key/value heads.
    """
    gqa = q.shape[1] != k.shape[1]
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scale, enable_gqa=gqa)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, Hk, T, D) -> (B, Hk*n_rep, T, D), head ``h`` copied to ``h*n_rep .. h*n_rep+n_rep-1``."""
    if n_rep == 1:
        return x
    b, hk, t, d = x.shape
    return x[:, :, None].expand(b, hk, n_rep, t, d).reshape(b, hk * n_rep, t, d)  # (B, Hk*n_rep, T, D)


# ----------------------------------------------------------------------------------------------------------------
# SDPA kernels for the pieces of piecewise.plan_pieces (executed by piecewise.PiecewiseAttention)
# ----------------------------------------------------------------------------------------------------------------
def _lse_kernel(device: torch.device, dtype: torch.dtype, head_dim: int, scale: float | None,
                dropout: float) -> LseKernel | None:
    """PyTorch's fused attention kernels that return the log-sum-exp, or None where none applies.

    CPU: the CPU flash kernel (any float dtype). CUDA: the flash kernel (fp16/bf16, head dim a multiple of 8 up to
    256, compute capability 8.0 or newer; grouped-query heads natively). Both backward kernels take the output and
    log-sum-exp of the merged softmax, as PyTorch's ring attention calls them. Attention dropout would need one
    random mask across the merged calls: None then.
    """
    if dropout:
        return None
    aten = torch.ops.aten
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        fwd, bwd = aten._scaled_dot_product_flash_attention_for_cpu.default, \
            aten._scaled_dot_product_flash_attention_for_cpu_backward.default

        def forward(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> tuple[Tensor, Tensor, object]:
            with torch.autocast("cpu", enabled=False):
                out, lse = fwd(q, k, v, 0.0, causal, scale=scale)  # lse (n, h, L) in the compute dtype
            return out, lse, None

        def backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, state: object,
                     causal: bool) -> tuple[Tensor, Tensor, Tensor]:
            return bwd(grad, q, k, v, out, lse, 0.0, causal, scale=scale)

        return LseKernel(forward, backward)
    if (device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and head_dim % 8 == 0
            and head_dim <= 256 and torch.cuda.get_device_capability(device) >= (8, 0)):
        fwd, bwd = aten._scaled_dot_product_flash_attention.default, \
            aten._scaled_dot_product_flash_attention_backward.default

        def forward(q: Tensor, k: Tensor, v: Tensor, causal: bool) -> tuple[Tensor, Tensor, object]:
            with torch.autocast("cuda", enabled=False):
                out, lse, cum_q, cum_k, max_q, max_k, seed, offset, _ = fwd(q, k, v, 0.0, causal, False, scale=scale)
            return out, lse, (cum_q, cum_k, max_q, max_k, seed, offset)  # lse (n, h, L) float32

        def backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, state: object,
                     causal: bool) -> tuple[Tensor, Tensor, Tensor]:
            cum_q, cum_k, max_q, max_k, seed, offset = state
            return bwd(grad, q, k, v, out, lse.contiguous(), cum_q, cum_k, max_q, max_k, 0.0, causal, seed, offset,
                       scale=scale)

        return LseKernel(forward, backward)
    return None


def _sdpa_kernel(scale: float | None, dropout: float,
                 merged: LseKernel | None = None) -> Callable[[Window | WrappedEnds, bool], Kernel | LseKernel]:
    """Causal SDPA on (n, h, L, D) windows, autocast off (the caller casts q/k/v to one dtype); ``merged`` (when
    given) for the roll's wrapped group."""
    def call(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        with torch.autocast(q.device.type, enabled=False):
            return attend(q, k, v, scale, dropout)

    kernel = Kernel(call)
    return lambda window, shifted: merged if merged is not None and isinstance(window, WrappedEnds) else kernel


def _tokens(x: Tensor, batch: int) -> Tensor:
    """Attention output (B*n, H, G, D) -> token-major (B, n*G, H, D)."""
    bn, h, g, d = x.shape
    return x.transpose(1, 2).reshape(batch, (bn // batch) * g, h, d)  # (B, n*G, H, D)


def _s2_sdpa(q: Tensor, k: Tensor, v: Tensor, group_size: int, h0: int, wrap: bool,
             scale: float | None, dropout: float) -> Tensor:
    """S2-Attn with SDPA on views of the inputs; returns token-major (B, T, H, D). Heads ``h0:`` shifted."""
    b, h, t, _ = q.shape
    if h0 == h:  # no shifted head: all groups in one call on views, output and gradients need no copy at all
        return _tokens(attend(group(q, group_size), group(k, group_size), group(v, group_size), scale, dropout), b)
    merged = _lse_kernel(q.device, q.dtype, q.shape[3], scale, dropout) if wrap else None
    pieces = plan_pieces(b, h, k.shape[1], t, group_size, h0, wrap, _sdpa_kernel(scale, dropout, merged))
    return PiecewiseAttention.apply(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), pieces)


def compute_dtype(q: Tensor, k: Tensor, v: Tensor, backend: str) -> torch.dtype:
    """The one dtype q/k/v are attended in.

    Under autocast: the autocast dtype (what SDPA under autocast would use). Otherwise the inputs' dtype, or the
    narrowest one when they differ. flash-attn runs in fp16/bf16 only: fp32 becomes bf16 for it.
    """
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
    else:
        dtype = min((x.dtype for x in (q, k, v)), key=lambda d: torch.finfo(d).bits)
    if backend == "flash" and dtype not in (torch.float16, torch.bfloat16):
        dtype = torch.bfloat16
    return dtype


# ----------------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------------
def full_causal_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None = None,
                          dropout: float = 0.0) -> Tensor:
    """Plain causal attention (evaluation, §3.2): (B, H, T, D) -> (B, H, T, D)."""
    return attend(q, k, v, scale, dropout)


def _s2_tokens(q: Tensor, k: Tensor, v: Tensor, cfg: S2AttnConfig, layer_idx: int | None,
               scale: float | None, dropout: float) -> Tensor:
    """One unpadded batch; returns token-major (B, T, H, D)."""
    h, t, in_dtype = q.shape[1], q.shape[2], q.dtype
    if cfg.pattern == "full":
        return attend(q, k, v, scale, dropout).transpose(1, 2)
    h0 = unshifted_heads(h, cfg.shift, layer_idx)
    g = group_size_for(t, cfg.group_size_ratio, needs_half=h0 < h)
    dtype = compute_dtype(q, k, v, cfg.backend)
    q, k, v = (x.to(dtype) for x in (q, k, v))  # no-ops when they already are
    if cfg.backend == "flash":
        from repro.models.attention.flash_varlen import s2_flash  # flash-attn itself is imported there, lazily

        out = s2_flash(q, k, v, g, h0, cfg.wrap, scale, dropout)
        return out if torch.is_autocast_enabled(q.device.type) else out.to(in_dtype)
    return _s2_sdpa(q, k, v, g, h0, cfg.wrap, scale, dropout)


def s2_attention_tokens(q: Tensor, k: Tensor, v: Tensor, cfg: S2AttnConfig, *, layer_idx: int | None = None,
                        scale: float | None = None, dropout: float = 0.0,
                        lengths: Tensor | None = None) -> Tensor:
    """S2-Attn on (B, H, T, D) inputs returning the token-major (B, T, H, D) layout transformers expects.

    Args:
        q: (B, H, T, D) queries. k, v: (B, Hk, T, D) with ``H % Hk == 0``.
        cfg: the attention pattern.
        layer_idx: index of the layer (needed by ``shift="layers"``).
        scale: softmax scale (default 1/sqrt(D)). dropout: attention dropout probability.
        lengths: (B,) valid lengths of right-padded samples. Each sample is then attended alone on its first
            ``lengths[b]`` tokens, with its own group size ``int(lengths[b] * ratio)``, so it gets exactly what it
            gets without padding; outputs at padded positions are zero.

    Raises:
        ValueError: T (or a sample length) not divisible by the group size, odd group size with a shift,
            or mismatched shapes.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"query/key/value must be (B, H, T, D); got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"incompatible query {tuple(q.shape)} / key {tuple(k.shape)} / value {tuple(v.shape)}")
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"query heads {q.shape[1]} must be a multiple of key/value heads {k.shape[1]}")
    if lengths is None:
        return _s2_tokens(q, k, v, cfg, layer_idx, scale, dropout)
    out = q.new_zeros(q.shape[0], q.shape[2], q.shape[1], v.shape[3])  # (B, T, H, D)
    rows = []
    for i, n_valid in enumerate(lengths.tolist()):
        sample = [x[i:i + 1, :, :n_valid] for x in (q, k, v)]  # (1, H|Hk, L_i, D)
        rows.append(torch.cat([_s2_tokens(*sample, cfg, layer_idx, scale, dropout),
                               out[i:i + 1, n_valid:]], dim=1))  # (1, T, H, D)
    return torch.cat(rows, dim=0)  # (B, T, H, D)


def s2_attention(q: Tensor, k: Tensor, v: Tensor, cfg: S2AttnConfig, *, layer_idx: int | None = None,
                 scale: float | None = None, dropout: float = 0.0, lengths: Tensor | None = None) -> Tensor:
    """S2-Attn (LongLoRA §3.2): (B, H, T, D) -> (B, H, T, D). See :func:`s2_attention_tokens`."""
    out = s2_attention_tokens(q, k, v, cfg, layer_idx=layer_idx, scale=scale, dropout=dropout, lengths=lengths)
    return out.transpose(1, 2)  # (B, H, T, D)
