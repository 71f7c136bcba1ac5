"""Every turn graded on its own answer (issue #17, section 1), with a scripted judge that records every
request it gets: on an 8-turn session, turn k's request has answer k in the graded position and the
whole history before it; turns 1 and 2 with FastChat-format prompts are ``str.format`` of the file's
templates, character for character. The prompt file here is written for this test (FastChat's field
names and placeholders, our own words)."""

from __future__ import annotations

import json
import re

import pytest

from evaluation.judges import RatingJudge
from evaluation.mt_bench.fastchat_format import Question
from evaluation.mt_bench.grading import grade_single, needed_prompts
from evaluation.mt_bench.judge_prompts import check_prompts, load_judge_prompts
from evaluation.mt_bench.template_turns import expand_template
from utils.errors import QuartetError

N = 8
QUESTIONS = [f"Question number {k}: tell me about item {k}?" for k in range(1, N + 1)]
ANSWERS = [f"ANSWER-{k} about item {k}." for k in range(1, N + 1)]
REFERENCES = [f"REFERENCE-{k}." for k in range(1, N + 1)]

_CONV_1 = "## U:\n{question_1}\n\n## Bot:\n{answer_1}"
_CONV_2 = "\n\n## U:\n{question_2}\n\n## Bot:\n{answer_2}"
_REFS = "<<REFS>>\n## U:\n{question_1}\n## Ref:\n{ref_answer_1}\n## U:\n{question_2}\n## Ref:\n{ref_answer_2}\n<<END REFS>>\n\n"
STANDIN_FASTCHAT = [
    ("single-v1", "Rate the bot. Reply [[rating]].", "<<Q>>\n{question}\n<<GRADED>>\n{answer}\n<<END>>"),
    (
        "single-math-v1",
        "Rate the bot against the key. Reply [[rating]].",
        "<<Q>>\n{question}\n<<KEY>>\n{ref_answer_1}\n<<GRADED>>\n{answer}\n<<END>>",
    ),
    (
        "single-v1-multi-turn",
        "Rate only the bot's reply to the second user message. Reply [[rating]].",
        "<<CONV>>\n" + _CONV_1 + _CONV_2 + "\n\n<<END>>",
    ),
    (
        "single-math-v1-multi-turn",
        "Use the key; rate the reply to the second question only. Reply [[rating]].",
        _REFS + "<<CONV>>\n" + _CONV_1 + _CONV_2 + "\n\n<<END>>",
    ),
]


def write_prompts(path, rows=STANDIN_FASTCHAT):
    lines = [
        {
            "name": n,
            "type": "single",
            "system_prompt": s,
            "prompt_template": t,
            "description": "test",
            "category": "general",
            "output_format": "[[rating]]",
        }
        for n, s, t in rows
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


class RecordingJudge:
    """Records every request; rates each reply by the turn number it finds in the graded position."""

    def __init__(self, graded: re.Pattern[str]):
        self.graded, self.requests = graded, []

    def __call__(self, prompts):
        self.requests += [list(p) for p in prompts]
        return [
            f"Looks fine. Rating: [[{self.graded.search(p[-1]['content']).group(1).split('-')[1][0]}]]"
            for p in prompts
        ]


# The graded position: the last bot reply before the end marker (FastChat layout), or the <<GRADED>> slot.
FASTCHAT_GRADED = re.compile(r"(?:## Bot:\n|<<GRADED>>\n)((?:(?!## U:).)*?)\n\n?<<END>>", re.S)
QUARTET_GRADED = re.compile(r"\[The assistant's reply to grade\]\n(.*?)\n\[End of the reply\]", re.S)


@pytest.mark.parametrize("category", ["writing", "math"])
@pytest.mark.parametrize("source", ["fastchat_file", "quartet"])
def test_each_of_8_turns_is_graded_on_its_own_answer(tmp_path, category, source):
    prompts = load_judge_prompts(write_prompts(tmp_path / "jp.jsonl") if source == "fastchat_file" else None)
    q = Question(7, category, QUESTIONS, REFERENCES)
    check_prompts(prompts, needed_prompts([q], pairwise=False), "x")
    graded = FASTCHAT_GRADED if source == "fastchat_file" else QUARTET_GRADED
    judge = RecordingJudge(graded)
    records = grade_single(RatingJudge(judge), "my-judge", prompts, [q], {7: ANSWERS}, "model-x")
    assert len(judge.requests) == N and [r["turn"] for r in records] == list(range(1, N + 1))
    for k, (request, record) in enumerate(zip(judge.requests, records), start=1):
        body = request[-1]["content"]
        assert graded.search(body).group(1) == ANSWERS[k - 1]  # answer k, and only it, is graded
        for j in range(1, N + 1):  # the history before it in order; nothing from later turns
            assert (ANSWERS[j - 1] in body) == (j <= k), (k, j)
            assert (QUESTIONS[j - 1] in body) == (j <= k), (k, j)
        if source == "fastchat_file":
            positions = [body.index(f"## Bot:\n{ANSWERS[j - 1]}") for j in range(1, k + 1)] if k > 1 else [0]
            assert positions == sorted(positions)
            assert (f"REFERENCE-{k}." in body) == (category == "math" and k <= N)
        assert record["user_prompt"] == body and record["score"] == float(str(k)[0])
        assert record["judgment"].startswith("Looks fine.") and record["judge"][0] == "my-judge"
        assert record["system_prompt"] == (request[0]["content"] if len(request) > 1 else "")
    if source == "fastchat_file":
        # turn k >= 3: the focus ordinal follows the graded turn
        assert "eighth" in judge.requests[7][0]["content"] and "second" not in judge.requests[7][0]["content"]
        assert "third" in judge.requests[2][0]["content"]


def test_turns_1_and_2_are_str_format_of_the_files_templates(tmp_path):
    prompts = load_judge_prompts(write_prompts(tmp_path / "jp.jsonl"))
    t = {n: (s, tpl) for n, s, tpl in STANDIN_FASTCHAT}
    judge = RecordingJudge(FASTCHAT_GRADED)
    qs = [Question(1, "writing", QUESTIONS[:2]), Question(2, "coding", QUESTIONS[:2], REFERENCES[:2])]
    grade_single(RatingJudge(judge), "j", prompts, qs, {1: ANSWERS[:2], 2: ANSWERS[:2]}, "m")
    q1, q2, a1, a2, r1, r2 = *QUESTIONS[:2], *ANSWERS[:2], *REFERENCES[:2]
    expected = [
        (t["single-v1"], {"question": q1, "answer": a1}),
        (t["single-v1-multi-turn"], {"question_1": q1, "answer_1": a1, "question_2": q2, "answer_2": a2}),
        (t["single-math-v1"], {"question": q1, "answer": a1, "ref_answer_1": r1}),
        (
            t["single-math-v1-multi-turn"],
            {
                "question_1": q1,
                "answer_1": a1,
                "question_2": q2,
                "answer_2": a2,
                "ref_answer_1": r1,
                "ref_answer_2": r2,
            },
        ),
    ]
    assert judge.requests == [
        [{"role": "system", "content": system}, {"role": "user", "content": template.format(**values)}]
        for (system, template), values in expected
    ]


def test_turn_k_rule_repeats_the_turn_2_block():
    template = "<<CONV>>\n" + _CONV_1 + _CONV_2 + "\n\n<<END>> {{literal}}"
    assert expand_template(template, 2) == template
    assert expand_template(template, 3) == (
        "<<CONV>>\n"
        + _CONV_1
        + _CONV_2
        + "\n\n## U:\n{question_3}\n\n## Bot:\n{answer_3}\n\n<<END>> {{literal}}"
    )


def test_a_prompt_file_that_cannot_express_a_turn_is_one_error(tmp_path):
    q = Question(1, "math", QUESTIONS[:3], REFERENCES[:3])
    needed = needed_prompts([q], pairwise=False)
    assert needed == [
        ("single-math-v1", 1),
        ("single-math-v1-multi-turn", 2),
        ("single-math-v1-multi-turn", 3),
    ]
    lacking = load_judge_prompts(write_prompts(tmp_path / "a.jsonl", STANDIN_FASTCHAT[:3]))
    with pytest.raises(
        QuartetError,
        match=r"^task.judge_prompts=a.jsonl has no prompt named 'single-math-v1-multi-turn', needed for turn 2$",
    ):
        check_prompts(lacking, needed, "a.jsonl")
    odd = [*STANDIN_FASTCHAT[:3], ("single-math-v1-multi-turn", "s", "{question_1} {answer_1} {answer_2}")]
    with pytest.raises(QuartetError, match="prompt 'single-math-v1-multi-turn' cannot express turn 3"):
        check_prompts(load_judge_prompts(write_prompts(tmp_path / "b.jsonl", odd)), needed, "b.jsonl")


def test_prompts_an_extension_may_need_are_checked_before_it_runs():
    from evaluation.mt_bench.grading import needed_after_extension

    q = Question(1, "math", ["a?"], ["A."])
    assert needed_after_extension([q], 3, pairwise=False) == [
        ("single-math-v1", 1),
        ("single-v1-multi-turn", 2),  # extended turns without a reference model: the general prompt
        ("single-v1-multi-turn", 3),
        ("single-math-v1-multi-turn", 2),  # with one: the reference prompt
        ("single-math-v1-multi-turn", 3),
    ]


def test_missing_references_use_the_general_prompt_and_are_marked(tmp_path):
    """An extended math turn without a reference: general prompt, marked; no empty reference shown."""
    prompts = load_judge_prompts(write_prompts(tmp_path / "jp.jsonl"))
    q = Question(1, "math", QUESTIONS[:3], REFERENCES[:2] + [""])
    judge = RecordingJudge(FASTCHAT_GRADED)
    records = grade_single(RatingJudge(judge), "j", prompts, [q], {1: ANSWERS[:3]}, "m")
    assert [r["judge"][1] for r in records] == [
        "single-math-v1",
        "single-math-v1-multi-turn",
        "single-v1-multi-turn",
    ]
    assert [r.get("graded_without_reference", False) for r in records] == [False, False, True]
    assert "<<REFS>>" not in judge.requests[2][-1]["content"]


def test_judgment_file_names():
    from omegaconf import OmegaConf

    from runners.mt_bench import judge_file_stem

    cfg = OmegaConf.create({"judge": {"name": "x"}})
    assert judge_file_stem(cfg, "gpt-4") == "gpt-4" and judge_file_stem(cfg, "org/judge") == "org_judge"
    for bad in ("", "..", "."):
        with pytest.raises(QuartetError, match=r"judge.name=.* can't be used as a file name"):
            judge_file_stem(cfg, bad)
