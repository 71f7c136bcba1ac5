"""Two defects that only real Hugging Face chat models showed (issue: real models).

1. The token-cache key looked up every string part on disk, so a chat template longer than the file-name
   limit (most real models ship 1-4 KB templates) raised ``OSError: File name too long``.
2. ``from_pretrained`` returns a model in eval mode and nothing switched it back: the policy trained
   with dropout off, and gradient checkpointing (active only in train mode) never recomputed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from datamodules.base import fingerprint
from datamodules.chat import ChatDataModule
from datamodules.preference import PreferenceDataModule
from tests.helpers import FAST, ROOT, compose_cfg
from tests.inference_helpers import tiny_llama
from tests.probes import RECORDED
from train import train

SHIPPED_TEMPLATE = AutoTokenizer.from_pretrained(str(ROOT / "assets" / "tokenizer")).chat_template


def long_template() -> str:
    """The shipped template behind a Jinja comment of more than 4 KB with no path separator, as long
    as the templates Llama 3, Qwen 2.5 or SmolLM2 ship."""
    comment = "{# " + "this template renders the conversation turn by turn " * 90 + "#}"
    template = comment + SHIPPED_TEMPLATE
    assert len(template) > 4096
    return template


@pytest.fixture(scope="module")
def long_template_tokenizer(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("long_template_tok")
    tok = AutoTokenizer.from_pretrained(str(ROOT / "assets" / "tokenizer"))
    tok.chat_template = long_template()
    tok.save_pretrained(out)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


DIALOGUES = [
    {
        "messages": [
            {"role": "user", "content": f"Name {n} colours."},
            {"role": "assistant", "content": "Red, green and blue."},
            {"role": "user", "content": "Which one is the second?"},
            {"role": "assistant", "content": "Green is the second one."},
        ]
    }
    for n in range(2, 12)
]


def test_fingerprint_never_looks_strings_up_on_disk():
    template = long_template()
    # Before the fix this raised OSError(ENAMETOOLONG): the template was stat'ed as a file name.
    key = fingerprint("chat", template, 512)
    assert key == fingerprint("chat", template, 512)
    assert key != fingerprint("chat", template + " ", 512)


def test_fingerprint_keys_named_files_by_content_identity(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", DIALOGUES[:2])
    before = fingerprint("x", files=[data])
    assert before == fingerprint("x", files=[data])
    write_jsonl(data, DIALOGUES[:3])  # the file changes: the key must change
    assert fingerprint("x", files=[data]) != before
    # A path that is only a string part is not stat'ed, so it keys by its text alone.
    assert fingerprint(str(data)) == fingerprint(str(data))
    # A folder (save_to_disk) is keyed by the files inside it.
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "a.arrow").write_bytes(b"1")
    k1 = fingerprint(files=[folder])
    (folder / "a.arrow").write_bytes(b"12")
    assert fingerprint(files=[folder]) != k1
    # A hub name is keyed by itself.
    assert fingerprint(files=["org/some-dataset"]) == fingerprint(files=["org/some-dataset"])


def test_chat_data_with_a_4kb_template(tmp_path, long_template_tokenizer):
    data = write_jsonl(tmp_path / "chats.jsonl", DIALOGUES)
    dm = ChatDataModule(
        path=str(data),
        tokenizer=str(long_template_tokenizer),
        cache_dir=str(tmp_path / "cache"),
        val_fraction=0.2,
        batch_size=2,
    )
    dm.setup("fit")
    assert len(dm.train_dataset) == 8 and len(dm.val_dataset) == 2
    assert len(dm.tokenizer.chat_template) > 4096
    # The mask covers exactly the assistant answers (content + end of turn), whatever the template length.
    row = dm.train_dataset[0]
    kept = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
    assert dm.tokenizer.decode(kept) == "Red, green and blue.<|end|>\nGreen is the second one.<|end|>\n"
    assert list(Path(tmp_path / "cache").glob("*.arrow")), "the token cache was not written"


def test_preference_data_with_a_4kb_template(tmp_path, long_template_tokenizer):
    pairs = [
        {
            "messages": d["messages"][:3],
            "chosen": "Green is the second one.",
            "rejected": "Paris is in France.",
            "neg_type": "neglect",
        }
        for d in DIALOGUES
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    dm = PreferenceDataModule(
        path=str(data),
        tokenizer=str(long_template_tokenizer),
        cache_dir=str(tmp_path / "cache"),
        val_fraction=0.0,
        batch_size=2,
    )
    dm.setup("fit")
    assert len(dm.train_dataset) == len(pairs)
    row = dm.train_dataset[0]
    assert dm.tokenizer.decode(row["chosen_ids"]).startswith("Green is the second one.")


# ---- train mode ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dropout_hf_dir(tmp_path_factory) -> Path:
    """A tiny saved Llama whose config asks for attention dropout (as many real configs do)."""
    tok = AutoTokenizer.from_pretrained(str(ROOT / "assets" / "tokenizer"))
    model = tiny_llama(
        len(tok),
        hidden=32,
        eos_token_id=tok.eos_token_id,
        attention_dropout=0.5,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    out = tmp_path_factory.mktemp("dropout_hf")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def hf_cfg(model_dir: Path, out: Path, extra: list[str], probe: str):
    RECORDED.clear()
    return compose_cfg(
        [
            "model=hf",
            f"model.pretrained={model_dir}",
            "model.dtype=float32",
            "data.batch_size=4",
            "data.max_length=64",
            f"data.cache_dir={out / 'cache'}",
            "trainer.max_steps=3",
            "trainer.limit_val_batches=0",
            "logger=none",
            "callbacks=none",
            f"+callbacks.probe._target_=tests.probes.{probe}",
            *FAST,
            *extra,
        ],
        out,
    )


def test_pretrained_policy_trains_in_train_mode_with_dropout(tmp_path, dropout_hf_dir):
    train(hf_cfg(dropout_hf_dir, tmp_path, [], "ModeProbe"))
    assert RECORDED["all_training"] == [True, True, True]
    assert RECORDED["forwards_differ"] == [True, True, True], (
        "attention dropout is set but forwards were equal"
    )


def test_gradient_checkpointing_recomputes(tmp_path, dropout_hf_dir):
    train(hf_cfg(dropout_hf_dir, tmp_path, ["model.gradient_checkpointing=true"], "LayerCallCounter"))
    # one forward, plus one recomputation during backward, per step
    assert RECORDED["layer_calls"] == [2, 2, 2]


def test_frozen_reference_stays_in_eval_mode(tmp_path, dropout_hf_dir):
    pairs = ROOT / "data" / "capo" / "pairs.jsonl"
    extra = [
        "module=capo",
        "data=preference",
        f"data.path={pairs}",
        "module.reference=copy",
        "data.max_length=256",
    ]
    train(hf_cfg(dropout_hf_dir, tmp_path, extra, "ModeProbe"))
    assert RECORDED["all_training"] == [True, True, True]
    assert RECORDED["ref_training"] == [False, False, False]
