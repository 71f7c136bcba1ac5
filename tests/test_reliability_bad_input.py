"""Issue 11 §3: the bad-input corpus. Every case is one bad command against a folder that already
holds a finished run; each must give exactly one ``error:`` line on stderr naming the problem, exit
status 2, no traceback, leave every file of the earlier run byte-identical (sha256), and write nothing
outside the command's own run folder (the session's temporary folder and this module's folders are watched).

Case families (see ``CASES``):
- data files: non-UTF-8 (JSONL, JSON, text corpus, RL data, eval questions, stage inputs), malformed
  JSON, a line that is not an object, unknown role, empty conversation, missing fields, per-token lists
  of the wrong length, an empty corpus;
- config: lr=inf, max_steps=0, block_size too small, a config group changed on resume_dir, a missing
  required stage key;
- models: a missing model folder, a run folder given as a model folder;
- checkpoints: missing, empty, truncated, overwritten bytes, a folder that is no checkpoint, a sharded
  checkpoint with a truncated shard, an unreadable ``.metadata`` or a pickle payload in ``meta.pt``, a
  resume into another model shape (by ``resume_dir`` and by ``ckpt_path``) or another module (a CaPO
  checkpoint given to an SFT run), an HF folder whose ``pytorch_model.bin`` holds a pickle payload;
- run folders: a finished folder reused without ``ckpt_path``, ``resume_dir`` that is no run folder or
  a run folder of another entry point (an eval folder to train.py, a train folder to eval.py and
  generate.py), ``hydra.run.dir`` under a path that is a file;
- issue 21: names from the config that would become paths (``task.model_id`` with ``..``, an absolute
  path, ``..`` alone or empty; ``backend.model``/``judge.model`` of ``..``; ``run_name`` and
  ``stage.name`` with slashes), a module fed another kind of batch (SFT on preference pairs, CaPO on
  chats, RLMEC on a corpus), a chat template that raises, ``trainer.precision=fp8``, a negative
  checkpoint interval with ``seed=-1`` (both listed in one line), a judge's ``top_p=2`` (before any
  answer is generated), an MT-Bench ``question_id`` list, a NaN gold answer, a glob matching nothing.

68 cases: train.py 48 (SFT 35, CaPO 4, Top-P MoE 4, RLMEC 4, online RL 1), eval.py 14, generate.py 6; plus the environment tests
below (a read-only run folder, a full disk three ways, a chat template leaving the sandbox).

The entry points run in-process (``run_cli(<entry>.main)`` with a patched ``sys.argv``, as
``python train.py ...`` runs them), so the corpus costs one import of Lightning, not one per case.
The finished runs (SFT, CaPO, Top-P MoE, RLMEC: two steps each) are made once per module of tests.
"""

from __future__ import annotations

import copy
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
from omegaconf import OmegaConf

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
MT_BENCH = [*EVAL, "task=mt_bench", "judge=standin"]
HTTP_BACKEND = ["backend=openai_http", "backend.base_url=http://127.0.0.1:9/v1"]  # never reached

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
    case("ckpt-of-another-module", "train", "sft", [*SFT, *TINY, "ckpt_path={capo}/checkpoints/last.ckpt"],
         "a checkpoint of CaPOModule (lightning_modules.capo.CaPOModule), but this run's module is SFTModule"),
    case("ckpt-sharded-meta-pickle", "train", "sft", [*SFT, "ckpt_path={files}/sharded_pickle"],
         "sharded_pickle (meta.pt): the checkpoint holds objects that weights_only loading refuses"),
    case("hf-bin-pickle", "train", "sft", [*SFT, "model=hf", "model.pretrained={files}/pickled_hf"],
         "pickled_hf: pytorch_model.bin holds objects that weights_only loading refuses"),
    case("ckpt-path-other-shape", "train", "sft", [*SFT, "ckpt_path={run}/checkpoints/last.ckpt", "model.num_layers=3"],
         "model.model.layers.2.self_attn.q_proj.weight is in the model but not in the checkpoint "
         "(config changed since the checkpoint: model.num_layers: 2 -> 3)"),
    # --- train.py, run folders -------------------------------------------------------------------
    case("finished-folder-reused", "train", "sft", [*SFT, "data.path={chat}"], "already holds a finished run (summary.json)"),
    case("resume-dir-not-a-run", "train", "sft", ["resume_dir={files}"], "not a Quartet run folder"),
    case("resume-dir-eval-folder-to-train", "train", "sft", ["resume_dir={files}/eval_run"],
         "eval_run: a run folder of eval.py (its config has 'task'); train.py can't continue it"),
    case("resume-dir-train-folder-to-eval", "eval", "sft", [*EVAL, "resume_dir={run}"],
         "a run folder of train.py (its config has 'module'); eval.py can't continue it"),
    case("resume-dir-train-folder-to-generate", "generate", "sft", ["resume_dir={run}"],
         "a run folder of train.py (its config has 'module'); generate.py can't continue it"),
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
    # --- names from the config that become file names (issue 21, Bad 1) -----------------------------
    case("model-id-dotdot-path", "eval", "sft", [*MT_BENCH, "task.model_id=../../escape"],
         "task.model_id='../../escape' can't be used as a file name: a path, not a name"),
    case("model-id-absolute", "eval", "sft", [*MT_BENCH, "task.model_id={files}/abs_escape"],
         "abs_escape' can't be used as a file name: a path, not a name"),
    case("model-id-dotdot", "eval", "sft", [*MT_BENCH, "task.model_id=.."],
         "task.model_id='..' can't be used as a file name: '..' names a folder"),
    case("model-id-empty", "eval", "sft", [*MT_BENCH, "task.model_id=''"],
         "task.model_id='' can't be used as a file name: an empty name"),
    case("backend-model-dotdot", "eval", "sft", [*MT_BENCH, *HTTP_BACKEND, "backend.model=.."],
         "backend.model='..' can't be used as a file name: '..' names a folder, not a file; set task.model_id="),
    case("judge-model-dotdot", "eval", "sft",
         [*EVAL, "task=mt_bench", "judge=openai_http", "judge.base_url=http://127.0.0.1:9/v1", "judge.model=..",
          "model=hf", "model.pretrained={sft}/hf_model"],
         "judge.model='..' can't be used as a file name"),
    case("eval-task-name-path", "eval", "sft", [*EVAL, "run_name=../../escape"],
         "run_name='../../escape' can't be used as a file name: a path, not a name"),
    case("train-task-name-absolute", "train", "sft", [*SFT, "run_name={files}/abs_escape"],
         "abs_escape' can't be used as a file name: a path, not a name"),
    case("stage-name-path", "generate", "sft", ["stage=capo_negatives", *GEN, "stage.name=../../escape"],
         "run_name='generate_../../escape' can't be used as a file name: a path, not a name (it holds a '/' "
         "or '\\'); set stage.name"),
    # --- a module fed the wrong kind of batch (issue 21, Bad 2) -------------------------------------
    case("sft-on-preference-data", "train", "sft", [*SFT, "data=preference", "data.path={pairs}"],
         "module SFTModule trains on 'tokens' batches (input_ids with per-token labels), but data "
         "PreferenceDataModule makes 'preference' batches (chosen and rejected answers with neg_type); "
         "data modules that fit: data=ask, data=chat, data=lm_corpus, data=reasoning_sft"),
    case("capo-on-chat-data", "train", "capo", [*CAPO, "data=chat", "data.path={chat}"],
         "data modules that fit: data=preference"),
    case("chat-template-raises", "train", "sft",
         [*SFT, "data.path={chat}", "model.chat_template=\"{{{{ raise_exception('no chats here') }}}}\""],
         "the chat template rejects this conversation"),
    # --- config values checked at start-up, listed together (issue 21, "Config values") --------------
    case("precision-fp8", "train", "sft", [*SFT, "trainer.precision=fp8"],
         "trainer.precision=fp8 must be one of 16, 16-mixed, 16-true, 32, 32-true, 64, 64-true, bf16"),
    case("negative-interval-and-seed", "train", "sft",
         [*SFT, "callbacks=default", "callbacks.model_checkpoint.every_n_train_steps=-5", "seed=-1"],
         "callbacks.model_checkpoint.every_n_train_steps=-5 must be an integer >= 0 (0: off); "
         "seed=-1 must be an integer in [0, 2**32 - 1]"),
    case("mt-bench-judge-top-p", "eval", "sft",
         [*EVAL, "task=mt_bench", "judge=openai_http", "judge.base_url=http://127.0.0.1:9/v1", "judge.model=j",
          "+judge.sampling.top_p=2", "model=hf", "model.pretrained={sft}/hf_model"],
         "judge.sampling: Invalid SamplingParams: top_p must be in (0, 1], got 2"),
    # --- reading files and records (issue 21, "Reading files", "Records") ---------------------------
    case("mt-bench-question-id-list", "eval", "sft", [*MT_BENCH, "data.path={files}/qid_list.jsonl"],
         "qid_list.jsonl:1: 'question_id' must be an integer or a string, got [1, 2]"),
    case("eval-reasoning-gold-nan", "eval", "sft", [*EVAL, "task=reasoning", "data.path={files}/nan_gold.jsonl"],
         "nan_gold.jsonl:1: field 'answer' is nan, not a finite number"),
    case("chat-glob-matches-nothing", "train", "sft", [*SFT, "data.path={files}/nothing-*.jsonl"],
         "nothing-*.jsonl: no file matches this pattern"),
    case("rlmec-on-corpus-data", "train", "rlmec", [*RLMEC, "data=lm_corpus"],
         "but data LMCorpusDataModule makes 'tokens' batches"),
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


def file_paths(top: Path, deep: tuple[Path, ...]) -> set[Path]:
    """Every entry directly in ``top`` (the session's temporary folder) and every file under ``deep``
    (this module's folders): where a name with ``..`` or an absolute path in it would land."""
    return {p for p in top.iterdir() if not p.is_dir()} | {
        p for d in deep for p in d.rglob("*") if not p.is_dir()
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
    (d / "qid_list.jsonl").write_text(json.dumps({"question_id": [1, 2], "turns": ["hi"]}) + "\n")
    (d / "nan_gold.jsonl").write_text('{"question": "How many?", "answer": NaN}\n')
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


class _Payload:
    """Pickles as a call of ``print``: a stand-in for code a pickle would run (weights_only refuses it)."""

    def __reduce__(self):
        return (print, ("the payload ran",))


@pytest.fixture(scope="module")
def checkpoint_and_folder_files(runs, files) -> Path:
    """Issue 21: a sharded checkpoint whose ``meta.pt`` holds a pickle payload, an HF folder whose
    ``pytorch_model.bin`` does, and a finished eval.py run folder (its saved config and results)."""
    import torch.distributed.checkpoint as dcp

    from tests.helpers import compose_cfg

    sharded = files / "sharded_pickle"
    dcp.save({"state_dict": {"w": torch.zeros(4)}}, checkpoint_id=str(sharded), no_dist=True)
    torch.save({"epoch": 0, "payload": _Payload()}, sharded / "meta.pt")
    pickled = files / "pickled_hf"
    pickled.mkdir()
    for f in (runs["sft"] / "hf_model").iterdir():
        if f.suffix != ".safetensors":
            (pickled / f.name).write_bytes(f.read_bytes())
    torch.save({"lm_head.weight": _Payload()}, pickled / "pytorch_model.bin")
    eval_run = files / "eval_run"
    (eval_run / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose_cfg(["task=reasoning"], eval_run, "eval"), eval_run / ".hydra" / "config.yaml")
    (eval_run / "results.json").write_text('{"accuracy": 0.5}\n')
    return files


@pytest.fixture(scope="module")
def protected(runs, files, checkpoint_and_folder_files) -> dict[str, dict[str, str]]:
    """sha256 of every file of each finished run (and of the cut-short copy and the eval run), as first
    written."""
    return {
        "cut_run": snapshot(files / "cut_run"),
        "eval_run": snapshot(files / "eval_run"),
        **{name: snapshot(folder) for name, folder in runs.items()},
    }


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_error_line_exit_2_and_leaves_earlier_outputs_intact(
    c: Case, runs, protected, files, tokenizer, capfd
):
    run = runs[c.run]
    base = runs["sft"].parent
    names = {
        "run": run,
        "files": files,
        "sft": runs["sft"],
        "capo": runs["capo"],
        "chat": base / "chat.jsonl",
        "pairs": base / "pairs.jsonl",
    }
    argv = [a.format(**names) for a in c.argv]
    if not any(a.startswith(("hydra.run.dir=", "resume_dir=")) for a in argv):
        argv.append(f"hydra.run.dir={run}")
    watched = {c.run: run, "cut_run": files / "cut_run", "eval_run": files / "eval_run"}
    before = {name: snapshot(folder) for name, folder in watched.items()}
    around = (files.parent, (files, base))  # a file written outside the run folder shows here
    everywhere = file_paths(*around)
    result = invoke(c.entry, argv, capfd)
    after = {name: snapshot(folder) for name, folder in watched.items()}
    # The command's own run folder: hydra.run.dir, or the folder resume_dir continues in.
    target = Path(next(a.split("=", 1)[1] for a in argv if a.startswith(("hydra.run.dir=", "resume_dir="))))
    outside = sorted(p for p in file_paths(*around) - everywhere if not p.is_relative_to(target))
    assert not outside, f"written outside the run folder: {outside}"

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


# ---- the environment (issue 21): a read-only run folder, a full disk, an unsafe chat template -----------
def _one_error_line(result: Outcome, code: int) -> str:
    errors = [ln for ln in result.err.splitlines() if ln.startswith("error:")]
    assert result.code == code, (result.code, result.err[-3000:])
    assert len(errors) == 1, result.err[-3000:]
    assert "Traceback" not in result.err + result.out and "hint:" not in result.err
    return errors[0]


def _outside(folder: Path, inside: Path) -> dict[str, str]:
    return {k: v for k, v in snapshot(folder).items() if not (folder / k).is_relative_to(inside)}


def test_a_read_only_run_folder_is_one_error_line_and_nothing_is_written(tmp_path, runs, capfd, monkeypatch):
    """Fault injection (the tests run as root, whom permissions don't stop): every open for writing
    under the folder fails as on a read-only mount. Before the check, Hydra's log handler failed first,
    with a traceback."""
    import builtins
    import errno

    folder = tmp_path / "read_only"
    folder.mkdir()
    real_open, real_os_open = builtins.open, os.open

    def refuse(path: object) -> None:
        if Path(os.fspath(path)).absolute().is_relative_to(folder):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))

    def ro_open(file, mode="r", *a, **k):
        if isinstance(file, (str, os.PathLike)) and any(m in mode for m in "wax+"):
            refuse(file)
        return real_open(file, mode, *a, **k)

    def ro_os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *a, **k)

    monkeypatch.setattr(builtins, "open", ro_open)
    monkeypatch.setattr(os, "open", ro_os_open)
    chat = runs["sft"].parent / "chat.jsonl"
    result = invoke("train", [*SFT, f"data.path={chat}", f"hydra.run.dir={folder}"], capfd)
    monkeypatch.undo()
    error = _one_error_line(result, 2)
    assert f"hydra.run.dir={folder}: can't write the run folder (Read-only file system: {folder}" in error
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("fault", ["zip-writer", "enospc-checkpoint", "enospc-summary"])
def test_a_full_disk_is_one_error_line_naming_the_folder_and_earlier_checkpoints_survive(
    fault, tmp_path, runs, capfd, monkeypatch
):
    """Fault injection: the disk fills up at the step-2 checkpoint (torch's zip writer fails, or the
    write gets ENOSPC), or at summary.json. The step-1 checkpoints stay byte-identical."""
    import errno

    import utils.atomic

    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    before: dict[str, dict[str, str]] = {}
    real_save, real_write = torch.save, utils.atomic.write_text_atomic
    calls = []

    def full_disk_save(obj, f, *a, **k):
        calls.append(1)
        if len(calls) < 3:  # step 1: step000001.ckpt and last.ckpt
            return real_save(obj, f, *a, **k)
        before["ckpts"] = {k: v for k, v in snapshot(ckpts).items() if ".tmp-" not in k}  # ours
        f.write(b"PK\x03\x04 half a checkpoint")
        if fault == "zip-writer":
            raise RuntimeError(
                "[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing file "
                "data/3: file write failed"
            )
        raise OSError(errno.ENOSPC, "No space left on device", f.name)

    def full_disk_write(path, text):
        if Path(path).name == "summary.json":
            before["ckpts"] = snapshot(ckpts)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, text)

    if fault == "enospc-summary":
        monkeypatch.setattr(utils.atomic, "write_text_atomic", full_disk_write)
    else:
        monkeypatch.setattr(torch, "save", full_disk_save)
    chat = runs["sft"].parent / "chat.jsonl"
    outside = _outside(tmp_path, run)
    argv = [*SFT, f"data.path={chat}", "callbacks.model_checkpoint.every_n_train_steps=1", "export=false"]
    result = invoke("train", [*argv, f"hydra.run.dir={run}"], capfd)
    monkeypatch.undo()

    error = _one_error_line(result, 1)
    name = "summary.json" if fault == "enospc-summary" else "step000002.ckpt"
    assert f"error: can't write {run if name == 'summary.json' else ckpts}/{name}: " in error
    why = "the write failed, most likely a full disk" if fault == "zip-writer" else "no space left on device"
    assert why in error and f"free space in {run if name == 'summary.json' else ckpts} " in error
    assert snapshot(ckpts) == before["ckpts"] and "last.ckpt" in before["ckpts"]  # nothing half-written
    assert _outside(tmp_path, run) == outside and not (run / ".lock").exists()


def test_a_chat_template_that_leaves_the_sandbox_is_one_data_error_naming_it(runs, capfd, tokenizer):
    from inference.chat import apply_chat_template, render_next_turn
    from utils.errors import DataError

    template = "'{{ x.__class__.__mro__ }}{% for m in messages %}{{ m.content }}{% endfor %}'"
    unsafe = copy.deepcopy(tokenizer)
    unsafe.chat_template = template.strip("'")
    for render in (lambda: apply_chat_template(unsafe, [{"role": "user", "content": "hi"}]),
                   lambda: render_next_turn(unsafe, [{"role": "user", "content": "hi"}], "user")):  # fmt: skip
        with pytest.raises(
            DataError, match=r"the chat template of '.*tokenizer' tries to leave Jinja's sandbox"
        ):
            render()  # the generation paths (eval.py, generate.py): was a SecurityError traceback
    run = runs["capo"]
    before = snapshot(run)
    result = invoke("train", [*CAPO, f"model.chat_template={template}", f"hydra.run.dir={run}"], capfd)
    error = _one_error_line(result, 2)
    assert "pairs.jsonl:1: the chat template of '" in error
    assert "tries to leave Jinja's sandbox and was stopped (SecurityError: access to attribute" in error
    assert {k: snapshot(run).get(k) for k in before} == before
