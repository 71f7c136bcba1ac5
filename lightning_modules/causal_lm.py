"""CausalLMModule: what every Quartet method shares.

- builds the backbone in ``configure_model()`` (so FSDP2 can ``fully_shard`` each decoder block);
- optimizer + warmup/cosine schedule from plain-dict config (no pickled objects in hparams, so
  checkpoints load with ``weights_only=True``);
- the total step count for the schedule, computed without ``trainer.estimated_stepping_batches``;
- ``export_hf``: a ``save_pretrained`` folder (full state dict gathered under FSDP, LoRA merged).

Method modules subclass it and implement ``training_step``/``validation_step`` only.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from algorithms.logprobs import LOGPROB_IMPLS, TokenLogprobs, batch_token_logprobs
from lightning_modules.components.optim import build_optimizer_and_scheduler
from models import build_model, decoder_layers, load_tokenizer, save_model_code
from utils.errors import ConfigError

# FSDP2 mixed precision (``module.fsdp_param_dtype``): the dtype blocks compute in; params stay fp32.
FSDP_PARAM_DTYPES = ("bfloat16", "float16", "float32")


def as_dict(cfg: Any) -> Any:
    """Plain Python containers from an OmegaConf node (anything else passes through)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def unsharded_class(module: torch.nn.Module) -> type[torch.nn.Module]:
    """The module's own class: ``fully_shard`` swaps it for a generated ``FSDP<Class>`` subclass."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(module).__mro__ if not issubclass(c, FSDPModule))


def fresh_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A new, unsharded model of the same architecture (a peft model: a fresh base with the same adapter
    config). FSDP2-sharded modules can't be deep-copied, so the export builds one of these and loads
    the full state dict into it."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        from peft import get_peft_model

        base = model.get_base_model()
        return get_peft_model(unsharded_class(base)(base.config), copy.deepcopy(model.peft_config["default"]))
    return unsharded_class(model)(model.config)


def write_hf_folder(
    model: torch.nn.Module, state: dict[str, torch.Tensor], tokenizer: Any, out_dir: str | Path
) -> Path:
    """Write ``model`` with the full (unsharded) ``state`` and ``tokenizer`` as a ``save_pretrained``
    folder: a peft model has its adapter merged into its base; a Quartet MoE gets its modeling code
    and ``auto_map``. Shared by the end-of-fit export and ``scripts/consolidate_checkpoint.py``, so
    both write the same weights."""
    out = Path(out_dir)
    export_model = fresh_copy(model)
    export_model.load_state_dict(state)
    if hasattr(export_model, "merge_and_unload"):  # peft: merge the adapter into the base weights
        export_model = export_model.merge_and_unload()
    export_model.save_pretrained(out)
    save_model_code(export_model, out)  # Quartet MoE: modeling files + auto_map (trust_remote_code)
    tokenizer.save_pretrained(out)
    return out


def write_hf_folder_atomic(
    model: torch.nn.Module, state: dict[str, torch.Tensor], tokenizer: Any, out_dir: str | Path
) -> Path:
    """:func:`write_hf_folder` into a temporary sibling of ``out_dir``, then renamed into place
    (``utils.atomic.replace_folder``): a kill or an error mid-export never leaves a partial
    ``hf_model/`` that looks like a model (a leftover temporary folder is removed at the next start)."""
    import shutil

    from utils.atomic import replace_folder
    from utils.temp_files import temp_path_beside

    out = Path(out_dir)
    tmp = temp_path_beside(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_hf_folder(model, state, tokenizer, tmp)
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


#: the checkpoint key naming the class that wrote it (checked at start-up by checkpoints/preload_check.py)
MODULE_KEY = "quartet_module"


class CausalLMModule(L.LightningModule):
    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        compile: bool = False,
        fsdp_param_dtype: str | None = None,
        logprob_impl: str = "chunked",
        logprob_chunk_tokens: int | None = None,
    ):
        super().__init__()
        problems = []
        if fsdp_param_dtype is not None and fsdp_param_dtype not in FSDP_PARAM_DTYPES:
            problems.append(
                f"module.fsdp_param_dtype={fsdp_param_dtype!r} must be null or one of {', '.join(FSDP_PARAM_DTYPES)}"
            )
        if logprob_impl not in LOGPROB_IMPLS:
            problems.append(f"module.logprob_impl={logprob_impl!r} must be one of {', '.join(LOGPROB_IMPLS)}")
        if logprob_chunk_tokens is not None and (
            not isinstance(logprob_chunk_tokens, int) or logprob_chunk_tokens < 1
        ):
            problems.append(
                f"module.logprob_chunk_tokens={logprob_chunk_tokens} must be null or a positive integer"
            )
        if problems:
            raise ConfigError(problems)
        self.logprob_impl, self.logprob_chunk_tokens = logprob_impl, logprob_chunk_tokens
        model, optimizer, scheduler = as_dict(model), as_dict(optimizer), as_dict(scheduler)
        self.save_hyperparameters(
            {
                "model": model,
                "optimizer": optimizer,
                "scheduler": scheduler,
                "compile": compile,
                "fsdp_param_dtype": fsdp_param_dtype,
                "logprob_impl": logprob_impl,
                "logprob_chunk_tokens": logprob_chunk_tokens,
            }
        )
        self.model_cfg, self.optimizer_cfg, self.scheduler_cfg = model, optimizer, scheduler
        self.model: torch.nn.Module | None = None
        self.tokenizer: Any = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record which module wrote the checkpoint: a resume into another module is refused at
        start-up (``checkpoint_check.check_checkpoint_module``), not deep in ``fit``."""
        checkpoint[MODULE_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"

    # ---- model -------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.model is not None:
            return
        cfg = self.model_cfg
        self.tokenizer = load_tokenizer(
            cfg["tokenizer"], bool(cfg.get("trust_remote_code", False)), cfg.get("chat_template")
        )
        self.model = build_model(cfg, self.tokenizer)
        # ``from_pretrained`` returns a model in eval mode, and Lightning keeps each submodule's mode as it
        # finds it: without this the policy would train with dropout off, and transformers' gradient
        # checkpointing (active only when ``self.training``) would silently do nothing. Frozen copies made
        # in ``on_model_built`` put themselves in eval mode.
        self.model.train()
        self.on_model_built()
        if getattr(self, "_device_mesh", None) is not None:
            self._fully_shard(self.model)
        if self.hparams.compile:
            self.model = torch.compile(self.model)

    def on_model_built(self) -> None:
        """Hook: runs right after ``self.model`` is built, before FSDP sharding and ``torch.compile``
        (e.g. to copy a frozen reference model that must equal the initial policy)."""

    def _fully_shard(self, model: torch.nn.Module) -> None:
        """FSDP2: shard each decoder block, then the root (embeddings, final norm, head)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = self.device_mesh["data_parallel"]
        kwargs: dict[str, Any] = {"mesh": mesh}
        if self.hparams.fsdp_param_dtype:
            dtype = getattr(torch, self.hparams.fsdp_param_dtype)
            kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        for block in decoder_layers(model):
            fully_shard(block, **kwargs)
        fully_shard(model, **kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def batch_logprobs(self, batch: dict[str, Any], model: torch.nn.Module | None = None) -> TokenLogprobs:
        """Token log-probs of a padded or packed batch under ``model`` (the policy by default), with the
        module's ``logprob_impl`` (``algorithms.logprobs.batch_token_logprobs``)."""
        return batch_token_logprobs(
            self.model if model is None else model, batch, self.logprob_impl, self.logprob_chunk_tokens
        )

    # ---- optimisation ------------------------------------------------------------------------
    def total_training_steps(self) -> int:
        """Optimizer steps in this fit: ``max_steps`` if set, else epochs × batches / accumulation."""
        trainer = self.trainer
        if trainer.max_steps and trainer.max_steps > 0:
            return int(trainer.max_steps)
        dm = trainer.datamodule
        batches = dm.num_train_batches()
        limit = trainer.limit_train_batches
        if isinstance(limit, int):
            batches = min(batches, limit)
        elif limit is not None:
            batches = int(batches * float(limit))
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
        return max(1, math.ceil(batches / trainer.accumulate_grad_batches) * epochs)

    def configure_optimizers(self) -> dict[str, Any]:
        factory = instantiate(self.optimizer_cfg, _partial_=True)
        return build_optimizer_and_scheduler(
            self.model, factory, self.scheduler_cfg, self.total_training_steps()
        )

    # ---- export -------------------------------------------------------------------------------
    def export_hf(self, out_dir: str | Path) -> Path | None:
        """Write the model and tokenizer with ``save_pretrained`` (rank 0). Collective under FSDP:
        every rank must call it. Returns the folder on rank 0, None elsewhere."""
        model = getattr(self.model, "_orig_mod", self.model)
        state = self._full_state_dict(model)
        if self.global_rank != 0:
            return None
        return write_hf_folder_atomic(model, state, self.tokenizer, out_dir)

    def _full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        if getattr(self, "_device_mesh", None) is None:
            return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
