"""Issue 11 §3: the bad-input corpus. Every case is one bad command against a folder that already
holds a finished run; each must give exactly one ``error:`` line on stderr naming the problem, exit
status 2, no traceback, and leave every file of the earlier run byte-identical (sha256).

Case families (see ``CASES``):
- data files: non-UTF-8 (JSONL, JSON, text corpus, RL data, eval questions, stage inputs), malformed
  JSON, a line that is not an object, unknown role, empty conversation, missing fields, per-token lists
  of the wrong length, an empty corpus;
- config: lr=inf, max_steps=0, block_size too small, a config group changed on resume_dir, a missing
  required stage key;
- models: a missing model folder, a run folder given as a model folder;
- checkpoints: missing, empty, truncated, overwritten bytes, a folder that is no checkpoint, a sharded
  checkpoint with a truncated shard or an unreadable ``.metadata``, a resume into another model shape
  (by ``resume_dir`` and by ``ckpt_path``);
- run folders: a finished folder reused without ``ckpt_path``, ``resume_dir`` that is no run folder,
  ``hydra.run.dir`` under a path that is a file.

43 cases: train.py 36 (SFT 25, CaPO 3, Top-P MoE 4, RLMEC 3, online RL 1), eval.py 3, generate.py 4.

The entry points run in-process (``run_cli(<entry>.main)`` with a patched ``sys.argv``, as
``python train.py ...`` runs them), so the corpus costs one import of Lightning, not one per case.
The finished runs (SFT, CaPO, Top-P MoE, RLMEC: two steps each) are made once per module of tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

import eval as eval_entry
import generate as generate_entry
import train as train_entry
from tests.helpers import FAST, ROOT
from tests.rlmec_fixtures import rl_records, write_jsonl
from utils.entrypoint import run_cli

pytestmark = pytest.mark.reliability

ENTRIES = {"train": train_entry, "eval": eval_entry, "generate": generate_entry}
TINY = ["model=tiny", "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=2"]
QUIET = [*FAST, "logger=csv"]
NEW_FILES_ALLOWED = r"\.hydra/(rerun|resume)-[\d_-]+/\w+\.yaml|[\w.-]+\.log"
LATIN1 = "caf\xe9".encode("latin-1")  # b"caf\xe9": not UTF-8


@dataclass(frozen=True)
class Case:
    id: str
    entry: str  # train | eval | generate
    run: str  # the finished run whose folder the command targets: sft | capo | moe | rlmec
    argv: tuple[str, ...]  # {run}, {files}, {sft}, ... are filled in
    expected: str  # a substring of the error line


def case(id: str, entry: str, run: str, argv: list[str], expected: str) -> Case:
    return Case(id, entry, run, tuple(argv), expected)


SFT = ["debug=default", *QUIET, "data.cache_dir=null"]
CAPO = ["experiment=capo_tiny", *TINY, "debug=default", *QUIET, "data.cache_dir=null"]
MOE = ["experiment=moe_tiny_topp", "debug=default", *QUIET, "data.cache_dir=null"]
RLMEC = [*TINY, "module=rlmec", "data=rlmec", "debug=default", *QUIET]
EVAL = ["print_config=false", "progress=false"]
GEN = ["stage.generator.path={sft}/hf_model"]

CASES: list[Case] = [
    # --- train.py, SFT chat data ---------------------------------------------------------------
    case("chat-not-utf8-jsonl", "train", "sft", [*SFT, "data.path={files}/latin1.jsonl"],
         "latin1.jsonl:2: not valid UTF-8 (byte 0xe9 at column"),
    case("chat-not-utf8-json", "train", "sft", [*SFT, "data.path={files}/latin1.json"],
         "latin1.json:3: not valid UTF-8 (byte 0xe9 at column"),
    case("chat-missing-file", "train", "sft", [*SFT, "data.path={files}/nope.jsonl"], "nope.jsonl"),
    case("chat-malformed-json", "train", "sft", [*SFT, "data.path={files}/malformed.jsonl"],
         "malformed.jsonl:2: malformed JSON line"),
    case("chat-line-not-object", "train", "sft", [*SFT, "data.path={files}/list_line.jsonl"],
         "list_line.jsonl:1: expected a JSON object, got list"),
    case("chat-unknown-role", "train", "sft", [*SFT, "data.path={files}/role.jsonl"],
         "role.jsonl:1: turn 0 has unknown role 'wizard'"),
    case("chat-empty-conversation", "train", "sft", [*SFT, "data.path={files}/empty.jsonl"],
         "empty.jsonl:1: empty conversation"),
    # --- train.py, config and models -----------------------------------------------------------
    case("lr-inf", "train", "sft", [*SFT, "module.optimizer.lr=inf"],
         "module.optimizer.lr=inf must be a finite number > 0"),
    case("max-steps-zero", "train", "sft", [*SFT, "trainer.max_steps=0"],
         "trainer.max_steps=0 must be a positive integer"),
    case("missing-model-dir", "train", "sft", [*SFT, "model=hf", "model.pretrained={files}/no_model"],
         "no_model: path does not exist"),
    case("run-folder-as-model", "train", "sft", [*SFT, "model=hf", "model.pretrained={sft}"],
         "this looks like a run folder; use"),
    # --- train.py, checkpoints -------------------------------------------------------------------
    case("ckpt-missing", "train", "sft", [*SFT, "ckpt_path={files}/nope.ckpt"], "nope.ckpt: checkpoint not found"),
    case("ckpt-empty", "train", "sft", [*SFT, "ckpt_path={files}/empty.ckpt"],
         "empty.ckpt: the checkpoint file is empty (truncated)"),
    case("ckpt-truncated", "train", "sft", [*SFT, "ckpt_path={files}/truncated.ckpt"],
         "truncated.ckpt: corrupt or truncated checkpoint"),
    case("ckpt-overwritten-bytes", "train", "sft", [*SFT, "ckpt_path={files}/flipped.ckpt"],
         "flipped.ckpt: corrupt checkpoint (member"),
    case("ckpt-plain-folder", "train", "sft", [*SFT, "ckpt_path={files}/not_a_ckpt"],
         "not_a_ckpt: a folder that is not a sharded checkpoint (no .metadata)"),
    case("ckpt-sharded-truncated-shard", "train", "sft", [*SFT, "ckpt_path={files}/sharded_cut"],
         "sharded_cut: truncated sharded checkpoint: shard"),
    case("ckpt-sharded-bad-metadata", "train", "sft", [*SFT, "ckpt_path={files}/sharded_meta"],
         "sharded_meta: corrupt sharded checkpoint: .metadata"),
    case("ckpt-last-truncated", "train", "sft", ["resume_dir={files}/cut_run", "trainer.max_steps=4"],
         "cut_run/checkpoints/last.ckpt: corrupt or truncated checkpoint"),
    case("resume-dir-other-shape", "train", "sft", ["resume_dir={run}", "model.hidden_size=32", "trainer.max_steps=4"],
         "model.model.embed_tokens.weight is [{vocab}, 64] in the checkpoint but [{vocab}, 32] in the model "
         "(config changed since the checkpoint: model.hidden_size: 64 -> 32)"),
    case("ckpt-path-other-shape", "train", "sft", [*SFT, "ckpt_path={run}/checkpoints/last.ckpt", "model.num_layers=3"],
         "model.model.layers.2.self_attn.q_proj.weight is in the model but not in the checkpoint "
         "(config changed since the checkpoint: model.num_layers: 2 -> 3)"),
    # --- train.py, run folders -------------------------------------------------------------------
    case("finished-folder-reused", "train", "sft", [*SFT, "data.path={chat}"], "already holds a finished run (summary.json)"),
    case("resume-dir-not-a-run", "train", "sft", ["resume_dir={files}"], "not a Quartet run folder"),
    case("resume-dir-group-change", "train", "sft", ["resume_dir={run}", "trainer=ddp"],
         "config groups can't change on resume_dir"),
    case("run-dir-under-a-file", "train", "sft", [*SFT, "hydra.run.dir={run}/summary.json/again"],
         "summary.json is a file, not a folder"),
    # --- train.py, CaPO preference data ----------------------------------------------------------
    case("capo-not-utf8", "train", "capo", [*CAPO, "data.path={files}/latin1_pairs.jsonl"],
         "latin1_pairs.jsonl:1: not valid UTF-8"),
    case("capo-missing-rejected", "train", "capo", [*CAPO, "data.path={files}/no_rejected.jsonl"],
         "no_rejected.jsonl:1:"),
    case("capo-malformed-json", "train", "capo", [*CAPO, "data.path={files}/malformed.jsonl"],
         "malformed.jsonl:2: malformed JSON line"),
    # --- train.py, Top-P MoE corpus --------------------------------------------------------------
    case("moe-corpus-not-utf8", "train", "moe", [*MOE, "data.path={files}/latin1.txt"],
         "latin1.txt:3: not valid UTF-8 (byte 0xe9 at column 4)"),
    case("moe-corpus-no-text-field", "train", "moe", [*MOE, "data.path={files}/no_text.jsonl"],
         "no_text.jsonl:1: no string field 'text'"),
    case("moe-corpus-empty", "train", "moe", [*MOE, "data.path={files}/blank.txt"], "blank.txt: the corpus is empty"),
    case("moe-block-size-1", "train", "moe", [*MOE, "data.block_size=1"], "data.block_size=1 must be at least 2"),
    # --- train.py, RLMEC data ----------------------------------------------------------------------
    case("rlmec-rewards-wrong-length", "train", "rlmec", [*RLMEC, "data.path={files}/rl_short_rewards.jsonl"],
         "rl_short_rewards.jsonl:1: field 'rewards'"),
    case("rlmec-missing-fields", "train", "rlmec", [*RLMEC, "data.path={files}/rl_missing.jsonl"],
         "rl_missing.jsonl:1: missing field(s) 'rewards'"),
    case("rlmec-not-utf8", "train", "rlmec", [*RLMEC, "data.path={files}/latin1.jsonl"],
         "latin1.jsonl:2: not valid UTF-8"),
    # --- train.py, online RL prompts (issue 18): answer_match needs every prompt's gold answer -------
    case("grpo-prompt-without-gold", "train", "sft", ["experiment=grpo_tiny", *TINY, "debug=default", *QUIET,
         "data.path={files}/no_gold.jsonl"], "no_gold.jsonl:2: missing field 'answer': the reward"),
    # --- eval.py -------------------------------------------------------------------------------------
    case("eval-reasoning-not-utf8", "eval", "sft", [*EVAL, "task=reasoning", "data.path={files}/latin1_questions.jsonl"],
         "latin1_questions.jsonl:2: not valid UTF-8"),
    case("eval-reasoning-missing-file", "eval", "sft", [*EVAL, "task=reasoning", "data.path={files}/nope.jsonl"],
         "nope.jsonl"),
    case("eval-mt-bench-not-utf8", "eval", "sft", [*EVAL, "task=mt_bench", "judge=standin", "data.path={files}/latin1_questions.jsonl"],
         "latin1_questions.jsonl:2: not valid UTF-8"),
    # --- generate.py stages ----------------------------------------------------------------------
    case("negatives-missing-input", "generate", "sft", ["stage=capo_negatives", *GEN, "stage.input={files}/nope.jsonl"],
         "nope.jsonl: data file not found (set stage.input to"),
    case("negatives-not-utf8", "generate", "sft", ["stage=capo_negatives", *GEN, "stage.input={files}/latin1.jsonl"],
         "latin1.jsonl:2: not valid UTF-8"),
    case("stage-required-key", "generate", "sft", ["stage=rlmec_sample"], "stage.generator.path is required"),
    case("rlmec-sample-not-utf8", "generate", "sft", ["stage=rlmec_sample", *GEN, "stage.input={files}/latin1_questions.jsonl"],
         "latin1_questions.jsonl:2: not valid UTF-8"),
]  # fmt: skip


# ---- in-process entry points ----------------------------------------------------------------------
@dataclass
class Outcome:
    code: int
    out: str
    err: str


def invoke(entry: str, argv: list[str], capfd: pytest.CaptureFixture[str] | None = None) -> Outcome:
    """``python <entry>.py argv`` in this process: the same ``run_cli`` path that turns a
    ``QuartetError`` into one ``error:`` line and its exit status (output captured with ``capfd``)."""
    GlobalHydra.instance().clear()
    if capfd is not None:
        capfd.readouterr()
    saved_argv, saved_env = sys.argv, os.environ.get("HYDRA_MAIN_MODULE")
    sys.argv = [str(ROOT / f"{entry}.py"), *argv]
    # Hydra finds conf/ beside the script when the task function's module counts as __main__.
    os.environ["HYDRA_MAIN_MODULE"] = "__main__"
    try:
        run_cli(ENTRIES[entry].main)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = saved_argv
        if saved_env is None:
            os.environ.pop("HYDRA_MAIN_MODULE", None)
        else:
            os.environ["HYDRA_MAIN_MODULE"] = saved_env
        GlobalHydra.instance().clear()
    out, err = capfd.readouterr() if capfd is not None else ("", "")
    return Outcome(code, out, err)


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---- fixtures: bad files and finished runs --------------------------------------------------------
def _head(path: Path, n: int) -> str:
    return "".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:n])


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    d = tmp_path_factory.mktemp("bad_files")
    chat = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
    (d / "latin1.jsonl").write_bytes(
        chat.encode() + b'{"messages": [{"role": "user", "content": "' + LATIN1 + b'"}]}\n'
    )
    (d / "latin1.json").write_bytes(b'[\n {"messages": []},\n {"messages": "' + LATIN1 + b'"}\n]\n')
    (d / "malformed.jsonl").write_text(chat + '{"messages": [oops]}\n')
    (d / "list_line.jsonl").write_text("[1, 2]\n")
    (d / "role.jsonl").write_text('{"messages": [{"role": "wizard", "content": "hi"}]}\n')
    (d / "empty.jsonl").write_text('{"messages": []}\n')
    (d / "no_gold.jsonl").write_text(
        '{"question": "What is 2 + 2?", "answer": "4"}\n{"question": "What is 3 + 3?"}\n'
    )
    pair = json.loads(_head(ROOT / "data" / "capo" / "pairs.jsonl", 1))
    (d / "latin1_pairs.jsonl").write_bytes(json.dumps(pair).encode()[:-2] + b', "note": "' + LATIN1 + b'"}\n')
    (d / "no_rejected.jsonl").write_text(
        json.dumps({k: v for k, v in pair.items() if k != "rejected"}) + "\n"
    )
    (d / "latin1.txt").write_bytes(b"one document\nanother document\n" + LATIN1 + b" au lait\n")
    (d / "no_text.jsonl").write_text('{"body": "a document"}\n')
    (d / "blank.txt").write_text("\n\n")
    rl = rl_records(tokenizer, 2)
    write_jsonl(d / "rl_short_rewards.jsonl", [{**rl[0], "rewards": rl[0]["rewards"][:-1]}])
    write_jsonl(d / "rl_missing.jsonl", [{k: v for k, v in rl[0].items() if k != "rewards"}])
    question = _head(ROOT / "data" / "mt_bench" / "question.jsonl", 1)
    (d / "latin1_questions.jsonl").write_bytes(question.encode() + b'{"question": "' + LATIN1 + b'"}\n')
    (d / "not_a_ckpt").mkdir()
    (d / "not_a_ckpt" / "notes.txt").write_text("not a checkpoint\n")
    (d / "empty.ckpt").write_bytes(b"")
    _sharded(d / "sharded_cut", cut_shard=True)
    _sharded(d / "sharded_meta", cut_shard=False)
    return d


def _sharded(folder: Path, cut_shard: bool) -> None:
    """A distributed-checkpoint folder, then one shard cut short or the ``.metadata`` overwritten."""
    import torch.distributed.checkpoint as dcp

    dcp.save({"w": torch.arange(4096, dtype=torch.float32)}, checkpoint_id=str(folder), no_dist=True)
    if cut_shard:
        shard = next(p for p in folder.iterdir() if p.suffix == ".distcp")
        shard.write_bytes(shard.read_bytes()[:100])
    else:
        (folder / ".metadata").write_bytes(b"\x80\x04not a pickle")


def _finished(folder: Path, argv: list[str]) -> Path:
    result = invoke("train", [*argv, "trainer.num_sanity_val_steps=0", f"hydra.run.dir={folder}"])
    assert result.code == 0, folder.name
    assert (folder / "summary.json").is_file() and (folder / "checkpoints" / "last.ckpt").is_file()
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, files, tokenizer) -> dict[str, Path]:
    """One tiny finished run per module (two optimizer steps each), plus a copy of the SFT run whose
    ``last.ckpt`` is cut short, and the checkpoint files made from the SFT run's."""
    base = tmp_path_factory.mktemp("runs")
    chat = base / "chat.jsonl"
    chat.write_text(_head(ROOT / "data" / "chat" / "dialogues.jsonl", 24))
    pairs = base / "pairs.jsonl"
    pairs.write_text(_head(ROOT / "data" / "capo" / "pairs.jsonl", 24))
    corpus = base / "corpus.txt"
    corpus.write_text(_head(ROOT / "data" / "corpus" / "train.txt", 60))
    rl = write_jsonl(base / "rl.jsonl", rl_records(tokenizer, 6))
    out = {
        "sft": _finished(base / "sft", [*SFT, f"data.path={chat}", "data.batch_size=4"]),
        "capo": _finished(base / "capo", [*CAPO, f"data.path={pairs}", "data.batch_size=4", "export=false"]),
        "moe": _finished(
            base / "moe",
            [*MOE, f"data.path={corpus}", "data.val_path=null", "data.block_size=32", "data.batch_size=4",
             "export=false"],
        ),
        "rlmec": _finished(base / "rlmec", [*RLMEC, f"data.path={rl}", "data.batch_size=2", "export=false"]),
    }  # fmt: skip
    last = (out["sft"] / "checkpoints" / "last.ckpt").read_bytes()
    (files / "truncated.ckpt").write_bytes(last[: len(last) // 2])
    middle = len(last) // 2
    (files / "flipped.ckpt").write_bytes(
        last[:middle] + bytes(b ^ 0xFF for b in last[middle : middle + 64]) + last[middle + 64 :]
    )
    cut_run = files / "cut_run"
    (cut_run / ".hydra").mkdir(parents=True)
    (cut_run / ".hydra" / "config.yaml").write_bytes((out["sft"] / ".hydra" / "config.yaml").read_bytes())
    (cut_run / "checkpoints").mkdir()
    (cut_run / "checkpoints" / "last.ckpt").write_bytes(last[:-1000])
    return out


@pytest.fixture(scope="module")
def protected(runs, files) -> dict[str, dict[str, str]]:
    """sha256 of every file of each finished run (and of the cut-short copy), as first written."""
    return {
        "cut_run": snapshot(files / "cut_run"),
        **{name: snapshot(folder) for name, folder in runs.items()},
    }


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_error_line_exit_2_and_leaves_earlier_outputs_intact(
    c: Case, runs, protected, files, tokenizer, capfd
):
    run = runs[c.run]
    names = {"run": run, "files": files, "sft": runs["sft"], "chat": runs["sft"].parent / "chat.jsonl"}
    argv = [a.format(**names) for a in c.argv]
    if not any(a.startswith(("hydra.run.dir=", "resume_dir=")) for a in argv):
        argv.append(f"hydra.run.dir={run}")
    watched = {c.run: run, "cut_run": files / "cut_run"}
    before = {name: snapshot(folder) for name, folder in watched.items()}
    result = invoke(c.entry, argv, capfd)
    after = {name: snapshot(folder) for name, folder in watched.items()}

    expected = c.expected.format(vocab=len(tokenizer))
    errors = [ln for ln in result.err.splitlines() if ln.startswith("error:")]
    assert result.code == 2, (result.code, result.err[-3000:])
    assert len(errors) == 1, result.err[-3000:]
    assert expected in errors[0], errors[0]
    assert "Traceback" not in result.err and "Traceback" not in result.out
    assert "hint:" not in result.err
    for name in watched:
        # Every file of the earlier run (its own log included) is byte-identical.
        assert {k: after[name].get(k) for k in protected[name]} == protected[name], (
            f"{name}: an output changed"
        )
        # The only new files: Hydra's record of the command (.hydra/<rerun|resume>-<time>/) and the
        # job log Hydra opens for the command's own task name (e.g. eval.log).
        added = sorted(set(after[name]) - set(before[name]))
        assert all(re.fullmatch(NEW_FILES_ALLOWED, a) for a in added), (name, added)


def test_the_corpus_has_at_least_30_cases_over_every_entry_point_and_module():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert {c.entry for c in CASES} == {"train", "eval", "generate"}
    assert {c.run for c in CASES} == {"sft", "capo", "moe", "rlmec"}
    print(f"bad-input corpus: {len(CASES)} cases")
