"""The HF backend and the shared-prefix decode loop on tiny random Llamas."""

from __future__ import annotations

import pytest
import torch

from inference.backends.hf import HFBackend
from inference.chat import ChatTemplateMissingError, count_tokens, encode_prompt
from inference.decoding import generate_token_ids, sample_inverse_cdf, sampling_probs
from inference.sampling import SamplingParams
from tests.inference_helpers import make_tokenizer, tiny_llama

PROMPTS = [
    "Question: Tom has 3 apples. He buys 4 more. How many apples does he have?\nAnswer:",
    "Mia has 12 pencils.",
    "A pen costs $3. Leo buys 4 pens. How much does he spend? Think step by step, then answer.\nAnswer:",
]


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=0, eos_token_id=tok.eos_token_id)


@pytest.fixture(scope="module")
def backend(model, tok):
    return HFBackend(model, tok, batch_size=8)


def _left_padded(tok, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    ids = [tok(p)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tok.pad_token_id)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x) :] = torch.tensor(x)
        mask[i, width - len(x) :] = 1
    return input_ids, mask, ids


def test_num_return_sequences_shape_and_token_counts(backend, tok) -> None:
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6, seed=1)
    out = backend.generate(PROMPTS, params)
    assert [len(g) for g in out] == [3, 3, 3]
    for prompt, group in zip(PROMPTS, out):
        for c in group:
            assert c.prompt_tokens == len(tok(prompt)["input_ids"])
            assert 1 <= c.completion_tokens <= 6
            assert c.finish_reason in ("eos", "length", "stop")
            if c.finish_reason == "length":
                assert c.completion_tokens == 6


def test_same_seed_same_outputs_and_batch_independence(backend) -> None:
    params = SamplingParams(n=4, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=7)
    a = backend.generate(PROMPTS, params)
    b = backend.generate(PROMPTS, params)
    assert [[c.text for c in g] for g in a] == [[c.text for c in g] for g in b]
    # The m samples of one prompt differ from each other (sampling, not copies).
    assert len({c.text for c in a[0]}) > 1
    # A different seed gives different samples.
    c = backend.generate(PROMPTS, params.replace(seed=8))
    assert [[x.text for x in g] for g in a] != [[x.text for x in g] for g in c]
    # Per-prompt RNGs: a prompt's samples do not depend on the rest of the batch.
    alone = backend.generate([PROMPTS[1]], params)
    assert [x.text for x in alone[0]] == [x.text for x in a[1]]


def test_greedy_batched_equals_one_at_a_time(backend) -> None:
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=12, ignore_eos=True)
    batched = backend.generate(PROMPTS, params)
    singles = [backend.generate([p], params)[0] for p in PROMPTS]
    assert [g[0].text for g in batched] == [g[0].text for g in singles]
    assert all(g[0].completion_tokens == 12 for g in batched)


def test_shared_prefix_greedy_matches_plain_generate(model, tok) -> None:
    input_ids, mask, ids = _left_padded(tok, PROMPTS)
    with torch.inference_mode():
        ref = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=10,
            min_new_tokens=10,
            pad_token_id=tok.pad_token_id,
        )
    expected = ref[:, input_ids.shape[1] :].tolist()
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=10, ignore_eos=True)
    ours = generate_token_ids(
        model, ids, params, eos_token_ids=[tok.eos_token_id], pad_token_id=tok.pad_token_id
    )
    for exp, group in zip(expected, ours):
        assert [s.token_ids for s in group] == [exp, exp]  # both of the n=2 copies equal generate's output


def test_row_compaction_does_not_change_outputs(model, tok) -> None:
    _, _, ids = _left_padded(tok, PROMPTS)
    # Make a frequent token the EOS so rows finish at different steps and compaction kicks in.
    params = SamplingParams(n=3, temperature=0.0, max_new_tokens=10)
    probe = generate_token_ids(model, ids, params.replace(ignore_eos=True), eos_token_ids=[], pad_token_id=0)
    eos = probe[0][0].token_ids[3]
    kw = {"eos_token_ids": [eos], "pad_token_id": 0}
    compacted = generate_token_ids(model, ids, params, compact_fraction=0.01, **kw)
    full = generate_token_ids(model, ids, params, compact_fraction=1.0, **kw)
    assert [[(s.token_ids, s.num_tokens, s.finish_reason) for s in g] for g in compacted] == [
        [(s.token_ids, s.num_tokens, s.finish_reason) for s in g] for g in full
    ]
    assert compacted[0][0].finish_reason == "eos" and compacted[0][0].num_tokens == 4
    assert eos not in compacted[0][0].token_ids


def test_stop_strings_truncate_and_stop_early(backend, tok) -> None:
    base = SamplingParams(n=1, temperature=0.0, max_new_tokens=24, ignore_eos=True)
    full = backend.generate([PROMPTS[0]], base)[0][0]
    # Pick a stop string from the middle of the greedy continuation.
    text = full.text
    assert len(text) > 8
    stop = text[4:7]
    cut = backend.generate([PROMPTS[0]], base.replace(stop=(stop,)))[0][0]
    assert cut.text == text[: text.index(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens  # decoding ended early
    assert stop not in cut.text


def test_eos_ends_sequence(model, tok) -> None:
    _, _, ids = _left_padded(tok, PROMPTS[:1])
    probe = generate_token_ids(
        model,
        ids,
        SamplingParams(temperature=0.0, max_new_tokens=6, ignore_eos=True),
        eos_token_ids=[],
        pad_token_id=0,
    )
    first = probe[0][0].token_ids[0]
    out = generate_token_ids(
        model, ids, SamplingParams(temperature=0.0, max_new_tokens=6), eos_token_ids=[first], pad_token_id=0
    )
    assert out[0][0].token_ids == [] and out[0][0].num_tokens == 1 and out[0][0].finish_reason == "eos"


def test_chat_template_applied_and_missing_template_error(backend, tok) -> None:
    msgs = [{"role": "user", "content": "What is 2 + 3?"}]
    ids = encode_prompt(tok, msgs)
    rendered = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert ids == tok(rendered, add_special_tokens=False)["input_ids"]
    out = backend.generate([msgs], SamplingParams(max_new_tokens=3))
    assert out[0][0].prompt_tokens == len(ids)
    assert count_tokens(tok, "What is 2 + 3?") == len(
        tok("What is 2 + 3?", add_special_tokens=False)["input_ids"]
    )

    bare = make_tokenizer()
    bare.chat_template = None
    with pytest.raises(ChatTemplateMissingError, match="no chat_template"):
        encode_prompt(bare, msgs)
    # Raw prompts still work without a template.
    assert encode_prompt(bare, "What is 2 + 3?") == bare("What is 2 + 3?")["input_ids"]


def test_sampling_probs_top_p_top_k() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = sampling_probs(logits, 1.0, 0, 0.8) > 0
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.8, 0.5 + 0.3 reaches it
    kept = sampling_probs(logits, 1.0, 0, 0.81) > 0
    assert kept.tolist() == [[True, True, True, False]]
    kept = sampling_probs(logits, 1.0, 0, 0.1) > 0
    assert kept.tolist() == [[True, False, False, False]]  # the top token is always kept
    kept = sampling_probs(logits, 1.0, 2, 1.0) > 0
    assert kept.tolist() == [[True, True, False, False]]
    p = sampling_probs(logits, 1.0, 0, 1.0)
    assert torch.allclose(p, torch.tensor([[0.5, 0.3, 0.15, 0.05]]))


def test_inverse_cdf_sampling_matches_distribution() -> None:
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    draws = sample_inverse_cdf(probs, torch.rand(20000, generator=g))
    freq = torch.bincount(draws, minlength=4).float() / 20000
    assert freq[1] == 0
    assert torch.allclose(freq, torch.tensor([0.1, 0.0, 0.6, 0.3]), atol=0.015)


def test_sampling_params_validation() -> None:
    with pytest.raises(ValueError, match="n \\(number of paths"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    assert SamplingParams(stop=["a"]).stop == ("a",)
    assert "seed" not in SamplingParams(temperature=0.0).cache_fields()
    assert "n" not in SamplingParams(temperature=0.5, n=3).cache_fields()


def test_evaluate_reasoning_with_hf_backend(backend, tmp_path) -> None:
    from evaluation.reasoning.evaluator import evaluate_reasoning
    from reasoning.prompts import PromptSettings
    from reasoning.questions import load_reasoning_records
    from tests.inference_helpers import REPO

    records = load_reasoning_records(REPO / "data" / "reasoning" / "mixed_test.jsonl", limit=4)
    kwargs = dict(
        methods=["greedy", "sc", "sa"],
        ks=[1, 3],
        prompt_settings=PromptSettings(chat=True, question_type_known=False),
        sampling=SamplingParams(temperature=0.7, max_new_tokens=6, seed=0),
        cache_path=tmp_path / "cache.jsonl",
        progress=True,
    )
    res = evaluate_reasoning(backend, records, **kwargs)
    assert set(res["metrics"]) == {"greedy", "sc@1", "sc@3", "sa@1", "sa@3"}
    assert res["cache"]["generated_prompts"] == {"greedy": 4, "paths": 4, "agreement": 8}
    row = res["samples"][0]
    assert len(row["paths"]) == 3 and all(1 <= p["completion_tokens"] <= 6 for p in row["paths"])
    sc3, sa3 = res["metrics"]["sc@3"]["tokens_per_question"], res["metrics"]["sa@3"]["tokens_per_question"]
    assert sc3["prompt"] > 20 and sa3["total"] > sc3["total"]
    assert res["settings"]["backend"]["chat_template_sha"] is not None
    # Second run: served from the cache only.
    calls = []
    original = backend.generate
    backend.generate = lambda prompts, params: calls.append(1) or original(prompts, params)
    try:
        again = evaluate_reasoning(backend, records, **kwargs)
    finally:
        del backend.generate
    assert calls == [] and again["samples"] == res["samples"]


def test_preallocated_layer_matches_dynamic_layer() -> None:
    from transformers.cache_utils import DynamicLayer

    from inference.kv_cache import PreallocatedLayer

    g = torch.Generator().manual_seed(0)
    k0, v0 = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 6, generator=g)
    ref = DynamicLayer()
    ref.update(k0, v0)
    ours = PreallocatedLayer(k0, v0, capacity=5)  # room for one step, then it must grow
    for _ in range(3):
        k, v = torch.randn(2, 3, 1, 5, generator=g), torch.randn(2, 3, 1, 6, generator=g)
        rk, rv = ref.update(k, v)
        ok, ov = ours.update(k, v)
        assert torch.equal(rk, ok) and torch.equal(rv, ov)
    assert ours.get_seq_length() == ref.get_seq_length() == 7
    idx = torch.tensor([1])
    ref.batch_select_indices(idx)
    ours.batch_select_indices(idx)
    ref.batch_repeat_interleave(3)
    ours.batch_repeat_interleave(3)
    assert torch.equal(ref.keys, ours.keys) and torch.equal(ref.values, ours.values)
    ours.crop(-2)
    assert ours.get_seq_length() == 5 and torch.equal(ours.keys, ref.keys[..., :5, :])


@pytest.mark.parametrize("arch", ["qwen2", "mixtral"])
def test_shared_prefix_other_architectures(arch: str) -> None:
    from transformers import MixtralConfig, MixtralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(
        vocab_size=300,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=96,
    )
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = MixtralForCausalLM(MixtralConfig(**common, num_local_experts=4))
    model.eval().generation_config.eos_token_id = None
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [20, 21, 22, 23, 24]]
    ids = torch.zeros(3, 7, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, 7 - len(p) :] = torch.tensor(p)
        mask[i, 7 - len(p) :] = 1
    ref = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=8, pad_token_id=0
    )
    ours = generate_token_ids(
        model, prompts, SamplingParams(n=2, max_new_tokens=8), eos_token_ids=[], pad_token_id=0
    )
    assert [[s.token_ids for s in g] for g in ours] == [[r, r] for r in ref[:, 7:].tolist()]


def test_seeded_samples_do_not_depend_on_batch_or_compaction(model, tok) -> None:
    _, _, ids = _left_padded(tok, PROMPTS)
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=3)
    keys = ["a", "b", "c"]
    probe = generate_token_ids(
        model, ids, params.replace(ignore_eos=True), eos_token_ids=[], pad_token_id=0, seed_keys=keys
    )
    # A token sampled mid-way by prompt 1 becomes EOS, so rows end at different steps (the
    # same seeds replay the probe until then) and finished rows get compacted away.
    eos = probe[1][0].token_ids[4]
    kw = {"eos_token_ids": [eos], "pad_token_id": 0, "seed_keys": keys}
    batch = generate_token_ids(model, ids, params, compact_fraction=0.01, **kw)
    assert any(s.finish_reason == "eos" for g in batch for s in g)
    alone = generate_token_ids(model, ids[1:2], params, compact_fraction=1.0, **{**kw, "seed_keys": ["b"]})
    assert [s.token_ids for s in alone[0]] == [s.token_ids for s in batch[1]]


def test_from_pretrained_folder_and_model_id(tmp_path, model, tok) -> None:
    from inference.backends.factory import build_backend

    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded = build_backend("hf", path=str(tmp_path / "m"), batch_size=2)
    params = SamplingParams(temperature=0.0, max_new_tokens=5, ignore_eos=True)
    direct = HFBackend(model, tok)
    assert loaded.generate(PROMPTS[:2], params)[0][0].text == direct.generate(PROMPTS[:2], params)[0][0].text
    assert loaded.model_id.startswith(str(tmp_path / "m") + "@")
    assert loaded.model_id.split("@")[1] == direct.model_id.split("@")[1]  # same weights, same fingerprint
    other = tiny_llama(len(tok), seed=1)
    assert HFBackend(other, tok).model_id != direct.model_id
    from models.cpu_linear import OneDNNLinear, mode_min_macs

    linears = [type(m) for m in loaded.model.modules() if isinstance(m, torch.nn.Linear)]
    auto_moves = mode_min_macs("auto") is not None  # on an AVX-512 CPU with oneDNN
    assert linears and set(linears) == {OneDNNLinear if auto_moves else torch.nn.Linear}  # as a built model
    plain = build_backend("hf", path=str(tmp_path / "m"), cpu_linear="aten")
    assert {type(m) for m in plain.model.modules() if isinstance(m, torch.nn.Linear)} == {torch.nn.Linear}


def test_backend_restores_train_mode_and_tracks_weights(tok) -> None:
    model = tiny_llama(len(tok), seed=2).train()
    backend = HFBackend(model, tok)
    before = backend.model_id
    backend.generate(["Hello"], SamplingParams(max_new_tokens=2))
    assert model.training  # eval only while generating
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # "a training step"
    assert backend.model_id != before  # a new cache key after the weights change
    assert HFBackend(model, tok, model_id="fixed").model_id == "fixed"


def test_fallback_tokenizer_has_chat_template() -> None:
    from tests.inference_helpers import _train_tokenizer

    tok = _train_tokenizer()
    msgs = [{"role": "user", "content": "What is 3 + 4?"}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == "<|begin_of_text|><|user|>\nWhat is 3 + 4?<|end|>\n<|assistant|>\n"
    ids = encode_prompt(tok, msgs)
    assert tok.decode(ids) == text and tok.eos_token == "<|end|>"
