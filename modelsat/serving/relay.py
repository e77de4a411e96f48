"""Relaying an upstream's stream to the client (issue 33, kind 5), once its first chunk has been checked.

Events go out whole, one by one, each checked (`answers.read_event`) and each chunk's `id` and `model` set to the
gateway's. A break, a bad event, the size limit, the deadline or a shutdown ends the stream with one whole error
event after the last complete one (`data: {"error": ...}`, which the openai client raises as an APIError); a client
that disconnects stops the reading of the upstream at once. A stream that ends with [DONE] is reported to
`Forwarding.on_answer` (metrics, the answer id, the conversation).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import httpx
from starlette.responses import Response

from modelsat.serving.answers import BadAnswer, EventSplitter, StreamText, error_event, read_event, rewrite_chunk
from modelsat.serving.plan import Plan, headers_for
from modelsat.zoo import ZooEntry

if TYPE_CHECKING:
    from modelsat.serving.upstream import Forwarding


class Relay(Response):
    """An ASGI response relaying an upstream's stream event by event (see the module's docstring)."""

    def __init__(self, plan: Plan, entry: ZooEntry, response: httpx.Response, chunks, splitter: EventSplitter,
                 events: list, size: int, fwd: "Forwarding", deadline: float, latency: float) -> None:
        self.plan, self.entry, self.response, self.chunks, self.splitter = plan, entry, response, chunks, splitter
        self.events, self.size, self.fwd, self.deadline, self.latency = events, size, fwd, deadline, latency
        self.text = StreamText()
        self.status_code, self.background = 200, None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                            *((k.encode(), v.encode()) for k, v in headers_for(entry).items())]

    async def __call__(self, scope, receive, send) -> None:
        left = {"client": False}
        complete = False
        try:
            async with anyio.create_task_group() as group:
                async def watch() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    left["client"] = True
                    group.cancel_scope.cancel()    # the client left: stop reading the upstream now
                group.start_soon(watch)
                await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
                error = await self._pump(send)
                complete = error is None
                if error is not None:
                    await send({"type": "http.response.body", "body": error_event(
                        f"the stream from {self.entry.name!r} {error}; it was not retried"), "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.response.aclose()
                if complete and self.fwd.on_answer is not None and self.text.complete:
                    await self.fwd.on_answer(self.plan, self.entry, self.text.message(), self.text.usage,
                                             self.latency)

    async def _send_event(self, send, event) -> bool:
        """Send one checked event; True once the stream is done."""
        if event.kind == "data":
            self.text.add(event.data)
            await send({"type": "http.response.body", "more_body": True,
                        "body": rewrite_chunk(event.data, self.plan.answer_id, self.entry.name)})
        elif event.kind == "done":
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
            return True
        else:
            await send({"type": "http.response.body", "body": event.raw, "more_body": True})
        return False

    async def _pump(self, send) -> str | None:
        """Relay the events; None when the stream ended with [DONE], else what went wrong."""
        for event in self.events:
            await self._send_event(send, event)
        limit = self.fwd.settings.max_answer_bytes
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                return f"passed the request's deadline of {self.fwd.settings.deadline:g} s"
            raw, broke = None, None
            with self.fwd.lifecycle.guard() as guard, anyio.move_on_after(left) as timer:
                try:
                    raw = await anext(self.chunks, None)
                except httpx.HTTPError as e:
                    broke = f"broke midway ({type(e).__name__})"
            if guard.cancelled_caught:
                return "was cut: the gateway is shutting down"
            if timer.cancelled_caught:
                return f"passed the request's deadline of {self.fwd.settings.deadline:g} s"
            if broke:
                return broke
            if raw is None:
                return "broke midway (it ended without [DONE]" + (
                    ", in the middle of an event)" if self.splitter.pending.strip() else ")")
            self.size += len(raw)
            if self.size > limit:
                return f"broke midway (over the limit of {limit} bytes)"
            try:
                for event in map(read_event, self.splitter.feed(raw)):
                    if event.kind == "error":
                        return f"broke midway (the upstream sent an error: {str(event.data['error'])[:200]})"
                    if await self._send_event(send, event):
                        return None
            except BadAnswer as e:
                return f"broke midway ({e})"
