"""The OpenAI-compatible gateway: pick a zoo model for a chat request and forward the request to its endpoint.

`modelsat serve` mounts `POST /v1/chat/completions` and `GET /v1/models` (`mount`); `modelsat.Client` does the same
in-process. Everything but the network I/O is shared: `plan` reads the request and ranks the candidates,
`upstream_request` builds each attempt, `annotate` marks the answer, `Plan.exhausted` is the final error.

- `model: "modelsat"` routes among the zoo's models that have an endpoint (`modelsat:cost_weight=0.3`, or the
  extension field `"modelsat": {"cost_weight": 0.3, "models": [...]}`, sets the cost knob and the candidates);
  a zoo model's name is forwarded to that model, unrouted.
- What is routed on: the last user message's text (text parts of a list content, joined), preceded by the first
  system (or developer) message where that is at most SYSTEM_CHARS characters long; a text over the router's
  limit is read as its first third and its end.
- The request goes on unchanged but for `model` (the entry's upstream id) and without the `modelsat` field.
  Retried on the next-ranked candidate, up to `max_attempts` in all: a timeout, a connection error, HTTP 5xx,
  429, 401/403/404 (that candidate's key or model id), a body that is not a JSON object, or a stream that fails
  before its first byte. Other 4xx answers concern the request and are returned as they came. When every attempt
  fails: 504 if all timed out, else 502, with an OpenAI-style error body listing the attempts.
- A stream is passed through byte for byte as it arrives; one that breaks midway ends with an SSE event
  `data: {"error": {...}}` (the openai client raises it) and is not retried.

Why one module: the planning shared by `modelsat serve` and `modelsat.Client` (which cannot
import Starlette) and the server's forwarding live together so the two paths stay one behaviour.
"""
import asyncio
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator
from urllib.parse import quote

import httpx

from modelsat.router import MAX_INSTRUCTION_CHARS, Ranked, Router, RouterError, check_cost_weight, check_text
from modelsat.zoo import ZooEntry

logger = logging.getLogger(__name__)

ROUTE_MODEL = "modelsat"
SYSTEM_CHARS = 1000          # a system prompt up to this long is read with the last user turn
RETRY_STATUSES = {401, 403, 404, 408, 429}   # and every 5xx: the candidate failed, not the request
NOT_JSON = "answered with a body that is not a JSON object"   # an attempt's failure


@dataclass
class GatewaySettings:
    """How the gateway forwards."""
    max_attempts: int = 3          # candidates tried per request, the first included
    timeout: float = 60.0          # seconds to wait for an upstream's answer, and for each chunk of a stream
    connect_timeout: float = 5.0   # seconds to connect to an upstream

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts (--max-attempts) must be an integer >= 1, got {self.max_attempts!r}")
        for name, flag in (("timeout", "--upstream-timeout"), ("connect_timeout", "--connect-timeout")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"{name} ({flag}) must be a number of seconds > 0, got {value!r}")

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)


class GatewayError(Exception):
    """A request the gateway cannot serve: `status` (4xx: the request; 502/504: every upstream attempt failed)."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 attempts: list[dict] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.attempts = status, message, kind, param, attempts

    def body(self) -> dict:
        """The OpenAI-style error body: {"error": {"message", "type", "param", "code", "attempts"?}}."""
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}
        if self.attempts is not None:
            error["attempts"] = self.attempts
        return {"error": error}


@dataclass
class Plan:
    """One chat request, read and ranked: the candidates to try in order, and what the answer will carry."""
    body: dict                     # the request as it will be forwarded (less `model`, set per attempt)
    candidates: list[ZooEntry]     # best first; only models with an endpoint
    routed: bool
    stream: bool
    cost_weight: float | None = None
    ranking: list[dict] = field(default_factory=list)
    cost_unit: str | None = None
    read: str = ""                 # what the router read ("last user message", "system + last user message")
    attempts: list[dict] = field(default_factory=list)   # {"model", "error"} per failed attempt
    timeouts: int = 0

    def fail(self, entry: ZooEntry, error: str, timeout: bool = False) -> None:
        """Record a failed attempt on `entry`."""
        self.attempts.append({"model": entry.name, "error": error})
        self.timeouts += timeout
        logger.warning("upstream %s failed: %s", entry.name, error,
                       extra={"attempt": {"model": entry.name, "error": error, "number": len(self.attempts)}})

    def exhausted(self) -> GatewayError:
        """The error once every attempt failed: 504 where all timed out, else 502."""
        status = 504 if self.timeouts == len(self.attempts) else 502
        names = ", ".join(a["model"] for a in self.attempts)
        return GatewayError(status, f"every upstream attempt failed ({names}): {self.attempts[-1]['error']}",
                            "upstream_error", attempts=self.attempts)


def _fail(message: str, param: str | None = None, status: int = 400) -> GatewayError:
    return GatewayError(status, message, param=param)


def _cost_weight(value: object, where: str) -> float:
    """The router's own check (a number, not a bool; finite, >= 0; an integer too large for a float included),
    and at most 1e6."""
    try:
        weight = check_cost_weight(value)
    except RouterError:
        weight = math.nan
    if not 0 <= weight <= 1e6:
        raise _fail(f"{where} must be a finite number in [0, 1e6], got {str(value)[:40]!r}", "model")
    return weight


def parse_model(model: object) -> tuple[bool, float | None]:
    """(whether `model` asks to route, the cost_weight of a `modelsat:cost_weight=X` suffix)."""
    if not isinstance(model, str) or not model.strip():
        raise _fail("`model` must be a model name: \"modelsat\" to route, or a model of GET /v1/models", "model")
    if model != ROUTE_MODEL and not model.startswith(ROUTE_MODEL + ":"):
        return False, None
    weight = None
    for item in filter(None, model[len(ROUTE_MODEL) + 1:].split(",")):
        key, _, value = item.partition("=")
        if key.strip() != "cost_weight":
            raise _fail(f"model {model[:80]!r}: unknown setting {key.strip()[:40]!r}; the suffix takes "
                        "cost_weight=X (give candidates in the \"modelsat\" field)", "model")
        try:
            weight = _cost_weight(float(value), "cost_weight in `model`")
        except ValueError:
            raise _fail(f"model {model[:80]!r}: cost_weight={value[:40]!r} is not a number", "model") from None
    return True, weight


def _text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, list):   # parts: [{"type": "text", "text": ...}, {"type": "image_url", ...}]
        content = "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else ""


def routing_text(messages: list[dict]) -> tuple[str, str]:
    """(the text the router reads, what it is): the last user message, after a short system message."""
    user = next((t for m in reversed(messages) if m.get("role") == "user" and (t := _text_of(m)).strip()), None)
    if user is None:
        raise _fail("`messages` hold no user message with text to route on; send one, or name a model of "
                    "GET /v1/models instead of \"modelsat\"", "messages")
    system = next((_text_of(m) for m in messages if m.get("role") in ("system", "developer")), "")
    text, read = user, "last user message"
    if system.strip() and len(system) <= SYSTEM_CHARS:
        text, read = f"{system}\n\n{user}", "system message + last user message"
    if len(text) > MAX_INSTRUCTION_CHARS:   # the router's limit: keep its first third and its end
        head = MAX_INSTRUCTION_CHARS // 3
        text, read = text[:head] + "\n...\n" + text[-(MAX_INSTRUCTION_CHARS - head - 5):], read + " (head + tail)"
    try:
        return check_text(text, "the routed text (the last user message)"), read
    except ValueError as e:
        raise _fail(str(e), "messages") from None


def _check_body(body: object) -> tuple[dict, dict]:
    """(the body less the extension field, the extension field), checked."""
    if not isinstance(body, dict):
        raise _fail("the request body must be a JSON object with `model` and `messages`")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise _fail("`messages` must be a non-empty list of objects with a `role`", "messages")
    try:
        json.dumps(body, allow_nan=False)
    except ValueError:   # 1e999 reads as inf; a Python caller may pass nan
        raise _fail("the request holds a number that is not finite (NaN, Infinity or beyond 1e308); send finite "
                    "numbers") from None
    except (TypeError, RecursionError) as e:
        raise _fail(f"the request cannot be sent on as JSON ({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(body.get("stream", False), bool):
        raise _fail(f"`stream` must be true or false, got {str(body['stream'])[:40]!r}", "stream")
    body = dict(body)
    ext = body.pop(ROUTE_MODEL, None)
    if ext is None:
        ext = {}
    if not isinstance(ext, dict) or set(ext) - {"cost_weight", "models"}:
        raise _fail("the \"modelsat\" field must be an object with `cost_weight` and/or `models`, got keys "
                    f"{sorted(ext)[:5] if isinstance(ext, dict) else type(ext).__name__}", ROUTE_MODEL)
    return body, ext


def _entry(router: Router, name: str, param: str) -> ZooEntry:
    if name not in router.zoo:
        raise GatewayError(404, f"model {name[:80]!r} is not in the zoo; use \"modelsat\" to route or one of: "
                           f"{', '.join(with_endpoint(router)) or '(no model has an endpoint)'}",
                           param=param)
    entry = router.zoo.get(name)
    if entry.endpoint is None:
        raise _fail(f"model {name!r} has no endpoint to forward to; add it again with `modelsat zoo add --endpoint "
                    "URL --upstream-model ID`", param)
    return entry


def with_endpoint(router: Router) -> list[str]:
    """The zoo's models that have an endpoint, sorted."""
    return [n for n in router.models if router.zoo.get(n).endpoint is not None]


def _ranked(r: Ranked) -> dict:
    return {"model": r.model, "p_correct": r.p_correct, "cost": r.cost, "utility": r.utility}


def plan(router: Router, body: object) -> Plan:
    """Read a chat request and rank its candidates (`Router.rank`; call it off the event loop, with the zoo
    locked). GatewayError (4xx) for a request that cannot be served."""
    body, ext = _check_body(body)
    routed, weight = parse_model(body.get("model"))
    if not routed:
        if ext:
            raise _fail("the \"modelsat\" field applies to model \"modelsat\" only", ROUTE_MODEL)
        entry = _entry(router, body["model"], "model")
        return Plan(body, [entry], routed=False, stream=body.get("stream", False), cost_unit=router.zoo.cost_unit)
    if "cost_weight" in ext:
        if weight is not None:
            raise _fail("cost_weight is given twice (the `model` suffix and the \"modelsat\" field); give it once",
                        ROUTE_MODEL)
        weight = _cost_weight(ext["cost_weight"], "modelsat.cost_weight")
    names = ext.get("models")
    if names is None:
        names = with_endpoint(router)
        if not names:
            raise _fail("no model of the zoo has an endpoint to forward to; add one with `modelsat zoo add --name N "
                        "--results F --endpoint URL --upstream-model ID` (or POST /models)", "model")
    elif not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) \
            or len(set(names)) != len(names):
        raise _fail("modelsat.models must be a non-empty list of distinct model names", ROUTE_MODEL)
    entries = {n: _entry(router, n, ROUTE_MODEL) for n in names}
    text, read = routing_text(body["messages"])
    try:
        ranked = router.rank(text, list(entries), cost_weight=weight or 0.0)
    except ValueError as e:
        raise _fail(f"could not rank: {e}", "messages") from None
    return Plan(body, [entries[r.model] for r in ranked], routed=True, stream=body.get("stream", False),
                cost_weight=weight or 0.0, ranking=[_ranked(r) for r in ranked], cost_unit=router.zoo.cost_unit,
                read=read)


def upstream_request(entry: ZooEntry, plan: Plan) -> tuple[str, dict, bytes]:
    """(URL, headers, body) of the attempt on `entry`; the API key is read from its variable now.
    GatewayError (502) where that variable is not set."""
    headers = {"content-type": "application/json", "accept": "text/event-stream" if plan.stream else
               "application/json"}
    if entry.api_key_env is not None:
        key = os.environ.get(entry.api_key_env)
        if not key:
            raise GatewayError(502, f"the environment variable {entry.api_key_env} (API key of {entry.name!r}) is "
                               "not set in the gateway's environment", "upstream_error")
        headers["authorization"] = f"Bearer {key}"
    body = json.dumps({**plan.body, "model": entry.upstream_model}, allow_nan=False).encode()
    return entry.endpoint.rstrip("/") + "/chat/completions", headers, body


def requests_to_try(plan: Plan, max_attempts: int) -> Iterator[tuple[ZooEntry, str, dict, bytes]]:
    """(entry, URL, headers, body) of each candidate to try, best first, at most `max_attempts`; a candidate whose
    request cannot be built (its API key variable is not set) is recorded as a failed attempt and skipped."""
    for entry in plan.candidates[:max_attempts]:
        try:
            url, headers, content = upstream_request(entry, plan)
        except GatewayError as e:
            plan.fail(entry, e.message)
            continue
        yield entry, url, headers, content


def json_object(response: httpx.Response) -> dict | None:
    """An upstream's (read) answer as a JSON object; None where its body is not one (that attempt failed)."""
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None



def retryable(status: int) -> bool:
    """Whether an upstream's HTTP status means that candidate failed (try the next), not the request."""
    return status >= 500 or status in RETRY_STATUSES


def status_error(response: httpx.Response) -> str:
    """A short description of an upstream's failed answer (its status and the start of its body)."""
    text = response.content[:200].decode("utf-8", "replace") if response.is_stream_consumed else ""
    return f"HTTP {response.status_code}" + (f": {' '.join(text.split())}" if text else "")


def headers_for(entry: ZooEntry) -> dict:
    """The response headers naming the model that answered (percent-encoded where not ASCII)."""
    return {"x-modelsat-model": quote(entry.name, safe=" !#$&'()*+,/:;=?@[]~"),
            "x-modelsat-upstream-model": quote(entry.upstream_model or "", safe=" !#$&'()*+,/:;=?@[]~")}


def annotate(plan: Plan, entry: ZooEntry, data: dict) -> dict:
    """The upstream's answer with `model` = the zoo name and the extension field `modelsat`: the model, the
    ranking, its cost (in the zoo's unit) and, where the entry has prices and the answer counts tokens, its USD."""
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    tokens = (usage.get("prompt_tokens"), usage.get("completion_tokens"))
    usd = None
    if entry.price_in is not None and all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        usd = (tokens[0] * entry.price_in + tokens[1] * entry.price_out) / 1e6
    cost = entry.cost if entry.cost is not None else entry.params_b
    return {**data, "model": entry.name, ROUTE_MODEL: {
        "model": entry.name, "upstream_model": entry.upstream_model, "routed": plan.routed,
        "cost_weight": plan.cost_weight, "cost": cost, "cost_unit": plan.cost_unit, "usd": usd, "read": plan.read,
        "ranking": plan.ranking, "attempts": plan.attempts}}


def stream_error_event(entry: ZooEntry, error: BaseException) -> bytes:
    """The SSE event ending a stream that broke midway (the openai client raises it as an APIError)."""
    message = f"the stream from {entry.name!r} broke midway ({type(error).__name__}); it was not retried"
    return b"data: " + json.dumps({"error": {"message": message, "type": "upstream_error", "code": 502}}).encode() \
        + b"\n\n"


def zoo_syncer(router: Router, every: float = 1.0, log: Callable[[str], None] | None = None) -> Callable[[], None]:
    """A function that re-reads the zoo's folder (`Router.sync_zoo`) at most once per `every` seconds; a zoo that
    does not load keeps the previous one (reported once per distinct error through `log`). Call it with the zoo
    locked."""
    state = {"at": -math.inf, "error": None}
    guard = threading.Lock()

    def sync() -> None:
        now = time.monotonic()
        with guard:
            if now - state["at"] < every:
                return
            state["at"] = now
        try:
            router.sync_zoo()
            state["error"] = None
        except (ValueError, OSError) as e:   # ZooError, or an entry on another aptitude test
            if log is not None and str(e) != state["error"]:
                log(f"the zoo folder was not re-read: {e}; serving the zoo as it was")
            state["error"] = str(e)
    return sync


# ----- the async forwarding of `modelsat serve` ---------------------------------------------------------------------
def _log_answer(plan: Plan, entry: ZooEntry) -> None:
    """At DEBUG: which candidate answers a chat request, after how many failed attempts."""
    logger.debug("%s request answered by %s (%s, %d failed attempts before)", "routed" if plan.routed else "direct",
                 entry.name, "stream" if plan.stream else "json", len(plan.attempts),
                 extra={"answer": {"model": entry.name, "routed": plan.routed, "stream": plan.stream,
                                   "failed_attempts": len(plan.attempts)}})


async def forward(plan: Plan, client: httpx.AsyncClient, settings: GatewaySettings):
    """Try `plan`'s candidates in order (at most `settings.max_attempts`) and answer with the first that works:
    a JSONResponse, a StreamingResponse passed through as it arrives, or an upstream's 4xx as it came.
    GatewayError (502/504) when all fail."""
    from starlette.background import BackgroundTask
    from starlette.responses import JSONResponse, Response, StreamingResponse

    for entry, url, headers, content in requests_to_try(plan, settings.max_attempts):
        response = None
        try:
            response = await client.send(client.build_request("POST", url, headers=headers, content=content),
                                         stream=True)
            if response.status_code >= 400 or not plan.stream:
                await response.aread()
            if response.status_code >= 400:
                if not retryable(response.status_code):   # the request's fault: the client should see it
                    return Response(response.content, response.status_code, headers=headers_for(entry),
                                    media_type=response.headers.get("content-type"))
                plan.fail(entry, status_error(response))
            elif not plan.stream:
                data = json_object(response)
                if data is not None:
                    _log_answer(plan, entry)
                    return JSONResponse(annotate(plan, entry, data), headers=headers_for(entry))
                plan.fail(entry, NOT_JSON)
            else:
                chunks = response.aiter_bytes()
                first = await anext(chunks, b"")
                if first:
                    _log_answer(plan, entry)
                    return StreamingResponse(_relay(entry, first, chunks), headers=headers_for(entry),
                                             media_type=response.headers.get("content-type", "text/event-stream"),
                                             background=BackgroundTask(response.aclose))
                plan.fail(entry, "answered with an empty stream")
        except httpx.TimeoutException as e:
            plan.fail(entry, f"timed out ({type(e).__name__})", timeout=True)
        except httpx.HTTPError as e:
            plan.fail(entry, f"connection error ({type(e).__name__}: {str(e)[:200]})")
        if response is not None:
            await response.aclose()
    raise plan.exhausted()


async def _relay(entry: ZooEntry, first: bytes, chunks):
    """The stream's chunks as they arrive; a break midway ends it with an error event."""
    yield first
    try:
        async for chunk in chunks:
            yield chunk
    except httpx.HTTPError as e:
        yield stream_error_event(entry, e)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def mount(app, router: Router, lock: threading.Lock, settings: GatewaySettings, sync: Callable[[], None]):
    """(This module does not use `from __future__ import annotations`: FastAPI reads the endpoints' annotations,
    and `Request` is imported here, so that modelsat.Client does not need Starlette.)
Add `POST /v1/chat/completions` and `GET /v1/models` to the FastAPI `app`. Reading the zoo and ranking run
    in a worker thread holding `lock` (so the event loop, health checks and streams in flight never wait on a
    ranking); forwarding uses one shared httpx.AsyncClient per event loop. Returns the coroutine function that
    closes it (call it at shutdown)."""
    import anyio
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    shared: dict = {}

    def http() -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if shared.get("loop") is not loop:   # a client's connections belong to the loop that made them
            shared.update(loop=loop, client=httpx.AsyncClient(timeout=settings.httpx_timeout()))
        return shared["client"]

    def locked_plan(body: object) -> Plan:
        with lock:
            sync()
            return plan(router, body)

    def listing() -> list[dict]:
        with lock:
            sync()
            return [{"id": n, "object": "model", "owned_by": "modelsat zoo",
                     "upstream_model": router.zoo.get(n).upstream_model} for n in with_endpoint(router)]

    @app.post("/v1/chat/completions", tags=["gateway"])
    async def chat_completions(request: Request):
        """An OpenAI chat completion, routed (`model: "modelsat"`) or forwarded to the named zoo model."""
        try:
            try:
                body = json.loads(await request.body(), parse_constant=_no_constant)
            except (ValueError, RecursionError) as e:
                raise _fail(f"the request body is not valid JSON ({str(e)[:200]}); send a JSON object in UTF-8") \
                    from None
            return await forward(await anyio.to_thread.run_sync(locked_plan, body), http(), settings)
        except GatewayError as e:
            return JSONResponse(e.body(), e.status)

    @app.get("/v1/models", tags=["gateway"])
    async def v1_models() -> dict:
        """The models the gateway answers for: "modelsat" (routed) and every zoo model with an endpoint."""
        models = await anyio.to_thread.run_sync(listing)
        return {"object": "list", "data": [{"id": ROUTE_MODEL, "object": "model", "owned_by": "modelsat"}, *models]}

    async def aclose() -> None:
        if "client" in shared:
            await shared.pop("client").aclose()
    return aclose
