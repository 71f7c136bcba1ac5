"""eval.py task=mt_bench with the judge behind an OpenAI-compatible server on 127.0.0.1: a timeout, a
429 and a 500 are retried, bad JSON and an unreachable endpoint are one clear error with the answers kept
for the rerun, an unparseable verdict is counted as a failure, and the API key appears in no log line and
no output file, even when the server echoes the request headers."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import compose_cfg

SECRET = "sk-judge-SECRET-7f3a9c"
ECHO = b"<echo the key>"


class JudgeServer:
    """Answers POSTs from a script of (status, body, delay); ``None`` body echoes the request headers."""

    def __init__(self) -> None:
        self.script: list[tuple[int, bytes | None, float]] = []
        self.requests = 0
        self.default = rating(7)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                status, body, delay = outer.script.pop(0) if outer.script else (200, outer.default, 0.0)
                time.sleep(delay)
                if body == ECHO:  # a normal completion that quotes the request's Authorization header
                    body = reply(f"You sent {self.headers.get('Authorization')}. Rating: [[5]]")
                if body is None:
                    body = json.dumps(
                        {"error": {"message": f"unauthorized; you sent {dict(self.headers)}"}}
                    ).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()


def reply(text: str) -> bytes:
    return json.dumps(
        {"choices": [{"index": 0, "message": {"content": text}, "finish_reason": "stop"}], "usage": {}}
    ).encode()


def rating(score) -> bytes:
    return reply(f"The reply is fine. Rating: [[{score}]]" if score is not None else "I cannot decide.")


@pytest.fixture
def server():
    s = JudgeServer()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def cfg_for(tmp_path, tiny_hf_dir, url):
    return compose_cfg(
        [
            "task=mt_bench",
            "task.limit=1",
            "task.max_new_tokens=4",
            "judge=openai_http",
            f"judge.base_url={url}",
            "judge.model=judge-x",
            "judge.api_key_env=QUARTET_TEST_JUDGE_KEY",
            "judge.concurrency=1",
            "judge.max_retries=2",
            "judge.timeout=1",
            "+judge.retry_backoff=0",
            "model=hf",
            f"model.pretrained={tiny_hf_dir}",
            "print_config=false",
        ],
        tmp_path,
        config_name="eval",
    )


def files_text(folder) -> str:
    return "".join(
        p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.suffix != ".png"
    )


def test_retries_failures_and_no_key_anywhere(tmp_path, tiny_hf_dir, server, monkeypatch, caplog):
    from eval import evaluate

    monkeypatch.setenv("QUARTET_TEST_JUDGE_KEY", SECRET)
    # question 1 has 3 turns: turn 1 times out then succeeds; turn 2 gets 429 then 500 then an unparseable
    # verdict; turn 3 gets a rating.
    server.script = [
        (200, rating(9), 1.5),
        (200, rating(8), 0.0),
        (429, b'{"error": "slow down"}', 0.0),
        (500, b'{"error": "boom"}', 0.0),
        (200, rating(None), 0.0),
        (200, rating(6), 0.0),
    ]
    with caplog.at_level(logging.DEBUG):
        metrics = evaluate(cfg_for(tmp_path, tiny_hf_dir, server.url))
    results = json.loads((tmp_path / "results.json").read_text())
    assert server.requests == 6
    assert results["unparseable"] == 1 and results["scored_turns"] == 2
    assert results["score"] == pytest.approx((8 + 6) / 2) == metrics["mt_bench/score"]
    scores = [json.loads(x)["score"] for x in (tmp_path / "judgments.jsonl").read_text().splitlines()]
    assert scores == [8, -1, 6]
    assert SECRET not in caplog.text and SECRET not in files_text(tmp_path)

    # A rerun pays nothing: answers and verdicts come from the cache.
    before = server.requests
    evaluate(cfg_for(tmp_path, tiny_hf_dir, server.url))
    assert server.requests == before


def test_echoed_key_bad_json_and_unreachable_are_one_clear_error(tmp_path, tiny_hf_dir, server, monkeypatch):
    from eval import evaluate
    from inference.backends.openai_http import OpenAIHTTPError
    from utils.errors import QuartetError

    monkeypatch.setenv("QUARTET_TEST_JUDGE_KEY", SECRET)
    server.script = [(401, None, 0.0)]
    with pytest.raises(OpenAIHTTPError) as err:
        evaluate(cfg_for(tmp_path, tiny_hf_dir, server.url))
    assert "HTTP 401" in str(err.value) and "<redacted>" in str(err.value) and SECRET not in str(err.value)
    assert isinstance(err.value, QuartetError)  # eval.py prints it as one `error:` line
    # the answers were made before the judge failed: they are kept, and a rerun does not make them again
    cache = (tmp_path / "cache" / "mt_bench.jsonl").read_text()
    assert '"mt_bench/answer"' in cache and SECRET not in cache

    server.script = [(200, b"this is not json", 0.0)]
    with pytest.raises(OpenAIHTTPError, match="non-JSON body"):
        evaluate(cfg_for(tmp_path, tiny_hf_dir, server.url))

    with pytest.raises(OpenAIHTTPError, match="cannot reach"):
        evaluate(cfg_for(tmp_path, tiny_hf_dir, "http://127.0.0.1:9/v1"))


def test_names_from_the_config_stay_in_the_run_folder_and_an_echoed_key_is_never_saved(
    tmp_path, server, monkeypatch
):
    """Issue 21, Bad 1 and Bad 5, through eval.py's own entry: the model under test and the judge both
    behind the server, which quotes the key in every normal completion. The answer file's name comes
    from ``backend.model=../../../m`` and the judgment file's from ``judge.model=org/judge``: both stay
    one name inside the run folder, and the key is redacted from every saved file."""
    from tests.test_reliability_bad_input import invoke

    monkeypatch.setenv("QUARTET_TEST_JUDGE_KEY", SECRET)
    server.default = ECHO
    run = tmp_path / "a" / "b" / "run"
    argv = [
        "task=mt_bench", "task.limit=1", "print_config=false", "progress=false", f"hydra.run.dir={run}",
        "backend=openai_http", f"backend.base_url={server.url}", "backend.model=../../../m",
        "backend.api_key_env=QUARTET_TEST_JUDGE_KEY", "backend.concurrency=1",
        "judge=openai_http", f"judge.base_url={server.url}", "judge.model=org/judge",
        "judge.api_key_env=QUARTET_TEST_JUDGE_KEY", "judge.concurrency=1",
    ]  # fmt: skip
    assert invoke("eval", argv).code == 0
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(run)]
    assert outside == []
    assert sorted(p.name for p in (run / "model_answer").iterdir()) == [".._.._.._m.jsonl"]
    assert sorted(p.name for p in (run / "model_judgment").iterdir()) == ["org_judge_single.jsonl"]
    answers = [json.loads(x) for x in (run / "model_answer" / ".._.._.._m.jsonl").read_text().splitlines()]
    assert answers[0]["model_id"] == "../../../m"  # the records keep the id as given
    turns = answers[0]["choices"][0]["turns"]
    assert turns and all(t == "You sent Bearer <redacted>. Rating: [[5]]" for t in turns)
    judgments = (run / "judgments.jsonl").read_text()
    assert (
        "Bearer <redacted>" in judgments
        and "Bearer <redacted>" in (run / "cache" / "mt_bench.jsonl").read_text()
    )
    assert server.requests == 2 * len(turns)
    assert SECRET not in files_text(run)
