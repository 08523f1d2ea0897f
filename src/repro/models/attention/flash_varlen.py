"""S2-Attn on the flash-attn varlen backend (``S2AttnConfig.backend='flash'``; CUDA, the ``gpu`` extra).

The same pieces as the SDPA path (:func:`repro.models.attention.piecewise.plan_pieces`), each a flash-attn
varlen call whose ``cu_seqlens`` cut the packed tokens at the group boundaries. ``flash_attn`` is imported only
when a call needs it, so this module imports on machines without it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from repro.models.attention.piecewise import Kernel, PiecewiseAttention, Window, WrappedEnds, plan_pieces


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


def _cu_seqlens(window: Window | WrappedEnds, shifted: bool, wrap: bool, t: int, g: int,
                device: torch.device) -> tuple[Tensor, int]:
    """int32 cumulative segment lengths of a packed window and the longest segment."""
    def arange(stop: int) -> Tensor:
        return torch.arange(0, stop + 1, g, device=device, dtype=torch.int32)

    if isinstance(window, WrappedEnds):  # B wrapped groups of G tokens
        return arange(window.last.n * g), g
    if not shifted or wrap:  # aligned groups (also the interior of one sample for the roll)
        return arange(window.length), g
    b, half = window.length // t, g // 2  # leak-free: each sample cut at 0, G/2, 3G/2, .., T - G/2, T
    starts = torch.arange(b, device=device, dtype=torch.int32)[:, None] * t
    inner = torch.arange(half - g, t, g, device=device, dtype=torch.int32).clamp_(min=0)[None, :]
    end = torch.full((1,), b * t, device=device, dtype=torch.int32)
    return torch.cat([(starts + inner).flatten(), end]), g


def s2_flash(q: Tensor, k: Tensor, v: Tensor, group_size: int, h0: int, wrap: bool,
              scale: float | None, dropout: float, varlen=None) -> Tensor:
    """S2-Attn with flash-attn varlen (cu_seqlens cut at the group boundaries); returns (B, T, H, D).

    Same pieces as the SDPA path, packed as (tokens, heads, D) head-slice views: one call per head run for the
    aligned heads and for the leak-free shifted heads (the shift lives in ``cu_seqlens``, as flash-attn's own
    S2-Attn recipe does); the roll takes the interior of each sample plus one call on the wrapped groups,
    concatenated (flash-attn's public varlen function does not take a merged log-sum-exp in its backward).
    ``varlen`` defaults to ``flash_attn.flash_attn_varlen_func`` (imported lazily); any function with its
    signature (packed (total, heads, D) inputs, int32 ``cu_seqlens``) can stand in for it.
    """
    varlen = varlen or _import_flash_varlen(q.device)
    b, h, t, _ = q.shape
    g = group_size

    def kernel_for(window: Window | WrappedEnds, shifted: bool) -> Kernel:
        cu, longest = _cu_seqlens(window, shifted, wrap, t, g, q.device)
        return Kernel(lambda x_q, x_k, x_v: varlen(x_q, x_k, x_v, cu, cu, longest, longest, dropout_p=dropout,
                                                   softmax_scale=scale, causal=True), flat=True)

    pieces = plan_pieces(b, h, k.shape[1], t, g, h0, wrap, kernel_for, flat=True)
    return PiecewiseAttention.apply(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), pieces)
