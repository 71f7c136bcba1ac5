"""The OpenAI-compatible HTTP backend against a scripted local server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inference.backends.factory import build_backend
from inference.backends.openai_http import OpenAIHTTPBackend, OpenAIHTTPError, split_total
from inference.backends.vllm import VLLMBackend, VLLMUnavailableError, vllm_available
from inference.sampling import SamplingParams

SECRET = "sk-test-SECRET-123456"


class _Server:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.replies: list[tuple[int, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, reply = outer.replies.pop(0)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _chat_reply(texts: list[str], prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def test_chat_request_body_headers_and_parsing(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY_VAR", SECRET)
    backend = OpenAIHTTPBackend(server.url, model="tiny", api_key_env="MY_KEY_VAR", concurrency=1)
    server.replies.append((200, _chat_reply(["The answer is 7.", "So 7. Question: next"], 20, 10)))
    params = SamplingParams(n=2, temperature=0.7, top_p=0.9, max_new_tokens=32, stop=("Question:",), seed=3)
    out = backend.generate([[{"role": "user", "content": "What is 3 + 4?"}]], params)

    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert req["body"] == {
        "model": "tiny",
        "max_tokens": 32,
        "temperature": 0.7,
        "top_p": 0.9,
        "n": 2,
        "stop": ["Question:"],
        "seed": 3,
        "messages": [{"role": "user", "content": "What is 3 + 4?"}],
    }
    texts = [c.text for c in out[0]]
    assert texts == ["The answer is 7.", "So 7. "]  # stop string cut client-side too
    assert [c.prompt_tokens for c in out[0]] == [20, 20]
    assert sum(c.completion_tokens for c in out[0]) == 10 and all(c.tokens_estimated for c in out[0])
    # The key never shows up in repr/str/describe.
    for s in (repr(backend), str(backend), json.dumps(backend.describe())):
        assert SECRET not in s
    assert "MY_KEY_VAR" in repr(backend)


def test_completions_endpoint_and_no_key(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = OpenAIHTTPBackend(server.url + "/", model="tiny")
    for text in ("4", "9"):
        server.replies.append(
            (
                200,
                {
                    "choices": [{"index": 0, "text": f" {text}", "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 1},
                },
            )
        )
    out = backend.generate(["2 + 2 =", "3 * 3 ="], SamplingParams(max_new_tokens=1))
    assert sorted(r["body"]["prompt"] for r in server.requests) == ["2 + 2 =", "3 * 3 ="]
    assert all(r["path"] == "/v1/completions" for r in server.requests)
    assert all("Authorization" not in r["headers"] for r in server.requests)
    assert all("seed" not in r["body"] for r in server.requests)  # greedy: no seed sent
    assert {g[0].text for g in out} == {" 4", " 9"}
    assert out[0][0].finish_reason == "length" and out[0][0].completion_tokens == 1


def test_server_error_is_reported_without_key(server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    backend = OpenAIHTTPBackend(server.url, model="tiny", max_retries=1, retry_backoff=0.0)
    server.replies += [(500, {"error": "boom"}), (400, {"error": {"message": "bad model"}})]
    with pytest.raises(OpenAIHTTPError) as err:
        backend.generate(["hi"], SamplingParams())
    assert "HTTP 400" in str(err.value) and "bad model" in str(err.value)
    assert SECRET not in str(err.value)
    assert len(server.requests) == 2  # the 500 was retried, the 400 was not


def test_too_few_choices_and_per_request_mode(server: _Server) -> None:
    backend = OpenAIHTTPBackend(server.url, model="tiny", concurrency=1)
    server.replies.append((200, _chat_reply(["only one"], 3, 2)))
    with pytest.raises(OpenAIHTTPError, match="Expected 2 choices"):
        backend.generate([[{"role": "user", "content": "q"}]], SamplingParams(n=2, temperature=1.0))
    single = OpenAIHTTPBackend(server.url, model="tiny", use_n=False, concurrency=1)
    server.replies += [(200, _chat_reply(["a"], 3, 2)), (200, _chat_reply(["b"], 3, 4))]
    out = single.generate([[{"role": "user", "content": "q"}]], SamplingParams(n=2, temperature=1.0, seed=10))
    assert [c.text for c in out[0]] == ["a", "b"]
    assert [r["body"]["seed"] for r in server.requests[-2:]] == [10, 11]
    assert [c.completion_tokens for c in out[0]] == [2, 4] and not out[0][0].prompt_shared


def test_split_total_is_exact() -> None:
    assert split_total(10, [1, 1]) == [5, 5]
    assert sum(split_total(7, [3, 1, 1])) == 7
    assert split_total(3, [0, 0]) == [2, 1]


def test_backend_factory_and_vllm_guard() -> None:
    b = build_backend("openai_http", base_url="http://x/v1", model="m")
    assert isinstance(b, OpenAIHTTPBackend)
    with pytest.raises(ValueError, match="Unknown backend"):
        build_backend("tgi")
    with pytest.raises(ValueError, match="needs"):
        build_backend("openai_http", model="m")
    if not vllm_available():
        with pytest.raises(VLLMUnavailableError, match="not installed"):
            VLLMBackend("some/model")
