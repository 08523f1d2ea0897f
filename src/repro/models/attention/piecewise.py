"""Piecewise attention without full-size copies: the execution engine behind S2-Attn's SDPA and flash backends.

S2-Attn (LongLoRA §3.2) attends inside groups of G tokens, half of the heads shifted by G/2. The reference
repository rolls and reshapes the whole q/k/v (``llama_attn_replace.py``), and a slicing implementation pays a
zero-filled full-size gradient per slice in the backward pass. Here every attention call reads a strided *view*
of the token-major (B, T, H, D) tensors that transformers produces:

* aligned heads: all groups of all samples as one (B*n, h, G, D) window (one call);
* shifted heads: the interior ``[G/2, T - G/2)`` as a (n-1, h, G, D) window, the two half-groups as a
  (2, h, G/2, D) window with a group stride of T - G/2 tokens (leak-free);
* the reference's roll, whose wrapped group is the last half-group followed by the first one: with kernels that
  return their log-sum-exp (:class:`LseKernel`, :class:`WrappedPiece`) three calls on views (last x last causal,
  first x first causal, first x last in full) whose two parts of the first half-group's softmax are merged by
  their log-sum-exp; otherwise (flash-attn varlen, dropout) the wrapped pair concatenated into one group
  (:class:`WrappedEnds`, a copy of G tokens of the shifted heads);
* grouped-query attention: query heads are cut into runs that read one contiguous range of key/value heads
  with a uniform ratio, so no key/value head is ever repeated.

:class:`PiecewiseAttention` writes the piece outputs into one preallocated token-major output and, in the
backward pass, the piece gradients into three preallocated token-major gradients (copy, or add where two runs
share a key/value head, or where two calls of a wrapped group share a row or a key): no zero fill and no
concatenation. It keeps the autograd node of each kernel call rather than its tensors, so activation
checkpointing still frees (and recomputes) what the kernels saved; a wrapped group on views saves q/k/v and the
output on the autograd context instead, which checkpointing frees and recomputes the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


def head_runs(lo: int, hi: int, rep: int) -> list[tuple[int, int, int, int]]:
    """Cut query heads ``[lo, hi)`` into runs ``(a, b, ka, kb)`` that read key/value heads ``[ka, kb)``.

    Query head ``h`` reads key/value head ``h // rep`` (transformers' ``repeat_kv`` order). Inside a run every
    key/value head serves the same number of query heads, so one GQA kernel call covers it without repeating
    key/value heads. A key/value head split between two runs (e.g. between aligned and shifted heads) appears
    in both, with a single key/value head in the partial run.
    """
    runs, a = [], lo
    while a < hi:
        whole_end = hi // rep * rep
        b = min(hi, (a // rep + 1) * rep) if a % rep or whole_end <= a else whole_end
        runs.append((a, b, a // rep, (b - 1) // rep + 1))
        a = b
    return runs


@dataclass(frozen=True)
class Window:
    """``n`` token windows of length ``length``, the i-th starting at flat token ``start + i * step``.

    Flat tokens number the (B, T) positions of a token-major (B, T, heads, D) tensor as ``b * T + t``; a window
    may cross samples only when the tensor's rows are contiguous (checked by :func:`token_major`).
    """

    start: int
    n: int
    step: int
    length: int

    def take(self, x: Tensor, a: int, b: int) -> Tensor:
        """View of heads ``[a, b)``: (B, T, Hx, D) -> (n, b - a, length, D); no copy."""
        s0, s1, s2, s3 = x.stride()
        t = x.shape[1]
        row, tok = divmod(self.start, t)
        offset = x.storage_offset() + row * s0 + tok * s1 + a * s2
        return x.as_strided((self.n, b - a, self.length, x.shape[3]), (self.step * s1, s2, s1, s3), offset)

    def put(self, dst: Tensor, a: int, b: int, value: Tensor, accumulate: bool) -> None:
        """Write (or add) ``value`` (n, b - a, length, D) into heads ``[a, b)`` of ``dst`` (B, T, Hx, D)."""
        view = self.take(dst, a, b)
        view.add_(value) if accumulate else view.copy_(value)

    def put_sum(self, dst: Tensor, a: int, b: int, x: Tensor, y: Tensor, accumulate: bool) -> None:
        """Write (or add) ``x + y`` into heads ``[a, b)`` of ``dst``; one pass over the window when writing."""
        view = self.take(dst, a, b)
        if accumulate:
            view.add_(x).add_(y)
        else:
            torch.add(x, y, out=view)


@dataclass(frozen=True)
class WrappedEnds:
    """The reference's wrapped group: the last half-group of every sample followed by its first half-group."""

    last: Window
    first: Window

    def take(self, x: Tensor, a: int, b: int) -> Tensor:
        """(B, T, Hx, D) -> (B, b - a, G, D), token-major memory; a copy of 2 * (G/2) tokens of heads [a, b)."""
        parts = [w.take(x, a, b).transpose(1, 2) for w in (self.last, self.first)]  # (B, G/2, h, D) each
        return torch.cat(parts, dim=1).transpose(1, 2)  # (B, h, G, D)

    def put(self, dst: Tensor, a: int, b: int, value: Tensor, accumulate: bool) -> None:
        """Inverse of :meth:`take`: the first G/2 positions go to the last half-group, the rest to the first."""
        last, first = value.split([self.last.length, self.first.length], dim=2)  # (B, h, G/2, D) each, views
        self.last.put(dst, a, b, last, accumulate)
        self.first.put(dst, a, b, first, accumulate)


@dataclass(frozen=True)
class Kernel:
    """An attention kernel and the layout it takes.

    Attributes:
        call: ``(q, k, v) -> out`` on kernel-layout tensors (causal within each group).
        flat: False: (n, heads, L, D) windows (SDPA). True: packed (n*L, heads, D) tokens (flash-attn varlen).
    """

    call: Callable[[Tensor, Tensor, Tensor], Tensor]
    flat: bool = False

    def prepare(self, w: Tensor) -> Tensor:
        """(n, h, L, D) window -> kernel layout (a view for token-major windows)."""
        return w.transpose(1, 2).reshape(-1, w.shape[1], w.shape[3]) if self.flat else w

    def restore(self, x: Tensor, shape: tuple[int, ...]) -> Tensor:
        """Kernel layout -> the (n, h, L, D) window ``shape``; a view."""
        if not self.flat:
            return x
        n, h, length, d = shape
        return x.view(n, length, h, d).transpose(1, 2)


@dataclass(frozen=True)
class LseKernel:
    """A causal/full attention kernel pair that exposes the softmax log-sum-exp (for merging partial softmaxes).

    Attributes:
        forward: ``(q, k, v, causal) -> (out, lse, state)`` on (n, h, L, D) windows; ``lse`` (n, h, >= L) float
            holds the log-sum-exp of the scaled scores in its first L positions; ``state`` is what ``backward``
            needs besides (e.g. the RNG state).
        backward: ``(grad_out, q, k, v, out, lse, state, causal) -> (dq, dk, dv)``. ``out`` and ``lse`` may be
            those of a larger softmax this call is one part of (laid out like the forward's ``lse``); the result
            is then this part's share of the gradients (the backward of flash/ring attention).
    """

    forward: Callable[[Tensor, Tensor, Tensor, bool], tuple[Tensor, Tensor, object]]
    backward: Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, object, bool], tuple[Tensor, Tensor, Tensor]]


@dataclass(frozen=True)
class WrappedPiece:
    """The reference's wrapped group of query heads ``heads``, attended on views without a concatenation.

    In rolled order the group is the last half-group ``last`` of each sample followed by its first half-group
    ``first`` (G/2 tokens each). Causal attention over it splits into three kernel calls on views: ``last`` x
    ``last`` causal (the whole softmax of those rows), ``first`` x ``first`` causal and ``first`` x ``last`` in
    full; the last two are merged with the log-sum-exp weights, and the backward of each call runs with the
    merged output and log-sum-exp. Rows of ``first`` and keys of ``last`` receive two contributions (summed while
    written: one extra read of G/2 tokens each for the output, dq, dk and dv); nothing else moves.
    """

    last: Window
    first: Window
    heads: tuple[int, int]
    kv_heads: tuple[int, int]
    kernel: LseKernel

    def _windows(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """(q, k, v) views of ``last`` and of ``first``: (n, h|hk, G/2, D) each."""
        return tuple([w.take(x, *hs) for x, hs in ((q, self.heads), (k, self.kv_heads), (v, self.kv_heads))]
                     for w in (self.last, self.first))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, out: Tensor) -> tuple[Tensor, ...]:
        """Write the group's output into ``out`` (B, T, H, D); returns what :meth:`backward` needs."""
        (q_l, k_l, v_l), (q_f, k_f, v_f) = self._windows(q, k, v)
        o_l, lse_l, st_l = self.kernel.forward(q_l, k_l, v_l, True)
        o_ff, lse_ff, st_ff = self.kernel.forward(q_f, k_f, v_f, True)
        o_fl, lse_fl, st_fl = self.kernel.forward(q_f, k_l, v_l, False)
        self.last.put(out, *self.heads, o_l, accumulate=False)
        rows = o_ff.shape[2]
        weight = torch.sigmoid(lse_fl[..., :rows] - lse_ff[..., :rows])  # share of the keys of ``last``
        torch.lerp(o_ff, o_fl, weight.unsqueeze(-1).to(o_ff.dtype), out=self.first.take(out, *self.heads))
        return lse_l, torch.logaddexp(lse_ff, lse_fl), (st_l, st_ff, st_fl)

    def backward(self, grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, saved: tuple[Tensor, ...],
                 dq: Tensor, dk: Tensor, dv: Tensor, accumulate_kv: bool) -> None:
        """Write the group's share of the gradients into the token-major ``dq``, ``dk``, ``dv``."""
        lse_l, lse_f, (st_l, st_ff, st_fl) = saved
        (q_l, k_l, v_l), (q_f, k_f, v_f) = self._windows(q, k, v)
        g_l, g_f = (w.take(grad_out, *self.heads) for w in (self.last, self.first))
        o_l, o_f = (w.take(out, *self.heads) for w in (self.last, self.first))
        dq_l, dk_ll, dv_ll = self.kernel.backward(g_l, q_l, k_l, v_l, o_l, lse_l, st_l, True)
        dq_ff, dk_ff, dv_ff = self.kernel.backward(g_f, q_f, k_f, v_f, o_f, lse_f, st_ff, True)
        dq_fl, dk_fl, dv_fl = self.kernel.backward(g_f, q_f, k_l, v_l, o_f, lse_f, st_fl, False)
        self.last.put(dq, *self.heads, dq_l, accumulate=False)
        self.first.put_sum(dq, *self.heads, dq_ff, dq_fl, accumulate=False)
        for dst, from_last, from_first, own in ((dk, dk_ll, dk_fl, dk_ff), (dv, dv_ll, dv_fl, dv_ff)):
            self.last.put_sum(dst, *self.kv_heads, from_last, from_first, accumulate=accumulate_kv)
            self.first.put(dst, *self.kv_heads, own, accumulate=accumulate_kv)


@dataclass(frozen=True)
class Piece:
    """One kernel call: query heads ``heads``, key/value heads ``kv_heads``, tokens ``where``."""

    where: Window | WrappedEnds
    heads: tuple[int, int]
    kv_heads: tuple[int, int]
    kernel: Kernel


# ----------------------------------------------------------------------------------------------------------------
# Plans: which kernel call reads which (heads, tokens) window (executed by PiecewiseAttention)
# ----------------------------------------------------------------------------------------------------------------
def _shifted_windows(b: int, t: int, g: int, wrap: bool, flat: bool) -> list[Window | WrappedEnds]:
    """Token windows of the shifted heads (boundaries at G/2 + kG), per sample where they cannot span samples."""
    half, n = g // 2, t // g
    if flat and not wrap:  # flash varlen: every token in one call, the cut lives in cu_seqlens
        return [Window(0, 1, b * t, b * t)]
    interior = [Window(r * t + half, 1 if flat else n - 1, g, t - g if flat else g) for r in range(b)] if n > 1 else []
    if wrap:  # the reference's roll: (last half-group, first half-group) of each sample form one group
        return interior + [WrappedEnds(Window(t - half, b, t, half), Window(0, b, t, half))]
    return interior + [Window(r * t, 2, t - half, half) for r in range(b)]  # the two half-groups, one call


def plan_pieces(b: int, h: int, hk: int, t: int, g: int, h0: int, wrap: bool,
                kernel_for: Callable[[Window | WrappedEnds, bool], Kernel | LseKernel],
                flat: bool = False) -> tuple[Piece | WrappedPiece, ...]:
    """Pieces of S2-Attn: heads ``:h0`` in aligned groups, heads ``h0:`` shifted by G/2; GQA by head runs.

    ``kernel_for(window, shifted)`` gives the kernel of a window (flash varlen needs its cu_seqlens); a
    :class:`LseKernel` for the roll's wrapped group attends it on views (:class:`WrappedPiece`) instead of
    concatenating it. ``flat``: the kernel takes packed tokens (one window per sample range, groups cut by
    cu_seqlens).
    """
    rep = h // hk
    aligned = [Window(0, 1, b * t, b * t)] if flat else [Window(0, b * t // g, g, g)]
    pieces = []
    for lo, hi, windows, shifted in ((0, h0, aligned, False),
                                     (h0, h, _shifted_windows(b, t, g, wrap, flat) if h0 < h else [], True)):
        for a, z, ka, kz in head_runs(lo, hi, rep):
            for w in windows:
                kernel = kernel_for(w, shifted)
                if isinstance(kernel, LseKernel):
                    pieces.append(WrappedPiece(w.last, w.first, (a, z), (ka, kz), kernel))
                else:
                    pieces.append(Piece(w, (a, z), (ka, kz), kernel))
    return tuple(pieces)


def token_major(x: Tensor) -> Tensor:
    """(B, T, Hx, D) with contiguous rows and unit last stride, copying only when ``x`` is laid out otherwise."""
    if x.stride(3) == 1 and (x.shape[0] == 1 or x.stride(0) == x.shape[1] * x.stride(1)):
        return x
    return x.contiguous()


class _Entry(torch.autograd.Function):
    """Identity that starts a kernel call's own small graph without an ``AccumulateGrad`` (which would hold the
    input, and with it the whole q/k/v, alive until the backward pass even under activation checkpointing)."""

    @staticmethod
    def forward(ctx, x: Tensor, anchor: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def _backward_fn(out: Tensor, leaves: list[Tensor]) -> Callable[[Tensor], tuple[Tensor, ...]]:
    """Gradient of one kernel call w.r.t. its three inputs, keeping autograd nodes but no tensor.

    When the kernel is one autograd node fed directly by the three inputs (the fused SDPA and flash-attn
    kernels), that node is called inside the running backward pass (one recomputation under checkpointing).
    Otherwise (a decomposed math path, e.g. SDPA with dropout on CPU), or when the running pass does not ask for
    these inputs (``torch.autograd.grad`` with ``inputs``), a nested ``torch.autograd.grad`` on the nodes' edges
    computes it.
    """
    node = out.grad_fn
    entries = [leaf.grad_fn for leaf in leaves]
    out_edge = torch.autograd.graph.get_gradient_edge(out)
    in_edges = [torch.autograd.graph.get_gradient_edge(leaf) for leaf in leaves]
    nexts = node.next_functions
    fused = len(nexts) >= 3 and all(fn is e for (fn, _), e in zip(nexts, entries, strict=False)) and \
        all(fn is None for fn, _ in nexts[3:])

    def grads(g: Tensor) -> tuple[Tensor, ...]:
        if fused:
            call = node if callable(node) else node.apply  # C++ nodes are callable; Python Functions' have apply
            result = tuple(call(g)[:3])
            if all(r is not None for r in result):
                return result
        return torch.autograd.grad(out_edge, in_edges, g)

    return grads


class PiecewiseAttention(torch.autograd.Function):
    """Attention assembled from pieces into preallocated token-major output and gradients.

    ``apply(q, k, v, pieces)`` with q (B, T, H, D), k/v (B, T, Hk, D) token-major; returns (B, T, H, D). The
    pieces (:class:`Piece` or :class:`WrappedPiece`) must tile every (query head, token) exactly once; every
    key/value head is covered by the runs that read it.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, pieces: tuple[Piece | WrappedPiece, ...]) -> Tensor:
        track = any(ctx.needs_input_grad[:3])
        q, k, v = (token_major(x.detach()) for x in (q, k, v))
        out = q.new_empty(q.shape[0], q.shape[1], q.shape[2], v.shape[3])  # (B, T, H, D)
        grads_of = []
        anchor = q.new_empty(0).requires_grad_() if track else None
        merged: list[Tensor] = []  # log-sum-exps of the wrapped groups on views
        for piece in pieces:
            if isinstance(piece, WrappedPiece):
                with torch.no_grad():
                    lse_l, lse_f, states = piece.forward(q, k, v, out)
                grads_of.append((len(merged), states))
                merged += [lse_l, lse_f]
                continue
            windows = [piece.where.take(x, *hs) for x, hs in ((q, piece.heads), (k, piece.kv_heads),
                                                                (v, piece.kv_heads))]  # (n, h|hk, L, D)
            leaves = [piece.kernel.prepare(w) for w in windows]
            with torch.enable_grad() if track else torch.no_grad():
                if track:
                    leaves = [_Entry.apply(x, anchor) for x in leaves]
                o = piece.kernel.call(*leaves)
            piece.where.put(out, *piece.heads, piece.kernel.restore(o.detach(), windows[0].shape), accumulate=False)
            if track:
                grads_of.append((_backward_fn(o, leaves), [w.shape for w in windows]))  # no tensor kept
        if track and merged:
            ctx.save_for_backward(q, k, v, out, *merged)
        ctx.pieces, ctx.grads_of = pieces, grads_of
        ctx.shapes = (q.shape, k.shape)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):
        grad_out = token_major(grad_out)
        q_shape, kv_shape = ctx.shapes
        saved = ctx.saved_tensors
        dq = grad_out.new_empty(q_shape)
        dk, dv = grad_out.new_empty(kv_shape), grad_out.new_empty(kv_shape)
        written: dict[int, set[tuple[int, int]]] = {}  # key/value head -> query-head runs that wrote it
        # Last piece first: a key/value head shared by the aligned and the shifted heads then gets a wrapped
        # group's two contributions in one pass (written as their sum) and the aligned heads' as one add.
        for piece, record in reversed(list(zip(ctx.pieces, ctx.grads_of, strict=True))):
            kv_range = range(*piece.kv_heads)
            add = any(written.get(h, set()) - {piece.heads} for h in kv_range)
            if isinstance(piece, WrappedPiece):
                at, states = record  # its two log-sum-exps are saved[4 + at], saved[5 + at]
                piece.backward(grad_out, *saved[:4], (saved[4 + at], saved[5 + at], states), dq, dk, dv,
                               accumulate_kv=add)
            else:
                grads_of, shapes = record
                g = piece.kernel.prepare(piece.where.take(grad_out, *piece.heads))
                gq, gk, gv = grads_of(g)
                piece.where.put(dq, *piece.heads, piece.kernel.restore(gq, shapes[0]), accumulate=False)
                piece.where.put(dk, *piece.kv_heads, piece.kernel.restore(gk, shapes[1]), accumulate=add)
                piece.where.put(dv, *piece.kv_heads, piece.kernel.restore(gv, shapes[2]), accumulate=add)
            for h in kv_range:
                written.setdefault(h, set()).add(piece.heads)
        return dq, dk, dv, None
