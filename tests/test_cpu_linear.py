"""``model.cpu_linear`` (models/cpu_linear.py): fp32 CPU products on oneDNN, forward and backward, equal to
``F.linear`` up to float rounding, bitwise repeatable, and used only where it computes the same thing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import models.cpu_linear as cl
from algorithms.chunked_ce import chunked_token_logprobs
from models import build_model, load_tokenizer, model_config_problems
from tests.helpers import tiny_model_cfg

pytestmark = pytest.mark.skipif(not cl.onednn_available(), reason="this torch build has no oneDNN")
MEASURED_CPU = cl.measured_cpu


@pytest.fixture(autouse=True)
def _auto_on_any_cpu(monkeypatch):
    """``auto`` as on the AVX-512 CPUs it was measured on, whatever CPU runs the tests."""
    monkeypatch.setattr(cl, "measured_cpu", lambda: True)


TINY = tiny_model_cfg(hidden_size=64, intermediate_size=192, max_position_embeddings=256)


def _build(**overrides):  # noqa: ANN003, ANN202
    torch.manual_seed(0)
    return build_model({**TINY, **overrides}, load_tokenizer(TINY["tokenizer"]))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def _linear_and_grads(fn, bias: bool, frozen: bool = False):  # noqa: ANN001, ANN202
    torch.manual_seed(0)
    x = torch.randn(3, 37, 96, requires_grad=True)
    w = torch.randn(160, 96, requires_grad=not frozen)
    b = torch.randn(160, requires_grad=True) if bias else None
    y = fn(x, w, b)
    g = torch.randn_like(y)
    wanted = [t for t in (x, w, b) if t is not None and t.requires_grad]
    return y.detach(), torch.autograd.grad(y, wanted, g), y.grad_fn


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("frozen", [False, True])
def test_onednn_linear_and_its_gradients_equal_aten(bias, frozen):
    ours, our_grads, grad_fn = _linear_and_grads(lambda x, w, b: cl.linear(x, w, b, min_macs=0), bias, frozen)
    ref, ref_grads, _ = _linear_and_grads(torch.nn.functional.linear, bias, frozen)
    assert type(grad_fn).__name__ == "_OneDNNLinearFnBackward"  # oneDNN's path ran, not F.linear
    assert ours.shape == ref.shape == (3, 37, 160)
    assert _rel(ours, ref) < 1e-5
    assert len(our_grads) == len(ref_grads) == 2 + bias - frozen
    for a, b in zip(our_grads, ref_grads):
        assert a.shape == b.shape and _rel(a, b) < 1e-5


def test_onednn_products_are_bitwise_repeatable():
    first = _linear_and_grads(lambda x, w, b: cl.linear(x, w, b, min_macs=0), bias=True)
    again = _linear_and_grads(lambda x, w, b: cl.linear(x, w, b, min_macs=0), bias=True)
    assert torch.equal(first[0], again[0])
    assert all(torch.equal(a, b) for a, b in zip(first[1], again[1]))


def test_matmul_equals_the_product_and_reads_transposed_views():
    torch.manual_seed(1)
    a, b = torch.randn(40, 300), torch.randn(50, 300)
    assert _rel(cl.matmul(a, b.t(), min_macs=0), a @ b.t()) < 1e-5
    assert _rel(cl.matmul(b, a.t(), min_macs=0), b @ a.t()) < 1e-5


@pytest.mark.parametrize("add", [False, True])
def test_matmul_into_in_blocks_equals_the_product(monkeypatch, add):
    torch.manual_seed(3)
    a, b = torch.randn(300, 40).t(), torch.randn(300, 24)  # a transposed view, as the chunked backward's
    start = torch.randn(40, 24)
    out = start.clone()
    monkeypatch.setattr(cl, "INTO_BLOCK_ELEMENTS", 7 * 24)  # 7 rows a block: 6 blocks of 7, one of 5
    cl.matmul_into(out, a, b, min_macs=0, add=add)
    assert _rel(out, start * add + a @ b) < 1e-5


def test_the_chunked_backward_adds_the_head_gradient_without_a_second_vocab_sized_buffer(monkeypatch):
    """Each later chunk's [V, H] gradient is added in blocks of INTO_BLOCK_ELEMENTS, not made whole."""
    products = []
    dnn = cl._dnn
    monkeypatch.setattr(
        cl, "_dnn", lambda x, w, b=None: products.append(x.shape[0] * w.shape[0]) or dnn(x, w, b)
    )
    monkeypatch.setattr(cl, "INTO_BLOCK_ELEMENTS", 100 * 64)
    torch.manual_seed(4)
    h, w = torch.randn(45, 64, requires_grad=True), torch.randn(700, 64, requires_grad=True)
    t = torch.randint(0, 700, (45,))
    logp, _ = chunked_token_logprobs(h, w, t, chunk_tokens=7, min_macs=0)
    dh, dw = torch.autograd.grad(logp.sum(), (h, w))
    products.clear()
    logp, _ = chunked_token_logprobs(h, w, t, chunk_tokens=7, min_macs=0)
    dh2, dw2 = torch.autograd.grad(logp.sum(), (h, w))
    assert torch.equal(dw, dw2) and torch.equal(dh, dh2)
    whole_weight = 700 * 64
    # forward: 7 chunk logits [7, 700]; backward: per chunk ∂h [7, 64], and ∂W whole only for the first
    assert products.count(whole_weight) == 1
    assert sum(n == 100 * 64 for n in products) == 6 * 7  # chunks 2..7: blocks of 100 rows of ∂W
    ref = torch.autograd.grad(torch.log_softmax(h @ w.t(), -1).gather(1, t[:, None]).sum(), (h, w))
    assert _rel(dw, ref[1]) < 1e-5 and _rel(dh, ref[0]) < 1e-5


def _routes_to_onednn(x: torch.Tensor, w: torch.Tensor, min_macs: int | None = cl.MIN_MACS) -> bool:
    x = x.requires_grad_()
    return type(cl.linear(x, w, None, min_macs).grad_fn).__name__ == "_OneDNNLinearFnBackward"


def test_onednn_is_used_only_where_it_computes_the_same_float32_product():
    big_x, big_w = torch.randn(64, 256), torch.randn(256, 256)  # 4.2M multiply-adds
    assert _routes_to_onednn(big_x, big_w)
    assert not _routes_to_onednn(torch.randn(4, 256), big_w)  # 262k: below MIN_MACS, MKL is faster
    assert _routes_to_onednn(torch.randn(4, 256), big_w, min_macs=0)  # cpu_linear=onednn: every size
    assert not _routes_to_onednn(big_x, big_w, min_macs=None)  # cpu_linear=aten
    assert not _routes_to_onednn(big_x.double(), big_w.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16-mixed keeps ATen's autocast cast
        x = big_x.clone().requires_grad_()
        y = cl.linear(x, big_w, None, 0)
        assert y.dtype == torch.bfloat16 and type(y.grad_fn).__name__ != "_OneDNNLinearFnBackward"
    with torch.no_grad():  # inference: the kernel without the autograd node, same values
        assert _rel(cl.linear(big_x, big_w, None, 0), big_x @ big_w.t()) < 1e-5


def test_chunked_head_logprobs_on_onednn_equal_aten_with_gradients():
    torch.manual_seed(2)
    h = torch.randn(45, 64, requires_grad=True)
    w = torch.randn(700, 64, requires_grad=True)
    t = torch.randint(0, 700, (45,))
    up = torch.randn(45)
    out = {}
    for name, min_macs in (("aten", None), ("onednn", 0)):
        # 7-row chunks: the first chunk's softmax is kept, the others recomputed in the backward
        logp, correct = chunked_token_logprobs(h, w, t, chunk_tokens=7, min_macs=min_macs)
        out[name] = (logp.detach(), correct, *torch.autograd.grad((logp * up).sum(), (h, w)))
    assert torch.equal(out["onednn"][1], out["aten"][1])
    for a, b in zip(out["onednn"][2:], out["aten"][2:]):
        assert _rel(a, b) < 1e-5
    assert (out["onednn"][0] - out["aten"][0]).abs().max() < 1e-5


def test_build_model_moves_the_linear_layers_and_keeps_the_state_dict():
    aten, auto, forced = _build(cpu_linear="aten"), _build(), _build(cpu_linear="onednn")
    linears = [m for m in auto.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 * 7 + 1  # q, k, v, o, gate, up, down per block, and the LM head
    assert all(type(m) is cl.OneDNNLinear and m.onednn_min_macs == cl.MIN_MACS for m in linears)
    assert all(m.onednn_min_macs == 0 for m in forced.modules() if isinstance(m, nn.Linear))
    assert all(type(m) is nn.Linear for m in aten.modules() if isinstance(m, nn.Linear))
    assert list(auto.state_dict()) == list(aten.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(auto.state_dict().values(), aten.state_dict().values()))
    assert auto.get_output_embeddings().weight is auto.get_input_embeddings().weight  # still tied


def test_a_training_step_on_onednn_equals_aten_to_float_rounding():
    grads = {}
    for mode in ("aten", "onednn"):
        model = _build(cpu_linear=mode)
        ids = torch.randint(5, model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads[mode] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()})
    assert abs(grads["onednn"][0] - grads["aten"][0]) < 1e-5
    for name, g in grads["aten"][1].items():
        assert _rel(grads["onednn"][1][name], g) < 1e-4, name


def test_lora_targets_the_moved_layers():
    model = _build(cpu_linear="onednn", lora={"enabled": True, "r": 4})
    bases = [m.base_layer for m in model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")]
    assert len(bases) == 14 and all(type(b) is cl.OneDNNLinear for b in bases)
    assert all(type(m.lora_A["default"]) is cl.OneDNNLinear for m in model.modules() if hasattr(m, "lora_A"))


def test_unknown_or_unavailable_modes_are_config_errors(monkeypatch):
    tiny = {"kind": "tiny", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
    assert model_config_problems({**tiny, "cpu_linear": "fast"}) == [
        "model.cpu_linear='fast' must be one of auto, onednn, aten"
    ]
    monkeypatch.setattr(cl, "onednn_available", lambda: False)
    assert model_config_problems({**tiny, "cpu_linear": "onednn"}) == [
        "model.cpu_linear=onednn needs a torch build with oneDNN (torch.backends.mkldnn); use auto or aten"
    ]
    assert model_config_problems({**tiny, "cpu_linear": "auto"}) == []  # auto falls back to ATen
    assert cl.use_onednn_linears(nn.Sequential(nn.Linear(4, 4)), "auto") == 0
    with pytest.raises(ValueError, match="cpu_linear='x' must be one of"):
        cl.use_onednn_linears(nn.Linear(4, 4), "x")


def test_the_mode_reaches_the_moe_experts():
    from models.moe import MoELayer, RouterConfig

    def experts_threshold(mode: str) -> int | None:
        layer = MoELayer(16, 24, 4, RouterConfig(kind="top_p", top_p=0.5))
        moved = cl.use_onednn_linears(layer, mode)
        assert moved == 0  # the router holds its own weight, not an nn.Linear
        return layer.experts.onednn_min_macs

    assert experts_threshold("auto") == cl.MIN_MACS
    assert experts_threshold("onednn") == 0
    assert experts_threshold("aten") is None


def test_the_chunked_lm_head_path_still_takes_the_moved_head():
    from algorithms.logprobs import chunkable_head

    model = _build()
    assert type(model.get_output_embeddings()) is cl.OneDNNLinear
    assert chunkable_head(model) is model.get_output_embeddings()


def test_auto_leaves_cpus_it_was_not_measured_on_to_aten(monkeypatch):
    monkeypatch.setattr(cl, "measured_cpu", MEASURED_CPU)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert cl.mode_min_macs("auto") is None
    assert cl.mode_min_macs("onednn") == 0  # asked for explicitly: used anyway
    model = nn.Sequential(nn.Linear(8, 8))
    assert cl.use_onednn_linears(model, "auto") == 0 and type(model[0]) is nn.Linear
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(cl, "amd_cpu_family", lambda: 26)  # AMD Zen 5: measured 2.0x
    assert cl.mode_min_macs("auto") == cl.MIN_MACS
    for family in (25, None):  # Zen 4 (1.05x, and slower on small products) or not AMD: not measured to gain
        monkeypatch.setattr(cl, "amd_cpu_family", lambda family=family: family)
        assert cl.mode_min_macs("auto") is None
    monkeypatch.setattr(cl, "amd_cpu_family", lambda: 26)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert cl.mode_min_macs("auto") is None


def test_the_amd_cpu_family_is_read_from_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    real_path = cl.Path
    monkeypatch.setattr(cl, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    for text, family in (
        ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n", 26),
        ("vendor_id\t: AuthenticAMD\ncpu family\t: 25\n", 25),
        ("vendor_id\t: GenuineIntel\ncpu family\t: 6\n", None),
        ("Processor\t: AArch64\n", None),
    ):
        cpuinfo.write_text(text)
        cl.amd_cpu_family.cache_clear()
        assert cl.amd_cpu_family() == family
    cpuinfo.unlink()
    cl.amd_cpu_family.cache_clear()
    assert cl.amd_cpu_family() is None  # unreadable: not measured
    cl.amd_cpu_family.cache_clear()


def test_the_online_rlmec_grm_loads_with_the_policys_cpu_linear(tmp_path):
    from lightning_modules.online_rlmec import load_grm

    tok = load_tokenizer(TINY["tokenizer"])
    _build().save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    for mode, layer in (("aten", nn.Linear), ("onednn", cl.OneDNNLinear)):
        grm, _ = load_grm(str(tmp_path), "float32", tok, cpu_linear=mode)
        assert {type(m) for m in grm.modules() if isinstance(m, nn.Linear)} == {layer}
