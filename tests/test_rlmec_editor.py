"""RLMEC's minimum-edit procedure (stages/rlmec/{steps,editor,arith_rules}.py) with a scripted fake model
and with the arith_rules stand-in teacher on the bundled data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from algorithms.edit_steps import gold_solution, parse_first_error, split_steps
from algorithms.minimum_edit import minimum_edit_rewrite, model_editor
from inference.backends.base import Completion, GenerationBackend, Prompt
from inference.sampling import SamplingParams
from reasoning.questions import ReasoningRecord, load_reasoning_records
from stages.rlmec.arith_rules import answer_in_prediction_style, arith_rules, equations_hold, first_wrong_step

ROOT = Path(__file__).resolve().parents[1]

REC = ReasoningRecord(
    id="q1",
    question="Leo has 4 marbles and buys 4 packs with 10 marbles in each. How many marbles does Leo have now?",
    gold="44",
    answer_type="number",
    task="arith",
    rationale="The packs hold 4 * 10 = 40 marbles. Then 4 + 40 = 44.",
)
WRONG = "The packs hold 4 * 10 = 40 marbles. Then 4 + 40 = 45.\n#### 45"


class Scripted:
    """A fake chat model: replies from a script, in order; records every prompt it is sent."""

    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.prompts: list[list[dict[str, str]]] = []

    def __call__(self, prompts: list[list[dict[str, str]]]) -> list[str]:
        self.prompts.extend(prompts)
        out, self.replies = self.replies[: len(prompts)], self.replies[len(prompts) :]
        return out


def test_split_steps_spans_and_answer_line():
    steps = split_steps(WRONG)
    assert [s.text for s in steps] == [
        "The packs hold 4 * 10 = 40 marbles.",
        "Then 4 + 40 = 45.",
        "#### 45",
    ]
    assert all(WRONG[s.start : s.end] == s.text for s in steps)
    assert split_steps("  \n\n") == []


def test_exact_prompts_and_prefix_keeping():
    fake = Scripted(["The first error step is [2]", "Then 4 + 40 = 44.\n#### 44"])
    report = minimum_edit_rewrite([REC], [WRONG], [False], model_editor(fake))
    locate, rewrite = fake.prompts
    assert locate == [
        {
            "role": "user",
            "content": (
                "You are checking a student's solution to a problem against a reference solution.\n\n"
                f"Problem:\n{REC.question}\n\n"
                "Reference solution:\nStep 1: The packs hold 4 * 10 = 40 marbles.\n"
                "Step 2: Then 4 + 40 = 44.\nStep 3: #### 44\n\n"
                "Student's solution:\nStep 1: The packs hold 4 * 10 = 40 marbles.\n"
                "Step 2: Then 4 + 40 = 45.\nStep 3: #### 45\n\n"
                "Find the first wrong step of the student's solution. Reply with "
                '"The first error step is [k]" where k is the step number, or with '
                '"The solution is correct." if no step is wrong.'
            ),
        }
    ]
    assert rewrite[0]["content"].endswith(
        "Keep step 1 unchanged and rewrite the solution from step 2 on, changing as little as "
        "possible so that it is correct. Write only the continuation after the kept steps, in the "
        "student's own format and wording, ending with a final answer line written as the student writes it.\n\n"
        "Kept steps:\nThe packs hold 4 * 10 = 40 marbles."
    )
    (res,) = report.results
    assert res.status == "rewritten" and res.first_error_step == 2
    # the prefix is the prediction's text before step 2, verbatim (including the separating space)
    assert res.rewrite == "The packs hold 4 * 10 = 40 marbles. Then 4 + 40 = 44.\n#### 44"
    assert report.counts == {"rewritten": 1}


def test_prefix_is_kept_even_if_the_editor_changes_it():
    """The editor only continues: whatever it writes follows the kept prefix."""
    pred = "Step one is 2 + 2 = 5. Then 5 * 2 = 10.\n#### 10"
    rec = ReasoningRecord("q", "?", "8", "number", "arith", "2 + 2 = 4. Then 4 * 2 = 8.")
    fake = Scripted(["The first error step is [2]", "Step 2: Then 4 * 2 = 8.\n#### 8"])
    (res,) = minimum_edit_rewrite([rec], [pred], [False], model_editor(fake)).results
    assert res.rewrite == "Step one is 2 + 2 = 5. Then 4 * 2 = 8.\n#### 8"


def test_answer_check_and_unparseable_replies_are_counted():
    records = [REC] * 6
    preds = [WRONG] * 6
    fake = Scripted(
        [
            "I think something is off.",  # no step index
            "The first error step is [7]",  # out of range (3 steps)
            "The solution is correct.",  # says correct on a wrong sample
            "The first error step is [2]",
            "The first error step is [3]",
            "The first error step is [1]",
            # rewrites for the last three, in order
            "Then 4 + 40 = 46.\n#### 46",  # wrong answer
            "   ",  # empty
            "I would rather not.",  # no answer at all
        ]
    )
    report = minimum_edit_rewrite(records, preds, [False] * 6, model_editor(fake))
    reasons = [r.reason for r in report.results]
    assert reasons == [
        "no_step_index",
        "step_out_of_range",
        "editor_says_correct",
        "wrong_answer",
        "empty_rewrite",
        "no_answer",
    ]
    assert all(r.status == "dropped" and r.rewrite is None for r in report.results)
    assert report.dropped == {r: 1 for r in reasons}
    assert len(fake.prompts) == 9  # six locate prompts, three rewrite prompts
    k3, k1 = fake.prompts[7][0]["content"], fake.prompts[8][0]["content"]
    assert "Keep steps 1 to 2 unchanged and rewrite the solution from step 3 on" in k3
    assert k3.endswith("Kept steps:\nThe packs hold 4 * 10 = 40 marbles. Then 4 + 40 = 45.")
    assert "Keep nothing: rewrite the solution from step 1 on" in k1 and k1.endswith("Kept steps:\n(none)")


def test_correct_samples_are_identity_without_editor_calls():
    fake = Scripted([])
    pred = "The packs hold 4 * 10 = 40 marbles. Then 4 + 40 = 44.\n#### 44"
    report = minimum_edit_rewrite([REC, REC], [pred, ""], [True, False], model_editor(fake))
    assert [r.status for r in report.results] == ["identity", "dropped"]
    assert report.results[0].rewrite == pred
    assert report.results[1].reason == "empty_prediction"
    assert fake.prompts == []


def test_parse_first_error_forms():
    assert parse_first_error("The first error step is [3]", 4).step == 3
    assert parse_first_error("the first error is step 2.", 4).step == 2
    assert parse_first_error("The first error step is 0", 4).error == "step_out_of_range"
    assert parse_first_error("The solution is correct.", 4).correct
    assert parse_first_error("", 4).error == "no_step_index"


class _FixedBackend(GenerationBackend):
    model_id = "fixed"

    def __init__(self, texts: list[str]):
        self.texts = list(texts)
        self.params: list[SamplingParams] = []

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        self.params.append(params)
        return [[Completion(self.texts.pop(0), 1, 1)] for _ in prompts]


def test_model_editor_over_a_generation_backend_decodes_greedily():
    backend = _FixedBackend(["The first error step is [2]", "Then 4 + 40 = 44.\n#### 44"])
    (res,) = minimum_edit_rewrite([REC], [WRONG], [False], model_editor(backend)).results
    assert res.status == "rewritten"
    assert all(p.greedy for p in backend.params) and len(backend.params) == 2


# ---------------------------------------------------------------- arith_rules (stand-in teacher)
def test_arith_rules_checks():
    assert equations_hold("so 2 * 8 = 16.") and not equations_hold("so 2 * 8 = 18.")
    gold = gold_solution(REC)
    assert first_wrong_step(gold, gold) is None
    assert first_wrong_step(WRONG, gold) == 2
    # true arithmetic on the wrong numbers is still a wrong step
    assert first_wrong_step("The packs hold 4 * 11 = 44 marbles. Then 4 + 44 = 48.\n#### 48", gold) == 1
    # stopped early: the last step is named
    assert first_wrong_step("The packs hold 4 * 10 = 40 marbles.", gold) == 1


def _corrupt(solution: str, step_index: int) -> str:
    """Add 1 to the last number of step ``step_index`` (0-based) and every later copy of it."""
    import re

    steps = split_steps(solution)
    s = steps[step_index]
    last = list(re.finditer(r"\d+", s.text))[-1]
    old = last.group(0)
    new = str(int(old) + 1)
    at = s.start + last.start()
    return solution[:at] + new + solution[at + len(old) :].replace(old, new)


def test_arith_rules_on_bundled_records_rewrites_to_the_gold():
    records = load_reasoning_records(ROOT / "data" / "reasoning" / "train.jsonl", limit=40)
    golds = [gold_solution(r) for r in records]
    preds, correct, expected_k = [], [], []
    for i, gold in enumerate(golds):
        if i % 4 == 0:
            preds.append(gold)
            correct.append(True)
            expected_k.append(None)
        else:
            n = len(split_steps(gold))
            j = i % (n - 1)  # a non-answer step: its result carries into the final answer
            preds.append(_corrupt(gold, j))
            correct.append(False)
            expected_k.append(j + 1)
    report = minimum_edit_rewrite(records, preds, correct, arith_rules)
    assert report.counts == {"identity": 10, "rewritten": 30}
    for res, gold, k, pred in zip(report.results, golds, expected_k, preds):
        assert res.first_error_step == k
        assert res.rewrite == (pred if k is None else gold)
        if k is not None:
            assert res.rewrite.startswith(pred[: split_steps(pred)[k - 1].start])
            assert res.locate_reply == f"The first error step is [{k}]"


@pytest.mark.parametrize("path", ["train.jsonl", "test.jsonl"])
def test_arith_rules_finds_every_gold_solution_correct(path):
    records = load_reasoning_records(ROOT / "data" / "reasoning" / path)
    assert all(first_wrong_step(gold_solution(r), gold_solution(r)) is None for r in records)
    assert all(equations_hold(s.text) for r in records for s in split_steps(gold_solution(r)))


@pytest.mark.parametrize(
    ("continuation", "prediction", "expected"),
    [
        # the policy's "The answer is N." on the same line as its last step
        (
            "Then 4 + 40 = 44.\n#### 44",
            "The packs hold 4 * 10 = 40 cards. Then 2 + 40 = 46. The answer is 46.",
            "Then 4 + 40 = 44. The answer is 44.",
        ),
        # only the answer step was wrong: the continuation is the answer line alone
        (
            "#### 44",
            "The packs hold 4 * 10 = 40 cards. Then 4 + 40 = 44. The answer is 46.",
            "The answer is 44.",
        ),
        # a prediction on separate lines with its own wording keeps both
        (
            "Then 4 + 40 = 44.\n#### 44",
            "The packs hold 4 * 10 = 40.\nThen 2 + 40 = 46.\nSo the answer is $46.",
            "Then 4 + 40 = 44.\nSo the answer is $44.",
        ),
        # a prediction that already uses "#### N", or ends on a computing step, gets the gold line
        ("Then 4 + 40 = 44.\n#### 44", "The packs hold 4 * 10 = 40. Then 2 + 40 = 46.\n#### 46", None),
        ("Then 4 + 40 = 44.\n#### 44", "The packs hold 4 * 10 = 40. Then 2 + 40 = 46.", None),
    ],
)
def test_arith_rules_writes_the_answer_line_in_the_predictions_style(continuation, prediction, expected):
    assert answer_in_prediction_style(continuation, prediction) == (expected or continuation)


def test_arith_rules_rewrite_keeps_the_policys_answer_format():
    pred = "The packs hold 4 * 10 = 40 marbles. Then 4 + 40 = 45. The answer is 45."
    (res,) = minimum_edit_rewrite([REC], [pred], [False], arith_rules).results
    assert res.first_error_step == 2
    assert res.rewrite == "The packs hold 4 * 10 = 40 marbles. Then 4 + 40 = 44. The answer is 44."
