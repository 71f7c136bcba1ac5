"""Generation through an OpenAI-compatible HTTP server (vLLM serve, TGI, llama.cpp, OpenAI...).

Chat prompts go to ``POST {base_url}/chat/completions``, raw prompts to ``POST {base_url}/completions``.
Only the standard library is used. The API key is read from an environment variable whose *name* is
configurable; the key itself is never stored on the object, logged, or put into errors or reprs.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inference.backends.base import Completion, GenerationBackend, Prompt, is_chat_prompt, validate_messages
from inference.sampling import SamplingParams
from inference.stopping import truncate_at_stop
from utils.errors import QuartetError

_FINISH = {"stop": "stop", "length": "length", "eos": "eos"}


def split_total(total: int, weights: Sequence[int]) -> list[int]:
    """Split an integer total proportionally to ``weights`` so that the parts sum exactly to ``total``."""
    if not weights:
        return []
    wsum = sum(weights)
    if wsum <= 0:
        base = [total // len(weights)] * len(weights)
        for i in range(total - sum(base)):
            base[i] += 1
        return base
    parts = [total * w // wsum for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % wsum))
    for i in remainders[: total - sum(parts)]:
        parts[i] += 1
    return parts


class OpenAIHTTPError(QuartetError, RuntimeError):
    """The server answered with an error or an unexpected body, or could not be reached (one ``error:``
    line from the entry points; the API key is redacted from the message)."""


class OpenAIHTTPBackend(GenerationBackend):
    """OpenAI-compatible completions over HTTP.

    Args:
        base_url: e.g. ``http://localhost:8000/v1`` (the ``/chat/completions`` suffix is appended).
        model: the served model name sent in each request.
        api_key_env: NAME of the environment variable holding the API key (read at request time); no
            Authorization header is sent when it is unset or empty.
        timeout: seconds per request.
        max_retries: retries on connection errors, 429 and 5xx, with exponential backoff.
        concurrency: requests in flight at once.
        use_n: ask for all n completions in one request (``"n"`` field). If False, send n requests
            with n=1 (for servers without ``n`` support); seeds then differ per request.
        extra_body: extra JSON fields merged into every request.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 3,
        concurrency: int = 4,
        use_n: bool = True,
        extra_body: dict[str, Any] | None = None,
        retry_backoff: float = 1.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_id = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = max(1, concurrency)
        self.use_n = use_n
        self.extra_body = dict(extra_body or {})
        self.retry_backoff = retry_backoff

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r})"
        )

    __str__ = __repr__

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_url": self.base_url, "api_key_env": self.api_key_env}

    # ---- request building ----
    def build_request(
        self, prompt: Prompt, params: SamplingParams, n: int, seed: int | None
    ) -> tuple[str, dict]:
        """Endpoint URL and JSON body for one prompt."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": n,
        }
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.stop:
            body["stop"] = list(params.stop)
        if seed is not None and not params.greedy:
            body["seed"] = seed
        if params.ignore_eos:
            body["ignore_eos"] = True
        if is_chat_prompt(prompt):
            validate_messages(prompt)
            body["messages"] = [dict(m) for m in prompt]
            url = f"{self.base_url}/chat/completions"
        else:
            body["prompt"] = prompt
            url = f"{self.base_url}/completions"
        body.update(self.extra_body)
        return url, body

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, url: str, body: dict) -> dict:
        data = json.dumps(body).encode("utf-8")
        last: str = ""
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(url, data=data, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", errors="replace")[:500]
                last = f"HTTP {e.code} from {url}: {detail}"
                if e.code != 429 and e.code < 500:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                last = f"cannot reach {url}: {type(e).__name__}: {reason}"
            except json.JSONDecodeError as e:
                raise OpenAIHTTPError(f"Server at {url} returned a non-JSON body: {e}") from None
            if attempt < self.max_retries:
                time.sleep(self.retry_backoff * (2**attempt))
        raise OpenAIHTTPError(last)

    # ---- response parsing ----
    @staticmethod
    def parse_response(resp: dict, chat: bool, n: int, params: SamplingParams) -> list[Completion]:
        """Turn one response body into ``n`` completions (index order)."""
        choices = resp.get("choices")
        if not isinstance(choices, list) or len(choices) < n:
            got = len(choices) if isinstance(choices, list) else "no"
            raise OpenAIHTTPError(f"Expected {n} choices in the response, got {got}: {str(resp)[:300]}")
        choices = sorted(choices, key=lambda c: c.get("index", 0))[:n]
        texts, reasons = [], []
        for c in choices:
            text = (c.get("message") or {}).get("content") if chat else c.get("text")
            text, hit = truncate_at_stop(text or "", params.stop)
            texts.append(text)
            reason = _FINISH.get(str(c.get("finish_reason")), "eos")
            reasons.append("stop" if hit else reason)
        usage = resp.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        total = int(usage.get("completion_tokens", 0))
        estimated = n > 1
        parts = split_total(total, [max(1, len(t)) for t in texts]) if estimated else [total]
        return [
            Completion(
                text=t,
                prompt_tokens=prompt_tokens,
                completion_tokens=k,
                finish_reason=r,
                tokens_estimated=estimated,
            )
            for t, k, r in zip(texts, parts, reasons)
        ]

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced by ``<redacted>`` (servers may echo the request headers)."""
        key = os.environ.get(self.api_key_env, "")
        return text.replace(key, "<redacted>") if key else text

    def _one(self, prompt: Prompt, params: SamplingParams) -> list[Completion]:
        """The completions of one prompt, the API key redacted from their text and from any error.

        This is where every byte a server sends enters Quartet, so a server that echoes the key
        inside a normal completion can't get it into the generation cache, ``model_answer/``,
        ``judgments.jsonl`` or ``model_judgment/``: those only ever see the redacted text."""
        try:
            completions = self._one_unredacted(prompt, params)
        except OpenAIHTTPError as e:
            raise OpenAIHTTPError(self.redact(str(e))) from None
        for c in completions:
            c.text = self.redact(c.text)
        return completions

    def _one_unredacted(self, prompt: Prompt, params: SamplingParams) -> list[Completion]:
        chat = is_chat_prompt(prompt)
        if self.use_n or params.n == 1:
            url, body = self.build_request(prompt, params, params.n, params.seed)
            return self.parse_response(self._post(url, body), chat, params.n, params)
        out: list[Completion] = []
        for j in range(params.n):
            seed = None if params.seed is None else params.seed + j
            url, body = self.build_request(prompt, params, 1, seed)
            comp = self.parse_response(self._post(url, body), chat, 1, params)[0]
            comp.prompt_shared = False  # every request paid for its own copy of the prompt
            out.append(comp)
        return out

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        if self.concurrency == 1 or len(prompts) <= 1:
            return [self._one(p, params) for p in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda p: self._one(p, params), prompts))
