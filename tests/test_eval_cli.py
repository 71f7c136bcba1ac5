"""eval.py end to end on a tiny model: the run folder's results.json / samples.jsonl hold what the
inference layer computes for the same model and settings; a rerun comes from the sample cache; and a
2-process DDP run through the command line gives exactly the single-process results."""

from __future__ import annotations

import json
import re

import pytest

from tests.helpers import compose_cfg, run_script

SMALL = [
    "decoding=all",
    "decoding.num_paths=3",
    "decoding.ks=[1,3]",
    "decoding.max_new_tokens=12",
    "data.limit=5",
    "print_config=false",
    "progress=false",
]


def _reference(cfg, tiny_hf_dir, batch_size: int) -> dict:
    """The same evaluation straight through the inference layer (no Hydra, no Lightning)."""
    from datamodules.reasoning import load_questions
    from inference.backends.hf import HFBackend
    from runners.reasoning import build_spec

    records = load_questions(cfg.data.path, limit=cfg.data.limit)
    backend = HFBackend.from_pretrained(str(tiny_hf_dir), dtype="float32", batch_size=batch_size)
    return build_spec(cfg).run(backend, records, chunk_size=cfg.data.batch_size)


def test_evaluate_writes_results_equal_to_the_inference_layer(tmp_path, tiny_hf_dir) -> None:
    from eval import evaluate
    from evaluation.reasoning.scoring import score_rows

    cfg = compose_cfg([*SMALL, "model=hf", f"model.pretrained={tiny_hf_dir}"], tmp_path, config_name="eval")
    metrics = evaluate(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and results["settings"]["num_questions"] == 5
    assert (results["metrics"], results["per_task"]) == score_rows(rows)
    assert set(results["metrics"]) == {"greedy", "sc@1", "sc@3", "sa@1", "sa@3"}
    assert metrics["reasoning/sa@3/accuracy"] == results["metrics"]["sa@3"]["accuracy"]
    s = results["settings"]
    assert s["chat_template"] is True and s["extraction_mode"] == "auto" and s["world_size"] == 1
    assert s["backend"]["chat_template_sha"] and s["data"]["limit"] == 5 and s["method"] == "all"
    assert s["sampling"]["temperature"] == 0.7 and s["sampling"]["n"] == 3

    ref = _reference(cfg, tiny_hf_dir, batch_size=cfg.backend.batch_size)
    assert results["metrics"] == ref["metrics"]
    assert rows == ref["samples"]
    assert (tmp_path / "cache" / "samples.rank0.jsonl").is_file()

    # A rerun in the same folder (a new k included) samples nothing: agreement calls for k=2 only.
    again = compose_cfg(
        [*SMALL, "model=hf", f"model.pretrained={tiny_hf_dir}", "decoding.ks=[1,2,3]"],
        tmp_path,
        config_name="eval",
    )
    evaluate(again)
    rerun = json.loads((tmp_path / "results.json").read_text())
    assert rerun["cache"]["generated_prompts"] == {"greedy": 0, "paths": 0, "agreement": 5}
    assert rerun["metrics"]["sa@3"] == results["metrics"]["sa@3"]


@pytest.mark.slow
def test_cli_ddp_two_processes_equal_single_process(tmp_path, tiny_hf_dir) -> None:
    out = tmp_path / "ddp"
    overrides = [*SMALL, "model=hf", f"model.pretrained={tiny_hf_dir}", "backend.batch_size=1"]
    proc = run_script(
        "eval.py",
        [
            *overrides,
            "progress=true",
            "trainer=ddp",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            f"hydra.run.dir={out}",
        ],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert results["settings"]["world_size"] == 2
    # Each rank sampled its own shard into its own cache file: 3 and 2 questions.
    caches = {p.name: p.read_text().splitlines() for p in (out / "cache").iterdir()}
    qids = {name: {json.loads(line)["qid"] for line in lines} for name, lines in caches.items()}
    assert sorted(qids) == ["samples.rank0.jsonl", "samples.rank1.jsonl"]
    assert sorted(len(q) for q in qids.values()) == [2, 3] and not set.intersection(*qids.values())

    cfg = compose_cfg(overrides, tmp_path / "single", config_name="eval")
    ref = _reference(cfg, tiny_hf_dir, batch_size=1)
    assert results["metrics"] == ref["metrics"] and results["per_task"] == ref["per_task"]
    assert rows == ref["samples"]
    assert "sa@3" in proc.stdout and "questions (rank 0 of 2)" in proc.stdout + proc.stderr
    closing = [line for line in proc.stdout.splitlines() if " - done in " in line]
    assert len(closing) == 1, proc.stdout[-3000:]  # rank 0 only
    assert re.search(
        rf" - done in \d+\.\d s; \S+ [\d.e-]+; run folder {re.escape(str(out))}/ \(.*results\.json",
        closing[0],
    )


class _ArithmeticServer:
    """An OpenAI-compatible chat server that adds the two numbers of "What is a + b?" (paths: one of
    every three samples is off by one)."""

    def __init__(self) -> None:
        import re
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                outer.auth.append(self.headers.get("Authorization"))
                a, b = map(
                    int, re.search(r"What is (\d+) \+ (\d+)\?", body["messages"][-1]["content"]).groups()
                )
                texts = [
                    f"{a} + {b} = {a + b + (i % 3 == 2)}. The answer is {a + b + (i % 3 == 2)}."
                    for i in range(body["n"])
                ]
                reply = {
                    "choices": [
                        {"index": i, "message": {"content": t}, "finish_reason": "stop"}
                        for i, t in enumerate(texts)
                    ],
                    "usage": {"prompt_tokens": 30, "completion_tokens": 10 * body["n"]},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)


def test_evaluate_through_an_openai_compatible_server(tmp_path, monkeypatch, capsys) -> None:
    from eval import evaluate
    from utils.entrypoint import run_main

    data = tmp_path / "sums.jsonl"
    data.write_text(
        "".join(json.dumps({"question": f"What is {i} + 3?", "answer": str(i + 3)}) + "\n" for i in range(4))
    )
    server = _ArithmeticServer()
    server.thread.start()
    monkeypatch.setenv("EVAL_TEST_KEY", "sk-eval-test")
    try:
        overrides = [
            "backend=openai_http",
            f"backend.base_url={server.url}",
            "backend.model=served-model",
            "backend.api_key_env=EVAL_TEST_KEY",
            "decoding=all",
            f"data.path={data}",
            "print_config=false",
            "progress=false",
        ]
        metrics = evaluate(compose_cfg(overrides, tmp_path / "run", config_name="eval"))
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
    # Greedy and agreement calls are right; paths are 2 right of every 3, so maj@5 is right too.
    assert metrics["reasoning/greedy/accuracy"] == 1.0
    assert metrics["reasoning/sc@5/accuracy"] == 1.0 and metrics["reasoning/sa@5/accuracy"] == 1.0
    assert sorted(b["n"] for b in server.bodies) == [1] * 8 + [5] * 4  # greedy + agreement, paths (n=5)
    assert set(server.auth) == {"Bearer sk-eval-test"}
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (
        results["settings"]["backend"]["model_id"] == "served-model" and results["settings"]["model"] is None
    )
    assert results["metrics"]["sc@5"]["tokens_per_question"]["total"] == 30 + 50

    # An unreachable server is one error line and exit status 2.
    cfg = compose_cfg(
        [
            *overrides[:1],
            "backend.base_url=http://127.0.0.1:9/v1",
            "backend.model=m",
            "backend.max_retries=0",
            *overrides[4:],
        ],
        tmp_path / "down",
        config_name="eval",
    )
    with pytest.raises(SystemExit) as exit_info:
        run_main(cfg, evaluate)
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        exit_info.value.code == 2
        and len(err) == 1
        and err[0].startswith("error: cannot reach http://127.0.0.1:9/v1")
    )


def test_a_stop_signal_ends_the_evaluation_at_the_next_batch_with_exit_143(
    tmp_path, tiny_hf_dir, monkeypatch
):
    """Issue 21: SIGTERM under ``trainer.predict`` ran the evaluation to its end and exited 0. Now it
    stops after the batch it lands in (the generations so far cached) with ``TrainingInterrupted``."""
    import os
    import signal

    from eval import evaluate
    from lightning_modules.reasoning_predict import ReasoningEvalModule
    from utils.errors import TrainingInterrupted

    real_step, started = ReasoningEvalModule.predict_step, []

    def step(self, batch, batch_idx):
        started.append(batch_idx)
        if batch_idx == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # lands in the second of five batches
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(ReasoningEvalModule, "predict_step", step)
    cfg = compose_cfg(
        [*SMALL, "model=hf", f"model.pretrained={tiny_hf_dir}", "data.batch_size=1"],
        tmp_path,
        config_name="eval",
    )
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stopped:
        evaluate(cfg)
    assert stopped.value.exit_code == 143 and started == [0, 1]
    assert str(stopped.value) == (
        f"evaluation interrupted by SIGTERM after 2 batch(es); the generations so far are cached in "
        f"{tmp_path / 'cache'}; rerun the same command to continue"
    )
    assert not (tmp_path / "results.json").exists() and signal.getsignal(signal.SIGTERM) == handler
