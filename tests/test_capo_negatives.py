"""The capo_negatives stage: the context-dependence detector, the prompt each corruption gives the
generator, the pair records, and generate.py end to end with a tiny HF model."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from stages.capo_negatives import corruptions as C
from stages.capo_negatives.detector import confirm_with_judge, detect, parse_verdict
from stages.capo_negatives.runner import find_turns, make_pairs
from tests.helpers import compose_cfg
from utils.errors import ConfigError

SYSTEM = [{"role": "system", "content": "You are a helpful assistant."}]
HISTORY = [
    {"role": "user", "content": "Name three fruits."},
    {"role": "assistant", "content": "Here are three fruits: pear, plum and grape."},
    {"role": "user", "content": "What color is the first one?"},
    {"role": "assistant", "content": "The pear is green."},
]
TURN = C.Turn(
    dialogue_id="d1",
    location="chat.jsonl:1",
    system=SYSTEM,
    history=HISTORY,
    query="How does it taste?",
    answer="The pear tastes mild and juicy.",
    message_index=5,
    user_turn=2,
    cues=("pronoun:it",),
)
DONOR = [
    {"role": "user", "content": "What is the capital of Kenya?"},
    {"role": "assistant", "content": "The capital of Kenya is Nairobi."},
    {"role": "user", "content": "Which continent is it on?"},
    {"role": "assistant", "content": "Kenya is in Africa."},
    {"role": "user", "content": "What language do people speak there?"},
    {"role": "assistant", "content": "People in Kenya speak Swahili."},
]


# ---- detector -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "cue"),
    [
        ("How does it taste?", "pronoun:it"),
        ("What language do people speak there?", "pronoun:there"),
        ("Is that safe for children?", "pronoun:that"),
        ("What does the second one eat?", "reference:the second one"),
        ("What about the other one?", "ellipsis:what-about"),
        ("And in Brazil?", "ellipsis:and"),
        ("Now double that.", "ellipsis:now"),
        ("Is the result even?", "reference:the result"),
        ("Why?", "ellipsis:short-question"),
        ("Can you explain a bit more?", "ellipsis:more"),
        ("What does that mean?", "pronoun:that"),
        ("Is there a shop there?", "pronoun:there"),
    ],
)
def test_detector_flags_context_dependent_queries(query, cue):
    d = detect(query, has_history=True)
    assert d.dependent and cue in d.cues


@pytest.mark.parametrize(
    "query",
    [
        "Name three fruits.",
        "What is the capital of France?",
        "Tell me about the cow and the owl.",
        "Write a short poem about the sea.",
        "Which tools should I keep in a shed?",
        "Write a function that sorts a list.",
        "Is there a faster way to sort numbers?",
    ],
)
def test_detector_leaves_standalone_queries(query):
    assert detect(query, has_history=True) == detect(query, has_history=True)
    assert not detect(query, has_history=True).dependent


def test_first_turn_is_never_context_dependent():
    d = detect("How does it taste?", has_history=False)
    assert not d.dependent and "pronoun:it" in d.cues


def test_find_turns_selects_dependent_user_turns_with_answers():
    dialogue = [
        *SYSTEM,
        *HISTORY,
        {"role": "user", "content": "How does it taste?"},
        {"role": "assistant", "content": "Mild."},
        {"role": "user", "content": "And where?"},
    ]
    stats = Counter()
    turns = find_turns([("d1", "f:1", dialogue)], stats=stats)
    # turn 1 has no history, turn 2 ("the first one") and 3 ("it") qualify, the last has no answer
    assert [t.query for t in turns] == ["What color is the first one?", "How does it taste?"]
    assert turns[1].history == HISTORY and turns[1].system == SYSTEM and turns[1].answer == "Mild."
    assert turns[1].context == [*SYSTEM, *HISTORY, {"role": "user", "content": "How does it taste?"}]
    assert stats["user_turns"] == 3 and stats["context_dependent_turns"] == 2


def test_judge_confirms_and_sees_history_and_question():
    seen = []

    def judge(prompts):
        seen.extend(prompts)
        return ["Yes, it refers to the pear.", "No.", "I am not sure"]

    items = [(HISTORY, "How does it taste?"), (HISTORY, "What is 2+2?"), (HISTORY, "Hmm?")]
    assert confirm_with_judge(judge, items) == [True, False, None]
    text = seen[0][0]["content"]
    assert "User: Name three fruits." in text and "Assistant: The pear is green." in text
    assert "How does it taste?" in text and seen[0][0]["role"] == "user"
    assert parse_verdict("The answer is no") is False


# ---- corruptions: what the generator sees -----------------------------------------------------------
def test_neglect_removes_the_history():
    p = C.neglect(TURN)
    assert p.neg_type == "neglect"
    assert p.messages == [*SYSTEM, {"role": "user", "content": "How does it taste?"}]


def test_hallucination_removes_the_history_and_asks_to_guess():
    p = C.hallucination(TURN)
    assert [m["role"] for m in p.messages] == ["system", "user"]
    assert p.messages[0]["content"] == SYSTEM[0]["content"] + "\n\n" + C.HALLUCINATION_INSTRUCTION
    assert "guess" in p.messages[0]["content"]
    assert p.messages[1] == {"role": "user", "content": "How does it taste?"}
    no_system = C.Turn(**{**TURN.__dict__, "system": []})
    assert C.hallucination(no_system).messages[0] == {
        "role": "system",
        "content": C.HALLUCINATION_INSTRUCTION,
    }
    in_user = C.hallucination(TURN, "Guess!", placement="user")
    assert in_user.messages == [*SYSTEM, {"role": "user", "content": "Guess!\n\nHow does it taste?"}]


def test_misunderstanding_steers_to_an_earlier_irrelevant_exchange():
    p = C.misunderstanding(TURN, random.Random(0))
    # Only the first exchange (the list of fruits) is kept, never the most recent one (the pear).
    assert p.messages[1:] == [*HISTORY[:2], {"role": "user", "content": "How does it taste?"}]
    assert 'earlier request: "Name three fruits."' in p.messages[0]["content"]
    assert p.messages[0]["content"].startswith(SYSTEM[0]["content"])
    assert "The pear is green." not in json.dumps(p.messages)
    assert p.meta == {"distractor_exchange": 0}
    one_exchange = C.Turn(**{**TURN.__dict__, "history": HISTORY[:2]})
    assert C.misunderstanding(one_exchange, random.Random(0)) is None


def test_history_swap_uses_another_sessions_turns():
    p = C.history_swap(TURN, DONOR, "kenya")
    assert p.messages == [*SYSTEM, *DONOR[:4], {"role": "user", "content": "How does it taste?"}]
    assert p.meta == {"donor_dialogue_id": "kenya", "donor_exchanges": 2}
    assert C.history_swap(TURN, [{"role": "user", "content": "hi"}], "x") is None


# ---- pairs ----------------------------------------------------------------------------------------
def test_make_pairs_writes_true_context_chosen_rejected_and_provenance():
    prompts_seen = []

    def generator(prompts):
        prompts_seen.extend(prompts)
        out = []
        for messages in prompts:
            text = json.dumps(messages)
            if "Nairobi" in text:  # history_swap: the generator answers exactly like the chosen one
                out.append(TURN.answer)
            elif "guess" in text:  # hallucination: an empty answer
                out.append("   ")
            else:
                out.append(f"answer after {len(messages)} messages")
        return out

    stats = Counter()
    kinds = list(C.CORRUPTIONS)
    donors = {"d1": HISTORY, "kenya": DONOR}
    rows = make_pairs(
        [TURN],
        generator,
        kinds,
        random.Random(0),
        chunk_size=2,
        provenance={"generator": "fake"},
        stats=stats,
        donors=donors,
    )
    assert len(prompts_seen) == 4
    assert [r["neg_type"] for r in rows] == ["neglect", "misunderstanding"]
    assert stats["dropped_identical_history_swap"] == 1 and stats["dropped_empty_hallucination"] == 1
    for r in rows:
        assert r["messages"] == TURN.context  # always the true full context
        assert r["chosen"] == TURN.answer and r["group"] == "d1"
        assert r["provenance"]["generator"] == "fake" and r["provenance"]["cues"] == ["pronoun:it"]
        assert r["provenance"]["source"] == "chat.jsonl:1" and r["provenance"]["message_index"] == 5
    assert rows[0]["rejected"] == "answer after 2 messages"
    assert rows[1]["provenance"]["corruption"] == {"distractor_exchange": 0}


def test_generate_py_runs_the_stage_with_a_tiny_hf_model(tmp_path, tiny_hf_dir):
    from datamodules.preference import PreferenceDataModule
    from generate import generate

    out = tmp_path / "pairs.jsonl"
    cfg = compose_cfg(
        [
            "stage=capo_negatives",
            f"stage.generator.path={tiny_hf_dir}",
            f"stage.output={out}",
            "stage.max_dialogues=4",
            "stage.generator.sampling.max_new_tokens=6",
            "stage.generator.sampling.temperature=1.0",
            # A judge wired the same way; a random model's replies are never a clear yes/no, so keep them.
            f"stage.judge={{backend: hf, path: '{tiny_hf_dir}', on_unclear: keep, sampling: {{max_new_tokens: 3}}}}",
        ],
        tmp_path,
        config_name="generate",
    )
    summary = generate(cfg)
    saved = json.loads((tmp_path / "summary.json").read_text())
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["pairs"] == saved["pairs"] == len(rows) > 0
    counts = saved["counts"]
    assert saved["judge"]["backend"] == "HFBackend"
    assert counts["judge_confirmed"] + counts.get("judge_rejected", 0) == counts["context_dependent_turns"]
    model_id = saved["generator"]["model_id"]
    assert saved["counts"]["dialogues"] == 4 and model_id and saved["generator"]["backend"] == "HFBackend"
    assert {r["neg_type"] for r in rows} <= set(C.CORRUPTIONS)
    assert all(r["messages"][-1]["role"] == "user" and r["provenance"]["generator"] == model_id for r in rows)
    dm = PreferenceDataModule(
        path=str(out), tokenizer=str(tiny_hf_dir), val_fraction=0.0, on_bad_record="skip"
    )
    dm.setup("fit")  # the stage's output is valid training data
    assert len(dm.train_dataset) + sum(dm.skipped.values()) == len(rows)


def test_generate_py_needs_a_generator(tmp_path):
    from generate import generate

    cfg = compose_cfg(["stage=capo_negatives"], tmp_path, config_name="generate")
    with pytest.raises(ConfigError, match=r"stage.generator.path is required"):
        generate(cfg)
