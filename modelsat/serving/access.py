"""The outermost layer of `modelsat serve` (a plain ASGI middleware, so that streams and client disconnects pass
through untouched): every request gets an id, a bounded body, a JSON access log line, and a JSON 500 where
something unexpected fails.

- Request id: the client's `x-request-id` where it is 1-64 characters of [A-Za-z0-9._-], else a new one; sent
  back as the `x-request-id` header, put in the access log line and in the gateway's routing log line
  (`REQUEST_ID`, a context variable). The `x-modelsat-worker` header names the process that answered.
- Body: at most `max_body` bytes (413 otherwise, also for a chunked body without Content-Length), read here and
  handed on whole; after it, the app's `receive` reports the client's disconnect as it happens.
- Access log: logger "modelsat.access" at INFO, one record per request with the fields method, path, status,
  duration_ms, bytes_out, client and request_id (`--log-json` writes them as one JSON object per line).
- An exception the app did not answer is logged and answered with a JSON 500 where no response has started; the
  connection stays open.
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
import uuid

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("modelsat_request_id", default="")
WORKER = str(os.getpid()).encode()     # the process that answered (`x-modelsat-worker`), as in the log lines
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
access_log = logging.getLogger("modelsat.access")
log = logging.getLogger(__name__)


def _json(status: int, body: dict, request_id: str) -> tuple[dict, dict]:
    data = json.dumps(body).encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                         (b"x-request-id", request_id.encode())]},
            {"type": "http.response.body", "body": data, "more_body": False})


class AccessLayer:
    """Wraps an ASGI app (see the module's docstring)."""

    def __init__(self, app, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _ID.fullmatch(given) else uuid.uuid4().hex
        REQUEST_ID.set(request_id)
        start = time.perf_counter()
        state = {"status": None, "bytes": 0}

        async def send_on(message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode()),
                                                  (b"x-modelsat-worker", WORKER)]}
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            body = await self._body(scope, receive)
            if body is None:          # the client left while sending its body
                state["status"] = 499
                return
            if isinstance(body, int):
                for message in _json(413, {"detail": f"request body over {self.max_body} bytes"}, request_id):
                    await send_on(message)
                return
            handed = False

            async def replay():
                nonlocal handed
                if not handed:
                    handed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()
            await self.app(scope, replay, send_on)
        except Exception as e:
            log.exception("internal error answering %s %s", scope.get("method"), scope.get("path"))
            if state["status"] is None:
                for message in _json(500, {"detail": f"internal error: {type(e).__name__}"}, request_id):
                    await send_on(message)
        finally:
            client = scope.get("client")
            access_log.info("%s %s %s %.1f ms", scope.get("method"), scope.get("path"), state["status"],
                            1e3 * (time.perf_counter() - start),
                            extra={"request_id": request_id, "access": {
                                "method": scope.get("method"), "path": scope.get("path"), "status": state["status"],
                                "duration_ms": round(1e3 * (time.perf_counter() - start), 2),
                                "bytes_out": state["bytes"], "client": client[0] if client else None,
                                "worker": os.getpid()}})

    async def _body(self, scope, receive) -> bytes | int | None:
        """The whole body; the size where over the limit; None where the client disconnected."""
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return self.max_body + 1
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return size
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
