"""Conversations that stay on one model, and the answer ids feedback refers to (issue 32, deliverables 2 and 3).

The OpenAI API carries no conversation id, so a conversation is recognised from its messages: when the gateway
answers messages m1..mk with a reply r, it remembers key(m1..mk, r) -> the model. The next turn sends m1..mk, r and
a new message; its history up to its last assistant message has that same key, so it goes to the same model. A key
reads each message's role, its text (text parts joined, whitespace collapsed: a client that trims or re-wraps the
reply still matches) and its tool calls (function name and arguments). A client may also name the conversation
(`"modelsat": {"conversation": "ID"}`); that id is then the key.

`Store` keeps both maps in SQLite in WAL mode (`state.sqlite` in the gateway's state folder), so several worker
processes and a restarted server share them; every row expires (`--sticky-ttl`, `--feedback-ttl` seconds after it
was last written). Expired answers are kept one more TTL so that feedback on them is told "expired", not "unknown".
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

ANSWER_PREFIX = "chatcmpl-msat-"
MAX_CONVERSATION_ID = 200


def _text(content: object) -> str:
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return " ".join(content.split()) if isinstance(content, str) else ""


def _calls(message: dict) -> list:
    calls = message.get("tool_calls")
    out = []
    for call in calls if isinstance(calls, list) else []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            out.append([str(fn.get("name", "")), " ".join(str(fn.get("arguments", "")).split())])
    return out


def history_key(messages: list[dict]) -> str:
    """The key of a conversation's history (see the module's docstring)."""
    norm = [[m.get("role"), _text(m.get("content")), _calls(m)] for m in messages]
    return "h:" + hashlib.sha256(json.dumps(norm, ensure_ascii=False).encode("utf-8", "replace")).hexdigest()[:40]


def named_key(conversation: str) -> str:
    """The key of a conversation the client names."""
    return "n:" + hashlib.sha256(conversation.encode("utf-8", "replace")).hexdigest()[:40]


def lookup_key(messages: list[dict]) -> str | None:
    """The key under which the earlier turns of this request's conversation were stored: its messages up to the
    last assistant message; None for a first turn."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    return None if last is None else history_key(messages[:last + 1])


class Store:
    """The conversation -> model and answer id -> (model, instruction) maps, in SQLite (WAL) at `path`; safe across
    threads and processes. `sticky_ttl` 0 turns stickiness off."""

    def __init__(self, path: str | Path, sticky_ttl: float = 3600.0, feedback_ttl: float = 7 * 86400.0) -> None:
        self.path, self.sticky_ttl, self.feedback_ttl = Path(path), float(sticky_ttl), float(feedback_ttl)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._writes = 0
        with self._db() as db:
            db.executescript("""
                CREATE TABLE IF NOT EXISTS conversations (key TEXT PRIMARY KEY, model TEXT NOT NULL,
                                                          expires REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS answers (id TEXT PRIMARY KEY, model TEXT NOT NULL,
                                                    instruction TEXT NOT NULL, expires REAL NOT NULL);""")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA cache_size=-512")    # KiB: one connection per thread, so keep each one's cache small
            self._local.db = db
        return db

    def _write(self, sql: str, args: tuple) -> None:
        db = self._db()
        db.execute(sql, args)
        self._writes += 1
        if self._writes % 500 == 0:   # drop rows long expired
            now = time.time()
            db.execute("DELETE FROM conversations WHERE expires < ?", (now,))
            db.execute("DELETE FROM answers WHERE expires < ?", (now - self.feedback_ttl,))

    def model_of(self, key: str) -> str | None:
        """The model a conversation stays on, where it was stored and has not expired."""
        if self.sticky_ttl <= 0:
            return None
        row = self._db().execute("SELECT model FROM conversations WHERE key = ? AND expires >= ?",
                                 (key, time.time())).fetchone()
        return row[0] if row else None

    def remember(self, keys: list[str], model: str) -> None:
        """Store that the conversations under `keys` are on `model` (their expiry restarts)."""
        if self.sticky_ttl <= 0:
            return
        expires = time.time() + self.sticky_ttl
        for key in keys:
            self._write("INSERT OR REPLACE INTO conversations (key, model, expires) VALUES (?, ?, ?)",
                        (key, model, expires))

    def add_answer(self, answer_id: str, model: str, instruction: str) -> None:
        """Remember an answer id (for feedback) with the model that answered and the instruction it was routed on."""
        self._write("INSERT OR REPLACE INTO answers (id, model, instruction, expires) VALUES (?, ?, ?, ?)",
                    (answer_id, model, instruction, time.time() + self.feedback_ttl))

    def answer(self, answer_id: str) -> tuple[str, str, bool] | None:
        """(model, instruction, expired) of an answer id; None where never stored (or purged)."""
        row = self._db().execute("SELECT model, instruction, expires FROM answers WHERE id = ?",
                                 (answer_id,)).fetchone()
        return None if row is None else (row[0], row[1], row[2] < time.time())

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
