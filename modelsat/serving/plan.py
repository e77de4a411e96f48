"""Choosing a chat request's candidates, and building its attempts: shared by `modelsat serve` and
`modelsat.Client` (the request itself is read by `requests.py`).

- `model: "modelsat"` routes among the zoo's models that have an endpoint; a zoo model's name is forwarded to that
  model, unrouted. Names are compared without surrounding spaces, as everywhere.
- Only candidates that can serve the request are kept (`capabilities.py`: tools, images, a JSON schema, the
  context window), before ranking and so for every fallback; none left is a 400 naming what the request needs.
- A conversation continued over several requests stays on the model that answered it (`conversations.py`),
  unless that model is gone or cannot serve this request: that model is tried first and the others are ranked
  only if it fails.
- The request goes on unchanged but for `model` (the entry's upstream id) and without the `modelsat` field.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterator
from urllib.parse import quote

import httpx

from modelsat.router import Ranked, Router
from modelsat.serving.capabilities import Capabilities, Needs, request_needs
from modelsat.serving.conversations import ANSWER_PREFIX, lookup_key, named_key
from modelsat.serving.errors import GatewayError, bad_request
from modelsat.serving.requests import ROUTE_MODEL, check_body, cost_weight, parse_model, routing_text
from modelsat.zoo import ZooEntry

logger = logging.getLogger(__name__)

RETRY_STATUSES = {401, 403, 404, 408, 429}   # and every 5xx: the candidate failed, not the request


def _seconds(value: object, name: str, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} ({flag}) must be a number of seconds > 0, got {value!r}")


@dataclass
class GatewaySettings:
    """How the gateway forwards."""
    max_attempts: int = 3          # candidates tried per request, the first included
    timeout: float = 60.0          # seconds to wait for an upstream's first byte, and for each chunk of a stream
    connect_timeout: float = 5.0   # seconds to connect to an upstream (and to wait for a free connection to it)
    deadline: float = 300.0        # seconds for the whole request: every attempt, connect to the answer's last byte
    max_answer_bytes: int = 16 << 20   # an upstream answer (or a whole stream) larger than this fails
    upstream_connections: int = 64     # connections open at most to one upstream (host and port)

    def __post_init__(self) -> None:
        for name, flag in (("max_attempts", "--max-attempts"), ("max_answer_bytes", "--max-answer-bytes"),
                           ("upstream_connections", "--upstream-connections")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} ({flag}) must be an integer >= 1, got {value!r}")
        for name, flag in (("timeout", "--upstream-timeout"), ("connect_timeout", "--connect-timeout"),
                           ("deadline", "--deadline")):
            _seconds(getattr(self, name), name, flag)

    def httpx_timeout(self) -> httpx.Timeout:
        """Per-read and connect timeouts for an httpx client (`modelsat.Client`'s)."""
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)


@dataclass
class Plan:
    """One chat request, read: the candidates to try in order, and what the answer will carry."""
    body: dict                     # the request as it will be forwarded (less `model`, set per attempt)
    candidates: list[ZooEntry]     # best first; only models with an endpoint that can serve the request
    routed: bool
    stream: bool
    cost_weight: float | None = None
    ranking: list[dict] = field(default_factory=list)
    cost_unit: str | None = None
    read: str = ""                 # what the router read ("last user message", "system + last user message")
    text: str = ""                 # the routed text (what feedback on this answer is recorded against)
    needs: Needs | None = None
    excluded: list[dict] = field(default_factory=list)   # {"model", "reason"}: candidates that cannot serve it
    unranked: list[ZooEntry] = field(default_factory=list)   # a sticky plan's other candidates, ranked if needed
    conversation: str | None = None    # the key the earlier turns were stored under (or the client's named key)
    sticky: str | None = None          # the model the conversation stays on
    sticky_lost: str | None = None     # why the conversation's model was not kept
    answer_id: str = field(default_factory=lambda: ANSWER_PREFIX + uuid.uuid4().hex)
    attempts: list[dict] = field(default_factory=list)   # {"model", "error"} per failed attempt
    timeouts: int = 0
    rate_limited: list[float | None] = field(default_factory=list)   # Retry-After of each 429 attempt
    started: float = field(default_factory=time.monotonic)
    rank_ms: float | None = None       # time from asking for the ranking to having it, queue included
    upstream_ms: float | None = None   # the answering attempt: request sent -> answer checked (a stream: first event)
    elapsed_ms: float | None = None    # the request's arrival -> its answer ready to send (a stream: its first event)

    def fail(self, entry: ZooEntry, error: str, timeout: bool = False, retry_after: float | None = None,
             rate_limited: bool = False) -> None:
        """Record a failed attempt on `entry`."""
        self.attempts.append({"model": entry.name, "error": error})
        self.timeouts += timeout
        if rate_limited:
            self.rate_limited.append(retry_after)
        logger.warning("upstream %s failed: %s", entry.name, error,
                       extra={"attempt": {"model": entry.name, "error": error, "number": len(self.attempts)}})

    def rank(self, ranked: list[Ranked]) -> None:
        """Order the candidates (those still unranked, after a sticky one) by `ranked`."""
        by_name = {e.name: e for e in self.candidates + self.unranked}
        first = self.candidates[:1] if self.sticky else []
        self.candidates = first + [by_name[r.model] for r in ranked if by_name[r.model] not in first]
        self.unranked = []
        self.ranking = [{"model": r.model, "p_correct": r.p_correct, "cost": r.cost, "utility": r.utility}
                        for r in ranked]

    def to_rank(self) -> list[str]:
        """The names still to rank (all candidates of a plan not yet ranked; a sticky plan's others)."""
        return [e.name for e in (self.unranked if self.sticky else self.candidates)]

    def exhausted(self) -> GatewayError:
        """The error once every attempt failed: 429 where every one was rate-limited (with the shortest
        Retry-After given), 504 where all timed out, else 502."""
        names = ", ".join(a["model"] for a in self.attempts)
        message = f"every upstream attempt failed ({names}): {self.attempts[-1]['error']}"
        if self.attempts and len(self.rate_limited) == len(self.attempts):
            waits = [w for w in self.rate_limited if w is not None]
            headers = {"retry-after": str(math.ceil(min(waits)))} if waits else {}
            return GatewayError(429, message, "rate_limit_error", attempts=self.attempts, headers=headers)
        status = 504 if self.timeouts == len(self.attempts) else 502
        return GatewayError(status, message, "upstream_error", attempts=self.attempts)


def with_endpoint(entries: dict[str, ZooEntry]) -> list[str]:
    """The names of the models of `entries` (a zoo's) that have an endpoint, sorted."""
    return sorted(n for n, e in entries.items() if e.endpoint is not None)


def _entry(entries: dict[str, ZooEntry], name: str, param: str) -> ZooEntry:
    entry = entries.get(name.strip())
    if entry is None:
        raise GatewayError(404, f"model {name[:80]!r} is not in the zoo; use \"modelsat\" to route or one of: "
                           f"{', '.join(with_endpoint(entries)) or '(no model has an endpoint)'}", param=param)
    if entry.endpoint is None:
        raise bad_request(f"model {entry.name!r} has no endpoint to forward to; add it again with `modelsat zoo add "
                          "--endpoint URL --upstream-model ID`", param)
    return entry


def prepare(router: Router, body: object, capabilities: Capabilities, *, model_of: Callable[[str], str | None] |
            None = None, refuse: Callable[[ZooEntry], str | None] | None = None) -> Plan:
    """Read a chat request and keep the candidates that can serve it, without ranking (`Plan.to_rank` names what is
    left to rank; `Plan.rank` orders them). `model_of(key)`: the model a conversation is on (None: no stickiness);
    `refuse(entry)`: why an entry must not be used (e.g. its endpoint is the gateway itself), or None. Reads a
    snapshot of the zoo, so it needs no lock. GatewayError (4xx) for a request that cannot be served."""
    body, ext = check_body(body)
    entries = router.zoo.entries          # one reference: a re-read of the zoo replaces the dict whole
    routed, weight = parse_model(body.get("model"))
    needs = request_needs(body)
    stream = body.get("stream", False)
    if not routed:
        if ext:
            raise bad_request("the \"modelsat\" field applies to model \"modelsat\" only", ROUTE_MODEL)
        entry = _entry(entries, body["model"], "model")
        why = (refuse and refuse(entry)) or capabilities.cannot_serve(entry, needs)
        if why:
            raise bad_request(f"model {entry.name!r} cannot serve this request: it {why}", "model")
        try:   # not routed on, but what feedback on the answer is recorded against
            text = routing_text(body["messages"])[0]
        except GatewayError:
            text = ""
        return Plan(body, [entry], routed=False, stream=stream, cost_unit=router.zoo.cost_unit, needs=needs,
                    text=text)
    if "cost_weight" in ext:
        if weight is not None:
            raise bad_request("cost_weight is given twice (the `model` suffix and the \"modelsat\" field); give it "
                              "once", ROUTE_MODEL)
        weight = cost_weight(ext["cost_weight"], "modelsat.cost_weight")
    names = ext.get("models")
    if names is None:
        names = with_endpoint(entries)
        if not names:
            raise bad_request("no model of the zoo has an endpoint to forward to; add one with `modelsat zoo add "
                              "--name N --results F --endpoint URL --upstream-model ID` (or POST /models)", "model")
    elif not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names) \
            or len({n.strip() for n in names}) != len(names):
        raise bad_request("modelsat.models must be a non-empty list of distinct model names", ROUTE_MODEL)
    candidates, excluded = [], []
    for name in names:
        entry = _entry(entries, name, ROUTE_MODEL)
        why = (refuse and refuse(entry)) or capabilities.cannot_serve(entry, needs)
        if why:
            excluded.append({"model": entry.name, "reason": why})
        else:
            candidates.append(entry)
    if not candidates:
        raise bad_request(f"no candidate can serve this request (it needs {needs.describe()}): "
                          + "; ".join(f"{x['model']} {x['reason']}" for x in excluded[:5]), "messages")
    text, read = routing_text(body["messages"])
    plan = Plan(body, candidates, routed=True, stream=stream, cost_weight=weight or 0.0,
                cost_unit=router.zoo.cost_unit, read=read, text=text, needs=needs, excluded=excluded)
    if model_of is not None:
        key = named_key(ext["conversation"]) if "conversation" in ext else lookup_key(body["messages"])
        plan.conversation = key
        sticky = model_of(key) if key else None
        if sticky is not None:
            keep = next((e for e in candidates if e.name == sticky), None)
            if keep is not None:
                plan.sticky, plan.candidates = sticky, [keep]
                plan.unranked = [e for e in candidates if e is not keep]
            else:
                plan.sticky_lost = next((f"{sticky} {x['reason']}" for x in excluded if x["model"] == sticky),
                                        f"{sticky} is no longer a candidate (removed, or not in modelsat.models)")
    return plan


def plan(router: Router, body: object, capabilities: Capabilities | None = None) -> Plan:
    """Read a chat request and rank its candidates at once (`Router.rank`; `modelsat.Client`'s path: no
    stickiness). GatewayError (4xx) for a request that cannot be served."""
    p = prepare(router, body, capabilities or Capabilities())
    if p.routed:
        try:
            p.rank(router.rank(p.text, p.to_rank(), cost_weight=p.cost_weight))
        except ValueError as e:
            raise bad_request(f"could not rank: {e}", "messages") from None
    return p


def upstream_request(entry: ZooEntry, plan: Plan, extra_headers: dict | None = None) -> tuple[str, dict, bytes]:
    """(URL, headers, body) of the attempt on `entry`; the API key is read from its variable now.
    GatewayError (502) where that variable is not set."""
    headers = {"content-type": "application/json", "accept": "text/event-stream" if plan.stream else
               "application/json", **(extra_headers or {})}
    if entry.api_key_env is not None:
        key = os.environ.get(entry.api_key_env)
        if not key:
            raise GatewayError(502, f"the environment variable {entry.api_key_env} (API key of {entry.name!r}) is "
                               "not set in the gateway's environment", "upstream_error")
        headers["authorization"] = f"Bearer {key}"
    body = json.dumps({**plan.body, "model": entry.upstream_model}, allow_nan=False).encode()
    return entry.endpoint.rstrip("/") + "/chat/completions", headers, body


def requests_to_try(plan: Plan, max_attempts: int, extra_headers: dict | None = None
                    ) -> Iterator[tuple[ZooEntry, str, dict, bytes]]:
    """(entry, URL, headers, body) of each candidate to try, best first, at most `max_attempts` (a sticky plan's
    others only once ranked: `Plan.rank`); a candidate whose request cannot be built (its API key variable is not
    set) is recorded as a failed attempt and skipped."""
    tried = 0
    while tried < min(max_attempts, len(plan.candidates)):
        entry = plan.candidates[tried]
        tried += 1
        try:
            url, headers, content = upstream_request(entry, plan, extra_headers)
        except GatewayError as e:
            plan.fail(entry, e.message)
            continue
        yield entry, url, headers, content


def retryable(status: int) -> bool:
    """Whether an upstream's HTTP status means that candidate failed (try the next), not the request."""
    return status >= 500 or status in RETRY_STATUSES or status < 200 or 300 <= status < 400


def status_error(status: int, content: bytes) -> str:
    """A short description of an upstream's failed answer (its status and the start of its body)."""
    text = content[:200].decode("utf-8", "replace")
    return f"HTTP {status}" + (f": {' '.join(text.split())}" if text.strip() else "")


def headers_for(entry: ZooEntry) -> dict:
    """The response headers naming the model that answered (percent-encoded where not ASCII)."""
    return {"x-modelsat-model": quote(entry.name, safe=" !#$&'()*+,/:;=?@[]~"),
            "x-modelsat-upstream-model": quote(entry.upstream_model or "", safe=" !#$&'()*+,/:;=?@[]~")}


def usd(entry: ZooEntry, tokens: tuple[int, int] | None) -> float | None:
    """USD of an answer of `tokens` (prompt, completion) where the entry has prices."""
    if entry.price_in is None or tokens is None:
        return None
    return (tokens[0] * entry.price_in + tokens[1] * entry.price_out) / 1e6


def extension(plan: Plan, entry: ZooEntry, tokens: tuple[int, int] | None = None) -> dict:
    """The answer's `modelsat` field: the model, the ranking, what the request needed and which candidates could
    not serve it, the conversation kept, its cost (in the zoo's unit) and, where the entry has prices and the
    answer counts tokens, its USD."""
    cost = entry.cost if entry.cost is not None else entry.params_b
    return {"model": entry.name, "upstream_model": entry.upstream_model, "routed": plan.routed,
            "cost_weight": plan.cost_weight, "cost": cost, "cost_unit": plan.cost_unit, "usd": usd(entry, tokens),
            "read": plan.read, "ranking": plan.ranking, "attempts": plan.attempts,
            "needs": plan.needs.capabilities if plan.needs else [], "excluded": plan.excluded,
            "sticky": plan.sticky is not None, **({"sticky_lost": plan.sticky_lost} if plan.sticky_lost else {}),
            "rank_ms": plan.rank_ms, "upstream_ms": plan.upstream_ms, "elapsed_ms": plan.elapsed_ms}


def annotate(plan: Plan, entry: ZooEntry, data: dict, tokens: tuple[int, int] | None = None) -> dict:
    """The upstream's answer with `id` the gateway's answer id (the upstream's kept as `modelsat.upstream_id`),
    `model` the zoo name and the extension field `modelsat`."""
    ext = extension(plan, entry, tokens)
    if isinstance(data.get("id"), str):
        ext["upstream_id"] = data["id"][:200]
    return {**data, "id": plan.answer_id, "model": entry.name, ROUTE_MODEL: ext}


def zoo_syncer(router: Router, every: float = 1.0, log: Callable[[str], None] | None = None) -> Callable[[], None]:
    """A function that re-reads the zoo's folder (`Router.sync_zoo`) at most once per `every` seconds; a zoo that
    does not load keeps the previous one (reported once per distinct error through `log`). Call it with the zoo
    locked."""
    state = {"at": -math.inf, "error": None}
    guard = threading.Lock()

    def sync() -> None:
        now = time.monotonic()
        with guard:
            if now - state["at"] < every:
                return
            state["at"] = now
        try:
            router.sync_zoo()
            state["error"] = None
        except (ValueError, OSError) as e:   # ZooError, or an entry on another aptitude test
            if log is not None and str(e) != state["error"]:
                log(f"the zoo folder was not re-read: {e}; serving the zoo as it was")
            state["error"] = str(e)
    return sync
