"""The next turn for any role (the Ask model writes user turns) on the realistic template families:
exact text, one BOS at most (where the family writes one), ids that are a prefix of the full
conversation's ids, and a clear error where the template refuses the role order."""

from __future__ import annotations

import pytest

from inference.chat import ChatTemplateRoleError, encode_next_turn, render_next_turn
from tests.tokenizer_fixtures import SMOL_SYSTEM
from utils.errors import QuartetError

HISTORY = [
    {"role": "user", "content": "Name two rivers."},
    {"role": "assistant", "content": "The Nile and the Rhine."},
]
NEXT = {"role": "user", "content": "Which is longer?"}

EXPECTED_USER_TURN = {
    "chatml": (
        f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\nName two rivers.<|im_end|>\n"
        "<|im_start|>assistant\nThe Nile and the Rhine.<|im_end|>\n<|im_start|>user\n"
    ),
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nName two rivers.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nThe Nile and the Rhine.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
    ),
    "mistral": "<s>[INST] Name two rivers. [/INST]The Nile and the Rhine.</s>[INST] ",
    "gemma": (
        "<bos><start_of_turn>user\nName two rivers.<end_of_turn>\n<start_of_turn>model\n"
        "The Nile and the Rhine.<end_of_turn>\n<start_of_turn>user\n"
    ),
}
BOS = {"chatml": None, "llama3": "<|begin_of_text|>", "mistral": "<s>", "gemma": "<bos>", "long_chatml": None}


@pytest.mark.parametrize("family", ["chatml", "llama3", "mistral", "gemma", "long_chatml"])
def test_next_user_turn(family, request):
    tok = request.getfixturevalue(f"{family}_tokenizer")
    text = render_next_turn(tok, HISTORY, "user")
    if family in EXPECTED_USER_TURN:
        assert text == EXPECTED_USER_TURN[family]
    else:  # the >4 KB template: its long default system prompt, then the same ChatML turns
        assert len(tok.chat_template) > 4096 and text.endswith(
            EXPECTED_USER_TURN["chatml"].split("<|im_end|>\n", 1)[1]
        )
    ids = encode_next_turn(tok, HISTORY, "user")
    bos = BOS[family]
    n_bos = ids.count(tok.convert_tokens_to_ids(bos)) if bos else 0
    assert n_bos == (1 if bos else 0) and (not bos or ids[0] == tok.convert_tokens_to_ids(bos))
    # The prompt is exactly the start of the conversation that continues with the next user query.
    full = tok.apply_chat_template(
        [*HISTORY, NEXT, {"role": "assistant", "content": "The Nile."}], tokenize=False
    )
    full_ids = tok(full, add_special_tokens=False)["input_ids"]
    assert full_ids[: len(ids)] == ids
    assert tok.decode(full_ids[len(ids) :]).startswith("Which is longer?")


@pytest.mark.parametrize("family", ["chatml", "llama3", "mistral", "gemma"])
def test_next_assistant_turn_is_the_generation_prompt(family, request):
    tok = request.getfixturevalue(f"{family}_tokenizer")
    history = [*HISTORY, NEXT]
    assert render_next_turn(tok, history, "assistant") == tok.apply_chat_template(
        history, tokenize=False, add_generation_prompt=True
    )


@pytest.mark.parametrize("family", ["mistral", "gemma"])
def test_templates_that_refuse_the_role_order_raise_clearly(family, request):
    tok = request.getfixturevalue(f"{family}_tokenizer")
    with pytest.raises(
        ChatTemplateRoleError, match="cannot render a 'user' turn after roles \\['user'\\]"
    ) as err:
        render_next_turn(tok, HISTORY[:1], "user")
    assert isinstance(err.value, QuartetError)  # generate.py / eval.py print it as one `error:` line
    with pytest.raises(ChatTemplateRoleError):
        render_next_turn(tok, [{"role": "system", "content": "Be brief."}, *HISTORY], "user")
