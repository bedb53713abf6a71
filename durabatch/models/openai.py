"""Any OpenAI-compatible ``POST /chat/completions`` endpoint, over one pooled httpx client.

Every attempt becomes one ``CallRecord`` (status, tokens from ``usage``,
latency, host, retry number, error class) whether it succeeded or not. Each
HTTP outcome maps to one error class, so what happens next is a type check:

    200 with a whole reply           -> the value
    429 rate limit, 5xx, timeouts,
    dropped or cut-off bodies        -> RetryableError (retry.py decides the wait)
    429 insufficient_quota, 402      -> QuotaExhausted: the run pauses (75)
    401 / 403                        -> AuthError: the run halts (3)
    404 unknown model                -> ModelNotFound: the run halts (3)
    400 context length               -> DocumentError(context_length_exceeded)
    400 other, finish_reason=length,
    no text (e.g. content filter)    -> DocumentError for this document only
    a drain while retrying           -> Cancelled: the step runs again on resume

A timeout is a server silent for ``read_timeout``, or an answer not complete
``read_timeout`` after the request was sent (a reply trickling in byte by byte).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from typing import Any

import httpx

from durabatch.budget import before_paid_call, budgeted
from durabatch.errors import (
    AuthError,
    Cancelled,
    DocumentError,
    DurabatchError,
    HaltError,
    ModelNotFound,
    ProviderOutage,
    QuotaExhausted,
    Reason,
    RetryableError,
)
from durabatch.models.base import CallRecord, Entity, Reply
from durabatch.models.entities_json import SCHEMA, parse_entities
from durabatch.models.retry import RateGate, RetryPolicy, retry_after

SUMMARY_PROMPT = (
    "You summarize documents. Write a faithful summary of the user's text in at most "
    "five sentences, in the text's language. Reply with the summary only."
)
ENTITIES_PROMPT = (
    "You extract named entities. Reply with JSON only, exactly of the form "
    '{"entities": [{"text": "...", "type": "..."}]} where type is one of PERSON, ORG, '
    "LOCATION, DATE, MONEY, OTHER. Use the exact text as it appears."
)
JSON_ASKS = 3  # a model that keeps answering non-JSON fails the document after this
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
FORMATS = ("json_schema", "json_object", "plain")
# how servers word a refused response_format (vLLM, llama.cpp, Ollama, OpenAI proxies)
_FORMAT_WORDS = re.compile(r"response_format|json_schema|json_object", re.I)


class _FormatRejected(Exception):
    """The server does not take this ``response_format``; try the next one."""


class _CapRejected(Exception):
    """The server wants ``max_completion_tokens`` instead of ``max_tokens``."""


class OpenAIProvider:
    name = "openai"
    version = "prompts-1"  # change with the prompts: cached answers of others are not reused

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        policy: RetryPolicy | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 20.0,
        concurrency: int = 4,
        transport: httpx.BaseTransport | None = None,
        max_output_tokens: int = 2048,
    ) -> None:
        self.max_output_tokens = max_output_tokens
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._secret = api_key
        self.host = httpx.URL(base_url).host
        self.read_timeout = read_timeout
        self.policy = policy or RetryPolicy()
        self.gate = RateGate(self.policy)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(
            headers=headers,
            # every phase bounded; the read timeout here is the longest gap between two
            # bytes, and _post bounds the whole answer by read_timeout too
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout
            ),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
        )
        self._format = 0
        self._format_lock = threading.Lock()
        # newer OpenAI models refuse max_tokens and want max_completion_tokens
        self._cap_param = "max_tokens"

    def close(self) -> None:
        self.client.close()

    def scrub(self, text: str) -> str:
        """Server text with our key cut out: some servers echo it in their errors."""
        return text.replace(self._secret, "[key]") if self._secret else text

    def window_tokens(self, model: str) -> int:
        return model_window(model)

    # -- the two tasks ----------------------------------------------------------------

    def summarize(self, text: str, model: str) -> Reply[str]:
        calls: list[CallRecord] = []
        body = _chat(model, SUMMARY_PROMPT, text)
        content = self._complete(body, model, calls)
        return Reply(content.strip(), tuple(calls))

    def entities(self, text: str, model: str) -> Reply[list[Entity]]:
        calls: list[CallRecord] = []
        for _ in range(JSON_ASKS):
            content = self._complete_json(text, model, calls)
            found = parse_entities(content)
            if found is not None:
                return Reply(found, tuple(calls))
            # paid for, but not an answer we keep: a failed attempt in the cost report
            calls[-1] = replace(
                calls[-1], error="not valid entities JSON", error_class="InvalidJSON"
            )
        raise DocumentError(
            Reason.INVALID_JSON,
            f"{model} did not answer valid entities JSON in {JSON_ASKS} tries; try another "
            "--entities-model",
            calls,
        )

    def _complete_json(self, text: str, model: str, calls: list[CallRecord]) -> str:
        """Ask with the best ``response_format`` this server takes, remembering refusals."""
        while True:
            mode = self._format
            body = _chat(model, ENTITIES_PROMPT, text) | _response_format(FORMATS[mode])
            try:
                return self._complete(body, model, calls)
            except _FormatRejected:
                with self._format_lock:
                    self._format = max(self._format, mode + 1)

    # -- one call, retried ------------------------------------------------------------

    def _complete(self, body: dict[str, Any], model: str, calls: list[CallRecord]) -> str:
        try:
            return self._complete_once(body, model, calls)
        except _CapRejected:
            self._cap_param = "max_completion_tokens"
            return self._complete_once(body, model, calls)

    def _complete_once(self, body: dict[str, Any], model: str, calls: list[CallRecord]) -> str:
        started = self.policy.clock()
        try:
            return self.policy.call(lambda n: self._attempt(body, model, calls, n))
        except RetryableError as exc:
            if self.policy.cancelled():
                raise Cancelled("the run is stopping; the call was not retried", calls) from exc
            spent = self.policy.clock() - started
            raise ProviderOutage(
                f"{self.host} kept failing ({exc}) over {len(calls)} attempts in {spent:.0f}s; "
                "no document was marked failed - `durabatch resume` when it is back",
                calls,
            ) from exc

    def _attempt(self, body: dict[str, Any], model: str, calls: list[CallRecord], n: int) -> str:
        if n > 1 and self.policy.cancelled():  # the drain began during the wait: send nothing
            raise RetryableError("the run is stopping")
        if budgeted():  # a worst case needs a bound on the answer
            body = body | {self._cap_param: self.max_output_tokens}
        try:
            before_paid_call(self.name, self.host, model, _prompt_of(body),
                             _most_input_tokens(body), self.max_output_tokens)  # fmt: skip
        except (DurabatchError, Cancelled) as refused:  # keep what this call already spent
            refused.calls = tuple(calls)
            raise
        self.gate.wait()
        record = _Recorder(self, model, n, calls)
        try:
            response, data = self._post(body, record.start)
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol) as exc:
            record(None, type(exc).__name__, "the request could not be sent")
            raise HaltError(
                "the request could not be sent: check --base-url and that DURABATCH_API_KEY "
                "holds only the key (no spaces or line breaks), then `durabatch resume`",
                calls,
            ) from exc
        except httpx.TimeoutException as exc:
            record(None, type(exc).__name__, f"no answer in time: {exc}")
            raise RetryableError(f"timed out ({type(exc).__name__})") from exc
        except httpx.RequestError as exc:  # refused, dropped, cut off, undecodable
            record(None, type(exc).__name__, str(exc) or type(exc).__name__)
            raise RetryableError(f"connection failed ({type(exc).__name__})") from exc
        self.gate.update(response.headers)
        if response.status_code == 200:
            return _content(data, record, body)
        return self._refuse(response, data, record, model, body)

    def _post(self, body: dict[str, Any], started: float) -> tuple[httpx.Response, bytes]:
        """The response and its whole (decoded) body. httpx's read timeout only bounds the
        gap between two bytes, so a reply trickling in would never time out: the body must
        also be complete within ``read_timeout`` of sending the request, or this raises
        ``httpx.ReadTimeout`` as a silent server does."""
        sent = [started]  # moved on when httpcore starts writing the request

        def trace(event: str, info: dict[str, Any]) -> None:
            if event.endswith(".send_request_headers.started"):
                sent[0] = time.perf_counter()

        with self.client.stream("POST", self.url, json=body,
                                extensions={"trace": trace}) as response:  # fmt: skip
            chunks: list[bytes] = []
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                if time.perf_counter() - sent[0] > self.read_timeout:
                    raise httpx.ReadTimeout(
                        f"the answer was not complete {self.read_timeout:g}s after the "
                        "request was sent",
                        request=response.request,
                    )
        return response, b"".join(chunks)

    def _refuse(self, response: httpx.Response, data: bytes, record: _Recorder, model: str,
                body: dict[str, Any]) -> str:  # fmt: skip
        status = response.status_code
        code, message = (self.scrub(text) for text in _error_of(data))
        record(status, f"HTTP{status}", message, usage=None)
        calls = record.calls
        if status == 402 or (status == 429 and "insufficient_quota" in code):
            raise QuotaExhausted(
                f"{self.host} says the account is out of quota ({message}); top it up, then "
                "`durabatch resume`",
                calls,
            )
        if status in RETRYABLE_STATUS or status >= 500:
            raise RetryableError(f"HTTP {status}", retry_after(response.headers))
        if status in (401, 403):
            raise AuthError(
                f"{self.host} refused the API key (HTTP {status}); set DURABATCH_API_KEY "
                "(or OPENAI_API_KEY) to a valid key, then `durabatch resume`",
                calls,
            )
        if status == 404:
            if "model" in code or "model" in message.lower():
                raise ModelNotFound(
                    f"{self.host} does not know model {model!r} (HTTP 404); continue with "
                    "the right one: `durabatch resume --model NAME` (or --summarize-model "
                    "/ --entities-model for one step)",
                    calls,
                )
            raise HaltError(
                f"{self.url} was not found (HTTP 404); check the endpoint, then continue "
                "with `durabatch resume --base-url URL`",
                calls,
            )
        if "context_length" in code or "context length" in message.lower():
            raise DocumentError(Reason.CONTEXT_LENGTH, f"too long for {model}: {message}", calls)
        if status == 400 and "max_completion_tokens" in message and self._cap_param == "max_tokens":
            raise _CapRejected(message)
        refused_format = status in (400, 422) and _FORMAT_WORDS.search(code + message)
        if "response_format" in body and refused_format:
            raise _FormatRejected(message)
        raise DocumentError(Reason.BAD_REQUEST, f"HTTP {status}: {message}", calls)


class _Recorder:
    """Appends the CallRecord of one attempt, timed from its creation."""

    def __init__(self, provider: OpenAIProvider, model: str, retry: int,
                 calls: list[CallRecord]) -> None:  # fmt: skip
        self.provider, self.model, self.retry, self.calls = provider, model, retry, calls
        self.clock: Callable[[], float] = time.perf_counter
        self.start = self.clock()

    def __call__(self, status: int | None, error_class: str | None, error: str | None,
                 usage: dict[str, Any] | None = None) -> None:  # fmt: skip
        usage = usage or {}
        self.calls.append(
            CallRecord(
                provider=self.provider.name,
                model=self.model,
                input_tokens=int(usage.get("prompt_tokens") or 0),
                cached_tokens=int(
                    (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
                ),
                output_tokens=int(usage.get("completion_tokens") or 0),
                latency_ms=(self.clock() - self.start) * 1000,
                http_status=status,
                error=self.provider.scrub(error)[:300] if error else None,
                error_class=error_class,
                host=self.provider.host,
                retry=self.retry,
            )
        )


def _content(raw: bytes, record: _Recorder, body: dict[str, Any]) -> str:
    """The reply's text, or a failed attempt: a cut-off body is never a result."""
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        content = choice["message"]["content"]
        usage = data.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        record(200, "BadResponseBody", "the reply was cut off or is not chat-completion JSON")
        raise RetryableError("the reply was cut off or malformed") from exc
    if choice.get("finish_reason") == "length":
        record(200, "TruncatedReply", "the model stopped at its output limit", usage)
        raise DocumentError(
            Reason.TRUNCATED,
            "the model's answer was cut off at its output limit; use a model with a larger "
            "output or a smaller --max-input-tokens",
            record.calls,
        )
    if not isinstance(content, str) or not content.strip():
        finish = choice.get("finish_reason")
        record(200, "EmptyReply", f"the reply had no text (finish_reason={finish})", usage)
        raise DocumentError(
            Reason.REFUSED,
            f"the model answered no text for this document (finish_reason={finish}); "
            "it may have been filtered - try another model",
            record.calls,
        )
    record(200, None, None, usage)
    return content


def _prompt_of(body: dict[str, Any]) -> str:
    """What the server counts as input: the messages and any JSON schema."""
    parts = [m["content"] for m in body["messages"]]
    if "response_format" in body:
        parts.append(json.dumps(body["response_format"]))
    return "\n".join(parts)


def _most_input_tokens(body: dict[str, Any]) -> int:
    """An upper bound, not an estimate: a byte-level tokenizer never makes a token of
    less than one byte, and chat templates add a few tokens per message."""
    sent = sum(len(m["content"].encode()) + 16 for m in body["messages"])
    if "response_format" in body:  # servers may put the schema in the prompt
        sent += len(json.dumps(body["response_format"]).encode())
    return sent + 32


def _error_of(raw: bytes) -> tuple[str, str]:
    """(code and type, message) from an error body, whatever shape the server uses."""
    try:
        data = json.loads(raw)
        error = data.get("error") or data  # older vLLM puts the error at the top level
    except (ValueError, AttributeError):
        return "", raw.decode(errors="replace")[:200]
    if isinstance(error, str):
        return "", error
    code = f"{error.get('code') or ''} {error.get('type') or ''}"
    return code, str(error.get("message") or "")


def _chat(model: str, system: str, text: str) -> dict[str, Any]:
    return {
        "model": model,
        "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
    }


def _response_format(mode: str) -> dict[str, Any]:
    if mode == "json_schema":
        schema = {"name": "entities", "strict": True, "schema": SCHEMA}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    if mode == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {}


_WINDOWS: dict[str, int] = {}


def model_window(model: str) -> int:
    if not _WINDOWS:
        raw = resources.files("durabatch").joinpath("data/models.json").read_text()
        _WINDOWS.update({k: int(v) for k, v in json.loads(raw).items() if k != "_comment"})
    return _WINDOWS.get(model.lower(), _WINDOWS["_default"])
