"""Issue 21, Bad 3: ``model.chat_template`` (and ``chat_template`` of a generator/judge config) is used by
every data module that renders chats and by every generation path: a valid override changes the rendered
tokens, and a template that raises is one clear ``QuartetError``, never ignored.

Data modules that render no chat (``data=lm_corpus``: raw text; ``data=rlmec``: token ids made by the
stages) have nothing to override; the generators that make the RLMEC data take the override instead."""

from __future__ import annotations

import json

import pytest
from hydra.utils import instantiate

from tests.helpers import compose_cfg

#: Prefix-stable (so the loss masks can be derived), and visibly different from the shipped template.
TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}]: {{ m['content'] }} | {% endfor %}"
    "{% if add_generation_prompt %}[assistant]: {% endif %}"
)
RAISING = "{{ raise_exception('this template refuses every chat') }}"
CHAT = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi friend"}]


def _files(tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": CHAT}) + "\n" for _ in range(4)))
    pairs = tmp_path / "pairs.jsonl"
    pair = {"messages": CHAT[:1], "chosen": "hi friend", "rejected": "go away", "neg_type": "neglect"}
    pairs.write_text("".join(json.dumps(pair) + "\n" for _ in range(4)))
    reasoning = tmp_path / "reasoning.jsonl"
    reasoning.write_text(
        "".join(
            json.dumps({"question": "What is 2 + 3?", "answer": "2 + 3 = 5.\n#### 5", "task": "arith"}) + "\n"
            for _ in range(4)
        )
    )
    return {"chat": chat, "ask": chat, "reasoning_sft": reasoning, "preference": pairs}


def _first_ids(data: str, path, template: str | None, tmp_path) -> tuple[list[int], object]:
    extra = [f"model.chat_template={json.dumps(template)}"] if template else []
    cfg = compose_cfg(
        [f"data={data}", f"data.path={path}", "data.cache_dir=null", "data.val_fraction=0", *extra], tmp_path
    )
    dm = instantiate(cfg.data)
    dm.setup("fit")
    row = dm.train_dataset[0]
    return list(row["input_ids"] if "input_ids" in row else row["prompt_ids"]), dm


@pytest.mark.parametrize("data", ["chat", "ask", "reasoning_sft", "preference"])
def test_every_chat_data_module_renders_with_the_override_and_a_raising_template_is_an_error(data, tmp_path):
    from utils.errors import QuartetError

    path = _files(tmp_path)[data]
    own, _ = _first_ids(data, path, None, tmp_path)
    ids, dm = _first_ids(data, path, TEMPLATE, tmp_path)
    assert dm.tokenizer.chat_template == TEMPLATE
    text = dm.tokenizer.decode(ids)
    assert text.startswith("[user]: ") and ids != own, text
    with pytest.raises(QuartetError, match="this template refuses every chat"):
        _first_ids(data, path, RAISING, tmp_path)


def test_every_generation_backend_renders_with_the_override(tiny_hf_dir, tmp_path):
    from inference.chat import ChatTemplateRoleError, encode_prompt
    from inference.generation_cache import build_generator
    from runners.mt_bench import model_under_test
    from utils.errors import ConfigError

    # generate.py stages, the MT-Bench Ask model and judges: build_generator(<config with chat_template>)
    gen = build_generator({"backend": "hf", "path": str(tiny_hf_dir), "chat_template": TEMPLATE})
    tok = gen.backend.tokenizer
    assert tok.decode(gen.backend.encode(CHAT[:1])) == "[user]: hello there | [assistant]: "
    plain = build_generator({"backend": "hf", "path": str(tiny_hf_dir)})
    assert plain.backend.encode(CHAT[:1]) != gen.backend.encode(CHAT[:1])
    raising = build_generator({"backend": "hf", "path": str(tiny_hf_dir), "chat_template": RAISING})
    with pytest.raises(ChatTemplateRoleError, match="rejects a prompt with roles \\['user'\\]"):
        encode_prompt(raising.backend.tokenizer, CHAT[:1])
    with pytest.raises(ConfigError, match="chat_template applies to the hf and vllm backends"):
        build_generator({"backend": "openai_http", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                         "chat_template": TEMPLATE})  # fmt: skip
    # eval.py's model under test (task=mt_bench; task=reasoning builds its tokenizer the same way)
    cfg = compose_cfg(
        ["task=mt_bench", "judge=standin", "model=hf", f"model.pretrained={tiny_hf_dir}",
         f"model.chat_template={json.dumps(TEMPLATE)}"], tmp_path, config_name="eval",
    )  # fmt: skip
    assert model_under_test(cfg).tokenizer.chat_template == TEMPLATE
