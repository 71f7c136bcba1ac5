"""Lightning/torch glue of :class:`~lightning_modules.online_rl.OnlineRLModule`: the policy made ready to
generate (eval mode, FSDP2 parameters gathered once for the whole decode), the EOS/pad ids, the PPO
value head."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from algorithms.reference import eval_mode, unwrap


def eos_and_pad(model: torch.nn.Module, tokenizer: Any) -> tuple[list[int], int]:
    """The ids that end a completion (generation config and tokenizer EOS) and the pad id."""
    ids: set[int] = set()
    gen_cfg = getattr(unwrap(model), "generation_config", None)
    for src in (getattr(gen_cfg, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if src is not None:
            ids.update([src] if isinstance(src, int) else list(src))
    eos = sorted(ids)
    pad = getattr(tokenizer, "pad_token_id", None)
    return eos, int(pad if pad is not None else (eos[0] if eos else 0))


def _fsdp_modules(model: torch.nn.Module) -> list[Any]:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def generation_ready(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the block; under FSDP2 every shard is gathered once before the decode and freed
    after it, with resharding after each forward turned off. Each rank then decodes on its own: the
    ranks' completions end at different steps, and a per-forward all-gather would make them wait for
    each other (or hang when one has finished)."""
    fsdp = _fsdp_modules(model)
    with eval_mode(model):
        if not fsdp:
            yield
            return
        for m in fsdp:
            m.set_reshard_after_forward(False, recurse=False)
        for m in fsdp:
            m.unshard()
        try:
            yield
        finally:
            for m in fsdp:
                m.reshard()
                m.set_reshard_after_forward(True, recurse=False)


def value_head_for(model: torch.nn.Module, mesh: Any = None) -> torch.nn.Module:
    """PPO's value head: a linear map from the policy's last hidden state to V(s), zero-initialised (so
    the first values are 0 and GAE starts as Monte-Carlo returns), fp32. Sharded with FSDP2 when the
    policy is, so its gradients are reduced across ranks like the policy's."""
    hidden = int(unwrap(model).config.hidden_size)
    head = torch.nn.Linear(hidden, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    if mesh is not None:
        from torch.distributed.fsdp import fully_shard

        fully_shard(head, mesh=mesh["data_parallel"])
    return head
