"""ReasoningEvalModule: greedy CoT / Self-Consistency / Self-Agreement (arXiv 2311.08154) under
``trainer.predict``.

Each rank evaluates its shard of the questions (``datamodules/reasoning.py``) with its own backend and
its own sample-cache file, batch by batch; at the end of the predict epoch every rank's results are
gathered and merged with :func:`evaluation.reasoning.scoring.merge_results`, which recomputes the metrics from the
merged per-question rows, so ``trainer=ddp trainer.devices=8`` gives the numbers a single process would.

The model is replicated on every rank (data parallel); a sharded model (FSDP) cannot generate
different prompts on different ranks without hanging, so the evaluation uses DDP-style strategies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch

from evaluation.reasoning.scoring import merge_results
from evaluation.reasoning.spec import ReasoningEvalSpec
from inference.backends.base import GenerationBackend
from inference.sample_cache import SampleCache


def all_gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (a one-element list when not distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def rank_cache_files(cache_dir: str | Path, rank: int) -> tuple[Path, list[Path]]:
    """This rank's cache file and every other cache file in ``cache_dir`` (read, never written)."""
    folder = Path(cache_dir)
    own = folder / f"samples.rank{rank}.jsonl"
    others = sorted(p for p in folder.glob("samples.rank*.jsonl") if p.name != own.name)
    return own, others


class ReasoningEvalModule(L.LightningModule):
    """Runs ``spec`` over each predict batch (a list of questions) and merges the ranks' results.

    Args:
        spec: methods, m, ks, decoding and prompt settings.
        backend: the backend node (``name`` plus its options); ``hf`` builds the model of ``model``.
        model: the ``model`` config node (``model=tiny`` or ``model=hf model.pretrained=<dir>``); used by
            the ``hf`` backend only.
        cache_dir: folder of the per-rank sample caches (None: in memory only).
        order: every question id in dataset order; the merged rows follow it.
    """

    consumes: ClassVar[tuple[str, ...]] = ("questions",)  # utils.batch_kinds

    def __init__(
        self,
        spec: ReasoningEvalSpec,
        backend: dict[str, Any],
        model: dict[str, Any] | None,
        cache_dir: str | None,
        order: list[str],
    ) -> None:
        super().__init__()
        self.spec = spec
        self.backend_cfg = dict(backend)
        self.model_cfg = model
        self.cache_dir = cache_dir
        self.order = list(order)
        self.model: torch.nn.Module | None = None
        self.tokenizer: Any = None
        self.backend: GenerationBackend | None = None
        self.cache: SampleCache | None = None
        self.parts: list[dict[str, Any]] = []
        self.results: dict[str, Any] | None = None

    def configure_model(self) -> None:
        """Build the HF model here (on the rank's device, like training modules); other backends hold
        no weights in this process."""
        if self.backend_cfg["name"] != "hf" or self.model is not None:
            return
        from models import build_model, load_tokenizer

        cfg = self.model_cfg or {}
        self.tokenizer = load_tokenizer(
            cfg["tokenizer"], bool(cfg.get("trust_remote_code", False)), cfg.get("chat_template")
        )
        self.model = build_model(cfg, self.tokenizer)

    def _build_backend(self) -> GenerationBackend:
        options = {k: v for k, v in self.backend_cfg.items() if k != "name"}
        if self.backend_cfg["name"] == "hf":
            from inference.backends.hf import HFBackend

            return HFBackend(
                self.model,
                self.tokenizer,
                batch_size=int(options.get("batch_size", 8)),
                decode=str(options.get("decode", "eager")),
            )
        from inference.backends.factory import build_backend

        if self.backend_cfg["name"] == "vllm":  # model.chat_template applies to vLLM's rendering too
            template = (self.model_cfg or {}).get("chat_template")
            options = {"path": options["path"], "chat_template": template, **(options.get("engine") or {})}
        return build_backend(self.backend_cfg["name"], **options)

    def on_predict_start(self) -> None:
        self.backend = self._build_backend()
        if self.cache_dir is None:
            self.cache = SampleCache(None)
        else:
            own, others = rank_cache_files(self.cache_dir, self.global_rank)
            self.cache = SampleCache(own, read_also=others)
        self.parts = []
        self.results = None

    def predict_step(self, batch: list[Any], batch_idx: int) -> dict[str, Any]:
        part = self.spec.run(self.backend, batch, cache=self.cache, chunk_size=len(batch))
        self.parts.append(part)
        return part

    def on_predict_epoch_end(self) -> None:
        local = merge_results(self.parts) if self.parts else None
        self.results = merge_results(all_gather_objects(local), order=self.order)

    def on_predict_end(self) -> None:
        if self.backend is not None:
            self.backend.close()
