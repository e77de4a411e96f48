"""HTTP JSON service over a router (FastAPI): `modelsat serve --checkpoint DIR`.

    POST /rank    {"instruction": str, "models"?: [str], "cost_weight"?: float, "top_k"?: int}
    GET  /models  the zoo
    POST /models  {"name": str, "scores": {question_id: score}, "cost"?: float, "params_b"?: float,
                   "cost_unit"?: str, "missing"?: "error" | "wrong", "endpoint"?: url, "upstream_model"?: str,
                   "api_key_env"?: str, "price_in"?: float, "price_out"?: float}
    DELETE /models/{name}
    GET  /health
    POST /v1/chat/completions, GET /v1/models   the OpenAI-compatible gateway (modelsat/serving/gateway.py)
The zoo folder is re-read when its files change (checked at most once a second), so `modelsat zoo add/remove` in
another process shows without a restart.
OpenAPI docs at /docs. Bodies are validated and bounded in size: bad input gets a 4xx naming the field, never a
500; an unexpected error gets a JSON 500 and the connection stays open.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Annotated, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelsat.serving.gateway import GatewaySettings, mount, zoo_syncer
from modelsat.router import MAX_INSTRUCTION_CHARS, Router, check_text
from modelsat.zoo import check_model_name

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


def create_app(router: Router, persist: bool = False, gateway: GatewaySettings | None = None) -> FastAPI:
    """The FastAPI app serving `router`; `persist` makes POST /models and DELETE /models/{name} write to the
    checkpoint's zoo; `gateway`: how /v1/chat/completions forwards (default GatewaySettings())."""
    closers = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        for close in closers:
            await close()

    app = FastAPI(title="modelsat", description="Route instructions to the LLM most likely to answer them well.",
                  lifespan=lifespan)
    lock = threading.Lock()  # the zoo and the feature cache are shared between requests
    sync = zoo_syncer(router, log=log.warning)   # call with `lock` held
    closers.append(mount(app, router, lock, gateway or GatewaySettings(), sync))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        # An unexpected error is answered here, not by an exception handler: Starlette re-raises after its 500
        # handler, and uvicorn then drops the keep-alive connection the client would reuse.
        try:
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
            # Read the body as it arrives, so that a chunked body without Content-Length is bounded too.
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
                chunks.append(chunk)
            request._body = b"".join(chunks)   # what Starlette's body() caches: the endpoint reads it from there
            return await call_next(request)
        except Exception as e:
            log.exception("internal error answering %s %s", request.method, request.url.path)
            return JSONResponse({"detail": f"internal error: {type(e).__name__}"}, status_code=500)

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
        # async: answered on the event loop, so requests waiting for the ranking lock cannot hold it up
        return {"status": "ok", "models": len(router.zoo), "aptitude_fingerprint": router.aptitude.fingerprint}

    @app.get("/models")
    def models() -> list[dict]:
        with lock:
            sync()
            return router.zoo.describe()

    @app.post("/rank", response_model=list[RankedModel])
    def rank(req: RankRequest) -> list[dict]:
        try:
            with lock:
                sync()
                ranked = router.rank(req.instruction, req.models, req.cost_weight, req.top_k)
        except ValueError as e:
            raise HTTPException(422, _safe(str(e))) from e
        return [r._asdict() for r in ranked]

    @app.post("/models", status_code=201)
    def add_model(req: AddModelRequest) -> dict:
        try:
            with lock:
                sync()
                if req.name in router.zoo:
                    raise HTTPException(409, f"model {req.name!r} is already in the zoo")
                router.add_model(req.name, req.scores, cost=req.cost, params_b=req.params_b, persist=persist,
                                 cost_unit=req.cost_unit, missing=req.missing, endpoint=req.endpoint,
                                 upstream_model=req.upstream_model, api_key_env=req.api_key_env,
                                 price_in=req.price_in, price_out=req.price_out)
        except ValueError as e:
            raise HTTPException(422, _safe(str(e))) from e
        return {"added": req.name, "models": len(router.models)}

    @app.delete("/models/{name:path}")
    def remove_model(name: str) -> dict:
        with lock:
            sync()
            if name not in router.zoo:
                raise HTTPException(404, f"model {_safe(name, 200)!r} is not in the zoo; see GET /models")
            router.remove_model(name, persist=persist)
            return {"removed": name, "models": len(router.models)}

    return app
