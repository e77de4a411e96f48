"""The aptitude test taken through an OpenAI-compatible chat endpoint (vLLM, llama.cpp, Ollama, a hosted API).

    modelsat aptitude run --endpoint http://127.0.0.1:8080/v1 --upstream-model smollm2 \\
        --aptitude checkpoints/modelsat-smollm2-mmlupro/aptitude.json --out smollm2.parquet
    summary = examine("http://127.0.0.1:8080/v1", "smollm2", Aptitude.load(path), Path("smollm2.parquet"))

Each question is one user turn asking for the option letter only (temperature 0); `parse_letter` reads the letter
out of the usual answer styles ("B", "(B)", "**B**", "Answer: b", "The answer is B.", a trailing explanation, the
option's text). Requests run concurrently (httpx async, at most `concurrency` at a time); a timeout, connection
error, 429 or 5xx is retried with exponential backoff. Every answer is appended to `<out>.answers.jsonl` (and
flushed) as it arrives, so a run killed at any point, even by SIGKILL, resumes without asking an answered question
again; a line torn by the kill is dropped. An answer whose letter cannot be read counts as wrong and is reported.
`out` gets `question_id, score` (parquet or csv), the format of the local runner, for `modelsat zoo add`.

Why one module: asking, retrying, resuming from the answer log and grading are one run whose
state (the log, the summary) they share.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pandas as pd
from tqdm.auto import tqdm

from modelsat.aptitude import Aptitude, AptitudeError, graded_letters, option_texts
from modelsat.io_utils import atomic_write_bytes, atomic_write_text

PROMPT_VERSION = 1
"""Stamped in the answer log: answers to another prompt are not resumed."""
MAX_REPLY_CHARS = 1000
"""The answer log keeps this much of each reply (enough to see why a letter was or was not read)."""


class ExaminerError(AptitudeError):
    """The endpoint, its answers or the answer log make the run impossible (one line: what, where, what to do)."""


def prompt(text: str, letters: list[str]) -> str:
    """The user turn for one question: its text, then a request for the letter alone."""
    return (f"{text}\n\nAnswer with the letter of the correct option ({', '.join(letters)}) only, "
            "without any explanation.")


# ------------------------------------------------------------------ reading the letter out of a reply
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)          # a reasoning model's visible thoughts
_MARKUP = re.compile(r"[*`#]+")                                       # **B**, `B`, ## Answer
_KEYWORD = re.compile(r"\b(?:final\s+answer|correct\s+(?:answer|option|choice)|answer)\b"
                      r"\s*(?:is|would\s+be|should\s+be|:|=|-)?\s*:?\s*(?:option\s+|choice\s+)?[(\[]?\s*([A-Za-z])\b",
                      re.I)
_LEADING = re.compile(r"^[(\[]?([A-Z])(?=[)\].:,;\-\s]|$)")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9'’])[(\[]?([A-Z])(?![A-Za-z0-9'’])")
_VERB_AFTER_OPTION = {"is", "was", "would", "seems", "looks", "appears", "should", "because"}


def _is_word(reply: str, m: re.Match) -> bool:
    """Whether the letter `m` matched is the English word "I" or "a" ("I think", "A good one", "a"), not an option:
    it is followed by a lowercase word (other than "is", "because", ...) and, for a capital A, opens a sentence."""
    letter, end = m.group(1), m.end()
    if letter not in ("A", "I", "a"):
        return False
    rest = re.match(r"\s+([a-z]+)", reply[end:])
    if not rest or rest.group(1) in _VERB_AFTER_OPTION:
        return False
    return letter != "A" or not reply[:m.start(1)].strip() or bool(re.search(r"[.!?:\n]\s*$", reply[:m.start(1)]))


def _plain(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def parse_letter(reply: str | None, options: dict[str, str]) -> str | None:
    """The option letter a `reply` gives among `options` ({letter: text}), or None where it cannot be read.

    In order: the reply is one option's text exactly; the reply is one letter ("B", "(b)", "B."); it opens with a letter ("B) helicase", "C. because");
    the last "answer is X" / "Answer: X" / "correct option is (X)"; the reply is, or opens with, one option's text;
    exactly one capital letter that stands alone ("I'd go with B"); exactly one option's text inside the reply.
    "A" and "I" read as English words ("I think", "a good one") are not letters."""
    if not isinstance(reply, str) or not options:
        return None
    text = _MARKUP.sub("", _THINK.sub("", reply)).strip()
    valid = set(options)
    raw = [L for L, t in options.items() if _plain(t) and _plain(t) == _plain(text)]
    if len(raw) == 1:                                  # the option's text as written ("$-45$ \mu C", "(A) Increased")
        return raw[0]
    bare = text.strip(" \t\n().[]:;,!")
    if len(bare) == 1 and bare.upper() in valid:
        return bare.upper()
    if (m := _LEADING.match(text)) and m.group(1) in valid and not _is_word(text, m):
        return m.group(1)
    found = [m for m in _KEYWORD.finditer(text) if m.group(1).upper() in valid and not _is_word(text, m)]
    if found:
        return found[-1].group(1).upper()
    said, texts = _norm(text), {L: _norm(t) for L, t in options.items() if _norm(t)}
    exact = [L for L, t in texts.items() if said == t]
    if len(exact) == 1:
        return exact[0]
    opening = sorted((L for L, t in texts.items() if said.startswith(t + " ")), key=lambda L: -len(texts[L]))
    if opening and (len(opening) == 1 or len(texts[opening[0]]) > len(texts[opening[1]])):
        return opening[0]
    alone = {m.group(1) for m in _STANDALONE.finditer(text)
             if m.group(1) in valid and not _is_word(text, m)}
    if len(alone) == 1:
        return alone.pop()
    inside = [L for L, t in texts.items() if len(t) >= 3 and re.search(rf"(?<!\w){re.escape(t)}(?!\w)", said)]
    return inside[0] if len(inside) == 1 else None


# ------------------------------------------------------------------ the answer log beside --out
def answer_log_path(out: Path) -> Path:
    """Where the answers of a run writing `out` are cached: `<out>.answers.jsonl`."""
    return out.with_name(out.name + ".answers.jsonl")


def _read_log(path: Path, header: dict, wanted: set[str]) -> dict[str, dict]:
    """The answers already in the log {question id: record}; a last line torn by a kill is dropped (the file is
    rewritten without it, so the next append starts on a line of its own)."""
    if not path.exists():
        atomic_write_text(path, json.dumps(header) + "\n")
        return {}
    try:
        raw = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ExaminerError(f"{path}: the answer log cannot be read ({type(e).__name__}: {e}); delete it to start "
                            "over") from e
    lines, torn = raw.split("\n"), False
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()                                                    # no newline at the end: cut by a kill
        torn = True
    records = []
    for n, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise ExaminerError(f"{path}: line {n} is not JSON; the answer log was edited or damaged. Delete it to "
                                "start over, or delete that line to re-ask its question") from None
    if not records or not isinstance(records[0], dict):
        raise ExaminerError(f"{path} has no header line; delete it to start over")
    stamp = {k: records[0].get(k) for k in ("upstream_model", "fingerprint", "prompt_version")}
    if stamp != {k: header[k] for k in stamp}:
        raise ExaminerError(f"{path} holds answers of {stamp['upstream_model']!r} to aptitude test "
                            f"{str(stamp['fingerprint'])[:12]} (prompt {stamp['prompt_version']}), not of "
                            f"{header['upstream_model']!r} to {header['fingerprint'][:12]} (prompt "
                            f"{header['prompt_version']}); choose another --out, or delete it to start over")
    done = {r["question_id"]: r for r in records[1:]
            if isinstance(r, dict) and r.get("question_id") in wanted and r.get("score") in (0, 1)}
    if torn:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return done


# ------------------------------------------------------------------ talking to the endpoint
class _Fatal(Exception):
    """An answer no retry will change for any question (wrong URL, model or key): the run stops."""


class _Refused(Exception):
    """The endpoint refused this question (a 4xx other than 401/403/404/429), or it failed after every retry."""


def chat_url(endpoint: str) -> str:
    """`<endpoint>/chat/completions` for a base URL such as http://127.0.0.1:8080/v1 (kept if already there)."""
    try:
        url = urlsplit(endpoint)
        url.port  # noqa: B018 - raises on a port that is not a number
    except (ValueError, TypeError) as e:
        raise ExaminerError(f"--endpoint {str(endpoint)[:80]!r} is not a URL ({e}); give e.g. "
                            "http://127.0.0.1:8080/v1") from e
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ExaminerError(f"--endpoint {endpoint[:80]!r} must be an http:// or https:// URL with a host, e.g. "
                            "http://127.0.0.1:8080/v1 (the base URL before /chat/completions)")
    if url.username or url.password:
        raise ExaminerError("--endpoint holds a user name or password; give the API key through an environment "
                            "variable named by --api-key-env instead")
    base = endpoint.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


def _headers(api_key_env: str | None) -> dict[str, str]:
    """Request headers; the key is read from the environment now, at request time, and never kept."""
    if api_key_env is None:
        return {}
    key = os.environ.get(api_key_env, "")
    if not key:
        raise _Fatal(f"the environment variable {api_key_env} (--api-key-env) is not set or empty; export the API "
                     "key in it")
    return {"Authorization": f"Bearer {key}"}


def _retry_after(response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return 0.0


async def _ask(client, url: str, body: dict, api_key_env: str | None, retries: int, backoff: float) -> dict:
    """The reply and usage of one chat completion, retried on a timeout, a connection error, 429, 5xx or a
    malformed body (waits `backoff` s doubling each time, at most 30 s, or the server's Retry-After)."""
    why, wait = "", 0.0
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(wait)                          # set by the attempt before
        wait = min(30.0, backoff * 2 ** attempt) * (1 + random.random() / 4)
        got = await _attempt(client, url, body, api_key_env)
        if isinstance(got, dict):
            return got
        why, retry_after = got
        wait = max(wait, min(30.0, retry_after))
    raise _Refused(f"{why}, {retries + 1} attempts")


async def _attempt(client, url: str, body: dict, api_key_env: str | None) -> dict | tuple[str, float]:
    """One request: {"reply", "usage"}, or (why, seconds the server asks to wait) where a retry may help."""
    try:
        r = await client.post(url, json=body, headers=_headers(api_key_env))
    except httpx.TimeoutException:
        return "timed out", 0.0
    except httpx.TransportError as e:
        return f"connection error ({type(e).__name__})", 0.0
    if r.status_code == 429 or r.status_code >= 500:
        return f"HTTP {r.status_code}", _retry_after(r)
    if r.status_code in (401, 403):
        raise _Fatal(f"{url} answered {r.status_code} ({r.text[:120]!r}): the API key was refused; check the key in "
                     "the environment variable named by --api-key-env")
    if r.status_code == 404:
        raise _Fatal(f"{url} answered 404 ({r.text[:120]!r}): check --endpoint (the base URL, e.g. ending in /v1) "
                     "and --upstream-model (GET <endpoint>/models lists the ids it serves)")
    if r.status_code >= 400:
        raise _Refused(f"HTTP {r.status_code} {r.text[:120]!r}")
    try:
        doc = r.json()
        reply = doc["choices"][0]["message"].get("content")
        if reply is not None and not isinstance(reply, str):
            raise TypeError("content is not a string")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        return f"a malformed chat completion ({type(e).__name__})", 0.0
    usage = doc.get("usage")
    return {"reply": reply or "", "usage": usage if isinstance(usage, dict) else None}


# ------------------------------------------------------------------ the run
@dataclass
class Summary:
    """What a run did. `accuracy` is over the answered questions; unparsed answers count as wrong."""

    upstream_model: str
    endpoint: str
    num_questions: int                  # in the aptitude test
    answered: int = 0                   # questions with an answer (in the log, this run or before)
    correct: int = 0
    unparsed: list[str] = field(default_factory=list)   # question ids whose reply held no readable letter
    failed: dict[str, str] = field(default_factory=dict)  # question id -> why it got no answer (re-asked next run)
    asked: int = 0                      # questions asked in this run
    prompt_tokens: int = 0              # `usage` of this run's answers
    completion_tokens: int = 0
    no_usage: int = 0                   # this run's answers without `usage`
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.answered if self.answered else math.nan

    def lines(self, out: Path) -> list[str]:
        """The summary a person reads."""
        rows = [f"{self.upstream_model} at {self.endpoint}: {self.answered} of {self.num_questions} aptitude "
                f"questions answered, accuracy {self.accuracy:.3f} ({self.correct} right; {len(self.unparsed)} "
                f"unparsed answers counted as wrong" + (f", e.g. {self.unparsed[:3]}" if self.unparsed else "") + ")",
                f"this run: {self.asked} questions asked in {self.seconds:.1f} s, tokens {self.prompt_tokens} prompt "
                f"+ {self.completion_tokens} completion" + (f" ({self.no_usage} answers reported no usage)"
                                                            if self.no_usage else "")]
        if self.failed:
            reasons = sorted(set(self.failed.values()))
            rows.append(f"{len(self.failed)} questions got no answer ({'; '.join(reasons[:3])}); rerun the same "
                        "command to ask them again")
        missing = self.num_questions - self.answered
        if missing:
            allowed = int(0.05 * self.num_questions)
            rows.append(f"{out} covers {self.answered} of the {self.num_questions} questions: `modelsat zoo add` "
                        f"needs them all, or --missing wrong with at most {allowed} missing (counted as wrong); run "
                        "again without --limit to ask the rest (answered questions are not asked again)")
        return rows


def spread_order(aptitude: Aptitude) -> list[str]:
    """Question ids with every task's first question first, then every task's second, ...: a run cut short by
    `limit` covers every task evenly."""
    return [t.question_ids[i] for i in range(aptitude.per_task) for t in aptitude.tasks]


async def _run(url: str, upstream_model: str, todo: list[str], aptitude: Aptitude, letters: dict[str, list[str]],
               log_file, summary: Summary, done: dict[str, dict], *, api_key_env: str | None, concurrency: int,
               retries: int, timeout: float, backoff: float, max_tokens: int, progress) -> None:
    gate = asyncio.Semaphore(concurrency)
    options = {q: option_texts(aptitude.texts[q]) for q in todo}

    async def one(client, q: str) -> None:
        body = {"model": upstream_model, "temperature": 0, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": prompt(aptitude.texts[q], letters[q])}]}
        async with gate:
            try:
                got = await _ask(client, url, body, api_key_env, retries, backoff)
            except _Refused as e:
                if str(e).startswith("connection error") and not summary.asked:   # nothing has ever answered there
                    raise _Fatal(f"nothing answers at {url} ({e}); check --endpoint and that the server is running "
                                 "(answers already logged are kept)") from None
                summary.failed[q] = str(e)
                progress.update(1)
                return
        letter = parse_letter(got["reply"], options[q])
        usage = got["usage"]
        record = {"question_id": q, "letter": letter, "score": int(letter == aptitude.answers[q]),
                  "reply": got["reply"][:MAX_REPLY_CHARS], "usage": usage}
        log_file.write(json.dumps(record) + "\n")   # one line per answer, flushed at once: a kill loses at most
        log_file.flush()                            # the line being written (ASCII JSON: a lone surrogate is kept)
        done[q] = record
        summary.asked += 1
        if usage is None:
            summary.no_usage += 1
        else:
            summary.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            summary.completion_tokens += int(usage.get("completion_tokens") or 0)
        progress.update(1)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits) as client:
        try:
            async with asyncio.TaskGroup() as group:                 # a _Fatal answer cancels the other questions
                for q in todo:
                    group.create_task(one(client, q))
        except BaseExceptionGroup as eg:
            fatal = eg.subgroup(_Fatal)
            if fatal is None:
                raise
            raise ExaminerError(str(fatal.exceptions[0])) from None


def examine(endpoint: str, upstream_model: str, aptitude: Aptitude, out: Path, *, api_key_env: str | None = None,
            limit: int | None = None, concurrency: int = 8, retries: int = 5, timeout: float = 60.0,
            backoff: float = 0.5, max_tokens: int = 32, progress: bool = True) -> Summary:
    """Take the aptitude test with the model `upstream_model` served at `endpoint` (an OpenAI-compatible base URL);
    write `question_id, score` of the answered questions to `out` (.parquet or .csv, atomically) and return the
    summary. `limit` asks at most that many questions in all (every task's first question first, see
    `spread_order`); answers already in `<out>.answers.jsonl` are never asked again. A question that fails after
    `retries` retries (backoff `backoff` s doubling, at most 30 s; timeout `timeout` s per request) is left out
    and listed in `Summary.failed`. Raises ExaminerError (an AptitudeError) for a test without answers, bad
    arguments, an answer log of another run, or an endpoint that refuses the model, URL or key."""
    out = Path(out)
    if out.suffix not in (".parquet", ".csv"):
        raise ExaminerError(f"--out {out} must end in .parquet or .csv")
    for name, value, low in (("limit", limit, 1), ("concurrency", concurrency, 1), ("retries", retries, 0),
                             ("max_tokens", max_tokens, 1)):
        if value is not None and (not isinstance(value, int) or value < low):
            raise ExaminerError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
    if not (timeout > 0 and math.isfinite(timeout)) or not (backoff >= 0 and math.isfinite(backoff)):
        raise ExaminerError(f"--timeout must be > 0 and backoff >= 0 seconds, got {timeout!r} and {backoff!r}")
    if not isinstance(upstream_model, str) or not upstream_model.strip():
        raise ExaminerError("--upstream-model is empty; give the model id the endpoint serves")
    url = chat_url(endpoint)
    if api_key_env is not None:
        try:
            _headers(api_key_env)                                      # checked now, read again for each request
        except _Fatal as e:
            raise ExaminerError(str(e)) from None
    letters = graded_letters(aptitude)
    log = answer_log_path(out)
    header = {"upstream_model": upstream_model, "fingerprint": aptitude.fingerprint, "prompt_version": PROMPT_VERSION,
              "endpoint": endpoint}
    ids = aptitude.question_ids
    done = _read_log(log, header, set(ids))
    scope = spread_order(aptitude)[:limit]
    todo = [q for q in scope if q not in done]
    summary = Summary(upstream_model, endpoint, len(ids))
    start = time.perf_counter()
    if todo:
        bar = tqdm(total=len(scope), initial=len(scope) - len(todo), unit="question", disable=not progress,
                   desc=f"aptitude test of {upstream_model}")
        with open(log, "a", encoding="utf-8") as f, bar:
            asyncio.run(_run(url, upstream_model, todo, aptitude, letters, f, summary, done, api_key_env=api_key_env,
                             concurrency=concurrency, retries=retries, timeout=timeout, backoff=backoff,
                             max_tokens=max_tokens, progress=bar))
    summary.seconds = time.perf_counter() - start
    answered = [q for q in ids if q in done]
    summary.answered = len(answered)
    summary.correct = sum(done[q]["score"] for q in answered)
    summary.unparsed = [q for q in answered if done[q].get("letter") is None]
    df = pd.DataFrame({"question_id": answered, "score": [float(done[q]["score"]) for q in answered]})
    atomic_write_bytes(out, df.to_parquet(index=False) if out.suffix == ".parquet" else df.to_csv(index=False).encode("utf-8"))
    return summary
