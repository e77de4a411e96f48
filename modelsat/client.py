"""`modelsat.Client`: the gateway in-process, a drop-in for the openai client's chat completions.

    from modelsat import Client
    client = Client("my-router")      # a router whose zoo entries have an --endpoint (a folder, a name or a hub id)
    r = client.chat.completions.create(model="modelsat", messages=[{"role": "user", "content": "2+2?"}])
    r.choices[0].message.content, r.model, r.modelsat["ranking"]
    for chunk in client.chat.completions.create(model="modelsat:cost_weight=0.5", messages=..., stream=True):
        print(chunk.choices[0].delta.content or "", end="")

Routing, retries and errors are the gateway's (modelsat/serving/gateway.py), over a synchronous httpx.Client; like
RouteLLM's `Controller`. Answers are `Completion`s: dicts whose keys read as attributes too.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterator

import httpx

from modelsat.serving.answers import BadAnswer, check_completion, usage_tokens
from modelsat.serving.errors import GatewayError
from modelsat.serving.plan import (ROUTE_MODEL, GatewaySettings, Plan, annotate, plan, requests_to_try, retryable,
                                   status_error, zoo_syncer)
from modelsat.zoo import ZooEntry
from modelsat.router import Router


class Completion(dict):
    """A JSON object whose keys read as attributes too (`r.choices[0].message.content`); nested objects alike."""

    def __getattr__(self, key: str):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    @classmethod
    def wrap(cls, value):
        if isinstance(value, dict):
            return cls({k: cls.wrap(v) for k, v in value.items()})
        if isinstance(value, list):
            return [cls.wrap(v) for v in value]
        return value


class Stream:
    """The chunks of a streamed completion as they arrive (`Completion`s); `model` is the zoo model answering and
    `modelsat` the routing (as in an unstreamed answer's extension field)."""

    def __init__(self, plan: Plan, entry: ZooEntry, response: httpx.Response, lines: Iterator[str],
                 first: list) -> None:
        self.model, self.modelsat = entry.name, annotate(plan, entry, {})[ROUTE_MODEL]
        self._entry, self._response, self._lines, self._first = entry, response, lines, first

    def __iter__(self) -> Iterator[Completion]:
        count = 0
        try:
            yield from self._first
            count = len(self._first)
            for line in self._lines:
                chunk = _sse_data(line)
                if chunk is _DONE:
                    return
                if chunk is not None:
                    count += 1
                    yield chunk
        except httpx.HTTPError as e:
            raise GatewayError(502, f"the stream from {self._entry.name!r} broke after {count} chunks "
                               f"({type(e).__name__}); it was not retried", "upstream_error") from e
        finally:
            self._response.close()

    def close(self) -> None:
        self._response.close()


_DONE = object()


def _sse_data(line: str):
    """The JSON of an SSE `data:` line as a Completion, _DONE for `[DONE]`, None for any other line."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return _DONE
    value = json.loads(data)
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        raise GatewayError(502, str(value["error"].get("message", value["error"]))[:500], "upstream_error")
    return Completion.wrap(value)


class _Completions:
    def __init__(self, client: "Client") -> None:
        self._client = client

    def create(self, *, model: str, messages: list[dict], stream: bool = False, modelsat: dict | None = None,
               **params) -> Completion | Stream:
        """A chat completion: `model="modelsat"` routes (`modelsat:cost_weight=X`, or `modelsat={"cost_weight":
        X, "models": [...]}`), a zoo name forwards to that model; `params` (temperature, max_tokens, ...) go to
        the upstream unchanged. Raises GatewayError (`.status`, `.body()`) as the gateway answers its errors."""
        body = {"model": model, "messages": messages, **params}
        if stream:
            body["stream"] = True
        if modelsat is not None:
            body[ROUTE_MODEL] = modelsat
        return self._client._complete(body)


class _Chat:
    def __init__(self, client: "Client") -> None:
        self.completions = _Completions(client)


class Client:
    """Route and forward chat completions in-process: `Client(NAME_OR_PATH)` (whatever `Router.from_pretrained`
    takes: a checkpoint folder, a shipped router's name, a hub repository id; with `device` and `dtype`) or
    `Client(router=router)`; `settings` as `modelsat serve`'s (max_attempts, timeout, connect_timeout). The zoo
    folder is re-read when it changes (at most once a second). Close it (or use `with`) to release its connections.
    Raises CheckpointError where the router cannot be loaded, ValueError for both or neither of checkpoint/router."""

    def __init__(self, checkpoint: str | Path | None = None, *, router: Router | None = None,
                 device: str | None = "cpu", dtype: str | None = None, settings: GatewaySettings | None = None,
                 http: httpx.Client | None = None) -> None:
        if (checkpoint is None) == (router is None):
            raise ValueError("give one of checkpoint= (a router's folder, a shipped router's name or a hub id) or "
                             "router= (a modelsat.Router)")
        if router is None:
            router = Router.from_pretrained(checkpoint, device=device, dtype=dtype)
        self.router = router
        self.settings = settings or GatewaySettings()
        self._http = http or httpx.Client(timeout=self.settings.httpx_timeout())
        self._lock = threading.Lock()
        self._sync = zoo_syncer(router)
        self.chat = _Chat(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _complete(self, body: dict) -> Completion | Stream:
        with self._lock:
            self._sync()
            p = plan(self.router, body)
        for entry, url, headers, content in requests_to_try(p, self.settings.max_attempts):
            response = None
            try:
                response = self._http.send(self._http.build_request("POST", url, headers=headers, content=content),
                                           stream=True)
                if response.status_code >= 400 or not p.stream:
                    response.read()
                if response.status_code >= 400:
                    if not retryable(response.status_code):
                        raise GatewayError(response.status_code, f"{entry.name!r} refused the request: "
                                           f"{status_error(response.status_code, response.content)}", "upstream_error")
                    p.fail(entry, status_error(response.status_code, response.content))
                elif not p.stream:
                    try:
                        data = check_completion(response.content)
                    except BadAnswer as e:
                        p.fail(entry, str(e))
                    else:
                        return Completion.wrap(annotate(p, entry, data, usage_tokens(data.get("usage"))))
                else:
                    lines = response.iter_lines()
                    first = None
                    for line in lines:   # up to the first chunk: a failure before it is retried
                        first = _sse_data(line)
                        if first is not None:
                            break
                    if first is not None and first is not _DONE:
                        return Stream(p, entry, response, lines, [first])
                    p.fail(entry, "answered with an empty stream")
            except httpx.TimeoutException as e:
                p.fail(entry, f"timed out ({type(e).__name__})", timeout=True)
            except httpx.HTTPError as e:
                p.fail(entry, f"connection error ({type(e).__name__}: {str(e)[:200]})")
            except ValueError:   # a stream's first data line that is not JSON
                p.fail(entry, "answered with a stream whose data is not JSON")
            except GatewayError as e:   # a request refused (4xx), or an error event before the first chunk
                if response is not None:
                    response.close()
                if e.status < 500:
                    raise
                p.fail(entry, e.message)
            if response is not None:
                response.close()
        raise p.exhausted()
