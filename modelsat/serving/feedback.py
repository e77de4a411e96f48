"""`POST /v1/feedback`: how an answer went, added to the answering model's results bank (issue 32, deliverable 3).

    {"id": "chatcmpl-msat-...", "score": 0.0-1.0}                      an answer of this gateway, by its `id`
    {"model": NAME, "instruction": TEXT, "score": 0.0-1.0, "feedback_id"?: ID}    any result

The answer's id names the model that answered and the text it was routed on (kept `--feedback-ttl` seconds in the
gateway's state store, shared by every worker). The result goes to `Router.add_feedback` (the results bank, SQLite,
which the ranking reads without retraining), with the answer's id (or `feedback_id`) as its key: the same id twice
is counted once (`"counted": false` the second time). Errors are 4xx naming the field: 400 a bad score or text,
404 an unknown id or model, 410 an expired id; a bank that cannot be written (a read-only router) is a 503.
"""
from __future__ import annotations

import json
import math
import threading
from typing import Callable

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse

from modelsat.router import Router, check_text
from modelsat.serving.conversations import ANSWER_PREFIX, Store
from modelsat.serving.errors import GatewayError, bad_request
from modelsat.serving.metrics import Metrics

MAX_FEEDBACK_ID = 200


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def check_feedback(body: object) -> dict:
    """The feedback request, checked: {"id", "score"} or {"model", "instruction", "score", "feedback_id"?}.
    GatewayError (400) naming the field otherwise."""
    if not isinstance(body, dict):
        raise bad_request("the feedback must be a JSON object: {\"id\", \"score\"} or {\"model\", \"instruction\", "
                          "\"score\"}")
    by_id = "id" in body
    allowed = {"id", "score"} if by_id else {"model", "instruction", "score", "feedback_id"}
    extra = sorted(set(body) - allowed)
    if extra:
        raise bad_request(f"unknown field(s) {extra[:3]} for feedback " + (
            "by answer id (give `id` and `score` only)" if by_id else
            "by model (give `model`, `instruction`, `score` and optionally `feedback_id`)"), extra[0])
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) \
            or not 0 <= score <= 1:
        raise bad_request(f"score must be a number in [0, 1] (1 = a good answer), got {str(score)[:40]!r}", "score")
    if by_id:
        answer = body["id"]
        if not isinstance(answer, str) or not answer.startswith(ANSWER_PREFIX) or len(answer) > MAX_FEEDBACK_ID:
            raise GatewayError(404, f"id {str(answer)[:80]!r} is not an answer id of this gateway (the `id` of its "
                               f"answers starts with {ANSWER_PREFIX!r})", param="id")
        return {"id": answer, "score": float(score)}
    model, text, key = body.get("model"), body.get("instruction"), body.get("feedback_id")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("model must be the name of a zoo model (or give the answer's `id` instead)", "model")
    try:
        check_text(text, "instruction")
    except ValueError as e:
        raise bad_request(str(e), "instruction") from None
    if key is not None and (not isinstance(key, str) or not key.strip() or len(key) > MAX_FEEDBACK_ID):
        raise bad_request(f"feedback_id must be a non-empty string of at most {MAX_FEEDBACK_ID} characters",
                          "feedback_id")
    return {"model": model.strip(), "instruction": text, "score": float(score), "feedback_id": key}


def record(router: Router, lock: threading.Lock, model: str, instruction: str, score: float,
           feedback_id: str | None) -> bool:
    """Add one result to `model`'s bank (`Router.add_feedback`, holding the router's lock); True where counted,
    False where `feedback_id` was counted before. GatewayError 404 for a model not in the zoo."""
    add = getattr(router, "add_feedback", None)
    if add is None:
        raise GatewayError(501, "this modelsat has no results bank (Router.add_feedback); feedback cannot be stored",
                           "server_error")
    with lock:
        if model not in router.zoo:
            raise GatewayError(404, f"model {model[:80]!r} is not in the zoo", param="model")
        try:
            return bool(add(model, instruction, score, feedback_id=feedback_id))
        except ValueError as e:   # RouterError naming the field, or the bank cannot be written (read only)
            message = str(e)[:300]
            field = next((f for f in ("score", "instruction", "feedback_id") if f in message), None)
            if field is not None:
                raise bad_request(message, field) from None
            raise GatewayError(503, f"feedback cannot be stored: {message}", "server_error") from None


def mount(app, router: Router, lock: threading.Lock, store: Callable[[], Store | None], metrics: Metrics) -> None:
    """Add `POST /v1/feedback` to the FastAPI `app`."""

    def handle(body: object) -> dict:
        fb = check_feedback(body)
        if "id" in fb:
            found = store() and store().answer(fb["id"])
            if not found:
                raise GatewayError(404, f"id {fb['id']!r} is not an answer this gateway remembers (never given, or "
                                   "purged long after it expired)", param="id")
            model, instruction, expired = found
            if expired:
                raise GatewayError(410, f"id {fb['id']!r} has expired (answers are kept for feedback "
                                   f"{store().feedback_ttl:g} s, --feedback-ttl)", param="id")
            fb.update(model=model, instruction=instruction, feedback_id=fb["id"])
        counted = record(router, lock, fb["model"], fb["instruction"], fb["score"], fb["feedback_id"])
        return {"counted": counted, "model": fb["model"], "score": fb["score"],
                **({"id": fb["id"]} if "id" in fb else {})}

    @app.post("/v1/feedback", tags=["gateway"])
    async def feedback(request: Request):
        """How an answer went: {"id", "score"} or {"model", "instruction", "score"}; added to the model's bank."""
        try:
            try:
                body = json.loads(await request.body(), parse_constant=_no_constant)
            except (ValueError, RecursionError) as e:
                raise bad_request(f"the request body is not valid JSON ({str(e)[:200]})") from None
            result = await anyio.to_thread.run_sync(handle, body)
        except GatewayError as e:
            metrics.feedback.labels("refused").inc()
            return JSONResponse(e.body(), e.status)
        metrics.feedback.labels("counted" if result["counted"] else "repeated").inc()
        return result
