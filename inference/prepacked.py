"""Linear layers on oneDNN-prepacked weights, for CPU inference (``backend.decode=prepacked``).

At the small row counts of decoding (one token per sequence, 16 rows in ``bench/generation.py``), a
step of a small LM is bound by streaming its weights through the GEMMs. ``nn.Linear`` on CPU calls
ATen's ``addmm``, i.e. MKL's ``sgemm`` on the plain ``[out, in]`` weight. On this machine (an AMD EPYC
with AVX-512) that ran SmolLM2-135M's 210 layer GEMMs at M=16 in about 124 ms against 27 ms for
oneDNN's JIT kernel on a weight reordered once into its blocked layout, and the 49152x576 LM head in
about 18 ms against 6 ms (fastest of 9 interleaved rounds, one thread; docs/decoding_speed.md). vLLM's
CPU build runs its linear layers through oneDNN the same way.

:func:`prepacked_linears` is a context manager: inside it, every plain ``nn.Linear`` of the model
with a float32 CPU weight computes ``x W^T + b`` with ``torch.ops.mkldnn._linear_pointwise`` on a
packed copy of ``W``. The copies are made on first use and kept (one extra copy of the weights in
memory) keyed by the weight's storage and version counter, so an in-place update of the weight (an
optimiser step between two generations) repacks it instead of serving stale weights. Leaving the
context restores the modules' own ``forward``.

The product is the same up to float rounding (the kernels add in another order: about 2e-6 relative),
so sampled and greedy tokens can differ from the eager decoder's at near-ties; the greedy workload of
``bench/generation.py`` checks that they do not on its 16 prompts x 128 tokens.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from models.cpu_linear import PLAIN_LINEARS

_PACKED: weakref.WeakKeyDictionary[nn.Linear, tuple[tuple[int, int], torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)
"""Per module: (weight storage pointer, weight version) -> its packed weight."""


def prepack_supported() -> bool:
    """Whether this torch build has the oneDNN linear kernels used here."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def packable(module: nn.Module) -> bool:
    """A plain ``nn.Linear`` (or ``model.cpu_linear``'s :class:`OneDNNLinear`; not another subclass with
    its own forward) holding a float32 CPU weight."""
    return (
        type(module) in PLAIN_LINEARS
        and module.weight.device.type == "cpu"
        and module.weight.dtype == torch.float32
        and (module.bias is None or module.bias.dtype == torch.float32)
    )


def packed_weight(module: nn.Linear) -> torch.Tensor:
    """The oneDNN-packed copy of ``module.weight``, repacked when the weight changed since the last pack."""
    weight = module.weight
    key = (weight.data_ptr(), weight._version)
    cached = _PACKED.get(module)
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach())
    _PACKED[module] = (key, packed)
    return packed


def _packed_forward(module: nn.Linear, packed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    bias = None if module.bias is None else module.bias.detach()
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def packable_layers(model: nn.Module) -> list[nn.Linear]:
    """The layers :func:`prepacked_linears` switches.

    Raises:
        ValueError: when this torch build lacks oneDNN, or the model has no such layer (e.g. it lives
            on a GPU or is in bfloat16), so the option would silently do nothing.
    """
    if not prepack_supported():
        raise ValueError("decode='prepacked' needs a torch build with oneDNN (torch.backends.mkldnn)")
    layers = [m for m in model.modules() if packable(m)]
    if not layers:
        raise ValueError("decode='prepacked' needs a model with float32 nn.Linear layers on the CPU")
    return layers


@contextmanager
def prepacked_linears(model: nn.Module) -> Iterator[int]:
    """Run the model's float32 CPU ``nn.Linear`` layers on oneDNN-packed weights inside the block.

    Yields the number of layers switched. Meant for inference (no autograd through the packed
    weights): use it under ``torch.inference_mode()`` or ``torch.no_grad()``.

    Raises:
        ValueError: as :func:`packable_layers`.
    """
    layers = packable_layers(model)
    try:
        for layer in layers:
            packed = packed_weight(layer)
            layer.forward = lambda x, _m=layer, _p=packed: _packed_forward(_m, _p, x)  # type: ignore[method-assign]
        yield len(layers)
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)
