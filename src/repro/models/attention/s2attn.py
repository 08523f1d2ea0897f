"""Shifted sparse attention (S2-Attn) as pure tensor functions.

LongLoRA §3.2 (Chen et al., ICLR 2024): during fine-tuning, attention is computed inside groups of
``G = T * group_size_ratio`` tokens (causal inside each group); in half of the heads the groups are shifted
by ``G / 2`` so that information flows between neighbouring groups. Evaluation uses full attention.

All public functions take query/key/value in the (B, H, T, D) layout that transformers' attention functions
receive; key/value may have fewer heads than query (grouped-query attention, ``H % Hk == 0``). Head ``h`` of
the query reads key/value head ``h // (H // Hk)``, as transformers' ``repeat_kv`` does.

Two shifted-group layouts are provided (``S2AttnConfig.wrap``):

* ``wrap=True`` mirrors the reference repository: the shifted heads are rolled along T by ``-G/2``, grouped,
  attended and rolled back, so the last half-group is attended *together with* the first half-group (the
  first ``G/2`` tokens see the last ``G/2`` tokens of the sequence: a leak from the end of the sequence).
* ``wrap=False`` (default) cuts the shifted heads at ``G/2 + kG`` with no wrap-around: the first and the last
  half-groups are attended on their own, as flash-attn varlen with shifted ``cu_seqlens`` does. Leak-free.

The fast path never rolls the full q/k/v: aligned groups of the unshifted heads and interior shifted groups of
the shifted heads are stacked into the batch dimension and attended in ONE causal SDPA call; the remaining
aligned tail group and the two half-groups (or the wrapped group) take one small call each.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

PATTERNS = ("full", "s2")
SHIFTS = ("none", "heads", "layers", "all")
DIRECTIONS = ("left", "right")
BACKENDS = ("sdpa", "flash")


@dataclass
class S2AttnConfig:
    """Settings of the attention pattern (LongLoRA §3.2; Table 6 ablates the pattern).

    Attributes:
        pattern: ``"full"`` (plain causal attention) or ``"s2"`` (grouped attention, optionally shifted).
        group_size_ratio: G = int(T * ratio), derived per call from the actual sequence length (paper: 1/4).
        shift: ``"none"`` (short attention, no shift), ``"heads"`` (the paper's: heads ``H // 2 ..`` shifted,
            as the reference repository slices ``num_heads // 2``), ``"layers"`` (all heads shifted in odd
            layers, none in even layers), ``"all"`` (every head shifted: Table 6's "only pattern 2").
        wrap: False = leak-free shifted groups (no wrap-around); True = the paper's roll (wrap-around).
        direction: ``"left"`` (roll by -G/2) or ``"right"`` (roll by +G/2); only matters with ``wrap=True``.
            Because G divides T, both rolls give the same partition into groups with the same order inside the
            wrapped group (they differ by a rotation by whole groups), so the two directions produce the same
            output; the field exists so the ablation can state and verify it.
        backend: ``"sdpa"`` (PyTorch SDPA, runs everywhere) or ``"flash"`` (flash-attn varlen, CUDA only).
    """

    pattern: str = "s2"
    group_size_ratio: float = 0.25
    shift: str = "heads"
    wrap: bool = False
    direction: str = "left"
    backend: str = "sdpa"

    def __post_init__(self) -> None:
        for name, allowed in (("pattern", PATTERNS), ("shift", SHIFTS), ("direction", DIRECTIONS),
                              ("backend", BACKENDS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"S2AttnConfig.{name}={value!r} is not one of {allowed}")
        ratio = self.group_size_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
            raise ValueError(f"S2AttnConfig.group_size_ratio={ratio!r} must be a number in (0, 1]")
        if not isinstance(self.wrap, bool):
            raise ValueError(f"S2AttnConfig.wrap={self.wrap!r} must be a bool")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (stored on ``model.config.s2_attn`` so it survives save/load)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "S2AttnConfig":
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown S2AttnConfig key(s) {unknown}; expected a subset of {sorted(known)}")
        return cls(**values)


def group_size_for(seq_len: int, ratio: float, needs_half: bool) -> int:
    """G = int(T * ratio), checked to divide T (and to be even when a half-group shift is needed)."""
    group = int(seq_len * ratio)
    if group < 1:
        raise ValueError(f"group_size_ratio={ratio} gives group size {group} for sequence length {seq_len}")
    if seq_len % group != 0:
        raise ValueError(f"sequence length {seq_len} is not divisible by the group size {group} "
                         f"(= int({seq_len} * group_size_ratio={ratio})); pad or pack to a multiple")
    if needs_half and group % 2 != 0:
        raise ValueError(f"group size {group} (sequence length {seq_len} * group_size_ratio={ratio}) is odd; "
                         f"the half-group shift needs an even group size")
    return group


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
# SDPA fast path
# ----------------------------------------------------------------------------------------------------------------
def _cat_heads(parts: list[Tensor]) -> Tensor:
    """Concatenate (N, h_i, L, D) views along heads in token-major memory: -> (N, sum h_i, L, D)."""
    if len(parts) == 1:
        return parts[0]
    return torch.cat([p.transpose(1, 2) for p in parts], dim=2).transpose(1, 2)  # (N, L, H, D) -> (N, H, L, D)


def _tokens(x: Tensor, batch: int) -> Tensor:
    """Attention output (B*n, H, G, D) -> token-major (B, n*G, H, D)."""
    bn, h, g, d = x.shape
    return x.transpose(1, 2).reshape(batch, (bn // batch) * g, h, d)  # (B, n*G, H, D)


def _s2_sdpa(q: Tensor, k: Tensor, v: Tensor, group_size: int, h0: int, wrap: bool,
             scale: float | None, dropout: float) -> Tensor:
    """S2-Attn with SDPA; returns token-major (B, T, H, D). Heads ``:h0`` aligned, ``h0:`` shifted by G/2.

    Pieces are cut with ``split`` (whose backward is one concatenation) rather than slicing (whose backward
    zero-fills a full-size gradient per slice).
    """
    b, h, t, _ = q.shape
    g, half, n = group_size, group_size // 2, t // group_size
    if h0 == h:  # no shifted head: all n aligned groups in one call, zero-copy for token-major inputs
        return _tokens(attend(group(q, g), group(k, g), group(v, g), scale, dropout), b)
    rep = h // k.shape[1]
    if h0 % rep != 0:  # a key/value head serves shifted and unshifted query heads: give each its own copy
        k, v, rep = repeat_kv(k, rep), repeat_kv(v, rep), 1
    hk0 = h0 // rep

    def pieces(x: Tensor, split: int) -> tuple[Tensor, ...]:
        aligned, shifted = x.split([split, x.shape[1] - split], dim=1)  # (B, split, T, D), (B, H-split, T, D)
        body, tail = aligned.split([t - g, g], dim=2)  # aligned groups 0..n-2 | aligned group n-1
        first, middle, last = shifted.split([half, t - g, half], dim=2)  # half-group | interior | half-group
        main = _cat_heads(([group(body, g)] if split else []) + [group(middle, g)])  # (B*(n-1), H, G, D)
        if wrap:  # the reference's wrapped group: last half-group then first half-group, causal in that order
            ends = torch.cat([last, first], dim=2)  # (B, Hs, G, D)
        else:  # two separate half-groups stacked along the batch
            ends = torch.cat([first, last], dim=0)  # (2B, Hs, G/2, D)
        return main, tail, ends

    (qm, qt, qe), (km, kt, ke), (vm, vt, ve) = pieces(q, h0), pieces(k, hk0), pieces(v, hk0)
    unshifted, shifted = [], []
    if n > 1:  # ONE call for aligned groups 0..n-2 of heads [:h0] and interior shifted groups of heads [h0:]
        out = _tokens(attend(qm, km, vm, scale, dropout), b)  # (B, (n-1)G, H, D)
        out_aligned, out_shifted = out.split([h0, h - h0], dim=2)  # (B, (n-1)G, h0 | H-h0, D)
        unshifted.append(out_aligned)
        shifted.append(out_shifted)
    if h0:
        unshifted.append(attend(qt, kt, vt, scale, dropout).transpose(1, 2))  # (B, G, h0, D)
    ends = attend(qe, ke, ve, scale, dropout).transpose(1, 2)
    if wrap:  # ends: (B, G, Hs, D) = [last half-group | first half-group]
        last, first = ends.split([half, half], dim=1)
    else:  # ends: (2B, G/2, Hs, D) = [first half-groups ; last half-groups] along the batch
        first, last = ends.split([b, b], dim=0)
    shifted_tokens = torch.cat([first, *shifted, last], dim=1)  # (B, T, Hs, D)
    if not h0:
        return shifted_tokens
    return torch.cat([torch.cat(unshifted, dim=1), shifted_tokens], dim=2)  # (B, T, H, D)


# ----------------------------------------------------------------------------------------------------------------
# flash-attn varlen backend
# ----------------------------------------------------------------------------------------------------------------
def _import_flash_varlen(device: torch.device):
    """Lazy import of ``flash_attn_varlen_func`` with a clear error when it cannot run."""
    if not torch.cuda.is_available() or device.type != "cuda":
        raise RuntimeError(f"S2AttnConfig.backend='flash' needs a CUDA GPU and CUDA tensors (got {device}); "
                           f"use backend='sdpa' on this machine")
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError as err:
        raise RuntimeError("S2AttnConfig.backend='flash' needs the flash-attn package "
                           "(pip install 'repro[gpu]'); use backend='sdpa' otherwise") from err
    return flash_attn_varlen_func


def _s2_flash(q: Tensor, k: Tensor, v: Tensor, group_size: int, h0: int, wrap: bool,
              scale: float | None, dropout: float, varlen=None) -> Tensor:
    """S2-Attn with flash-attn varlen (cu_seqlens cut at the group boundaries); returns (B, T, H, D).

    ``varlen`` defaults to ``flash_attn.flash_attn_varlen_func`` (imported lazily); any function with its
    signature (packed (total, heads, D) inputs, int32 ``cu_seqlens``) can stand in for it.
    """
    varlen = varlen or _import_flash_varlen(q.device)
    b, h, t, d = q.shape
    g, half = group_size, group_size // 2
    rep = h // k.shape[1]
    if 0 < h0 < h and h0 % rep != 0:
        k, v, rep = repeat_kv(k, rep), repeat_kv(v, rep), 1
    hk0 = h0 // rep
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, T, H|Hk, D), views
    dev = q.device
    aligned = torch.arange(0, b * t + 1, g, device=dev, dtype=torch.int32)  # boundaries kG over the flat batch
    starts = torch.arange(b, device=dev, dtype=torch.int32)[:, None] * t
    inner = torch.arange(half - g, t, g, device=dev, dtype=torch.int32).clamp_(min=0)[None, :]  # 0, G/2 + kG
    end = torch.full((1,), b * t, device=dev, dtype=torch.int32)
    shifted_cu = torch.cat([(starts + inner).flatten(), end])  # each sample: 0, G/2, 3G/2, .., T - G/2; then B*T

    def run(x_q: Tensor, x_k: Tensor, x_v: Tensor, cu: Tensor) -> Tensor:
        flat = [x.reshape(b * t, x.shape[2], d) for x in (x_q, x_k, x_v)]  # (B*T, heads, D)
        out = varlen(*flat, cu, cu, g, g, dropout_p=dropout, softmax_scale=scale, causal=True)
        return out.view(b, t, -1, d)  # (B, T, heads, D)

    outs = []
    if h0:
        outs.append(run(qt[:, :, :h0], kt[:, :, :hk0], vt[:, :, :hk0], aligned))
    if h0 < h:
        sq, sk, sv = qt[:, :, h0:], kt[:, :, hk0:], vt[:, :, hk0:]
        if wrap:  # the reference's roll: aligned groups on tokens rolled by -G/2, rolled back afterwards
            rolled = [x.roll(-half, dims=1) for x in (sq, sk, sv)]
            outs.append(run(*rolled, aligned).roll(half, dims=1))
        else:
            outs.append(run(sq, sk, sv, shifted_cu))
    return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]  # (B, T, H, D)


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
    b, h, t, d = q.shape
    if cfg.pattern == "full":
        return attend(q, k, v, scale, dropout).transpose(1, 2)
    h0 = unshifted_heads(h, cfg.shift, layer_idx)
    g = group_size_for(t, cfg.group_size_ratio, needs_half=h0 < h)
    if cfg.backend == "flash":
        return _s2_flash(q, k, v, g, h0, cfg.wrap, scale, dropout)
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
