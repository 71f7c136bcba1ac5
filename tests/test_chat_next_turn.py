"""The next turn for any role (inference/chat.py): the text and tokens a model continues from to write
a user turn (the Ask model) or an assistant turn, on the shipped template and on a ChatML template
that injects a default system prompt and writes no BOS."""

from __future__ import annotations

import copy

import pytest

from inference.chat import (
    ChatTemplateMissingError,
    ChatTemplateRoleError,
    NextTurn,
    encode_next_turn,
    render_next_turn,
)
from inference.sample_cache import prompt_sha

HISTORY = [
    {"role": "user", "content": "Name three fruits."},
    {"role": "assistant", "content": "Pear, plum and grape."},
]
NEXT_USER = {"role": "user", "content": "Which one is sweetest?"}

# A ChatML template in the style Qwen2.5 and SmolLM2 ship: no BOS, and a default system prompt when
# the conversation has none (written for this test).
CHATML = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
# Llama-2 / Mistral style: refuses anything but user/assistant alternation.
ALTERNATING = (
    "{{ bos_token }}{%- for m in messages -%}"
    "{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if m['role'] == 'user' -%}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{%- else -%}{{ m['content'] + eos_token }}{%- endif -%}"
    "{%- endfor -%}"
)


@pytest.fixture(scope="module")
def chatml(tokenizer):
    """The shipped BPE vocabulary with <|im_start|>/<|im_end|> added and the ChatML template."""
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    return tok


def _with_template(tokenizer, template: str | None):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def _tokens(tok, ids: list[int]) -> list[str]:
    return tok.convert_ids_to_tokens(ids)


# ---- the shipped template ---------------------------------------------------------------------------
def test_shipped_template_user_turn_text_and_tokens(tokenizer):
    text = render_next_turn(tokenizer, HISTORY, "user")
    assert text == (
        "<|begin_of_text|><|user|>\nName three fruits.<|end|>\n"
        "<|assistant|>\nPear, plum and grape.<|end|>\n<|user|>\n"
    )
    ids = encode_next_turn(tokenizer, HISTORY, "user")
    toks = _tokens(tokenizer, ids)
    assert toks[:4] == ["<|begin_of_text|>", "<|user|>", "Ċ", "Nam"]
    assert toks[-5:] == [".", "<|end|>", "Ċ", "<|user|>", "Ċ"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id  # no second BOS
    # The prompt is exactly the token prefix of the conversation with that user turn written in, so
    # the Ask model continues where its training rendering had the user's words.
    full = tokenizer(
        tokenizer.apply_chat_template([*HISTORY, NEXT_USER], tokenize=False), add_special_tokens=False
    )["input_ids"]
    assert full[: len(ids)] == ids
    rest = _tokens(tokenizer, full[len(ids) :])
    assert "".join(rest).replace("Ġ", " ") == "Which one is sweetest?<|end|>Ċ"


def test_shipped_template_first_turn_and_assistant_turn(tokenizer):
    assert render_next_turn(tokenizer, [], "user") == "<|begin_of_text|><|user|>\n"
    assert encode_next_turn(tokenizer, [], "user") == [tokenizer.bos_token_id, 4, 205]
    history = [*HISTORY, NEXT_USER]
    assistant = render_next_turn(tokenizer, history, "assistant")
    assert assistant == tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=False)
    assert assistant.endswith("Which one is sweetest?<|end|>\n<|assistant|>\n")
    # the placeholder cut gives the same opening as the template's generation prompt
    assert render_next_turn(tokenizer, [], "assistant") == "<|begin_of_text|><|assistant|>\n"
    assert render_next_turn(tokenizer, [], "system") == "<|begin_of_text|><|system|>\n"


def test_no_second_bos_when_the_tokenizer_also_adds_one(tokenizer):
    """Llama-style tokenizers add BOS on encode and their templates write it too: the prompt keeps one."""
    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tokenizer)
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, bos)]
    )
    text = render_next_turn(tok, HISTORY, "user")
    assert tok(text)["input_ids"][:2] == [bos, bos]  # what a plain encode of the rendered text would do
    ids = encode_next_turn(tok, HISTORY, "user")
    assert ids[:2] == [bos, tok.convert_tokens_to_ids("<|user|>")] and ids.count(bos) == 1


# ---- ChatML with a default system prompt and no BOS -----------------------------------------------
def test_chatml_user_turn_gets_one_default_system_prompt_and_no_bos(chatml):
    text = render_next_turn(chatml, HISTORY, "user")
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nName three fruits.<|im_end|>\n"
        "<|im_start|>assistant\nPear, plum and grape.<|im_end|>\n"
        "<|im_start|>user\n"
    )
    ids = encode_next_turn(chatml, HISTORY, "user")
    toks = _tokens(chatml, ids)
    im_start, im_end = chatml.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert toks[0] == "<|im_start|>" and chatml.bos_token_id not in ids
    assert ids.count(im_start) == 4 and ids.count(im_end) == 3
    assert chatml.decode(ids[-3:]) == "<|im_start|>user\n"
    assert [chatml.decode(ids[i + 1 : i + 3]) for i, t in enumerate(ids) if t == im_start] == [
        "system\n",
        "user\n",
        "assistant\n",
        "user\n",
    ]
    full = chatml(
        chatml.apply_chat_template([*HISTORY, NEXT_USER], tokenize=False), add_special_tokens=False
    )["input_ids"]
    assert full[: len(ids)] == ids
    assert chatml.decode(full[len(ids) :]) == "Which one is sweetest?<|im_end|>\n"


def test_chatml_first_turn_explicit_system_and_assistant(chatml):
    assert render_next_turn(chatml, [], "user") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    )
    system = [{"role": "system", "content": "Be brief."}]
    assert render_next_turn(chatml, system, "user") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    )
    # opening a system turn itself: the default is not injected in front of it
    assert render_next_turn(chatml, [], "system") == "<|im_start|>system\n"
    assistant = render_next_turn(chatml, [*HISTORY, NEXT_USER], "assistant")
    assert assistant.endswith("<|im_start|>user\nWhich one is sweetest?<|im_end|>\n<|im_start|>assistant\n")
    assert assistant.count("<|im_start|>system") == 1


# ---- templates that can't do it --------------------------------------------------------------------
def test_a_template_that_refuses_the_role_order_is_a_clear_error(tokenizer):
    tok = _with_template(tokenizer, ALTERNATING)
    assert render_next_turn(tok, HISTORY, "user") == (
        "<|begin_of_text|>[INST] Name three fruits. [/INST]Pear, plum and grape.<|end|>[INST] "
    )
    with pytest.raises(
        ChatTemplateRoleError, match=r"cannot render a 'user' turn after roles \['user'\]"
    ) as e:
        render_next_turn(tok, HISTORY[:1], "user")
    assert "must alternate" in str(e.value)


def test_a_template_that_drops_the_role_or_is_missing(tokenizer):
    no_system = "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['role'] + ': ' + m['content'] }}{% endif %}{% endfor %}"
    with pytest.raises(ChatTemplateRoleError, match="drops the content of a 'system' turn"):
        render_next_turn(_with_template(tokenizer, no_system), [], "system")
    with pytest.raises(ChatTemplateMissingError, match="has no chat_template"):
        render_next_turn(_with_template(tokenizer, None), HISTORY, "user")
    with pytest.raises(ValueError, match="role must be one of"):
        render_next_turn(tokenizer, HISTORY, "tool")


# ---- through a backend ------------------------------------------------------------------------------
def test_hf_backend_generates_from_a_next_turn_prompt(tokenizer):
    from inference.backends.hf import HFBackend
    from inference.sampling import SamplingParams
    from tests.inference_helpers import tiny_llama

    model = tiny_llama(len(tokenizer), hidden=32, eos_token_id=tokenizer.eos_token_id)
    backend = HFBackend(model, tokenizer, model_id="tiny")
    prompt = NextTurn(HISTORY, "user")
    assert backend.encode(prompt) == encode_next_turn(tokenizer, HISTORY, "user")
    (group,) = backend.generate([prompt], SamplingParams(max_new_tokens=3, temperature=1.0, seed=1))
    assert len(group) == 1 and group[0].prompt_tokens == len(encode_next_turn(tokenizer, HISTORY, "user"))
    # the sample cache tells a user-turn prompt from the assistant prompt over the same history
    assert prompt_sha(prompt) != prompt_sha(HISTORY) != prompt_sha(NextTurn(HISTORY, "assistant"))
    assert prompt_sha(prompt) == prompt_sha(NextTurn(list(HISTORY), "user"))


def test_vllm_backend_sends_next_turn_and_chat_prompts_as_template_ids(tokenizer):
    """vLLM gets the same prompt ids as the HF backend (a stand-in engine records what it is sent)."""
    from types import SimpleNamespace

    from inference.backends.vllm import VLLMBackend
    from inference.sampling import SamplingParams

    sent: list = []

    class Engine:
        def generate(self, inputs, params, use_tqdm=False):
            sent.extend(inputs)
            out = SimpleNamespace(text="ok", token_ids=[1], finish_reason="length", stop_reason=None)
            return [SimpleNamespace(prompt_token_ids=[0], outputs=[out]) for _ in inputs]

    backend = object.__new__(VLLMBackend)
    backend.llm, backend.tokenizer = Engine(), tokenizer
    backend.to_vllm_params = lambda params: params
    backend.generate([NextTurn(HISTORY, "user"), HISTORY], SamplingParams())
    assert sent[0] == {"prompt_token_ids": encode_next_turn(tokenizer, HISTORY, "user")}
    assert sent[1] == {"prompt_token_ids": encode_next_turn(tokenizer, HISTORY, "assistant")}
