"""An in-process fake OpenAI-compatible upstream with fault injection, and a uvicorn runner on a free loopback port
(shared by tests/test_gateway.py and tests/test_client.py).

`FakeUpstream(name).mode` picks the behaviour of the next requests:
"ok", "500", "400", "401", "timeout" (answers after `slow` seconds), "malformed" (200 with a body that is not
JSON), "cut" (a stream that breaks after two chunks), "flaky" (every `every`-th request is a 500).
"""
from __future__ import annotations

import asyncio
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
        self.requests: list[tuple[dict, dict]] = []
        self.count = 0
        self.finished = None
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((body, dict(request.headers)))
        self.count += 1
        mode = self.mode
        if mode == "flaky":
            mode = "500" if self.count % self.every == 0 else "ok"
        if mode in ("500", "400", "401"):
            return JSONResponse({"error": {"message": f"{self.name} says {mode}"}}, int(mode))
        if mode == "timeout":
            await asyncio.sleep(self.slow)
        if mode == "malformed":
            return Response(b"<html>not json</html>", media_type="application/json")
        if body.get("stream"):
            return StreamingResponse(self._stream(body["model"], cut=mode == "cut"), media_type="text/event-stream")
        return JSONResponse(completion(self.name, body["model"]))

    async def _stream(self, upstream_model: str, cut: bool):
        events = stream_events(self.name, upstream_model)
        for i, event in enumerate(events):
            if cut and i == 2:
                raise RuntimeError("the fake upstream cuts the stream")   # uvicorn drops the connection
            if i == len(events) - 1:
                self.finished = time.monotonic()   # sending its last event
            else:
                await asyncio.sleep(self.delay if i else 0.0)
            yield event


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
