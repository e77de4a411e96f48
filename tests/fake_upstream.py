"""An in-process fake OpenAI-compatible upstream with fault injection, and a uvicorn runner on a free loopback port
(shared by tests/test_gateway.py and tests/test_client.py).

`FakeUpstream(name).mode` picks the behaviour of the next requests:
"ok", "500", "400", "401", "timeout" (answers after `slow` seconds), "malformed" (200 with a body that is not
JSON), "cut" (a stream that breaks after two chunks), "flaky" (every `every`-th request is a 500), and one mode per
kind of upstream fault the gateway must survive (issue 33), listed in FAULTS: "nan" (JSON holding NaN),
"no_choices" (a JSON object without `choices`), "array" (a JSON list), "redirect" (302 with a completion body),
"not_sse" (a JSON answer to a streaming request), "cut_mid_event" (a stream cut inside its third event),
"trickle" (one byte every `drip` seconds), "huge" (an answer of `big` bytes), "429" (with Retry-After: 7),
"error_event" (a stream whose first event is an error), "nan_event" (a stream whose third event holds NaN),
"no_done" (a stream ending without [DONE]), "empty" (200 with no body), "not_utf8" (bytes that are not UTF-8);
"long" streams 1,000 chunks, `delay` seconds apart.
"chaos" answers every `every`-th request with the next fault of FAULTS in turn, the others "ok".
"""
from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

STREAM_WORDS = ["Héllo", " from", " the", " fake", " upstream"]
FAULTS = ["500", "timeout", "malformed", "nan", "no_choices", "array", "redirect", "not_sse", "cut_mid_event",
          "trickle", "huge", "429", "error_event", "nan_event", "no_done", "empty", "not_utf8", "cut"]


def completion(name: str, upstream_model: str) -> dict:
    return {"id": f"chatcmpl-{name}", "object": "chat.completion", "created": 1, "model": upstream_model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f"answer from {name}"}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}


def stream_events(name: str, upstream_model: str) -> list[bytes]:
    """The SSE events the fake sends for a stream, in order (the last is [DONE])."""
    events = []
    for i, word in enumerate(STREAM_WORDS):
        chunk = {"id": f"chatcmpl-{name}", "object": "chat.completion.chunk", "created": 1, "model": upstream_model,
                 "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
        events.append(b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n")
    return events + [b"data: [DONE]\n\n"]


class FakeUpstream:
    """One fake upstream: `mode` as above; `requests` the (body, headers) it received; `delay` seconds between
    stream chunks; `finished` the time.monotonic() at which its last stream ended."""

    def __init__(self, name: str) -> None:
        self.name, self.mode, self.delay, self.slow, self.every = name, "ok", 0.0, 2.0, 10
        self.big = 20 << 20
        self.drip = 0.5                           # "trickle": seconds between two bytes
        self.requests: list[tuple[dict, dict]] = []
        self.count = 0
        self.finished = None
        self.faults: dict[str, int] = {}          # chaos: faults answered, by kind
        self.open = 0                             # answers being sent now
        self.arrivals: list[tuple[float, str]] = []   # (time.monotonic(), the x-request-id header) per request
        self._chaos = itertools.cycle(FAULTS)
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((body, dict(request.headers)))
        self.arrivals.append((time.monotonic(), request.headers.get("x-request-id", "")))
        self.count += 1
        mode = self.mode
        if mode == "flaky":
            mode = "500" if self.count % self.every == 0 else "ok"
        if mode == "chaos":
            mode = next(self._chaos) if self.count % self.every == 0 else "ok"
            if mode != "ok":
                self.faults[mode] = self.faults.get(mode, 0) + 1
        stream = bool(body.get("stream"))
        model = body["model"]
        if mode in ("500", "400", "401"):
            return JSONResponse({"error": {"message": f"{self.name} says {mode}"}}, int(mode))
        if mode == "429":
            return JSONResponse({"error": {"message": "slow down"}}, 429, headers={"retry-after": "7"})
        if mode == "timeout":
            await asyncio.sleep(self.slow)
        if mode == "malformed":
            return Response(b"<html>not json</html>", media_type="application/json")
        if mode == "nan":
            return Response(json.dumps({**completion(self.name, model), "score": float("nan")}).encode(),
                            media_type="application/json")
        if mode == "no_choices":
            return JSONResponse({"id": "x", "object": "chat.completion", "model": model})
        if mode == "array":
            return JSONResponse([completion(self.name, model)])
        if mode == "redirect":
            return JSONResponse(completion(self.name, model), 302, headers={"location": "http://127.0.0.1:9/v1"})
        if mode == "empty":
            return Response(b"", media_type="application/json")
        if mode == "not_utf8":
            return Response(b'{"choices": [], "x": "\xff\xfe"}', media_type="application/json")
        if mode == "not_sse" or (mode == "huge" and not stream):
            data = completion(self.name, model)
            if mode == "huge":
                data["choices"][0]["message"]["content"] = "x" * self.big
            return JSONResponse(data)
        if mode == "trickle":
            raw = (b"".join(stream_events(self.name, model)) if stream
                   else json.dumps(completion(self.name, model)).encode())
            return StreamingResponse(self._trickle(raw), media_type="text/event-stream" if stream
                                     else "application/json")
        if stream:
            return StreamingResponse(self._stream(model, mode), media_type="text/event-stream")
        return JSONResponse(completion(self.name, model))

    async def _trickle(self, raw: bytes):
        self.open += 1
        try:
            for i in range(len(raw)):
                yield raw[i:i + 1]
                await asyncio.sleep(self.drip)
        finally:
            self.open -= 1

    async def _stream(self, upstream_model: str, mode: str = "ok"):
        events = stream_events(self.name, upstream_model)
        if mode == "error_event":
            events = [b'data: {"error": {"message": "overloaded"}}\n\n']
        elif mode == "nan_event":
            events[2] = events[2].replace(b'"finish_reason": null', b'"finish_reason": NaN')
        elif mode == "no_done":
            events = events[:-1]
        elif mode == "long":
            events = events[:1] + [events[1]] * 1000 + events[-1:]
        elif mode == "huge":
            chunk = events[1]
            events = events[:1] + [chunk] * (self.big // len(chunk) + 1) + events[-1:]
        self.open += 1
        try:
            for i, event in enumerate(events):
                if mode == "cut" and i == 2:
                    raise RuntimeError("the fake upstream cuts the stream")   # uvicorn drops the connection
                if mode == "cut_mid_event" and i == 2:
                    yield event[:len(event) // 2]
                    await asyncio.sleep(0.05)
                    raise RuntimeError("the fake upstream cuts the stream inside an event")
                if i == len(events) - 1:
                    self.finished = time.monotonic()   # sending its last event
                elif mode != "huge":
                    await asyncio.sleep(self.delay if i else 0.0)
                yield event
        finally:
            self.open -= 1


class Served:
    """An ASGI app served by uvicorn in a thread on a free 127.0.0.1 port; `url` is its base."""

    def __init__(self, app) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
