"""The lm-eval bridge: what Quartet adds around EleutherAI's lm-evaluation-harness (``lm_eval``).

Log-likelihood multiple choice (PIQA, HellaSwag, ARC, CSQA ...) and BBH are scored by lm-eval itself,
so the numbers are the harness's own. This module holds the Quartet side of ``task=lm_eval``
(``runners/lm_eval.py``):

- :func:`import_lm_eval`, :func:`check_include_path`, :func:`resolve_tasks`: the start-up checks, each
  a one-line error (lm-eval missing, a missing ``task.include_path``, an unknown task name);
- :class:`ExpertCounter`: experts per token of a Top-P MoE model (arXiv 2403.07652's per-task figure),
  summed over every forward pass made while it is open, so that opening it around one task's
  evaluation measures that task alone;
- :func:`task_metrics`, :func:`merge_lm_eval_results`: lm-eval's results in Quartet's layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from utils.errors import ConfigError, QuartetError

#: The version pinned in requirements.txt (the one the equality test with the ``lm_eval`` command ran on).
LM_EVAL_VERSION = "0.4.13"
#: lm-eval's per-sample metrics Quartet reports first, in this order (others follow, sorted).
MAIN_METRICS = ("acc", "acc_norm", "exact_match")


def import_lm_eval() -> ModuleType:
    """``lm_eval``, or a one-line error telling how to install it."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401  (the HF wrapper needs transformers)
    except ImportError as e:
        raise QuartetError(
            f"task=lm_eval needs lm-eval, which is not installed ({e}): pip install lm_eval=={LM_EVAL_VERSION} "
            "(it is pinned in requirements.txt)"
        ) from None
    return lm_eval


def check_include_path(path: str | None) -> str | None:
    """``task.include_path`` as an absolute folder path; a ``ConfigError`` when it is not a folder."""
    if path in (None, ""):
        return None
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError([f"task.include_path={path}: {what} (give a folder of lm-eval task YAML files)"])
    return str(folder.resolve())


def resolve_tasks(task_manager: Any, names: Sequence[str]) -> dict[str, list[str]]:
    """Each requested name -> the lm-eval task or group names it stands for (``match_tasks``, which
    also expands patterns such as ``bbh_*``). Every unknown name is reported in one ``ConfigError``."""
    if isinstance(names, str) or not names:
        raise ConfigError(["task.tasks must be a non-empty list of lm-eval task names, e.g. [piqa,arc_easy]"])
    resolved = {str(name): list(task_manager.match_tasks([str(name)])) for name in names}
    unknown = [name for name, found in resolved.items() if not found]
    if unknown:
        raise ConfigError(
            [
                f"task.tasks: unknown lm-eval task(s) {unknown} (`python -m lm_eval ls tasks` lists the "
                "known ones; your own YAML files are found through task.include_path=<folder>)"
            ]
        )
    return resolved


class ExpertCounter:
    """Experts per token of a Quartet MoE model over the forward passes made while it is open.

    A forward hook on ``model`` reads ``output.router_aux`` (one ``MoEAux`` per MoE layer:
    ``dispatch_mask`` [T, E] and ``token_mask`` [T], False on padding). Per layer it sums the tokens
    and the (token, expert) pairs of the real tokens; ``experts_per_token`` is the mean over layers of
    ``pairs / tokens``, as ``moe_aux_loss`` and the training logs compute it. A dense model has no
    ``router_aux``: :meth:`summary` is then None.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.tokens: dict[int, int] = {}
        self.pairs: dict[int, int] = {}
        self._handle: Any = None

    def __enter__(self) -> ExpertCounter:
        self._handle = self.model.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
        self._handle = None

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.add(getattr(output, "router_aux", None) or [])

    @torch.no_grad()
    def add(self, aux_list: Iterable[Any]) -> None:
        """Count one forward pass's routing (its ``MoEAux`` list, in layer order)."""
        for pos, aux in enumerate(aux_list):
            layer = aux.layer_idx if getattr(aux, "layer_idx", None) is not None else pos
            mask = aux.dispatch_mask
            if aux.token_mask is not None:
                mask = mask[aux.token_mask.reshape(-1).bool()]
            self.tokens[layer] = self.tokens.get(layer, 0) + int(mask.shape[0])
            self.pairs[layer] = self.pairs.get(layer, 0) + int(mask.sum())

    def summary(self) -> dict[str, Any] | None:
        """``experts_per_token`` (mean over layers), ``per_layer`` and ``tokens`` (of the first MoE
        layer, i.e. the positions the model ran); None when no routing was seen."""
        layers = sorted(layer for layer, n in self.tokens.items() if n > 0)
        if not layers:
            return None
        per_layer = {f"layer{layer}": self.pairs[layer] / self.tokens[layer] for layer in layers}
        return {
            "experts_per_token": sum(per_layer.values()) / len(per_layer),
            "per_layer": per_layer,
            "tokens": self.tokens[layers[0]],
        }


def _metric_name(key: str) -> str | None:
    """lm-eval's ``"acc,none"`` -> ``"acc"``, ``"acc_stderr,none"`` -> ``"acc_stderr"``; a filtered
    metric keeps its filter (``"exact_match,get-answer"`` -> ``"exact_match,get-answer"``); None for
    keys that are not metrics (``alias``, ``name`` ...)."""
    if "," not in key:
        return None
    metric, filt = key.split(",", 1)
    return metric if filt == "none" else key


def _sort_key(name: str) -> tuple[int, str]:
    base = name.split(",")[0].removesuffix("_stderr")
    return (MAIN_METRICS.index(base) if base in MAIN_METRICS else len(MAIN_METRICS), name)


def task_metrics(entry: Mapping[str, Any], n_samples: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One task's (or group's) entry of lm-eval's ``results`` in Quartet's layout: numbers by plain
    metric name (``acc``, ``acc_stderr``, ``acc_norm`` ...; a stderr lm-eval gives as ``"N/A"`` is
    None), plus ``alias`` and ``num_samples`` (effective, after ``limit``) when known."""
    out: dict[str, Any] = {}
    for key in sorted((k for k in entry if _metric_name(k)), key=lambda k: _sort_key(_metric_name(k))):
        value = entry[key]
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        out[_metric_name(key)] = number if number is None or math.isfinite(number) else None
    if entry.get("alias"):
        out["alias"] = str(entry["alias"]).strip(" -")
    if n_samples and "effective" in n_samples:
        out["num_samples"] = int(n_samples["effective"])
    return out


#: Keys of lm-eval's results dict that map task names to per-task values (merged across runs).
_PER_TASK_KEYS = (
    "results",
    "groups",
    "group_subtasks",
    "configs",
    "versions",
    "n-shot",
    "higher_is_better",
    "n-samples",
    "samples",
)


def merge_lm_eval_results(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """lm-eval results dicts of separate runs (one per requested task) as one: the per-task maps are
    united in run order, everything else (``config``, ``date`` ...) is the last run's."""
    if not parts:
        raise ValueError("merge_lm_eval_results needs at least one results dict")
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key in _PER_TASK_KEYS and isinstance(value, Mapping):
                merged.setdefault(key, {}).update(value)
            else:
                merged[key] = value
    return merged


def quartet_results(
    lm_results: Mapping[str, Any], requested: Mapping[str, list[str]], routing: Mapping[str, Any]
) -> dict[str, Any]:
    """``results.json``'s body: ``metrics[task]`` for every task lm-eval scored (subtasks included),
    ``groups[group]`` for groups (e.g. ``bbh``), ``requested[name]`` the tasks each requested name
    stood for, and ``experts_per_token[name]`` / ``routing[name]`` per requested name (MoE only)."""
    n_samples = lm_results.get("n-samples", {})
    group_names = set(lm_results.get("groups", {}))
    metrics = {
        name: task_metrics(entry, n_samples.get(name))
        for name, entry in lm_results.get("results", {}).items()
        if name not in group_names
    }
    groups = {name: task_metrics(entry) for name, entry in lm_results.get("groups", {}).items()}
    out: dict[str, Any] = {"metrics": metrics, "groups": groups, "requested": dict(requested)}
    moe = {name: r for name, r in routing.items() if r is not None}
    if moe:
        out["experts_per_token"] = {name: r["experts_per_token"] for name, r in moe.items()}
        out["routing"] = moe
    return out


def flat_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """``lm_eval/<task>/<metric>`` numbers (and ``lm_eval/<name>/experts_per_token``) for loggers and
    sweepers."""
    flat: dict[str, float] = {}
    for section in ("metrics", "groups"):
        for task, values in results.get(section, {}).items():
            for metric, value in values.items():
                if isinstance(value, float):
                    flat[f"lm_eval/{task}/{metric}"] = value
    for name, value in results.get("experts_per_token", {}).items():
        flat[f"lm_eval/{name}/experts_per_token"] = float(value)
    return flat
