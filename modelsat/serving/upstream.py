"""Forwarding a planned chat request to its upstreams, as `modelsat serve` does (issue 33).

- **Pools.** One httpx.AsyncClient per upstream (scheme, host and port), each with at most
  `GatewaySettings.upstream_connections` connections: a slow provider fills its own pool, never another's. Waiting
  for a free connection is bounded (`connect_timeout`); past it that candidate fails and the next is tried.
- **Deadline.** Each request has one deadline (`GatewaySettings.deadline` from when it was read): every attempt,
  from connecting to the answer's last byte, streams included. A candidate still failing at it ends the request
  (504 where every attempt timed out); a stream still running at it ends with an error event.
- **Checks.** An answer is relayed only once checked (`answers.py`): a JSON answer whole, strict and within
  `max_answer_bytes`; a stream event by event. A candidate whose answer fails a check failed: the next is tried.
  A 4xx other than 401/403/404/408/429 concerns the request and is passed on (its body where it is a strict JSON
  object, else wrapped in an error body); 429s come back as 429 with the shortest Retry-After where every
  attempt was rate-limited; 1xx/3xx count as failures (redirects are not followed).
- **Streams** (`relay.Relay`) are relayed whole event by event, each chunk's `id` and `model` set to the gateway's. A
  break, a bad event, the size limit, the deadline or a shutdown ends the stream with one whole error event after
  the last complete one. A client that disconnects cancels the upstream call at once, and no fallback starts.
- **Shutdown.** `Lifecycle.begin_shutdown` (called on SIGTERM) cancels every wait on an upstream: requests not
  answered yet get a 503, streams end with an error event, so the server exits within seconds.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import urlsplit

import anyio
import httpx
from starlette.responses import JSONResponse, Response

from modelsat.serving.answers import (BadAnswer, EventSplitter, check_completion, read_event, retry_after, strict_json,
                                      usage_tokens)
from modelsat.serving.errors import GatewayError
from modelsat.serving.plan import GatewaySettings, Plan, annotate, headers_for, requests_to_try, retryable, status_error
from modelsat.serving.relay import Relay
from modelsat.zoo import ZooEntry

ERROR_BODY_BYTES = 64 << 10    # an upstream's error answer is read up to this


class Upstreams:
    """The upstreams' connection pools, one per (scheme, host, port), made for the running event loop."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._clients: dict[tuple[str, str], httpx.AsyncClient] = {}
        self._loop = None

    def client(self, url: str) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:     # a client's connections belong to the loop that made them
            self._clients, self._loop = {}, loop
        key = urlsplit(url)[:2]
        if key not in self._clients:
            s = self.settings
            self._clients[key] = httpx.AsyncClient(
                timeout=httpx.Timeout(s.timeout, connect=s.connect_timeout, pool=s.connect_timeout),
                limits=httpx.Limits(max_connections=s.upstream_connections,
                                    max_keepalive_connections=min(s.upstream_connections, 32)))
        return self._clients[key]

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


class Lifecycle:
    """Whether the server is shutting down, and the waits on upstreams to cancel when it does."""

    def __init__(self) -> None:
        self.stopping = False
        self._scopes: set[anyio.CancelScope] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextlib.contextmanager
    def guard(self):
        """A cancel scope that `begin_shutdown` cancels (check `.cancelled_caught` after it)."""
        self._loop = asyncio.get_running_loop()
        with anyio.CancelScope() as scope:
            if self.stopping:
                scope.cancel()
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)

    def begin_shutdown(self) -> None:
        """Cancel every wait on an upstream (safe from a signal handler or another thread)."""
        self.stopping = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(lambda: [s.cancel() for s in list(self._scopes)])


@dataclass
class Forwarding:
    """What forwarding needs besides the plan: settings, pools, lifecycle, how to rank a sticky plan's other
    candidates, and what to call with each outcome."""
    settings: GatewaySettings
    upstreams: Upstreams
    lifecycle: Lifecycle
    rank_rest: Callable[[Plan], Awaitable[None]] | None = None
    on_failure: Callable[[ZooEntry, str], None] = lambda entry, reason: None
    on_answer: Callable[[Plan, ZooEntry, dict | None, tuple[int, int] | None, float], Awaitable[None]] | None = None


def _shutting_down() -> GatewayError:
    return GatewayError(503, "the gateway is shutting down; send the request again", "server_error",
                        headers={"retry-after": "1"})


async def _read(response: httpx.Response, limit: int) -> bytes:
    """The body, decoded, up to `limit` bytes (BadAnswer "too_large" past it; a Content-Length over it at once)."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise BadAnswer(f"the answer is {int(length)} bytes, over the limit of {limit}", "too_large")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise BadAnswer(f"the answer is over the limit of {limit} bytes", "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def _passed_on(entry: ZooEntry, response: httpx.Response) -> Response:
    """An upstream's 4xx about the request, as the client gets it: its body where that is a strict JSON object,
    else an error body quoting it."""
    try:
        content = await _read(response, ERROR_BODY_BYTES)
        body = strict_json(content)
    except BadAnswer:
        body, content = None, b""
    if not isinstance(body, dict):
        body = {"error": {"message": f"{entry.name!r} refused the request: {status_error(response.status_code, content)}",
                          "type": "invalid_request_error", "param": None, "code": response.status_code}}
    return JSONResponse(body, response.status_code, headers=headers_for(entry))


async def _first_events(response: httpx.Response, chunks, splitter: EventSplitter, limit: int) -> tuple[list, int]:
    """Read a stream up to its first chunk event: (the events so far, bytes read). BadAnswer where it is empty,
    ends, carries an error, or fails a check before that."""
    events, size = [], 0
    while True:
        raw = await anext(chunks, None)
        if raw is None:
            raise BadAnswer("the stream ended before its first event" if not splitter.pending else
                            "the stream ended in the middle of its first event")
        size += len(raw)
        if size > limit:
            raise BadAnswer(f"the stream is over the limit of {limit} bytes", "too_large")
        for event in map(read_event, splitter.feed(raw)):
            if event.kind == "error":
                raise BadAnswer(f"the stream began with an error event: {str(event.data['error'])[:200]}",
                                "upstream_error")
            if event.kind == "done":
                raise BadAnswer("the stream ended ([DONE]) before any chunk")
            events.append(event)
            if event.kind == "data":
                return events, size


async def forward(plan: Plan, fwd: Forwarding, via: str = "", request_id: str = ""):
    """Try `plan`'s candidates in order (at most `max_attempts`, within the deadline) and answer with the first that
    works: a JSONResponse, a `Relay` (stream), or an upstream's 4xx about the request. Each attempt carries
    `x-modelsat-via` (loop detection) and the request's `x-request-id`. GatewayError when all fail (502/504/429) or
    the gateway is shutting down (503)."""
    settings = fwd.settings
    deadline = plan.started + settings.deadline
    extra = {"x-modelsat-via": via, **({"x-request-id": request_id} if request_id else {})}
    for entry, url, headers, content in requests_to_try(plan, settings.max_attempts, extra):
        left = deadline - time.monotonic()
        if left <= 0:
            plan.fail(entry, f"not tried: the request's deadline of {settings.deadline:g} s had passed", timeout=True)
            break
        response, handed, reason = None, False, None
        start = time.perf_counter()
        client = fwd.upstreams.client(url)
        try:
            with fwd.lifecycle.guard() as guard, anyio.fail_after(left):
                response = await client.send(client.build_request("POST", url, headers=headers, content=content),
                                             stream=True)
                status = response.status_code
                if 400 <= status < 500 and not retryable(status):   # the request's fault: the client should see it
                    return await _passed_on(entry, response)
                if retryable(status):
                    body = await _read(response, ERROR_BODY_BYTES) if status >= 400 else b""
                    wait = retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
                    where = f" to {response.headers.get('location', '')[:100]!r} (not followed)" \
                        if 300 <= status < 400 else ""
                    reason = "rate_limited" if status == 429 else f"http_{status // 100}xx"
                    plan.fail(entry, status_error(status, body) + where, retry_after=wait, rate_limited=status == 429)
                elif not plan.stream:
                    data = check_completion(await _read(response, settings.max_answer_bytes))
                    tokens = usage_tokens(data.get("usage"))
                    plan.upstream_ms = round(1e3 * (time.perf_counter() - start), 2)
                    if fwd.on_answer is not None:
                        await fwd.on_answer(plan, entry, (data.get("choices") or [{}])[0].get("message"), tokens,
                                            time.perf_counter() - start)
                    plan.elapsed_ms = round(1e3 * (time.monotonic() - plan.started), 2)
                    return JSONResponse(annotate(plan, entry, data, tokens), headers=headers_for(entry))
                else:
                    kind = response.headers.get("content-type", "")
                    if not kind.startswith("text/event-stream"):
                        raise BadAnswer(f"answered a streaming request with content type {kind[:60]!r}, not "
                                        "text/event-stream")
                    chunks, splitter = response.aiter_bytes(), EventSplitter()
                    events, size = await _first_events(response, chunks, splitter, settings.max_answer_bytes)
                    plan.upstream_ms = round(1e3 * (time.perf_counter() - start), 2)
                    plan.elapsed_ms = round(1e3 * (time.monotonic() - plan.started), 2)
                    handed = True
                    return Relay(plan, entry, response, chunks, splitter, events, size, fwd, deadline,
                                 time.perf_counter() - start)
            if guard.cancelled_caught:
                raise _shutting_down()
        except TimeoutError:
            reason = "deadline"
            plan.fail(entry, f"the request's deadline of {settings.deadline:g} s passed", timeout=True)
        except httpx.PoolTimeout:
            reason = "pool_full"
            plan.fail(entry, f"no free connection to this upstream within {settings.connect_timeout:g} s "
                      f"({settings.upstream_connections} in use)", timeout=True)
        except httpx.TimeoutException as e:
            reason = "timeout"
            plan.fail(entry, f"timed out ({type(e).__name__})", timeout=True)
        except httpx.HTTPError as e:
            reason = "connection"
            plan.fail(entry, f"connection error ({type(e).__name__}: {str(e)[:200]})")
        except BadAnswer as e:
            reason = e.reason
            plan.fail(entry, str(e))
        finally:
            if response is not None and not handed:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        if fwd.lifecycle.stopping:
            raise _shutting_down()
        if reason is not None:
            fwd.on_failure(entry, reason)
        if plan.sticky and plan.unranked and fwd.rank_rest is not None and deadline > time.monotonic():
            with anyio.move_on_after(deadline - time.monotonic()):
                await fwd.rank_rest(plan)      # the conversation's model failed: rank the others now
    raise plan.exhausted()
