"""Pairwise MT-Bench grading (issue #17, section 2) with a scripted judge: both orders, FastChat's tie
rule, win/tie/loss and win rates per turn checked by hand, the pair file, and the eval task end to end."""

from __future__ import annotations

import json
import re

import pytest

from evaluation.judges import PairJudge, parse_pair_verdict
from evaluation.mt_bench.fastchat_format import Question, answer_record
from evaluation.mt_bench.grading import grade_pairs
from evaluation.mt_bench.judge_prompts import BUILTIN
from evaluation.mt_bench.pairwise import game_winners, match_outcome, model_pairs, summarise_pairs
from tests.helpers import compose_cfg

FASTCHAT_PAIR_KEYS = {
    "question_id", "model_1", "model_2", "g1_winner", "g2_winner", "judge",
    "g1_user_prompt", "g1_judgment", "g2_user_prompt", "g2_judgment", "turn", "tstamp",
}  # fmt: skip
_A = re.compile(r"\[Assistant A's reply\]\n(.*?)\n\[End of A's reply\]", re.S)
_B = re.compile(r"\[Assistant B's reply\]\n(.*?)\n\[End of B's reply\]", re.S)


def test_verdicts_and_the_tie_rule():
    assert [parse_pair_verdict(t) for t in ("x [[A]]", "[[B]]", "[[C]]", "[[A]] or [[B]]", "A")] == [
        "A", "B", "tie", None, None,
    ]  # fmt: skip
    assert game_winners("A", "A") == ("model_1", "model_2")  # game 2 shows model_2 as A
    assert game_winners("B", "A") == ("model_2", "model_2") and game_winners(None, "tie") == ("error", "tie")
    assert match_outcome("model_1", "model_1") == "model_1"
    assert match_outcome("model_1", "model_2") == "tie"  # the two orders disagree
    assert match_outcome("tie", "model_1") == "tie" and match_outcome("model_2", "tie") == "tie"
    assert match_outcome("error", "model_1") is None
    assert model_pairs(["x", "y", "base"], "pairwise-baseline") == [("x", "base"), ("y", "base")]
    assert model_pairs(["x", "y", "z"], "pairwise-all") == [("x", "y"), ("x", "z"), ("y", "z")]


# (question, turn) -> how the scripted judge answers: prefer a model, position bias, or a fixed reply
SCRIPT = {
    (1, 1): "prefer m1",
    (1, 2): "always [[A]]",  # position bias: the two orders disagree -> tie
    (1, 3): ("[[C]]", "[[B]]"),  # game 1 tie -> tie
    (2, 1): "prefer m2",
    (2, 2): ("[[A]]", "no verdict"),  # game 2 unparseable -> error, left out
    (2, 3): "prefer m1",
}


class ScriptedPairJudge:
    def __init__(self):
        self.requests = []

    def __call__(self, prompts):
        out = []
        for p in prompts:
            self.requests.append(p)
            a = _A.search(p[-1]["content"]).group(1)
            qid, model, turn = int(a[1]), a[3:5], int(a[-1])  # answers read "q<qid>-<model>-t<turn>"
            rule = SCRIPT[(qid, turn)]
            game = 1 if model == "m1" else 2
            if isinstance(rule, tuple):
                out.append(rule[game - 1])
            elif rule == "always [[A]]":
                out.append("[[A]]")
            else:
                out.append("[[A]]" if rule == f"prefer {model}" else "[[B]]")
        return out


def test_both_orders_tie_rule_and_win_rate_by_hand():
    questions = [Question(q, "writing", ["one?", "two?", "three?"]) for q in (1, 2)]
    answers = {m: {q: [f"q{q}-{m}-t{t}" for t in (1, 2, 3)] for q in (1, 2)} for m in ("m1", "m2")}
    judge = ScriptedPairJudge()
    records = grade_pairs(PairJudge(judge), "jj", BUILTIN, questions, answers, [("m1", "m2")])
    assert len(judge.requests) == 12  # 2 questions x 3 turns x 2 orders
    for i, r in enumerate(records):
        g1, g2 = judge.requests[2 * i][-1]["content"], judge.requests[2 * i + 1][-1]["content"]
        q, t = r["question_id"], r["turn"]
        assert _A.search(g1).group(1) == f"q{q}-m1-t{t}" and _B.search(g1).group(1) == f"q{q}-m2-t{t}"
        assert _A.search(g2).group(1) == f"q{q}-m2-t{t}" and _B.search(g2).group(1) == f"q{q}-m1-t{t}"
        assert r["g1_user_prompt"] == g1 and r["g2_user_prompt"] == g2
        assert set(r) == FASTCHAT_PAIR_KEYS | {"system_prompt"} and r["judge"] == ["jj", r["judge"][1]]
    winners = {(r["question_id"], r["turn"]): (r["g1_winner"], r["g2_winner"]) for r in records}
    assert winners == {
        (1, 1): ("model_1", "model_1"),
        (1, 2): ("model_1", "model_2"),
        (1, 3): ("tie", "model_1"),
        (2, 1): ("model_2", "model_2"),
        (2, 2): ("model_1", "error"),
        (2, 3): ("model_1", "model_1"),
    }
    s = summarise_pairs(records, ["m1", "m2"], {1: "writing", 2: "math"})
    m1 = s["m1"]
    # by hand: wins (1,1),(2,3); ties (1,2),(1,3); loss (2,1); error (2,2) left out -> 2/5, (2 + 1)/5
    assert (m1["win"], m1["tie"], m1["loss"], m1["error"]) == (2, 2, 1, 1)
    assert m1["win_rate"] == pytest.approx(0.4) and m1["win_rate_adjusted"] == pytest.approx(0.6)
    assert {t: v["win_rate"] for t, v in m1["per_turn"].items()} == {"1": 0.5, "2": 0.0, "3": 0.5}
    assert (
        m1["per_turn"]["2"]["win_rate_adjusted"] == 0.5 and m1["per_turn"]["3"]["win_rate_adjusted"] == 0.75
    )
    assert m1["per_category"]["math"]["win"] == 1 and m1["per_category"]["math"]["loss"] == 1
    assert (s["m2"]["win"], s["m2"]["tie"], s["m2"]["loss"]) == (1, 2, 2) and s["m2"]["win_rate"] == 0.2


def test_pairwise_baseline_task_end_to_end(tmp_path):
    """eval.py task=mt_bench task.mode=pairwise-baseline on answers made elsewhere, stand-in judge."""
    from eval import evaluate
    from evaluation.mt_bench.fastchat_format import read_questions

    qs = read_questions(compose_cfg(["task=mt_bench"], tmp_path / "c", config_name="eval").data.path)[:2]
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(answer_record(q.question_id, "good", q.reference)) + "\n" for q in qs))
    base = tmp_path / "base.jsonl"
    base.write_text(
        "".join(
            json.dumps(answer_record(q.question_id, "base", ["no idea"] * len(q.turns))) + "\n" for q in qs
        )
    )
    out = tmp_path / "run"
    cfg = compose_cfg(
        ["task=mt_bench", "judge=standin", "judge.name=my/judge", "task.limit=2", "task.mode=pairwise-baseline",
         f"task.answers={good}", f"task.baseline={base}", "task.model_id=good", "print_config=false"],
        out,
        config_name="eval",
    )  # fmt: skip
    metrics = evaluate(cfg)
    records = [
        json.loads(x) for x in (out / "model_judgment" / "my_judge_pair.jsonl").read_text().splitlines()
    ]
    n_turns = sum(len(q.turns) for q in qs)
    assert len(records) == n_turns and all(r["g1_winner"] == r["g2_winner"] == "model_1" for r in records)
    results = json.loads((out / "results.json").read_text())
    assert results["pairwise"]["good"]["win"] == n_turns and results["pairwise"]["base"]["loss"] == n_turns
    assert metrics["mt_bench/win_rate"] == 1.0 and metrics["mt_bench/win_rate_turn_1"] == 1.0
    assert (out / "win_rate_per_turn.png").read_bytes()[:4] == b"\x89PNG"


def test_fastchat_format_pair_prompts_at_turns_2_and_3(tmp_path):
    """A user's pair-*-multi-turn prompt: turn 2 is str.format of the template; turn 3 shows both whole
    conversations with each side's answer 3 last in its block."""
    from evaluation.mt_bench.judge_prompts import load_judge_prompts

    conv = "<<{side}>>\n## U:\n{{question_1}}\n## {side}:\n{{answer_{s}_1}}\n## U:\n{{question_2}}\n## {side}:\n{{answer_{s}_2}}\n<<END {side}>>\n"
    template = conv.format(side="A", s="a") + conv.format(side="B", s="b")
    rows = [
        {"name": "pair-v2", "type": "pairwise", "system_prompt": "Pick one.", "prompt_template": "{question}|{answer_a}|{answer_b}", "output_format": "[[A]]"},
        {"name": "pair-v2-multi-turn", "type": "pairwise", "system_prompt": "Pick the better reply to the second question.", "prompt_template": template, "output_format": "[[A]]"},
    ]  # fmt: skip
    path = tmp_path / "jp.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = load_judge_prompts(path)
    q = Question(1, "writing", ["one?", "two?", "three?"])
    answers = {"x": {1: ["x1", "x2", "x3"]}, "y": {1: ["y1", "y2", "y3"]}}
    seen = []
    grade_pairs(
        PairJudge(lambda ps: seen.extend(ps) or ["[[A]]"] * len(ps)), "j", prompts, [q], answers, [("x", "y")]
    )
    assert seen[0][-1]["content"] == "one?|x1|y1" and seen[1][-1]["content"] == "one?|y1|x1"
    values = {
        "question_1": "one?",
        "question_2": "two?",
        "answer_a_1": "x1",
        "answer_a_2": "x2",
        "answer_b_1": "y1",
        "answer_b_2": "y2",
    }
    assert seen[2] == [
        {"role": "system", "content": rows[1]["system_prompt"]},
        {"role": "user", "content": template.format(**values)},
    ]
    turn3 = seen[4][-1]["content"]
    block_a, block_b = turn3.split("<<END A>>\n")[0], turn3.split("<<END A>>\n")[1]
    assert block_a.endswith("## U:\nthree?\n## A:\nx3\n") and block_b.endswith(
        "## U:\nthree?\n## B:\ny3\n<<END B>>\n"
    )
    assert block_a.index("x1") < block_a.index("x2") < block_a.index("x3") and "y" not in block_a.replace(
        "## U:", ""
    )
    assert "third question" in seen[4][0]["content"]
