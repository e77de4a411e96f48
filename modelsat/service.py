"""HTTP JSON service over a router (FastAPI): `modelsat serve --checkpoint DIR`.

    POST /rank    {"instruction": str, "models"?: [str], "cost_weight"?: float, "top_k"?: int}
    GET  /models  the zoo
    POST /models  {"name": str, "scores": {question_id: score}, "cost"?: float, "params_b"?: float}
    GET  /health
OpenAPI docs at /docs. Bodies are validated (4xx with a message, never a 500) and bounded in size.
"""
from __future__ import annotations

import threading

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from modelsat.router import MAX_INSTRUCTION_CHARS, Router

MAX_BODY_BYTES = 1_000_000


class RankRequest(BaseModel):
    instruction: str = Field(min_length=1, max_length=MAX_INSTRUCTION_CHARS, description="the instruction to route")
    models: list[str] | None = Field(default=None, max_length=10_000, description="candidates (default: the whole zoo)")
    cost_weight: float = Field(default=0.0, ge=0.0, le=1e6, description=(
        "utility = p_correct + the checkpoint's aptitude priors (route.aptitude_prior, route.category_prior) "
        "- cost_weight * cost / max cost"))
    top_k: int | None = Field(default=None, ge=1, description="return only the best k")


class RankedModel(BaseModel):
    model: str
    p_correct: float
    cost: float | None
    utility: float


class AddModelRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    scores: dict[str, float] = Field(description="aptitude question id -> score in [0, 1]; every aptitude question")
    cost: float | None = Field(default=None, ge=0.0)
    params_b: float | None = Field(default=None, ge=0.0)


def create_app(router: Router, persist: bool = False) -> FastAPI:
    """The FastAPI app serving `router`; `persist` makes POST /models write to the checkpoint's zoo."""
    app = FastAPI(title="modelsat", description="Route instructions to the LLM most likely to answer them well.")
    lock = threading.Lock()  # the zoo and the feature cache are shared between requests

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        return await call_next(request)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "models": len(router.models), "aptitude_fingerprint": router.aptitude.fingerprint}

    @app.get("/models")
    def models() -> list[dict]:
        with lock:
            return router.zoo.describe()

    @app.post("/rank", response_model=list[RankedModel])
    def rank(req: RankRequest) -> list[dict]:
        if not req.instruction.strip():
            raise HTTPException(422, "instruction is empty")
        try:
            with lock:
                ranked = router.rank(req.instruction, req.models, req.cost_weight, req.top_k)
        except ValueError as e:
            raise HTTPException(422, str(e)) from e
        return [r._asdict() for r in ranked]

    @app.post("/models", status_code=201)
    def add_model(req: AddModelRequest) -> dict:
        try:
            with lock:
                if req.name in router.zoo:
                    raise HTTPException(409, f"model {req.name!r} is already in the zoo")
                router.add_model(req.name, req.scores, cost=req.cost, params_b=req.params_b, persist=persist)
        except ValueError as e:
            raise HTTPException(422, str(e)) from e
        return {"added": req.name, "models": len(router.models)}

    return app
