"""A chat request as the gateway reads it: its `model` (route, or a zoo name), the `modelsat` extension field, and
the text the router reads. Shared by `modelsat serve` and `modelsat.Client`; GatewayError (400 naming the field)
for what cannot be read.

- `model: "modelsat"` routes (`modelsat:cost_weight=0.3`, or the extension field `"modelsat": {"cost_weight": 0.3,
  "models": [...], "conversation": "ID"}`); any other name is a zoo model's, compared without surrounding spaces.
- What is routed on: the last user message's text (text parts joined), after the first system (or developer)
  message where that is at most SYSTEM_CHARS characters long; a text over the router's limit is read as its first
  third and its end.
"""
from __future__ import annotations

import json
import math

from modelsat.router import MAX_INSTRUCTION_CHARS, RouterError, check_cost_weight, check_text
from modelsat.serving.conversations import MAX_CONVERSATION_ID
from modelsat.serving.errors import bad_request

ROUTE_MODEL = "modelsat"
SYSTEM_CHARS = 1000          # a system prompt up to this long is read with the last user turn
EXTENSION_KEYS = {"cost_weight", "models", "conversation"}


def cost_weight(value: object, where: str) -> float:
    """The router's own check (a number, not a bool; finite, >= 0; an integer too large for a float included),
    and at most 1e6."""
    try:
        weight = check_cost_weight(value)
    except RouterError:
        weight = math.nan
    if not 0 <= weight <= 1e6:
        raise bad_request(f"{where} must be a finite number in [0, 1e6], got {str(value)[:40]!r}", "model")
    return weight


def parse_model(model: object) -> tuple[bool, float | None]:
    """(whether `model` asks to route, the cost_weight of a `modelsat:cost_weight=X` suffix)."""
    if not isinstance(model, str) or not model.strip():
        raise bad_request("`model` must be a model name: \"modelsat\" to route, or a model of GET /v1/models", "model")
    model = model.strip()
    if model != ROUTE_MODEL and not model.startswith(ROUTE_MODEL + ":"):
        return False, None
    weight = None
    for item in filter(None, model[len(ROUTE_MODEL) + 1:].split(",")):
        key, _, value = item.partition("=")
        if key.strip() != "cost_weight":
            raise bad_request(f"model {model[:80]!r}: unknown setting {key.strip()[:40]!r}; the suffix takes "
                              "cost_weight=X (give candidates in the \"modelsat\" field)", "model")
        try:
            weight = cost_weight(float(value), "cost_weight in `model`")
        except ValueError:
            raise bad_request(f"model {model[:80]!r}: cost_weight={value[:40]!r} is not a number", "model") from None
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
        raise bad_request("`messages` hold no user message with text to route on; send one, or name a model of "
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
        raise bad_request(str(e), "messages") from None


def check_body(body: object) -> tuple[dict, dict]:
    """(the body less the extension field, the extension field), checked."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object with `model` and `messages`")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise bad_request("`messages` must be a non-empty list of objects with a `role`", "messages")
    try:
        json.dumps(body, allow_nan=False)
    except ValueError:   # 1e999 reads as inf; a Python caller may pass nan
        raise bad_request("the request holds a number that is not finite (NaN, Infinity or beyond 1e308); send "
                          "finite numbers") from None
    except (TypeError, RecursionError) as e:
        raise bad_request(f"the request cannot be sent on as JSON ({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(body.get("stream", False), bool):
        raise bad_request(f"`stream` must be true or false, got {str(body['stream'])[:40]!r}", "stream")
    body = dict(body)
    ext = body.pop(ROUTE_MODEL, None)
    if ext is None:
        ext = {}
    if not isinstance(ext, dict) or set(ext) - EXTENSION_KEYS:
        raise bad_request("the \"modelsat\" field must be an object with `cost_weight`, `models` and/or "
                          f"`conversation`, got keys {sorted(ext)[:5] if isinstance(ext, dict) else type(ext).__name__}",
                          ROUTE_MODEL)
    conversation = ext.get("conversation")
    if conversation is not None and (not isinstance(conversation, str) or not conversation.strip()
                                     or len(conversation) > MAX_CONVERSATION_ID):
        raise bad_request(f"modelsat.conversation must be a non-empty string of at most {MAX_CONVERSATION_ID} "
                          "characters", ROUTE_MODEL)
    return body, ext
