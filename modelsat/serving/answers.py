"""Checking an upstream's answer before it is relayed (issue 33, kind 4): whatever the gateway reads out of an
upstream is input like any other.

- A JSON answer must be strict JSON (no NaN or Infinity, UTF-8), within the size limit, an object whose `choices`
  is a list of objects (`check_completion`). Anything else is a `BadAnswer`: that candidate failed.
- A stream must be `text/event-stream`; it is cut into whole SSE events (`EventSplitter`: an event ends at a blank
  line, at most MAX_EVENT_BYTES long) and each `data:` event is parsed as strict JSON: a chunk object with a
  `choices` list, an `{"error": ...}` event, or `[DONE]` (`read_event`). `StreamText` gathers the reply of choice 0
  (text and tool calls) and the usage, and rewrites each chunk's `id` and `model` as the gateway's.
- `retry_after` reads a Retry-After header (seconds or an HTTP date), bounded; anything else is dropped.

Shared by `modelsat serve` and `modelsat.Client`; no Starlette here.
"""
from __future__ import annotations

import email.utils
import json
import math
import re
import time
from dataclasses import dataclass, field

MAX_EVENT_BYTES = 1 << 20        # one SSE event, at most
MAX_RETRY_AFTER = 3600.0         # seconds; a longer Retry-After is capped
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class BadAnswer(Exception):
    """An upstream answer that cannot be relayed; `reason` is a short label (for metrics), the message says why."""

    def __init__(self, message: str, reason: str = "invalid_answer") -> None:
        super().__init__(message)
        self.reason = reason


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def strict_json(data: bytes, what: str = "the answer") -> object:
    """`data` parsed as strict JSON (UTF-8; NaN, Infinity and nesting beyond Python's limit refused); BadAnswer."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadAnswer(f"{what} is not strict JSON ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None


def check_completion(data: bytes) -> dict:
    """An upstream's JSON body as a chat completion: an object with a `choices` list of objects; BadAnswer."""
    value = strict_json(data)
    if not isinstance(value, dict):
        raise BadAnswer(f"the answer is a JSON {type(value).__name__}, not an object")
    choices = value.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise BadAnswer("the answer has no `choices` list of objects: not a chat completion")
    return value


def usage_tokens(usage: object) -> tuple[int, int] | None:
    """(prompt, completion) tokens of an answer's `usage` where both are integers in [0, 1e9]; else None."""
    if not isinstance(usage, dict):
        return None
    tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= 1_000_000_000 for t in tokens):
        return tokens
    return None


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds, or an HTTP date), capped at MAX_RETRY_AFTER; None
    where absent or unreadable."""
    if not value or len(value) > 100:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, when - time.time()), MAX_RETRY_AFTER) if math.isfinite(when) else None


class EventSplitter:
    """Cuts a byte stream into whole SSE events (each ending with its blank line); BadAnswer where one event grows
    past MAX_EVENT_BYTES."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        events = []
        while True:
            end = _EVENT_END.search(self._buffer)
            if end is None:
                break
            events.append(self._buffer[:end.end()])
            self._buffer = self._buffer[end.end():]
        if len(self._buffer) > MAX_EVENT_BYTES:
            raise BadAnswer(f"a stream event is longer than {MAX_EVENT_BYTES} bytes", "too_large")
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet complete."""
        return self._buffer


@dataclass
class Event:
    """One SSE event read: `kind` "data" (a chunk, `data` its object), "error" (`data` the upstream's error
    object), "done" ([DONE]) or "other" (comments, keep-alives: `raw` relayed as it came)."""
    kind: str
    raw: bytes
    data: dict | None = None


def read_event(raw: bytes) -> Event:
    """One whole SSE event, checked (BadAnswer for data that is not strict JSON, or a chunk without `choices`)."""
    lines = re.split(rb"\r\n|\n|\r", raw)
    data = [line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:")]
    if not data:
        return Event("other", raw)
    text = b"\n".join(data)
    if text.strip() == b"[DONE]":
        return Event("done", raw)
    value = strict_json(text, "a stream event")
    if not isinstance(value, dict):
        raise BadAnswer(f"a stream event holds a JSON {type(value).__name__}, not an object")
    if "error" in value:
        return Event("error", raw, value)
    if not isinstance(value.get("choices"), list):
        raise BadAnswer("a stream event has no `choices` list: not a chat completion chunk")
    return Event("data", raw, value)


@dataclass
class StreamText:
    """What a stream said in choice 0 (text, tool calls) and its usage, gathered chunk by chunk (text kept up to
    `limit` characters: past it, `complete` is False)."""
    limit: int = 200_000
    text: str = ""
    tool_calls: dict[int, dict] = field(default_factory=dict)
    usage: tuple[int, int] | None = None
    complete: bool = True

    def add(self, chunk: dict) -> None:
        self.usage = usage_tokens(chunk.get("usage")) or self.usage
        for choice in chunk["choices"]:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            if isinstance(delta.get("content"), str):
                self.text += delta["content"]
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
                    continue
                slot = self.tool_calls.setdefault(call.get("index", 0) if isinstance(call.get("index"), int)
                                                  else 0, {"name": "", "arguments": ""})
                for key in ("name", "arguments"):
                    if isinstance(call["function"].get(key), str):
                        slot[key] += call["function"][key]
        if len(self.text) > self.limit:
            self.text, self.complete = self.text[:self.limit], False

    def message(self) -> dict:
        """The reply as an assistant message (for the conversation's key)."""
        calls = [{"function": self.tool_calls[i]} for i in sorted(self.tool_calls)]
        return {"role": "assistant", "content": self.text, **({"tool_calls": calls} if calls else {})}


def rewrite_chunk(chunk: dict, answer_id: str, model: str) -> bytes:
    """A chunk as the gateway relays it: `id` the gateway's answer id, `model` the zoo name; one SSE event."""
    return b"data: " + json.dumps({**chunk, "id": answer_id, "model": model}, ensure_ascii=False,
                                  allow_nan=False).encode() + b"\n\n"


def error_event(message: str, code: int = 502, kind: str = "upstream_error") -> bytes:
    """A whole SSE event carrying an error (the openai client raises it as an APIError)."""
    return b"data: " + json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode() + b"\n\n"
