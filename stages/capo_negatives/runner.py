"""The ``capo_negatives`` stage: multi-turn chat data -> CaPO preference pairs (METHODS.md §1).

1. Read the dialogues (OpenAI ``messages`` or ShareGPT ``conversations``).
2. Select the context-dependent user turns (``detector.detect``), optionally confirmed by a judge.
3. For each selected turn and each corruption in ``stage.corruptions``, build the corrupted context
   (``corruptions``) and let the generator answer under it, in batches.
4. Write one pair per answer: ``{"messages": true context, "chosen": the original answer,
   "rejected": the generated answer, "neg_type", "group", "provenance"}``. Empty answers and answers
   identical to the chosen one are dropped and counted.

``make_pairs`` is the pure core (any ``ChatGenerator``, e.g. a test function); ``run`` wires it to the
config, the inference layer and the output file.

Resuming: the generator and the judge answer through one sample cache (``stage.cache``, by default
``<run folder>/cache/generations.jsonl``), appended after every chunk. A run that is killed and started
again in the same folder (``python generate.py resume_dir=<run folder>``) generates only what is
missing, and its ``pairs.jsonl`` (written once, atomically, at the end) equals an uninterrupted run's.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from datamodules.chat_format import normalise_messages
from evaluation.judges import YesNoJudge, build_judge
from inference.generation_cache import open_cache
from inference.sample_cache import SampleCache
from stages.capo_negatives import corruptions as C
from stages.capo_negatives.detector import JUDGE_PROMPT, confirm_with_judge, detect
from stages.common import ChatGenerator, Message, build_generator, chunks, write_jsonl_atomic
from utils.errors import ConfigError, DataError
from utils.record_files import read_records

log = logging.getLogger(__name__)
STAGE = "capo_negatives"


def find_turns(
    dialogues: list[tuple[str, str, list[Message]]],
    min_history_exchanges: int = 1,
    max_turns_per_dialogue: int | None = None,
    stats: Counter | None = None,
) -> list[C.Turn]:
    """The context-dependent user turns (with an assistant answer right after) of ``(id, location,
    messages)`` dialogues."""
    stats = stats if stats is not None else Counter()
    out: list[C.Turn] = []
    for dialogue_id, location, messages in dialogues:
        system = [m for m in messages if m["role"] == "system"]
        body = [(i, m) for i, m in enumerate(messages) if m["role"] != "system"]
        found = 0
        for j, (i, m) in enumerate(body):
            if m["role"] != "user" or j + 1 >= len(body) or body[j + 1][1]["role"] != "assistant":
                continue
            stats["user_turns"] += 1
            history = [b for _, b in body[:j]]
            n_exchanges = sum(1 for b in history if b["role"] == "user")
            detection = detect(m["content"], has_history=n_exchanges > 0)
            if not detection.dependent or n_exchanges < min_history_exchanges:
                continue
            if max_turns_per_dialogue is not None and found >= max_turns_per_dialogue:
                stats["over_max_turns_per_dialogue"] += 1
                continue
            found += 1
            stats["context_dependent_turns"] += 1
            out.append(
                C.Turn(
                    dialogue_id=dialogue_id,
                    location=location,
                    system=system,
                    history=history,
                    query=m["content"],
                    answer=body[j + 1][1]["content"],
                    message_index=i,
                    user_turn=n_exchanges,
                    cues=detection.cues,
                )
            )
    return out


def corrupted_prompts(
    turns: list[C.Turn],
    kinds: list[str],
    rng: random.Random,
    prompts_cfg: Mapping[str, Any] | None = None,
    stats: Counter | None = None,
    donors: Mapping[str, list[Message]] | None = None,
) -> list[tuple[C.Turn, C.CorruptedPrompt]]:
    """Every (turn, corrupted prompt) to generate for, in turn order then ``kinds`` order.
    ``donors`` (dialogue id -> messages) are the sessions history_swap borrows from; by default the
    dialogues of ``turns``."""
    p = dict(prompts_cfg or {})
    placement = p.get("placement", "system")
    stats = stats if stats is not None else Counter()
    if donors is None:
        donors = {}
        for t in turns:  # the longest history seen per dialogue
            if len(t.history) >= len(donors.get(t.dialogue_id, [])):
                donors[t.dialogue_id] = t.history
    donor_ids = sorted(donors)
    out: list[tuple[C.Turn, C.CorruptedPrompt]] = []
    for turn in turns:
        for kind in kinds:
            prompt: C.CorruptedPrompt | None
            if kind == "neglect":
                prompt = C.neglect(turn)
            elif kind == "hallucination":
                prompt = C.hallucination(
                    turn, p.get("hallucination") or C.HALLUCINATION_INSTRUCTION, placement
                )
            elif kind == "misunderstanding":
                text = p.get("misunderstanding") or C.MISUNDERSTANDING_INSTRUCTION
                prompt = C.misunderstanding(turn, rng, text, placement)
                if prompt is None:
                    stats["skipped_misunderstanding_no_distractor"] += 1
            else:  # history_swap
                prompt = None
                if len(donor_ids) > 1:
                    donor_id = turn.dialogue_id
                    while donor_id == turn.dialogue_id:
                        donor_id = rng.choice(donor_ids)
                    prompt = C.history_swap(turn, donors[donor_id], donor_id)
                if prompt is None:
                    stats["skipped_history_swap_no_donor"] += 1
            if prompt is not None:
                out.append((turn, prompt))
    return out


def make_pairs(
    turns: list[C.Turn],
    generator: ChatGenerator,
    kinds: list[str],
    rng: random.Random,
    prompts_cfg: Mapping[str, Any] | None = None,
    chunk_size: int = 256,
    provenance: Mapping[str, Any] | None = None,
    stats: Counter | None = None,
    donors: Mapping[str, list[Message]] | None = None,
) -> list[dict[str, Any]]:
    """Generate a rejected answer per (turn, corruption) and return the preference records."""
    stats = stats if stats is not None else Counter()
    jobs = corrupted_prompts(turns, kinds, rng, prompts_cfg, stats, donors)
    outputs: list[str] = []
    for part in chunks(jobs, chunk_size):
        replies = generator([prompt.messages for _, prompt in part])
        if len(replies) != len(part):
            raise RuntimeError(f"the generator returned {len(replies)} answers for {len(part)} prompts")
        outputs += replies
        log.info("generated %d / %d rejected answers", len(outputs), len(jobs))
    rows: list[dict[str, Any]] = []
    for (turn, prompt), reply in zip(jobs, outputs):
        rejected = (reply or "").strip()
        if not rejected:
            stats[f"dropped_empty_{prompt.neg_type}"] += 1
            continue
        if rejected == turn.answer.strip():
            stats[f"dropped_identical_{prompt.neg_type}"] += 1
            continue
        stats[f"pairs_{prompt.neg_type}"] += 1
        rows.append(
            {
                "messages": turn.context,
                "chosen": turn.answer,
                "rejected": rejected,
                "neg_type": prompt.neg_type,
                "group": turn.dialogue_id,
                "provenance": {
                    "stage": STAGE,
                    "source": turn.location,
                    "dialogue_id": turn.dialogue_id,
                    "message_index": turn.message_index,
                    "user_turn": turn.user_turn,
                    "cues": list(turn.cues),
                    "corruption": prompt.meta,
                    **dict(provenance or {}),
                },
            }
        )
    stats["pairs"] = len(rows)
    return rows


def _relative(location: str, root: str | None) -> str:
    """``file:line`` with the file relative to ``root`` when it lies inside it (portable provenance)."""
    if root:
        prefix = str(root).rstrip("/") + "/"
        if location.startswith(prefix):
            return location[len(prefix) :]
    return location


def load_dialogues(
    path: str, split: str, on_bad_record: str, stats: Counter, root: str | None = None
) -> list[tuple[str, str, list]]:
    """``(id, location, messages)`` per dialogue; the id is the record's ``id`` or its location."""
    out = []
    for record in read_records(path, split=split, key="stage.input"):
        try:
            messages = normalise_messages(record)
        except DataError:
            if on_bad_record == "error":
                raise
            stats["skipped_bad_dialogues"] += 1
            continue
        location = _relative(record.location, root)
        dialogue_id = str(record.data.get("id", location))
        out.append((dialogue_id, location, messages))
    return out


def judge_turns(
    turns: list[C.Turn],
    judge: YesNoJudge,
    template: str = JUDGE_PROMPT,
    on_unclear: str = "drop",
    stats: Counter | None = None,
) -> list[C.Turn]:
    """The turns the yes/no judge confirms as context-dependent. An unparseable verdict is counted as
    ``judge_unparseable`` and the turn dropped or kept by ``on_unclear`` (``drop`` | ``keep``); it is
    never read as a "no"."""
    stats = stats if stats is not None else Counter()
    verdicts = confirm_with_judge(judge, [(t.history, t.query) for t in turns], template)
    kept = []
    for t, v in zip(turns, verdicts):
        if v is None:
            stats["judge_unparseable"] += 1
        if v or (v is None and on_unclear == "keep"):
            kept.append(t)
        else:
            stats["judge_rejected"] += 1
    stats["judge_confirmed"] = len(kept)
    return kept


def build_stage_judge(
    judge_cfg: dict[str, Any], cache: SampleCache, chunk_size: int
) -> tuple[YesNoJudge, str, str]:
    """``stage.judge`` -> (the yes/no judge, its prompt template, on_unclear). The config holds a
    generator's keys plus ``prompt`` (a template with ``{history}`` and ``{question}``) and
    ``on_unclear``."""
    template = judge_cfg.pop("prompt", None) or JUDGE_PROMPT
    on_unclear = judge_cfg.pop("on_unclear", "drop")
    problems = []
    if on_unclear not in ("drop", "keep"):
        problems.append(f"stage.judge.on_unclear={on_unclear!r} must be 'drop' or 'keep'")
    if "{history}" not in template or "{question}" not in template:
        problems.append("stage.judge.prompt must contain {history} and {question}")
    if problems:
        raise ConfigError(problems)
    judge = build_judge("yes_no", judge_cfg, "stage.judge", cache, chunk_size)
    assert isinstance(judge, YesNoJudge)
    return judge, template, on_unclear


def check_stage_config(s: Any) -> list[str]:
    """Every problem with the ``stage`` settings, so all are reported at once."""
    problems = []
    kinds = list(s.corruptions)
    unknown = [k for k in kinds if k not in C.CORRUPTIONS]
    if unknown or not kinds:
        problems.append(f"stage.corruptions={kinds} must be a non-empty list from {list(C.CORRUPTIONS)}")
    if s.on_bad_record not in ("error", "skip"):
        problems.append(f"stage.on_bad_record={s.on_bad_record!r} must be 'error' or 'skip'")
    if s.prompts.placement not in ("system", "user"):
        problems.append(f"stage.prompts.placement={s.prompts.placement!r} must be 'system' or 'user'")
    if "{distractor}" not in (s.prompts.misunderstanding or C.MISUNDERSTANDING_INSTRUCTION):
        problems.append("stage.prompts.misunderstanding must contain {distractor}")
    return problems


def run(cfg: DictConfig) -> dict[str, Any]:
    """The stage from the composed ``generate.py`` config (``cfg.stage``); returns its summary."""
    s = cfg.stage
    problems = check_stage_config(s)
    if problems:
        raise ConfigError(problems)
    kinds = list(s.corruptions)
    stats: Counter = Counter()
    dialogues = load_dialogues(s.input, s.split, s.on_bad_record, stats, cfg.paths.get("root_dir"))
    if s.max_dialogues:
        dialogues = dialogues[: int(s.max_dialogues)]
    stats["dialogues"] = len(dialogues)
    turns = find_turns(
        dialogues, int(s.detector.min_history_exchanges), s.detector.max_turns_per_dialogue, stats
    )
    cache = open_cache(s.get("cache"))
    chunk_size = int(s.chunk_size)
    judge_info, judge = None, None
    if s.get("judge"):
        judge, template, on_unclear = build_stage_judge(
            OmegaConf.to_container(s.judge, resolve=True), cache, chunk_size
        )
        turns = judge_turns(turns, judge, template, on_unclear, stats)
        judge_info = judge.describe()
    generator = build_generator(
        OmegaConf.to_container(s.generator, resolve=True),
        "stage.generator",
        cache,
        kind=f"{STAGE}/rejected",
        chunk_size=chunk_size,
    )
    rng = random.Random(int(cfg.seed))
    sampling = generator.params.to_dict()
    provenance = {
        "generator": generator.model_id,
        "sampling": {k: sampling[k] for k in ("temperature", "top_p", "top_k", "max_new_tokens", "seed")},
    }
    if judge_info:
        provenance["judge"] = judge_info.get("model_id")
    rows = make_pairs(
        turns,
        generator,
        kinds,
        rng,
        OmegaConf.to_container(s.prompts, resolve=True),
        chunk_size,
        provenance,
        stats,
        donors={d: m for d, _, m in dialogues},
    )
    if not rows:
        raise DataError(f"{s.input}: no preference pair was produced ({dict(stats)})")
    n = write_jsonl_atomic(s.output, rows)
    log.info("wrote %d pairs to %s", n, s.output)
    skipped = {k: v for k, v in stats.items() if k.startswith(("skipped", "dropped", "judge_rejected"))}
    if skipped:
        log.warning("capo_negatives: dropped or skipped: %s", skipped)
    generation = {"rejected": generator.counts()}
    if judge is not None:
        generation["judge"] = judge.generator.counts()
    log.info("capo_negatives: generation (cached / generated prompts): %s", generation)
    return {
        "stage": STAGE,
        "output": str(s.output),
        "pairs": n,
        "counts": dict(sorted(stats.items())),
        "generator": generator.describe(),
        "judge": judge_info,
        "cache": str(s.get("cache")) if s.get("cache") else None,
        "generation": generation,
    }
