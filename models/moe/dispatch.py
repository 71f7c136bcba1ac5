"""Dropless token dispatch for SwiGLU experts stored as 3-D weights.

Every (token, expert) pair selected by the router is computed; there is no capacity factor and no
token is dropped (arXiv 2403.07652 routes every token). All implementations compute

    out[t] = sum_{e in S(t)} w[t, e] * down_e( silu(gate_e x_t) * up_e x_t )

with ``gate_up`` [E, 2I, H] (rows [0, I) = gate, rows [I, 2I) = up, ``nn.Linear`` layout) and
``down`` [E, H, I]. The pairs are sorted by expert (``mask.T.nonzero()`` is already expert-major),
each expert works on one contiguous slice, and the results go back with ``index_add_``.

Implementations (select by name, see :data:`DISPATCH_IMPLS`):

* ``"fused"`` (default): one custom ``autograd.Function``. The sorted pairs are processed in row
  blocks (``FUSED_BLOCK_ROWS``) so a block's buffers stay in cache; per block, two GEMMs per expert
  piece forward and four backward, each written straight into a preallocated buffer
  (``torch.mm(..., out=...)``), or one ``torch._grouped_mm`` per GEMM on accelerators
  (``FUSED_GEMM``); the SwiGLU runs once per block, and its backward is aten's fused ``silu_backward``
  (one vectorised pass; the earlier sigmoid-kept form took three elementwise passes and was slower in the
  profile at every token count); weight gradients are written per expert slice (first product with ``out=``,
  later ones ``addmm_``), never zero-filled whole per expert.
* ``"loop"``: plain autograd, a loop over non-empty experts with ``W.unbind(0)`` (indexing ``W[e]``
  would make backward zero-fill the whole weight gradient once per expert).
* ``"grouped_mm"``: ``torch._grouped_mm`` over the sorted pairs, where that op exists and runs.
* ``"batched"``: pairs padded to the largest expert group, two ``bmm`` calls.

All are plain eager PyTorch with data-dependent Python loops: ``torch.compile`` graph-breaks around
them. ``bench/moe_layer.py`` times them against each other and against transformers' Mixtral block.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cpu_linear import matmul_into


@dataclass
class DispatchPlan:
    """Pairs sorted by expert.

    Attributes:
        token_idx: [N] token of each pair, expert-major order.
        expert_idx: [N] expert of each pair (non-decreasing).
        counts: per-expert number of pairs (host ints, length E).
        num_tokens: T.
    """

    token_idx: Tensor
    expert_idx: Tensor
    counts: list[int]
    num_tokens: int

    @property
    def segments(self) -> tuple[tuple[int, int, int], ...]:
        """``(expert, start, end)`` for every expert with at least one pair."""
        out = []
        start = 0
        for e, n in enumerate(self.counts):
            if n:
                out.append((e, start, start + n))
            start += n
        return tuple(out)


def plan_dispatch(mask: Tensor) -> DispatchPlan:
    """Sort the selected (token, expert) pairs of a [T, E] bool mask by expert."""
    expert_idx, token_idx = mask.t().nonzero(as_tuple=True)
    counts = mask.sum(dim=0).tolist()
    return DispatchPlan(token_idx=token_idx, expert_idx=expert_idx, counts=counts, num_tokens=mask.shape[0])


def _swiglu(gate_up_out: Tensor) -> Tensor:
    gate, up = gate_up_out.chunk(2, dim=-1)
    return F.silu(gate) * up


# ----------------------------------------------------------------------------------------------------
# "loop": autograd over a Python loop of non-empty experts.
# ----------------------------------------------------------------------------------------------------
def loop_experts(
    x: Tensor, plan: DispatchPlan, pair_weights: Tensor, gate_up: Tensor, down: Tensor
) -> Tensor:
    """Per-expert loop with ``unbind`` views (no per-expert whole-weight zero-fill in backward)."""
    xs = x.index_select(0, plan.token_idx)
    gate_up_e, down_e = gate_up.unbind(0), down.unbind(0)
    outs = [F.linear(_swiglu(F.linear(xs[s:t], gate_up_e[e])), down_e[e]) for e, s, t in plan.segments]
    ys = torch.cat(outs) if outs else xs.new_zeros(0, down.shape[1])
    ys = ys * pair_weights.unsqueeze(1)
    return x.new_zeros(plan.num_tokens, x.shape[1]).index_add_(0, plan.token_idx, ys)


# ----------------------------------------------------------------------------------------------------
# "grouped_mm": torch._grouped_mm over the expert-sorted pairs.
# ----------------------------------------------------------------------------------------------------
def grouped_mm_experts(
    x: Tensor, plan: DispatchPlan, pair_weights: Tensor, gate_up: Tensor, down: Tensor
) -> Tensor:
    """Two grouped GEMMs (``torch._grouped_mm``) with per-expert offsets."""
    offs = torch.tensor(plan.counts, device=x.device).cumsum(0).to(torch.int32)
    xs = x.index_select(0, plan.token_idx)
    h = _swiglu(torch._grouped_mm(xs, gate_up.transpose(1, 2), offs=offs))
    ys = torch._grouped_mm(h, down.transpose(1, 2), offs=offs)
    ys = ys * pair_weights.unsqueeze(1)
    return x.new_zeros(plan.num_tokens, x.shape[1]).index_add_(0, plan.token_idx, ys)


# ----------------------------------------------------------------------------------------------------
# "batched": pad every expert group to the largest one and use bmm.
# ----------------------------------------------------------------------------------------------------
def batched_experts(
    x: Tensor, plan: DispatchPlan, pair_weights: Tensor, gate_up: Tensor, down: Tensor
) -> Tensor:
    """Padded [E, C, H] groups (C = largest group) through two ``bmm`` calls."""
    num_experts, hidden = gate_up.shape[0], x.shape[1]
    capacity = max(plan.counts) if plan.counts else 0
    if capacity == 0:
        return x.new_zeros(plan.num_tokens, hidden)
    starts = torch.tensor(plan.counts, device=x.device).cumsum(0) - torch.tensor(plan.counts, device=x.device)
    position = torch.arange(plan.token_idx.numel(), device=x.device) - starts[plan.expert_idx]
    slot = plan.expert_idx * capacity + position
    xs = x.index_select(0, plan.token_idx)
    padded = (
        x.new_zeros(num_experts * capacity, hidden)
        .index_copy(0, slot, xs)
        .view(num_experts, capacity, hidden)
    )
    h = _swiglu(torch.bmm(padded, gate_up.transpose(1, 2)))
    y = torch.bmm(h, down.transpose(1, 2)).reshape(num_experts * capacity, hidden)
    ys = y.index_select(0, slot) * pair_weights.unsqueeze(1)
    return x.new_zeros(plan.num_tokens, hidden).index_add_(0, plan.token_idx, ys)


# ----------------------------------------------------------------------------------------------------
# "fused": custom autograd.Function, blocked, with grouped or per-expert GEMMs.
# ----------------------------------------------------------------------------------------------------
Piece = tuple[int, int, int]
"""``(expert, start, end)``: rows [start, end) of the expert-sorted pairs, all of one expert."""


class _BlockGemms:
    """The GEMMs of one row block of expert-sorted pairs: one ``torch._grouped_mm`` call each when
    ``grouped``, else one ``torch.mm`` per expert piece written into a slice of a preallocated buffer.

    Loop mode keeps Python work per piece to the GEMM call itself: pieces come from one ``split`` and
    per-expert weights from one ``unbind`` (see :class:`_Weights`). Weights are [E, out, in].
    """

    def __init__(
        self,
        start: int,
        end: int,
        pieces: tuple[Piece, ...],
        num_experts: int,
        grouped: bool,
        min_macs: int | None = None,
    ):
        self.start, self.end, self.grouped, self.min_macs = start, end, grouped, min_macs
        self.experts = tuple(e for e, _, _ in pieces)
        self.sizes = [t - s for _, s, t in pieces]
        self.first = (True,) * len(pieces)  # set by _blocks: first piece of its expert overall
        self.offs: Tensor | list[int] | None = None
        if grouped:
            ends = {e: t - start for e, _, t in pieces}
            offs, running = [], 0
            for e in range(num_experts):
                running = ends.get(e, running)
                offs.append(running)
            self.offs = offs

    def materialize(self, device: torch.device) -> None:
        if self.grouped and isinstance(self.offs, list):
            self.offs = torch.tensor(self.offs, device=device, dtype=torch.int32)

    def rows_x_wt(self, a: Tensor, w: Tensor, w_t: tuple[Tensor, ...]) -> Tensor:
        """Per expert piece: ``a[rows] @ w[e].T`` -> [n, out]; ``w_t`` = ``w.transpose(1, 2).unbind(0)``."""
        if self.grouped:
            return torch._grouped_mm(a, w.transpose(1, 2), offs=self.offs)
        out = a.new_empty(a.shape[0], w.shape[1])
        for a_p, o_p, e in zip(a.split(self.sizes), out.split(self.sizes), self.experts):
            matmul_into(o_p, a_p, w_t[e], self.min_macs, add=False)
        return out

    def rows_x_w(self, a: Tensor, w: Tensor, w_n: tuple[Tensor, ...]) -> Tensor:
        """Per expert piece: ``a[rows] @ w[e]`` -> [n, in]; ``w_n`` = ``w.unbind(0)``."""
        if self.grouped:
            return torch._grouped_mm(a, w, offs=self.offs)
        out = a.new_empty(a.shape[0], w.shape[2])
        for a_p, o_p, e in zip(a.split(self.sizes), out.split(self.sizes), self.experts):
            matmul_into(o_p, a_p, w_n[e], self.min_macs, add=False)
        return out

    def accumulate_at_b(self, dst: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
        """Per expert: ``dst[e] += a[rows].T @ b[rows]`` (weight gradients); returns ``dst``.

        Grouped mode: ``dst`` is None before the first block (experts absent from a block get zeros).
        Loop mode: ``dst`` is preallocated, uninitialised; each expert's first product is written in
        place (``out=``), later ones accumulate (``addmm_``), so no whole-gradient zero-fill happens.
        """
        if self.grouped:
            prod = torch._grouped_mm(a.t(), b, offs=self.offs)
            return prod if dst is None else dst.add_(prod)
        assert dst is not None, "loop mode preallocates the weight gradient"
        dst_e = dst.unbind(0)
        parts = zip(a.t().split(self.sizes, dim=1), b.split(self.sizes), self.experts, self.first)
        for a_p, b_p, e, first in parts:
            matmul_into(dst_e[e], a_p, b_p, self.min_macs, add=not first)
        return dst


class _Weights:
    """Per-expert views of a 3-D weight, made once per call (one ``unbind`` each, not ``W[e]``)."""

    def __init__(self, w: Tensor, loop: bool) -> None:
        self.full = w
        self.t = w.transpose(1, 2).unbind(0) if loop else ()
        self.n = w.unbind(0) if loop else ()


class _FusedSwiGLUExperts(torch.autograd.Function):
    """Forward/backward of the whole expert computation with explicit GEMMs.

    The expert-sorted pairs are cut into row blocks of at most ``FUSED_BLOCK_ROWS``. Per block:
    gather, gate/up GEMMs, the SwiGLU over the whole block, down GEMMs, then the weighted scatter-add.
    Blocks bound the working set (buffers are reused from cache at large token counts) while keeping
    the op count, and with it the Python/dispatcher overhead, low at small ones. GEMMs run as one
    ``torch._grouped_mm`` per block (accelerators where supported), else one ``torch.mm`` per expert
    piece.

    Saved for backward, per block: the gate/up pre-activations [n, 2I], silu(gate) and the SwiGLU
    activation [n, I] each, and the un-weighted expert outputs [n, H]. The gate's gradient is
    ``silu_backward(g * up, gate)`` in one pass; inputs are re-gathered per block.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        token_idx: Tensor,
        pair_weights: Tensor,
        gate_up: Tensor,
        down: Tensor,
        blocks: tuple[_BlockGemms, ...],
    ) -> Tensor:
        inter = down.shape[2]
        loop = not (blocks and blocks[0].grouped)
        w_gu, w_d = _Weights(gate_up, loop), _Weights(down, loop)
        out = x.new_zeros(x.shape[0], x.shape[1])
        saved: list[Tensor] = []
        for blk in blocks:
            blk.materialize(x.device)
            tok = token_idx[blk.start : blk.end]
            gu = blk.rows_x_wt(x.index_select(0, tok), gate_up, w_gu.t)
            gate, up = gu[:, :inter], gu[:, inter:]
            silu = F.silu(gate)
            act = torch.mul(silu, up)
            ys = blk.rows_x_wt(act, down, w_d.t)
            out.index_add_(0, tok, ys * pair_weights[blk.start : blk.end].unsqueeze(1))
            saved += [gu, silu, act, ys]
        ctx.save_for_backward(x, token_idx, pair_weights, gate_up, down, *saved)
        ctx.blocks = blocks
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, token_idx, pair_weights, gate_up, down, *saved = ctx.saved_tensors
        need_x, _, need_w, need_gate_up, need_down, _ = ctx.needs_input_grad
        blocks: tuple[_BlockGemms, ...] = ctx.blocks
        inter = down.shape[2]
        grad_out = grad_out.contiguous()
        loop = not (blocks and blocks[0].grouped)
        w_gu, w_d = _Weights(gate_up, loop), _Weights(down, loop)

        grad_w = x.new_empty(token_idx.numel()) if need_w else None
        grad_x = torch.zeros_like(x) if need_x else None
        grad_gate_up = torch.empty_like(gate_up) if loop and need_gate_up else None
        grad_down = torch.empty_like(down) if loop and need_down else None
        for i, blk in enumerate(blocks):
            gu, silu, act, ys = saved[4 * i : 4 * i + 4]
            rows = slice(blk.start, blk.end)
            tok = token_idx[rows]
            g_y = grad_out.index_select(0, tok)  # dL/d(w * y) per pair
            if need_w:
                torch.sum(g_y * ys, dim=1, out=grad_w[rows])
            g_y.mul_(pair_weights[rows].unsqueeze(1))  # dL/dy
            if need_down:
                grad_down = blk.accumulate_at_b(grad_down, g_y, act)
            g_act = blk.rows_x_w(g_y, down, w_d.n)
            gate, up = gu[:, :inter], gu[:, inter:]
            g_gu = torch.empty_like(gu)
            torch.mul(g_act, silu, out=g_gu[:, inter:])  # d/du [silu(g) * u] = silu(g)
            # d/dg [silu(g) * u] = u * silu'(g): aten's fused silu_backward (one vectorised pass)
            torch.ops.aten.silu_backward(g_act.mul_(up), gate, grad_input=g_gu[:, :inter])
            if need_gate_up:
                grad_gate_up = blk.accumulate_at_b(grad_gate_up, g_gu, x.index_select(0, tok))
            if need_x:
                grad_x.index_add_(0, tok, blk.rows_x_w(g_gu, gate_up, w_gu.n))
        if loop:  # experts that got no pair at all: their gradient slice was never written
            used = {e for blk in blocks for e in blk.experts}
            for grad in (grad_gate_up, grad_down):
                if grad is not None:
                    for e in range(grad.shape[0]):
                        if e not in used:
                            grad[e].zero_()
        return grad_x, None, grad_w, grad_gate_up, grad_down, None


FUSED_BLOCK_ROWS = 1024
"""Rows (token-expert pairs) per block of the fused dispatch; bounds the working set for cache reuse."""

FUSED_GEMM = "auto"
"""GEMMs of the fused dispatch: "grouped" (``torch._grouped_mm``), "loop" (``torch.mm`` per expert piece),
or "auto": grouped on accelerators where it is supported, loop on CPU (measured faster on CPU here at 8k
tokens, equal at 512)."""


def _use_grouped_gemm(x: Tensor, gate_up: Tensor, down: Tensor) -> bool:
    """``torch._grouped_mm`` runs here and its 16-byte stride/pointer alignment rules hold."""
    if x.device.type == "cpu" or not grouped_mm_supported(x.device.type, x.dtype):
        return False
    size = x.element_size()
    dims_ok = all((d * size) % 16 == 0 for d in (gate_up.shape[1], gate_up.shape[2], down.shape[2]))
    ptrs_ok = all(t.data_ptr() % 16 == 0 for t in (x, gate_up, down))
    return dims_ok and ptrs_ok and gate_up.is_contiguous() and down.is_contiguous()


def _blocks(
    plan: DispatchPlan, rows: int, num_experts: int, grouped: bool, min_macs: int | None = None
) -> tuple[_BlockGemms, ...]:
    """Cut the expert-sorted rows into blocks of <= ``rows`` and tile each with per-expert pieces
    (``min_macs``: the loop's products on oneDNN from that size, ``models/cpu_linear.py``)."""
    total = plan.token_idx.numel()
    segments = plan.segments
    blocks = []
    for bs in range(0, total, rows):
        be = min(bs + rows, total)
        pieces = tuple((e, max(s, bs), min(t, be)) for e, s, t in segments if s < be and t > bs)
        blocks.append(_BlockGemms(bs, be, pieces, num_experts, grouped, min_macs))
    seen: set[int] = set()
    for blk in blocks:
        blk.first = tuple(e not in seen for e in blk.experts)
        seen.update(blk.experts)
    return tuple(blocks)


SMALL_PAIRS_GROUPED = 4096
"""On CPU, at most this many (token, expert) pairs go to ``grouped_mm_experts`` (one ``torch._grouped_mm``
per GEMM, plain autograd) instead of the blocked custom backward: measured faster there by process CPU
time (0.96-0.97x the time at 512 and 2048 tokens of top-2, the pairs in one block's reach), slower at
8192 tokens (1.11x). 0 turns it off."""


def _small_on_cpu(x: Tensor, plan: DispatchPlan) -> bool:
    """Few enough pairs on CPU for the grouped-GEMM autograd path, and ``torch._grouped_mm`` runs here."""
    pairs = plan.token_idx.numel()
    return (
        x.device.type == "cpu"
        and 0 < pairs <= SMALL_PAIRS_GROUPED
        and FUSED_GEMM == "auto"
        and grouped_mm_supported("cpu", x.dtype)
    )


def fused_experts(
    x: Tensor,
    plan: DispatchPlan,
    pair_weights: Tensor,
    gate_up: Tensor,
    down: Tensor,
    min_macs: int | None = None,
) -> Tensor:
    """Custom-autograd dispatch (the default; see module docstring). ``min_macs`` (``model.cpu_linear``):
    on CPU in float32, the per-expert products run on oneDNN from that size. Without it, a CPU batch of
    at most ``SMALL_PAIRS_GROUPED`` pairs takes ``grouped_mm_experts``."""
    onednn = min_macs is not None and x.device.type == "cpu" and x.dtype == torch.float32
    if not onednn and _small_on_cpu(x, plan):
        return grouped_mm_experts(x, plan, pair_weights, gate_up, down)
    grouped = FUSED_GEMM == "grouped" or (FUSED_GEMM == "auto" and _use_grouped_gemm(x, gate_up, down))
    blocks = _blocks(plan, FUSED_BLOCK_ROWS, gate_up.shape[0], grouped, min_macs if onednn else None)
    return _FusedSwiGLUExperts.apply(x, plan.token_idx, pair_weights, gate_up, down, blocks)


# ----------------------------------------------------------------------------------------------------
# Registry and entry point.
# ----------------------------------------------------------------------------------------------------
ExpertsFn = Callable[[Tensor, DispatchPlan, Tensor, Tensor, Tensor], Tensor]

DISPATCH_IMPLS: dict[str, ExpertsFn] = {
    "fused": fused_experts,
    "loop": loop_experts,
    "grouped_mm": grouped_mm_experts,
    "batched": batched_experts,
}
DEFAULT_DISPATCH = "fused"


@functools.cache
def grouped_mm_supported(device_type: str, dtype: torch.dtype) -> bool:
    """Whether ``torch._grouped_mm`` exists and runs forward+backward for this device type and dtype."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    try:
        with torch.enable_grad():  # a first call may come from a no_grad forward: probe the backward anyway
            x = torch.randn(8, 16, device=device_type, dtype=dtype, requires_grad=True)
            w = torch.randn(2, 16, 16, device=device_type, dtype=dtype, requires_grad=True)
            offs = torch.tensor([3, 8], device=device_type, dtype=torch.int32)
            y = torch._grouped_mm(x, w.transpose(1, 2), offs=offs)
            y.backward(torch.ones_like(y))
            ref = torch.cat([x[:3] @ w[0].t(), x[3:] @ w[1].t()])
            return bool(torch.allclose(y, ref, atol=1e-2, rtol=1e-2))
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def available_dispatch_impls(device_type: str = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    """Names of the implementations that run on this device type and dtype."""
    return [n for n in DISPATCH_IMPLS if n != "grouped_mm" or grouped_mm_supported(device_type, dtype)]


def moe_dispatch(
    x: Tensor,
    mask: Tensor,
    weights: Tensor,
    gate_up: Tensor,
    down: Tensor,
    impl: str = DEFAULT_DISPATCH,
    plan: DispatchPlan | None = None,
    min_macs: int | None = None,
) -> Tensor:
    """Compute the weighted sum of the selected SwiGLU experts for every token.

    Args:
        x: [T, H] tokens (already in the compute dtype).
        mask: [T, E] bool selection.
        weights: [T, E] combine weights (any float dtype; cast to ``x.dtype``), differentiable.
        gate_up: [E, 2I, H] expert gate/up weights. down: [E, H, I] expert down weights.
        impl: one of :data:`DISPATCH_IMPLS`.
        plan: a precomputed :func:`plan_dispatch` of ``mask`` (optional).
        min_macs: ``model.cpu_linear``'s oneDNN threshold (``models/cpu_linear.py``), used by ``fused``.

    Returns:
        [T, H] output in ``x.dtype``.
    """
    if impl not in DISPATCH_IMPLS:
        raise ValueError(
            f"Unknown MoE dispatch implementation {impl!r}; choose from {sorted(DISPATCH_IMPLS)}"
        )
    if impl == "grouped_mm" and not grouped_mm_supported(x.device.type, x.dtype):
        raise ValueError(f"torch._grouped_mm does not run for device {x.device.type!r} and dtype {x.dtype}")
    plan = plan if plan is not None else plan_dispatch(mask)
    flat_pairs = plan.token_idx * mask.shape[1] + plan.expert_idx
    pair_weights = weights.reshape(-1).index_select(0, flat_pairs).to(x.dtype)
    args = (x, plan, pair_weights, gate_up.to(x.dtype), down.to(x.dtype))
    if impl == "fused":
        return fused_experts(*args, min_macs=min_macs)
    return DISPATCH_IMPLS[impl](*args)
