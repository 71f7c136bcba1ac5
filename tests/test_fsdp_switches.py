"""FSDP2 config switches, checked in one process on a one-rank gloo group (the module's own
``configure_model`` → ``_fully_shard`` path): activation checkpointing per decoder block
(``model.gradient_checkpointing``) and bf16 mixed precision (``module.fsdp_param_dtype``)."""

from __future__ import annotations

import copy

import pytest
import torch

from lightning_modules.causal_lm import CausalLMModule
from models import decoder_layers
from tests.helpers import tiny_model_cfg
from utils.errors import ConfigError

TINY = tiny_model_cfg(max_position_embeddings=64, attn_implementation="sdpa", gradient_checkpointing=False)
OPT = {"_target_": "torch.optim.AdamW", "lr": 1e-3}


@pytest.fixture
def mesh(tmp_path):
    """A one-rank ``data_parallel`` device mesh on gloo (torn down after the test)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,), mesh_dim_names=("data_parallel",))
    finally:
        dist.destroy_process_group()


def sharded_module(mesh, **model_overrides) -> CausalLMModule:
    module_kwargs = {k: model_overrides.pop(k) for k in ("fsdp_param_dtype",) if k in model_overrides}
    module = CausalLMModule(model={**TINY, **model_overrides}, optimizer=OPT, **module_kwargs)
    module._device_mesh = mesh
    torch.manual_seed(0)  # the same initial weights for every variant
    module.configure_model()
    return module


def batch(vocab: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(3, vocab, (2, 24), generator=g)


def loss_and_grads(module: CausalLMModule) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    ids = batch(module.model.config.vocab_size)
    logits = module(ids, torch.ones_like(ids))
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    grads = {n: p.grad.full_tensor() for n, p in module.model.named_parameters()}
    return loss.detach(), grads


def count_block_forwards(module: CausalLMModule) -> list[int]:
    """Runs of the first block's body (its MLP's ``forward``, counted by wrapping it: module hooks do
    not run in the backward's recompute, and transformers checkpoints inside the block's own hooks)."""
    calls = [0]
    mlp = decoder_layers(module.model)[0].mlp
    inner = mlp.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return inner(*args, **kwargs)

    mlp.forward = counted
    return calls


def test_activation_checkpointing_under_fully_shard_recomputes_each_block_with_equal_grads(mesh):
    plain = sharded_module(mesh)
    ckpt = sharded_module(mesh, gradient_checkpointing=True)
    assert all(getattr(b, "gradient_checkpointing", False) for b in decoder_layers(ckpt.model))
    plain_calls, ckpt_calls = count_block_forwards(plain), count_block_forwards(ckpt)
    loss_a, grads_a = loss_and_grads(plain)
    loss_b, grads_b = loss_and_grads(ckpt)
    assert plain_calls == [1] and ckpt_calls == [2], "checkpointing reruns the block's forward in backward"
    torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-7, msg=name)


def test_bf16_param_dtype_computes_in_bf16_and_keeps_fp32_params_and_grads(mesh):
    fp32 = sharded_module(mesh)
    bf16 = sharded_module(mesh, fsdp_param_dtype="bfloat16")
    seen: dict[str, torch.dtype] = {}
    q_proj = decoder_layers(bf16.model)[0].self_attn.q_proj
    q_proj.register_forward_hook(
        lambda m, args, out: seen.update(weight=m.weight.dtype, input=args[0].dtype, output=out.dtype)
    )
    loss_32, grads_32 = loss_and_grads(fp32)
    loss_16, grads_16 = loss_and_grads(bf16)
    assert seen == {"weight": torch.bfloat16, "input": torch.bfloat16, "output": torch.bfloat16}
    for name, p in bf16.model.named_parameters():  # stored (sharded) params and reduced grads: fp32
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32, name
    assert torch.isfinite(loss_16) and loss_16 != loss_32  # really computed in bf16
    assert abs(loss_16.item() - loss_32.item()) < 2e-2 * loss_32.item()
    cos = torch.nn.functional.cosine_similarity(
        torch.cat([g.flatten() for g in grads_16.values()]),
        torch.cat([g.flatten() for g in grads_32.values()]),
        dim=0,
    )
    assert cos > 0.99, f"bf16 gradient direction differs from fp32 (cosine {cos:.4f})"


def test_fsdp_param_dtype_must_name_a_float_dtype():
    with pytest.raises(ConfigError, match="module.fsdp_param_dtype='bf16'"):
        CausalLMModule(model=copy.deepcopy(TINY), optimizer=OPT, fsdp_param_dtype="bf16")
