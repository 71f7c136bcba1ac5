"""PreferenceDataModule: formats, token-by-token response masking, bad input, splits, collation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from algorithms.logprobs import model_token_logprobs
from datamodules.preference import PreferenceCollator, PreferenceDataModule, encode_pair, split_by_group
from datamodules.preference_format import normalise_pair
from utils.errors import DataError
from utils.record_files import Record

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = str(ROOT / "assets" / "tokenizer")
THREE_TURNS = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Name three fruits."},
    {"role": "assistant", "content": "Here are three fruits: pear, plum and grape."},
    {"role": "user", "content": "What color is the first one?"},
    {"role": "assistant", "content": "The pear is green."},
    {"role": "user", "content": "How does it taste?"},
]
CHOSEN, REJECTED = "The pear tastes mild and juicy.", "It tastes like nothing at all."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pair_row(i: int = 0, **over) -> dict:
    row = {
        "messages": THREE_TURNS,
        "chosen": CHOSEN,
        "rejected": REJECTED,
        "neg_type": "neglect",
        "group": f"d{i}",
    }
    return {**row, **over}


def make_dm(path: Path, tmp_path: Path, **kw) -> PreferenceDataModule:
    kw.setdefault("val_fraction", 0.0)
    return PreferenceDataModule(path=str(path), tokenizer=TOKENIZER, cache_dir=str(tmp_path / "cache"), **kw)


# ---- formats ---------------------------------------------------------------------------------------
def test_all_formats_normalise_to_the_same_pair():
    ctx = THREE_TURNS
    variants = [
        {"messages": ctx, "chosen": CHOSEN, "rejected": REJECTED},
        {
            "messages": ctx,
            "chosen": {"role": "assistant", "content": CHOSEN},
            "rejected": [{"role": "assistant", "content": REJECTED}],
        },
        {
            "conversations": [
                {
                    "from": {"user": "human", "assistant": "gpt"}.get(m["role"], m["role"]),
                    "value": m["content"],
                }
                for m in ctx
            ],
            "chosen": CHOSEN,
            "rejected": REJECTED,
        },
        {
            "prompt": ctx,
            "chosen": [{"role": "assistant", "content": CHOSEN}],
            "rejected": [{"role": "assistant", "content": REJECTED}],
        },
        {
            "chosen": [*ctx, {"role": "assistant", "content": CHOSEN}],
            "rejected": [*ctx, {"role": "assistant", "content": REJECTED}],
        },
    ]
    pairs = [normalise_pair(Record(v, "f.jsonl", i + 1)) for i, v in enumerate(variants)]
    for p in pairs:
        assert (p.context, p.prompt_text, p.chosen, p.rejected, p.neg_type) == (
            ctx,
            None,
            CHOSEN,
            REJECTED,
            "none",
        )


def test_trl_standard_format_is_raw_text_or_one_user_turn(tokenizer):
    rec = Record({"prompt": "Q: 2+2?\nA:", "chosen": " 4", "rejected": " 5"}, "s.jsonl", 1)
    raw = normalise_pair(rec)
    assert raw.context is None and raw.prompt_text == "Q: 2+2?\nA:"
    enc = encode_pair(tokenizer, raw, 64)
    assert enc["prompt_ids"] == tokenizer("Q: 2+2?\nA:")["input_ids"]
    assert enc["chosen_ids"][-1] == tokenizer.eos_token_id  # EOS closes the answer, as in TRL
    assert tokenizer.decode(enc["chosen_ids"][:-1]) == " 4"
    chat = normalise_pair(rec, standard_format="chat")
    assert chat.context == [{"role": "user", "content": "Q: 2+2?\nA:"}] and chat.prompt_text is None


# ---- masking ---------------------------------------------------------------------------------------
def test_masking_token_by_token_on_a_three_turn_conversation(tokenizer):
    pair = normalise_pair(Record(pair_row(), "m.jsonl", 1))
    enc = encode_pair(tokenizer, pair, 512)
    # The context is the template's rendering of all three turns up to the assistant's generation prompt.
    context_text = tokenizer.apply_chat_template(THREE_TURNS, add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(enc["prompt_ids"]) == context_text
    batch = PreferenceCollator(tokenizer.pad_token_id, ["neglect"])([{**enc, "neg_type": "neglect"}])
    ids, labels, att = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape[0] == 2  # one pair -> chosen row + rejected row
    n_ctx = len(enc["prompt_ids"])
    for row, answer in ((0, CHOSEN), (1, REJECTED)):
        expected = tokenizer(answer + "<|end|>\n", add_special_tokens=False)["input_ids"]
        n = int(att[row].sum())
        for t in range(ids.shape[1]):
            if t < n_ctx:  # every context token: present, never counted
                assert ids[row, t] == enc["prompt_ids"][t] and labels[row, t] == -100, t
            elif t < n:  # every response token: counted, with its own id as the label
                assert labels[row, t] == ids[row, t] == expected[t - n_ctx], t
            else:  # padding
                assert labels[row, t] == -100 and ids[row, t] == tokenizer.pad_token_id
        assert n - n_ctx == len(expected)
    # Chosen and rejected share exactly the same context tokens.
    assert torch.equal(ids[0, :n_ctx], ids[1, :n_ctx])


def test_sequence_logprobs_count_response_tokens_only(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    model = LlamaForCausalLM(cfg).eval()
    pair = normalise_pair(Record(pair_row(), "m.jsonl", 1))
    enc = encode_pair(tokenizer, pair, 512)
    batch = PreferenceCollator(tokenizer.pad_token_id, ["neglect"])([{**enc, "neg_type": "neglect"}])
    with torch.no_grad():
        logp, mask = model_token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(
            -1
        )
    n_ctx = len(enc["prompt_ids"])
    for row, key in ((0, "chosen_ids"), (1, "rejected_ids")):
        ids = batch["input_ids"][row]
        manual = sum(full[row, t - 1, ids[t]].item() for t in range(n_ctx, n_ctx + len(enc[key])))
        assert logp[row].sum().item() == pytest.approx(manual, abs=1e-4)
        assert int(mask[row].sum()) == len(enc[key])
        assert not mask[row, : n_ctx - 1].any()  # no context token is ever scored


# ---- bad input --------------------------------------------------------------------------------------
BAD = [
    ("empty_chosen", {"chosen": "  "}, "field 'chosen' is empty"),
    ("empty_rejected", {"rejected": ""}, "field 'rejected' is empty"),
    ("identical", {"rejected": CHOSEN}, "identical"),
    ("context_not_user", {"messages": THREE_TURNS[:5]}, "does not end in a user turn"),
    (
        "truncated_to_zero",
        {"messages": [*THREE_TURNS[:-1], {"role": "user", "content": "word " * 300}]},
        "truncated to zero tokens",
    ),
]


@pytest.mark.parametrize(("reason", "change", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_pairs_error_with_location_or_are_counted(tmp_path, reason, change, message):
    rows = [pair_row(0), pair_row(1, **change), pair_row(2)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError, match=rf"pairs.jsonl:2: .*{message}.*on_bad_record=skip"):
        make_dm(path, tmp_path, max_length=128).setup("fit")
    dm = make_dm(path, tmp_path, max_length=128, on_bad_record="skip")
    dm.setup("fit")
    assert len(dm.train_dataset) == 2
    assert dict(dm.skipped) == {reason: 1}
    assert "skipped 1 bad preference pair(s)" in dm.skip_report() and reason in dm.skip_report()


def test_malformed_record_always_errors(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [pair_row(0), {"messages": THREE_TURNS, "chosen": CHOSEN}])
    with pytest.raises(DataError, match=r"p.jsonl:2: missing field 'rejected'"):
        make_dm(path, tmp_path, on_bad_record="skip").setup("fit")


def test_nothing_left_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [pair_row(0, rejected=CHOSEN)])
    with pytest.raises(DataError, match="no preference pair left"):
        make_dm(path, tmp_path, on_bad_record="skip").setup("fit")


# ---- splits, neg types, ref columns -------------------------------------------------------------------
def test_split_keeps_groups_together_and_collates_neg_types_and_ref_columns(tmp_path):
    rows = [pair_row(i // 3, neg_type=["neglect", "hallucination", "history_swap"][i % 3]) for i in range(60)]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    dm = make_dm(path, tmp_path, val_fraction=0.2, batch_size=4, neg_types=["neglect", "history_swap"])
    dm.setup("fit")
    train_groups, val_groups = set(dm.train_dataset["group"]), set(dm.val_dataset["group"])
    assert train_groups and val_groups and not train_groups & val_groups
    assert len(dm.train_dataset) + len(dm.val_dataset) == 40  # neg_types filter keeps 2 of 3 types
    assert dm.neg_types == ["history_swap", "neglect"]
    n = len(dm.train_dataset)
    dm.set_columns(
        "train", {"ref_chosen_logps": [float(i) for i in range(n)], "ref_rejected_logps": [-1.0] * n}
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["neg_type"].shape == (4,)
    assert (
        batch["ref_chosen_logps"].dtype == torch.float32
        and batch["ref_rejected_logps"].tolist() == [-1.0] * 4
    )
    assert set(batch["neg_type"].tolist()) <= {0, 1}


def test_split_by_group_is_seeded_and_disjoint():
    groups = [f"g{i // 2}" for i in range(40)]
    a = split_by_group(groups, 0.25, seed=3)
    assert a == split_by_group(groups, 0.25, seed=3)
    train, val = a
    assert sorted(train + val) == list(range(40))
    assert not {groups[i] for i in train} & {groups[i] for i in val}
