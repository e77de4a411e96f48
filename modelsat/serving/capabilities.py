"""What a chat request needs of a model, and whether a zoo entry can serve it (issue 32, deliverable 1).

    needs = request_needs(body)                 # checks the messages' parts, tools, response_format, max_tokens
    reason = cannot_serve(entry, needs)         # None: it can (or its limits are undeclared); else why not

- `tools` is needed by a request with `tools` (or the older `functions`), or holding a tool/function message or an
  assistant message with `tool_calls`; `vision` by an `image_url` content part; `json_schema` by a
  `response_format` of type `json_schema`. Content parts of other types are refused (400 naming the part).
- The window: prompt tokens plus `max_tokens` (or `max_completion_tokens`; without either, one token) must fit the
  entry's `context_window`. Prompt tokens are counted with the entry's `tokenizer` (a Hugging Face id or path,
  loaded once, never running code) where it names one that loads, else by a stated conservative estimate
  (`estimate_tokens`): ASCII characters / 3 + UTF-8 bytes of other characters / 2, plus 4 per message and 3 for
  the reply's start, and IMAGE_TOKENS per image. Tool definitions and a response schema are counted as their JSON.
- An entry whose capabilities or window are undeclared (None) is allowed, with a warning logged once per model and
  need.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass, field

from modelsat.serving.errors import bad_request
from modelsat.zoo import ZooEntry

logger = logging.getLogger(__name__)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_NEEDS = {"text": None, "refusal": None, "image_url": "vision"}   # content part type -> capability it needs
RESPONSE_FORMATS = {"text": None, "json_object": None, "json_schema": "json_schema"}
IMAGE_TOKENS = 1024          # counted per image part (a high-detail image is 765 tokens for OpenAI, 576 for LLaVA)
MESSAGE_TOKENS, REPLY_TOKENS = 4, 3   # per message (role, separators) and for the reply's start


@dataclass
class Needs:
    """What a request needs: capabilities (sorted names), its text to count (what each message says, tool
    definitions, a response schema), its images, and the tokens it asks for at most (`max_tokens`; None: unset)."""
    capabilities: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    messages: int = 0
    images: int = 0
    max_tokens: int | None = None

    def describe(self) -> str:
        """E.g. "tools, vision and 1,234 prompt tokens + max_tokens 100"."""
        parts = list(self.capabilities)
        return ", ".join(parts) if parts else "nothing special"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _part_text(part: dict, where: str) -> tuple[str, str | None]:
    """(text to count, capability it needs) of one content part; 400 for a part the gateway does not know."""
    kind = part.get("type")
    if not isinstance(kind, str) or kind not in PART_NEEDS:
        raise bad_request(f"{where}.type {str(kind)[:40]!r} is not a content part this gateway routes; parts are "
                          f"{', '.join(PART_NEEDS)}", "messages")
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str) or not url:
            raise bad_request(f"{where}.image_url must hold a `url` string", "messages")
        return "", "vision"
    text = part.get(kind)
    if not isinstance(text, str):
        raise bad_request(f"{where}.{kind} must be a string", "messages")
    return text, None


def request_needs(body: dict) -> Needs:
    """Read what `body` (a chat request, `messages` already a list of objects with a `role`) needs; GatewayError
    (400 naming the field) for a role, content part, `tools`, `response_format` or `max_tokens` it cannot read."""
    needs, caps = Needs(), set()
    for i, message in enumerate(body["messages"]):
        role = message["role"]
        if role not in ROLES:
            raise bad_request(f"messages[{i}].role {role[:40]!r} is not one of {', '.join(ROLES)}", "messages")
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    raise bad_request(f"messages[{i}].content[{j}] must be an object with a `type`", "messages")
                text, cap = _part_text(part, f"messages[{i}].content[{j}]")
                needs.texts.append(text)
                if cap == "vision":
                    needs.images += 1
                    caps.add(cap)
        elif isinstance(content, str):
            needs.texts.append(content)
        elif content is not None:
            raise bad_request(f"messages[{i}].content must be a string, a list of parts or null", "messages")
        if role in ("tool", "function") or message.get("tool_calls") or message.get("function_call"):
            caps.add("tools")
            if message.get("tool_calls") is not None:
                needs.texts.append(json.dumps(message["tool_calls"], ensure_ascii=False)[:200_000])
    needs.messages = len(body["messages"])
    for key in ("tools", "functions"):
        tools = body.get(key)
        if tools is None:
            continue
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise bad_request(f"`{key}` must be a list of objects", key)
        if tools:
            caps.add("tools")
            needs.texts.append(json.dumps(tools, ensure_ascii=False))
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind not in RESPONSE_FORMATS:
            raise bad_request(f"response_format must be an object with `type` one of {', '.join(RESPONSE_FORMATS)}, "
                              f"got {str(fmt)[:60]!r}", "response_format")
        if kind == "json_schema":
            if not isinstance(fmt.get("json_schema"), dict):
                raise bad_request("response_format of type json_schema needs a `json_schema` object",
                                  "response_format")
            caps.add("json_schema")
            needs.texts.append(json.dumps(fmt["json_schema"], ensure_ascii=False))
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise bad_request(f"`{key}` must be an integer >= 1, got {str(value)[:40]!r}", key)
        needs.max_tokens = max(needs.max_tokens or 0, value)
    needs.capabilities = sorted(caps)
    return needs


def estimate_tokens(texts: list[str]) -> int:
    """A conservative token count of `texts` without a tokenizer: ASCII characters / 3 (English runs near 4 per
    token) and UTF-8 bytes of the other characters / 2 (a CJK character, 3 bytes, counts 1.5)."""
    ascii_chars = other_bytes = 0
    for text in texts:
        plain = len(text.encode("ascii", "ignore"))
        ascii_chars += plain
        other_bytes += len(text.encode("utf-8", "replace")) - plain
    return math.ceil(ascii_chars / 3 + other_bytes / 2)


class TokenCounter:
    """Counts a request's prompt tokens for a zoo entry: with its tokenizer where it names one that loads (loaded
    once per name with transformers' AutoTokenizer, no remote code), else `estimate_tokens`."""

    def __init__(self) -> None:
        self._tokenizers: dict[str, object] = {}
        self._lock = threading.Lock()

    def _tokenizer(self, name: str):
        with self._lock:
            if name not in self._tokenizers:
                try:
                    from transformers import AutoTokenizer

                    self._tokenizers[name] = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
                except Exception as e:  # noqa: BLE001 (not found, offline, a broken folder): estimate instead
                    logger.warning("tokenizer %r does not load (%s); counting its model's tokens by the estimate",
                                   name, " ".join(str(e).split())[:160])
                    self._tokenizers[name] = None
            return self._tokenizers[name]

    def count(self, entry: ZooEntry, needs: Needs) -> tuple[int, str]:
        """(prompt tokens, "tokenizer NAME" or "estimate") of `needs` for `entry`."""
        tokenizer = self._tokenizer(entry.tokenizer) if entry.tokenizer else None
        if tokenizer is None:
            tokens, how = estimate_tokens(needs.texts), "estimate"
        else:
            tokens = sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in needs.texts if t)
            how = f"tokenizer {entry.tokenizer}"
        return tokens + MESSAGE_TOKENS * needs.messages + REPLY_TOKENS + IMAGE_TOKENS * needs.images, how


class Capabilities:
    """Filters candidates by what a request needs; warns once per (model, need) where a limit is undeclared."""

    def __init__(self, counter: TokenCounter | None = None) -> None:
        self.counter = counter or TokenCounter()
        self._warned: set[tuple[str, str]] = set()

    def _unknown(self, entry: ZooEntry, what: str) -> None:
        if (entry.name, what) not in self._warned:
            self._warned.add((entry.name, what))
            logger.warning("model %r does not declare %s; a request that needs it may go there", entry.name, what)

    def cannot_serve(self, entry: ZooEntry, needs: Needs) -> str | None:
        """Why `entry` cannot serve `needs` (a missing capability, a window too small), or None where it can or
        its limits are undeclared."""
        if needs.capabilities:
            if entry.capabilities is None:
                self._unknown(entry, "its capabilities")
            else:
                missing = [c for c in needs.capabilities if c not in entry.capabilities]
                if missing:
                    return f"does not serve {', '.join(missing)}"
        if entry.context_window is None:
            return None
        tokens, how = self.counter.count(entry, needs)
        wanted = tokens + (needs.max_tokens or 1)
        if wanted > entry.context_window:
            asked = f" + max_tokens {needs.max_tokens:,}" if needs.max_tokens else ""
            return (f"its context window of {entry.context_window:,} tokens is smaller than the prompt's {tokens:,} "
                    f"({how}){asked}")
        return None
