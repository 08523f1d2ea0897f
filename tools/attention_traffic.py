"""Count the memory traffic of tensor operations outside attention kernels (a ``TorchDispatchMode``).

Attention variants differ from grouped attention without shift mostly in the copies around the kernels (rolls,
concatenations, zero-filled slice gradients, repeated key/value heads), and those bytes carry over from CPU to
GPU where CPU timings do not. :class:`TrafficCounter` sees every ATen call below autograd, forward and backward,
and adds the bytes each one reads and writes, skipping:

* views and aliases (no data moves),
* allocations (``empty*``),
* attention kernels themselves (SDPA's fused kernels and flash-attn's ops; what they do inside is theirs).

``copy_`` counts its source read and its destination written; an in-place ``add_`` reads both operands and
writes one; an ``out=`` overload (``torch.add(x, y, out=z)``) reads its inputs and only writes ``out``.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ATTENTION_KERNELS = ("scaled_dot_product", "flash_attn", "_flash_attention", "_efficient_attention", "_cudnn_attention")
FREE_OPS = ("aten.detach", "aten._unsafe_view", "aten.alias", "aten.lift_fresh", "aten.empty", "aten.new_empty",
            "aten.empty_strided", "aten.new_empty_strided", "aten.empty_like")


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _write_only(func, kwargs: dict) -> list[torch.Tensor]:
    """The ``out=`` tensors of an out overload: its keyword-only arguments it writes to (never read)."""
    return [kwargs[a.name] for a in func._schema.arguments
            if a.kwarg_only and a.alias_info is not None and a.alias_info.is_write
            and isinstance(kwargs.get(a.name), torch.Tensor)]


class TrafficCounter(TorchDispatchMode):
    """Bytes read and written by operations outside attention kernels, per operation name.

    Example:
        >>> with TrafficCounter() as counter:
        ...     out = attention(q, k, v)
        ...     torch.autograd.grad(out, (q, k, v), grad)
        >>> counter.total / q_bytes   # traffic in units of one query-sized tensor
    """

    def __init__(self) -> None:
        super().__init__()
        self.read = 0
        self.written = 0
        self.by_op: Counter[str] = Counter()

    @property
    def total(self) -> int:
        """Bytes read plus bytes written."""
        return self.read + self.written

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func)
        if func.is_view or name.startswith(FREE_OPS) or any(k in name for k in ATTENTION_KERNELS):
            return out
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        read = sum(_nbytes(t) for t in inputs)
        if name.startswith("aten.copy_") and inputs:
            read -= _nbytes(inputs[0])  # the destination is overwritten, not read
        read -= sum(_nbytes(t) for t in _write_only(func, kwargs))
        written = sum(_nbytes(t) for t in outputs)
        self.read += read
        self.written += written
        self.by_op[name] += read + written
        return out


def attention_traffic(fn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[float, dict[str, float]]:
    """Traffic of ``fn(q, k, v)`` forward + backward, in units of S = one query-sized tensor.

    ``fn`` returns the output in any layout; the output gradient is created outside the counter, and the
    gradients are taken with ``torch.autograd.grad`` (so no leaf accumulation is counted).

    Returns:
        (total traffic in S, {operation: traffic in S}).
    """
    out = fn(q, k, v)  # warm-up outside the counter (lazy initialisation, kernel selection)
    grad = torch.randn_like(out)
    torch.autograd.grad(out, (q, k, v), grad)
    with TrafficCounter() as counter:
        out = fn(q, k, v)
        torch.autograd.grad(out, (q, k, v), grad)
    unit = _nbytes(q)
    return counter.total / unit, {name: b / unit for name, b in counter.by_op.items()}
