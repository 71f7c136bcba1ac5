"""fp32 CPU matrix products on oneDNN instead of MKL, forward and backward (``model.cpu_linear``).

``nn.Linear`` on a CPU float32 tensor calls ATen's ``addmm``, i.e. MKL's ``sgemm``. On an AMD EPYC with
AVX-512 (this project's machines) MKL runs its AVX2 kernels, while oneDNN's JIT kernels use AVX-512: on
one thread, SmolLM2-135M's layer shapes at 480 rows ran about 2.2x faster through oneDNN, in each of a
training step's three products (forward ``x Wᵀ``, input gradient ``g W``, weight gradient ``gᵀ x``),
with the plain ``[out, in]`` weight (no packed copy, so an optimiser step needs nothing redone), and the
49152x576 LM head 2.0x. Below about 2^20 multiply-adds a product is faster on MKL (oneDNN's fixed cost
per call is about 10 µs), so ``auto`` keeps those there. Measured by ``bench/cpu_linear.py``.

- :func:`linear` is ``F.linear`` with that choice made per call; :class:`OneDNNLinear` is an
  ``nn.Linear`` whose forward is :func:`linear`, and :func:`use_onednn_linears` turns a model's plain
  ``nn.Linear`` layers into it (same parameters, state dict and peft targets).
- :func:`matmul` and :func:`matmul_into` are ``a @ b`` with the same choice (the chunked loss's backward
  and the MoE experts' dispatch use them).
- ``cpu_linear=auto`` (default): on an AVX-512 CPU (where it was measured), oneDNN for float32 CPU
  products of at least :data:`MIN_MACS`;
  ``onednn``: every float32 CPU product; ``aten``: none (the layers are left as they are).

oneDNN is used only where its result is the same product in float32: CPU tensors, float32 operands,
no autocast in force (bf16-mixed keeps ATen's autocast path), no tensor subclass (FSDP's DTensor) and
not under ``torch.compile`` tracing. Elsewhere (CUDA, bf16, compile) the call is ``F.linear`` as before.
The sums are added in another order, so values differ from MKL's by float rounding (about 1e-6
relative); a given shape and thread count gives the same bits every time, so resumes stay bitwise.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import torch
from torch import nn

CPU_LINEAR_MODES = ("auto", "onednn", "aten")
#: ``auto``: the fewest multiply-adds (rows x in x out) of a product sent to oneDNN. Below it oneDNN's
#: fixed cost per call loses to MKL (measured on one thread: 576x576 at 4 rows 1.10x, 192x576 at 4 rows
#: 0.72x, 64x64 at 256 rows 1.03x; bench/cpu_linear.py --sweep).
MIN_MACS = 2**20
#: :func:`matmul_into` on oneDNN: the most elements of ``out`` computed per product (16 MiB of float32),
#: so adding into a large ``out`` never holds a second copy of it.
INTO_BLOCK_ELEMENTS = 2**22


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's linear kernel."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


@functools.cache
def amd_cpu_family() -> int | None:
    """The ``cpu family`` of an AMD x86-64 CPU from ``/proc/cpuinfo`` (25: Zen 3/Zen 4, 26: Zen 5);
    None for other vendors or where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", text, re.M)
    family = re.search(r"^cpu family\s*:\s*(\d+)", text, re.M)
    if vendor is None or family is None or vendor.group(1) != "AuthenticAMD":
        return None
    return int(family.group(1))


def measured_cpu() -> bool:
    """Whether this CPU is of the kind where ``auto`` was measured to gain: AMD Zen 5 or later (cpu
    family 26+) with AVX-512, whose 512-bit units are full width while MKL runs its AVX2 kernels
    there (2.0x on a SmolLM2 block). On Zen 4 (family 25, 512-bit work split into two 256-bit halves)
    oneDNN was only 1.05x at training shapes and down to 0.3x on decode-sized products; on Intel, MKL
    already uses AVX-512; AVX2-only and Arm CPUs were not measured. ``auto`` leaves all of those on ATen."""
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    family = amd_cpu_family()
    return family is not None and family >= 26


def mode_min_macs(mode: str) -> int | None:
    """The size threshold of ``cpu_linear=mode`` (None: oneDNN is not used)."""
    if mode not in CPU_LINEAR_MODES:
        raise ValueError(cpu_linear_problems(mode)[0])
    if mode == "aten" or not onednn_available() or (mode == "auto" and not measured_cpu()):
        return None
    return MIN_MACS if mode == "auto" else 0


def cpu_linear_problems(mode: object) -> list[str]:
    """Start-up problems of a ``model.cpu_linear`` value."""
    if mode not in CPU_LINEAR_MODES:
        return [f"model.cpu_linear={mode!r} must be one of {', '.join(CPU_LINEAR_MODES)}"]
    if mode == "onednn" and not onednn_available():
        return [
            "model.cpu_linear=onednn needs a torch build with oneDNN (torch.backends.mkldnn); use auto or aten"
        ]
    return []


def _plain(t: torch.Tensor) -> bool:
    return type(t) in (torch.Tensor, nn.Parameter)


def onednn_fits(a: torch.Tensor, b: torch.Tensor, rows: int, min_macs: int | None) -> bool:
    """Whether the product of ``a`` (``rows`` rows) with the ``[out, in]`` or ``[in, out]`` operand ``b``
    goes to oneDNN: both float32 plain CPU tensors, no CPU autocast, not traced, big enough."""
    if min_macs is None or a.device.type != "cpu" or b.device.type != "cpu":
        return False
    if a.dtype != torch.float32 or b.dtype != torch.float32 or b.dim() != 2:
        return False
    if not (_plain(a) and _plain(b)) or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling():
        return False
    return rows * b.shape[0] * b.shape[1] >= min_macs


def _dnn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` for a 2-D ``x`` (any strides) on oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinearFn(torch.autograd.Function):
    """``y = x Wᵀ + b`` with all three products on oneDNN: ∂x = g W, ∂W = gᵀ x, ∂b = Σ g."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # noqa: ANN001, ANN205
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.has_bias = bias is not None
        return _dnn(x2, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x2, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _dnn(g2, weight.t()).view(*grad.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            gw = _dnn(g2.t(), x2.t())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, min_macs: int | None = MIN_MACS
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, on oneDNN (with its own backward) where :func:`onednn_fits`."""
    rows = x.numel() // max(1, x.shape[-1]) if x.dim() else 0
    bias_fits = bias is None or (_plain(bias) and bias.dtype == torch.float32 and bias.device.type == "cpu")
    if x.dim() == 0 or not bias_fits or not onednn_fits(x, weight, rows, min_macs):
        return torch.nn.functional.linear(x, weight, bias)
    if torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    ):
        return _OneDNNLinearFn.apply(x, weight, bias)
    x2 = x.reshape(-1, x.shape[-1])
    return _dnn(x2, weight, bias).view(*x.shape[:-1], weight.shape[0])


def matmul(a: torch.Tensor, b: torch.Tensor, min_macs: int | None = MIN_MACS) -> torch.Tensor:
    """``a @ b`` for 2-D ``a`` [M, K] and ``b`` [K, N], on oneDNN where :func:`onednn_fits` (no autograd:
    for use inside a custom backward)."""
    if a.dim() == 2 and onednn_fits(a, b, a.shape[0], min_macs):
        return _dnn(a, b.t())
    return a @ b


def matmul_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, min_macs: int | None, add: bool) -> None:
    """``out = a @ b`` (``add``: ``out += a @ b``) for 2-D operands, on oneDNN where it fits, else
    ``torch.mm(out=)`` / ``addmm_``. oneDNN writes a fresh result, so its product is taken
    :data:`INTO_BLOCK_ELEMENTS` of ``out`` at a time and copied or added in: the temporary stays small
    where ``out`` is large (the chunked loss adds each chunk's ``[V, H]`` LM-head gradient this way)."""
    if onednn_fits(a, b, a.shape[0], min_macs):
        step = max(1, INTO_BLOCK_ELEMENTS // max(1, out.shape[1]))
        for r in range(0, out.shape[0], step):
            product = _dnn(a[r : r + step], b.t())
            if add:
                out[r : r + step].add_(product)
            else:
                out[r : r + step].copy_(product)
    elif add:
        out.addmm_(a, b)
    else:
        torch.mm(a, b, out=out)


class OneDNNLinear(nn.Linear):
    """An ``nn.Linear`` whose products run on oneDNN where :func:`linear` chooses it;
    ``onednn_min_macs`` is its ``cpu_linear`` mode's threshold."""

    onednn_min_macs: int | None = MIN_MACS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.onednn_min_macs)


#: The classes of a plain linear layer (``x Wᵀ + b``, no wrapper): ``nn.Linear`` and its oneDNN form.
PLAIN_LINEARS = (nn.Linear, OneDNNLinear)


def use_onednn_linears(model: nn.Module, mode: str = "auto") -> int:
    """Apply ``cpu_linear=mode`` to ``model`` in place: every plain ``nn.Linear`` becomes an
    :class:`OneDNNLinear` (the same object, parameters and hooks; only its class changes), and every
    module with an ``onednn_min_macs`` attribute (the MoE experts) gets the mode's threshold. Returns
    how many linear layers were moved; 0 for ``aten`` or a torch build without oneDNN.

    Raises:
        ValueError: for an unknown ``mode``.
    """
    min_macs = mode_min_macs(mode)
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear and min_macs is not None:
            module.__class__ = OneDNNLinear
        if hasattr(module, "onednn_min_macs"):
            module.onednn_min_macs = min_macs
            count += type(module) is OneDNNLinear
    return count


def head_min_macs(head: nn.Module) -> int | None:
    """The oneDNN threshold of an LM head (an :class:`OneDNNLinear`'s own), else None (ATen)."""
    return getattr(head, "onednn_min_macs", None)
