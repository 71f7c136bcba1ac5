"""The ``parrot_rollout`` stage: seed queries -> multi-turn dialogues between an answer model and an
Ask model (``rollout.roll_out``), written as chat JSONL ready for ``data=chat`` and
``stage=capo_negatives``, with statistics in ``summary.json`` (``stats``).

Run: ``python generate.py stage=parrot_rollout stage.input=seeds.jsonl stage.answer_model.path=<dir>
stage.ask_model.path=<dir> stage.turns=8``. Resumable like every stage: rerun with
``python generate.py resume_dir=<run folder>`` (same cache) and only what is missing is generated.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from omegaconf import DictConfig, OmegaConf

from datamodules.chat_format import normalise_messages
from inference.generation_cache import build_generator
from inference.sample_cache import SampleCache
from stages.parrot_rollout.filters import RolloutFilters
from stages.parrot_rollout.rollout import ASK_PROMPTS, Session, roll_out
from stages.parrot_rollout.stats import rollout_statistics
from utils.atomic import write_jsonl_atomic
from utils.errors import ConfigError, DataError
from utils.record_files import Record, read_records

log = logging.getLogger(__name__)
STAGE = "parrot_rollout"


def seed_session(record: Record, index: int, keep_system: bool) -> Session:
    """A session from a chat record (its system prompt and first user turn) or a question record."""
    data = record.data
    sid = str(data.get("id", data.get("question_id", f"session-{index:05d}")))
    if "messages" in data or "conversations" in data:
        messages = normalise_messages(record)
        first = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        if first is None:
            raise DataError(f"{record.location}: the conversation has no user turn to start a session from")
        system = [m for m in messages[:first] if m["role"] == "system"] if keep_system else []
        return Session(sid, [*system, dict(messages[first])], record.location)
    question = data.get("question")
    if isinstance(question, str) and question.strip():
        return Session(sid, [{"role": "user", "content": question}], record.location)
    raise DataError(
        f"{record.location}: a seed needs 'messages' / 'conversations' (its first user turn is the seed) "
        "or a non-empty 'question'"
    )


def load_seeds(path: str, split: str, keep_system: bool, limit: int | None) -> list[Session]:
    records = read_records(path, split=split, key="stage.input")
    if limit:
        records = records[: int(limit)]
    sessions = [seed_session(r, i, keep_system) for i, r in enumerate(records)]
    ids = Counter(s.id for s in sessions)
    if len(ids) != len(sessions):  # ids key the cache: make them unique, in input order
        for i, s in enumerate(sessions):
            s.id = f"{s.id}#{i}"
    if not sessions:
        raise DataError(f"{path}: no seed queries")
    return sessions


def check_config(s: DictConfig) -> list[str]:
    problems = []
    if int(s.turns) < 1:
        problems.append(f"stage.turns={s.turns} must be at least 1")
    if s.ask_prompt not in ASK_PROMPTS:
        problems.append(f"stage.ask_prompt={s.ask_prompt!r} must be one of {list(ASK_PROMPTS)}")
    if s.ask_prompt == "next_turn" and s.ask_model.backend == "openai_http":
        problems.append(
            "stage.ask_prompt=next_turn needs a backend that renders chat templates (hf); "
            "a chat endpoint can't open a user turn: set stage.ask_prompt=swap_roles"
        )
    return problems


def session_record(s: Session, provenance: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": s.id,
        "messages": s.messages,
        "turns": s.user_turns(),
        "end_reason": s.end_reason,
        "seed": s.source,
        "provenance": provenance,
    }


def run(cfg: DictConfig) -> dict[str, Any]:
    """The stage from the composed ``generate.py`` config (``cfg.stage``); returns its summary."""
    s = cfg.stage
    problems = check_config(s)
    if problems:
        raise ConfigError(problems)
    try:
        filters = RolloutFilters(**OmegaConf.to_container(s.filters, resolve=True))
    except ValueError as e:
        raise ConfigError([str(e)]) from None
    sessions = load_seeds(s.input, s.split, bool(s.keep_system_prompt), s.max_sessions)
    cache = SampleCache(s.get("cache"))
    models = {}
    for role in ("answer_model", "ask_model"):
        models[role] = build_generator(
            OmegaConf.to_container(s[role], resolve=True),
            f"stage.{role}",
            cache,
            kind=f"{STAGE}/{role}",
            chunk_size=int(s.chunk_size),
        )

    def progress(turn: int, live: int) -> None:
        log.info(
            "parrot_rollout: turn %d/%d done, %d of %d sessions still going",
            turn,
            s.turns,
            live,
            len(sessions),
        )

    result = roll_out(
        sessions,
        models["answer_model"],
        models["ask_model"],
        int(s.turns),
        filters,
        s.ask_prompt,
        s.get("ask_system_prompt"),
        progress,
    )
    kept = result.kept()
    if not kept:
        raise DataError(
            f"{s.input}: every session was filtered out before its first reply ({dict(result.rejected)})"
        )
    provenance = {"answer_model": models["answer_model"].model_id, "ask_model": models["ask_model"].model_id}
    n = write_jsonl_atomic(s.output, (session_record(x, provenance) for x in kept))
    log.info("wrote %d dialogues to %s", n, s.output)
    return {
        "stage": STAGE,
        "output": str(s.output),
        "sessions": len(sessions),
        "dialogues": n,
        "dropped_sessions": len(sessions) - n,
        "rejected_turns": dict(sorted(result.rejected.items())),
        "end_reasons": dict(sorted(Counter(x.end_reason for x in kept).items())),
        "statistics": rollout_statistics([x.messages for x in kept]),
        "generation": {role: m.counts() for role, m in models.items()},
        "models": provenance,
    }
