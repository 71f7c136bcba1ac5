"""Resumable generation: the CachedGenerator over the sample cache, and the capo_negatives stage killed
with SIGKILL mid-way, resumed, and compared byte for byte with an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from inference.generation_cache import CachedGenerator
from inference.sample_cache import SampleCache
from inference.sampling import SamplingParams
from tests.fake_backends import ScriptedBackend, last_content
from tests.helpers import compose_cfg

ROOT = Path(__file__).resolve().parents[1]


def _echo(prompt) -> str:
    return "re: " + last_content(prompt)


def test_cached_generator_generates_only_what_the_cache_lacks(tmp_path):
    path = tmp_path / "gen.jsonl"
    params = SamplingParams(temperature=0.0, max_new_tokens=8)
    backend = ScriptedBackend(_echo, model_id="m1")
    gen = CachedGenerator(backend, params, SampleCache(path), kind="stage/x", chunk_size=2)
    prompts = [[{"role": "user", "content": c}] for c in ("a", "b", "a", "c")]
    assert gen(prompts) == ["re: a", "re: b", "re: a", "re: c"]
    # the repeated prompt is generated once; chunks of 2 distinct prompts
    assert [[last_content(p) for p in call] for call in backend.calls] == [["a", "b"], ["c"]]
    assert gen.counts() == {"cached": 1, "generated": 3, "backend_calls": 2}
    assert len(path.read_text().splitlines()) == 3  # one line per distinct prompt, appended per chunk

    # a new process over the same file: everything is served, nothing generated
    backend2 = ScriptedBackend(lambda p: "changed", model_id="m1")
    gen2 = CachedGenerator(backend2, params, SampleCache(path), kind="stage/x")
    assert gen2(prompts + [[{"role": "user", "content": "d"}]]) == [
        "re: a",
        "re: b",
        "re: a",
        "re: c",
        "changed",
    ]
    assert backend2.prompts_seen == 1 and gen2.counts()["cached"] == 4

    # another model, other sampling settings or another kind never reuse the entries
    for other in (
        CachedGenerator(
            ScriptedBackend(lambda p: "m2", model_id="m2"), params, SampleCache(path), kind="stage/x"
        ),
        CachedGenerator(backend2, params.replace(temperature=0.7), SampleCache(path), kind="stage/x"),
        CachedGenerator(backend2, params, SampleCache(path), kind="stage/y"),
    ):
        before = other.backend.prompts_seen
        other(prompts[:1])
        assert other.backend.prompts_seen == before + 1


def test_cached_generator_ids_join_the_key():
    backend = ScriptedBackend(_echo)
    gen = CachedGenerator(backend, SamplingParams(), kind="k")
    assert gen(["same", "same"], ids=["1", "2"]) == ["re: same", "re: same"]
    assert backend.prompts_seen == 2


# ---- capo_negatives killed mid-way ------------------------------------------------------------------
# Runs generate.py as __main__ after patching, in that process only: HFBackend.generate appends the
# size of every call to $COUNT_FILE, and with $KILL_AFTER_CHUNKS=n the process SIGKILLs itself right
# after the n-th chunk of rejected answers is appended to the cache.
BOOTSTRAP = """
import os, signal, runpy, sys
sys.argv = ["generate.py", *sys.argv[1:]]
import inference.backends.hf as hf
import inference.sample_cache as sc
kill_after = int(os.environ.get("KILL_AFTER_CHUNKS", "0"))
written = []
put_many = sc.SampleCache.put_many
def counted_put_many(self, items):
    put_many(self, items)
    if items and items[0]["kind"] == "capo_negatives/rejected":
        written.append(len(items))
        if kill_after and len(written) >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
sc.SampleCache.put_many = counted_put_many
generate = hf.HFBackend.generate
def counted_generate(self, prompts, params):
    with open(os.environ["COUNT_FILE"], "a") as f:
        f.write(f"{len(prompts)}\\n")
    return generate(self, prompts, params)
hf.HFBackend.generate = counted_generate
runpy.run_path("generate.py", run_name="__main__")
"""


def _run_stage(args: list[str], count_file: Path, kill_after: int = 0) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "QUARTET_ROOT": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "COUNT_FILE": str(count_file),
        "KILL_AFTER_CHUNKS": str(kill_after),
    }
    return subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _calls(count_file: Path) -> list[int]:
    return [int(x) for x in count_file.read_text().split()] if count_file.exists() else []


def _cache_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "cache" / "generations.jsonl").read_text().splitlines()]


def test_capo_negatives_killed_mid_way_resumes_to_the_same_output(tmp_path, tiny_hf_dir, monkeypatch):
    chunk = 3
    stage = [
        "stage=capo_negatives",
        f"stage.generator.path={tiny_hf_dir}",
        "stage.generator.batch_size=1",  # each prompt decoded alone: outputs independent of batching
        "stage.generator.sampling.max_new_tokens=5",
        "stage.generator.sampling.temperature=1.0",  # seeded per prompt (greedy on a random model: EOS)
        "stage.max_dialogues=4",
        f"stage.chunk_size={chunk}",
        f"stage.judge={{backend: hf, path: '{tiny_hf_dir}', batch_size: 1, on_unclear: keep, "
        "sampling: {max_new_tokens: 3}}",
    ]
    killed, full = tmp_path / "killed", tmp_path / "full"

    # 1. killed after the second chunk of rejected answers reached the cache
    first = _run_stage([*stage, f"hydra.run.dir={killed}"], tmp_path / "calls_killed", kill_after=2)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert not (killed / "pairs.jsonl").exists() and not (killed / "summary.json").exists()
    before = _cache_lines(killed)
    judged = [e for e in before if e["kind"] == "judge/yes_no"]
    assert judged and sum(e["kind"] == "capo_negatives/rejected" for e in before) == 2 * chunk

    # 2. resumed in the same run folder
    second = _run_stage([f"resume_dir={killed}"], tmp_path / "calls_resumed")
    assert second.returncode == 0, second.stderr[-2000:]
    after = _cache_lines(killed)
    assert after[: len(before)] == before  # the killed run's entries are kept as they were
    keys = [e["key"] for e in after]
    assert len(keys) == len(set(keys))  # nothing generated twice
    summary = json.loads((killed / "summary.json").read_text())
    rejected = summary["generation"]["rejected"]
    total = rejected["cached"] + rejected["generated"]
    assert rejected["cached"] == 2 * chunk and total > 2 * chunk
    assert summary["generation"]["judge"] == {"cached": len(judged), "generated": 0, "backend_calls": 0}
    # the backend saw exactly the missing prompts
    assert sum(_calls(tmp_path / "calls_resumed")) == total - 2 * chunk == rejected["generated"]

    # 3. an uninterrupted run in a fresh folder (in this process, one thread as in the subprocesses)
    # writes the same bytes
    from generate import generate
    from inference.backends.hf import HFBackend

    sizes: list[int] = []
    real_generate = HFBackend.generate

    def counted(self, prompts, params):
        sizes.append(len(prompts))
        return real_generate(self, prompts, params)

    monkeypatch.setattr(HFBackend, "generate", counted)
    generate(compose_cfg(stage, full, config_name="generate"))
    assert sum(sizes) == total + len(judged)
    resumed_bytes = (killed / "pairs.jsonl").read_bytes()
    assert resumed_bytes and resumed_bytes == (full / "pairs.jsonl").read_bytes()
    assert summary["pairs"] == len(resumed_bytes.decode().splitlines())


def test_a_half_written_last_line_is_regenerated_and_a_corrupt_line_is_a_clear_error(tmp_path):
    from inference.generation_cache import open_cache
    from utils.errors import DataError

    path = tmp_path / "gen.jsonl"
    backend = ScriptedBackend(_echo)
    CachedGenerator(backend, SamplingParams(), open_cache(path), kind="k")(["a", "b"])
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed while writing "b"
    again = CachedGenerator(backend, SamplingParams(), open_cache(path), kind="k")
    assert again(["a", "b"]) == ["re: a", "re: b"] and again.counts()["generated"] == 1
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == [
        json.loads(line)["key"] for line in lines
    ]
    path.write_text("not json\n" + path.read_text())
    with pytest.raises(DataError, match=r"stage.cache: .*gen.jsonl:1: corrupt cache line"):
        open_cache(path)
