"""HTTP JSON service over a router (FastAPI): `modelsat serve --checkpoint DIR`.

    POST /rank    {"instruction": str, "models"?: [str], "cost_weight"?: float, "top_k"?: int}
    GET  /models  the zoo
    POST /models  {"name": str, "scores": {question_id: score}, "cost"?: float, "params_b"?: float,
                   "cost_unit"?: str, "missing"?: "error" | "wrong", "endpoint"?: url, "upstream_model"?: str,
                   "api_key_env"?: str, "price_in"?: float, "price_out"?: float, "context_window"?: int,
                   "capabilities"?: [str], "tokenizer"?: str}
    DELETE /models/{name}
    GET  /health
    GET  /metrics                              Prometheus text format (modelsat/serving/metrics.py)
    POST /v1/chat/completions, GET /v1/models   the OpenAI-compatible gateway (modelsat/serving/gateway.py)
    POST /v1/feedback                          how an answer went (modelsat/serving/feedback.py)
The zoo folder is re-read when its files change (checked at least once a second by the ranking thread), so
`modelsat zoo add/remove` in another process, or another worker, shows without a restart.
OpenAPI docs at /docs. Bodies are validated and bounded in size: bad input gets a 4xx naming the field, never a
500; an unexpected error gets a JSON 500 and the connection stays open (modelsat/serving/access.py).
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelsat.router import MAX_INSTRUCTION_CHARS, Router, check_text
from modelsat.serving import feedback
from modelsat.serving.access import AccessLayer
from modelsat.serving.batching import Ranker
from modelsat.serving.capabilities import Capabilities
from modelsat.serving.conversations import Store
from modelsat.serving.gateway import Gateway, SelfAddress, mount
from modelsat.serving.metrics import CONTENT_TYPE_LATEST, Metrics
from modelsat.serving.plan import GatewaySettings, zoo_syncer
from modelsat.serving.upstream import Forwarding, Lifecycle, Upstreams
from modelsat.zoo import CAPABILITIES, MAX_CONTEXT_WINDOW, check_model_name

MAX_BODY_BYTES = 1_000_000
MAX_MODELS = 10_000   # bound on `models` and `top_k`
log = logging.getLogger(__name__)


def _text(where: str, if_blank: str | None) -> BeforeValidator:
    """The router's one rule for text (router.check_text: no lone surrogate), run before pydantic's own string
    checks; a blank value is refused with `if_blank`, what to do (None: allowed here)."""
    def check(value: object) -> object:
        if isinstance(value, str) and not value.strip():
            if if_blank is not None:
                raise ValueError(f"{where} is empty; {if_blank}")
        elif isinstance(value, str):
            check_text(value, where)
        return value
    return BeforeValidator(check)


# Numbers are strict (no "1" or true for 1) and finite: JSON bodies may hold NaN, Infinity or 1e309 (= inf).
Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)]
Amount = Annotated[float, Field(ge=0.0, allow_inf_nan=False, strict=True)]

ModelName = Annotated[str, _text("model name", "give names from GET /models"), Field(max_length=200)]
QuestionId = Annotated[str, _text("question id", "give the ids of the aptitude questions")]


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")   # a misspelt "cost_wieght" must not be ignored silently

    instruction: Annotated[str, _text("instruction", "give the text of the instruction to route")] = Field(
        max_length=MAX_INSTRUCTION_CHARS, description="the instruction to route")
    models: list[ModelName] | None = Field(default=None, min_length=1, max_length=MAX_MODELS,
                                           description="candidates (default: the whole zoo)")
    cost_weight: float = Field(default=0.0, ge=0.0, le=1e6, allow_inf_nan=False, strict=True, description=(
        "utility = p_correct - cost_weight * cost / max cost"))
    top_k: int | None = Field(default=None, ge=1, le=MAX_MODELS, strict=True, description="return only the best k")


class RankedModel(BaseModel):
    model: str
    p_correct: float
    cost: float | None
    utility: float
    shortened: bool = Field(description="the instruction was longer than the router reads; it read head + tail")


class AddModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, _text("name", None), AfterValidator(check_model_name)] = Field(max_length=200)
    scores: dict[QuestionId, Score] = Field(min_length=1, description=(
        "aptitude question id -> score in [0, 1]; every aptitude question (see `missing`)"))
    cost: Amount | None = Field(default=None, description="cost of a query, in `cost_unit`")
    params_b: Amount | None = Field(default=None, description="billions of parameters (the cost where none is given)")
    cost_unit: Annotated[str, _text("cost_unit", None)] = Field(
        default="", max_length=100, description="the zoo's one cost unit ('' = unspecified)")
    missing: Literal["error", "wrong"] = Field(default="error", description=(
        "'error': every aptitude question must be scored; 'wrong': a missing score counts as 0 (up to 5%)"))
    endpoint: Annotated[str, _text("endpoint", None)] | None = Field(
        default=None, max_length=2000, description="OpenAI-compatible base URL the gateway forwards to")
    upstream_model: Annotated[str, _text("upstream_model", None)] | None = Field(
        default=None, max_length=2000, description="the model id the endpoint knows")
    api_key_env: Annotated[str, _text("api_key_env", None)] | None = Field(
        default=None, max_length=200, description="environment variable holding the endpoint's API key (not the key)")
    price_in: Amount | None = Field(default=None, description="USD per 1M input tokens (sets the cost)")
    price_out: Amount | None = Field(default=None, description="USD per 1M output tokens (sets the cost)")
    context_window: int | None = Field(default=None, ge=1, le=MAX_CONTEXT_WINDOW, strict=True, description=(
        "tokens the model reads and writes in one request (absent: undeclared)"))
    capabilities: list[Literal[CAPABILITIES]] | None = Field(default=None, max_length=len(CAPABILITIES), description=(
        f"what the model serves, of {', '.join(CAPABILITIES)} ([]: none; absent: undeclared)"))
    tokenizer: Annotated[str, _text("tokenizer", None)] | None = Field(
        default=None, max_length=2000, description="Hugging Face id or path of a tokenizer counting its tokens")


def _safe(text: str, limit: int = 1000) -> str:
    """`text` cut to `limit` characters and encodable as UTF-8 (a lone surrogate becomes its \\u escape)."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe_error(error: dict) -> dict:
    """One validation error as plain JSON: where, what, and the bad value only as a short ASCII repr (FastAPI's
    default echoes the value itself, which cannot be serialised when it is NaN, inf or a lone surrogate)."""
    return {"type": _safe(str(error.get("type", ""))),
            "loc": [x if isinstance(x, int) else _safe(str(x), 200) for x in error.get("loc", ())],
            "msg": _safe(str(error.get("msg", ""))),
            "input": _safe(ascii(error.get("input")), 200)}


def _stop_on_signals(lifecycle: Lifecycle) -> None:
    """On SIGTERM or SIGINT, cancel every wait on an upstream (`Lifecycle.begin_shutdown`: in-flight streams end
    with an error event, answers not begun get a 503), then let the server's own handler stop it. Only where the
    app runs in the main thread (uvicorn's `serve`); elsewhere (a server in a thread) nothing is installed."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            before = signal.getsignal(sig)

            def handler(number, frame, before=before) -> None:
                lifecycle.begin_shutdown()
                if callable(before):
                    before(number, frame)
            signal.signal(sig, handler)
        except ValueError:   # not the main thread
            return


def create_app(router: Router, persist: bool = False, gateway: GatewaySettings | None = None, *,
               state_dir: str | Path | None = None, sticky_ttl: float = 3600.0, feedback_ttl: float = 7 * 86400.0,
               rank_batch: int = 8, instance: str | None = None) -> FastAPI:
    """The FastAPI app serving `router`; `persist` makes POST /models and DELETE /models/{name} write to the
    checkpoint's zoo; `gateway`: how /v1/chat/completions forwards (default GatewaySettings()); `state_dir`: the
    folder of the conversation and answer-id store (`state.sqlite`, shared by workers; None: a new temporary
    folder); `sticky_ttl`/`feedback_ttl`: seconds a conversation stays on its model / an answer id takes feedback
    (`sticky_ttl` 0: off); `rank_batch`: requests ranked together at most; `instance`: this gateway's id for loop
    detection (shared by its workers; None: a new one)."""
    settings = gateway or GatewaySettings()
    for name, value in (("sticky_ttl (--sticky-ttl)", sticky_ttl), ("feedback_ttl (--feedback-ttl)", feedback_ttl)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
    lock = threading.Lock()  # the router (zoo, caches, bank) is shared by the ranking thread and the endpoints
    metrics = Metrics()
    ranker = Ranker(router, lock, zoo_syncer(router, log=log.warning), max_batch=rank_batch,
                    observe=lambda seconds, n: (metrics.ranking.observe(seconds), metrics.batch.observe(n)))
    state = Path(state_dir) if state_dir is not None else Path(tempfile.mkdtemp(prefix="modelsat-state-"))
    store = Store(state / "state.sqlite", sticky_ttl=sticky_ttl, feedback_ttl=feedback_ttl)
    lifecycle, upstreams = Lifecycle(), Upstreams(settings)
    gw = Gateway(router, lock, ranker, Capabilities(), store, metrics, Forwarding(settings, upstreams, lifecycle),
                 instance or uuid.uuid4().hex[:16], SelfAddress())
    gw.fwd.rank_rest = gw.rank
    gw.fwd.on_failure = lambda entry, reason: metrics.failed.labels(entry.name, reason).inc()
    gw.fwd.on_answer = gw.answered

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        ranker.start()
        _stop_on_signals(lifecycle)
        yield
        lifecycle.begin_shutdown()
        await upstreams.aclose()
        ranker.stop()
        store.close()

    app = FastAPI(title="modelsat", description="Route instructions to the LLM most likely to answer them well.",
                  lifespan=lifespan)
    app.state.gateway = gw
    app.add_middleware(AccessLayer, max_body=MAX_BODY_BYTES)
    mount(app, gw)
    feedback.mount(app, router, lock, lambda: store, metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [_safe_error(e) for e in exc.errors()]}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # FastAPI's "There was an error parsing the body": say why (bytes that are not UTF-8, a number of
            # 5,000 digits); the text after ";" advises a Python call, meant for the server, not the client
            why = _safe(str(exc.__cause__).split(";")[0], 200)
            exc = HTTPException(400, f"the request body is not valid JSON ({why}); send a JSON object in UTF-8")
        return await http_exception_handler(request, exc)

    @app.get("/health")
    async def health() -> dict:
        # async: answered on the event loop, so requests waiting for the ranking cannot hold it up
        return {"status": "ok", "models": len(router.zoo), "aptitude_fingerprint": router.aptitude.fingerprint}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/models")
    def models() -> list[dict]:
        with lock:
            return router.zoo.describe()

    @app.post("/rank", response_model=list[RankedModel])
    def rank(req: RankRequest) -> list[dict]:
        try:
            ranked = ranker.rank_now(req.instruction, req.models, req.cost_weight, req.top_k)
        except ValueError as e:
            raise HTTPException(422, _safe(str(e))) from e
        return [r._asdict() for r in ranked]

    @app.post("/models", status_code=201)
    def add_model(req: AddModelRequest, request: Request) -> dict:
        server = request.scope.get("server")
        if server:
            gw.myself.learn(server[0], server[1])
        loop = gw.myself.why(req.endpoint)
        if loop:
            raise HTTPException(422, f"endpoint: model {req.name!r} {loop}; a gateway cannot forward to itself")
        try:
            with lock:
                if req.name in router.zoo:
                    raise HTTPException(409, f"model {req.name!r} is already in the zoo")
                router.add_model(req.name, req.scores, cost=req.cost, params_b=req.params_b, persist=persist,
                                 cost_unit=req.cost_unit, missing=req.missing, endpoint=req.endpoint,
                                 upstream_model=req.upstream_model, api_key_env=req.api_key_env,
                                 price_in=req.price_in, price_out=req.price_out, context_window=req.context_window,
                                 capabilities=req.capabilities, tokenizer=req.tokenizer)
        except ValueError as e:
            raise HTTPException(422, _safe(str(e))) from e
        return {"added": req.name, "models": len(router.models)}

    @app.delete("/models/{name:path}")
    def remove_model(name: str) -> dict:
        with lock:
            if name not in router.zoo:
                raise HTTPException(404, f"model {_safe(name, 200)!r} is not in the zoo; see GET /models")
            name = router.zoo.get(name).name
            router.remove_model(name, persist=persist)
            return {"removed": name, "models": len(router.models)}

    return app
