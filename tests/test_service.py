"""The HTTP service on bad input: every field of every endpoint gets a 4xx naming it, never a 500, and a
connection stays usable after an error (issue 21)."""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from modelsat import Router
from modelsat.serving.app import create_app

INSTRUCTION = "A math question about algebra number 3: which option is right?\nA. first\nB. second"
NOT_FINITE = ["NaN", "Infinity", "-Infinity", "1e309", "-1e309"]   # Python's json reads them all (1e309 -> inf)


@pytest.fixture(scope="module")
def router(tiny_checkpoint: Path) -> Router:
    return Router.from_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def client(router: Router) -> TestClient:
    return TestClient(create_app(router), raise_server_exceptions=False)


def post(client, path: str, raw: str | bytes) -> httpx.Response:
    """POST a raw body (NaN and lone surrogates cannot be written with `json=`)."""
    return client.post(path, content=raw.encode() if isinstance(raw, str) else raw,
                       headers={"content-type": "application/json"})


def rank_body(field: str, raw_value: str) -> str:
    base = {"instruction": json.dumps(INSTRUCTION)}
    base[field] = raw_value
    return "{" + ", ".join(f'"{k}": {v}' for k, v in base.items()) + "}"


def assert_refused(r: httpx.Response, field: str, status: int = 422) -> str:
    """`r` is `status` with a strict-JSON body naming `field` (in a validation error's loc, or in the message)."""
    assert r.status_code == status, r.text
    detail = json.loads(r.text, parse_constant=lambda c: pytest.fail(f"{c} in the body"))["detail"]
    if isinstance(detail, list):
        assert field in detail[0]["loc"], detail
        return detail[0]["msg"]
    assert field in detail, detail
    return detail


RANK_BAD = ([("cost_weight", v) for v in NOT_FINITE + ["-1", "1e7", '"0.5"', "true", "null", "[1]"]]
            + [("top_k", v) for v in NOT_FINITE + ["0", "-3", "2.5", "true", '"2"', "10001", "[2]"]]
            + [("instruction", v) for v in ['"\\ud83c"', '"ok \\udfff then"', '""', '"  \\n "', "5", "null",
                                             json.dumps("x" * 32_001)]]
            + [("models", v) for v in ['["\\ud83c"]', '["m-math", "\\udc00"]', "[]", '"m-math"', "[1]", '[""]']]
            + [("cost_wieght", "0.5")])   # a misspelt field is refused, not ignored


@pytest.mark.parametrize("field,raw_value", RANK_BAD)
def test_rank_refuses_each_bad_field_with_a_422_naming_it(client, field: str, raw_value: str) -> None:
    assert_refused(post(client, "/rank", rank_body(field, raw_value)), field)


def test_rank_refusals_say_what_is_wrong(client) -> None:
    msg = assert_refused(post(client, "/rank", rank_body("cost_weight", "NaN")), "cost_weight")
    assert "finite" in msg
    msg = assert_refused(post(client, "/rank", '{"instruction": "ok \\ud83c"}'), "instruction")
    assert "U+D83C" in msg and "character 4" in msg
    msg = assert_refused(post(client, "/rank", rank_body("models", '["m-math", " "]')), "models")
    assert "model name is empty; give names from GET /models" in msg
    r = post(client, "/rank", rank_body("models", '["nope"]'))
    assert r.status_code == 422 and "unknown model" in r.json()["detail"]
    r = post(client, "/rank", rank_body("models", '["m-math", " m-law"]'))   # names are trimmed before lookup
    assert r.status_code == 200 and {m["model"] for m in r.json()} == {"m-math", "m-law"}


BAD_BODIES = {"not-utf8": b'{"instruction": "\xff\xfe"}', "5000-digits": b'{"top_k": 1' + b"0" * 5000 + b"}",
              "not-json": b"{not json", "list": b"[]", "null": b"null"}


@pytest.mark.parametrize("raw", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_rank_refuses_bodies_that_are_not_a_json_object(client, raw: bytes) -> None:
    r = post(client, "/rank", raw)
    assert r.status_code in (400, 422) and "detail" in r.json(), r.text
    if r.status_code == 400:
        assert "not valid JSON" in r.json()["detail"]


def test_body_size_is_bounded_with_and_without_content_length(client) -> None:
    from modelsat.serving.app import MAX_BODY_BYTES

    big = json.dumps({"instruction": "x" * (MAX_BODY_BYTES + 10)}).encode()
    assert post(client, "/rank", big).status_code == 413

    def chunked(data: bytes, size: int = 65_536):        # a generator body is sent chunked, without Content-Length
        yield from (data[i:i + size] for i in range(0, len(data), size))

    r = client.post("/rank", content=chunked(big), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over" in r.json()["detail"]
    # At the ASGI level: the service stops reading a chunked body once it passes the bound (memory stays bounded).
    pulled, sent = 0, []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"x" * 65_536, "more_body": pulled < 10 * MAX_BODY_BYTES // 65_536}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/rank", "raw_path": b"/rank", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1), "server": ("t", 80)}
    asyncio.run(client.app(scope, receive, send))
    assert sent[0]["status"] == 413 and pulled <= MAX_BODY_BYTES // 65_536 + 2, pulled
    small = json.dumps({"instruction": INSTRUCTION, "top_k": 1}).encode()
    r = client.post("/rank", content=chunked(small, 7), headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()) == 1, r.text


def test_rank_answers_and_says_whether_it_shortened(client) -> None:
    r = post(client, "/rank", json.dumps({"instruction": INSTRUCTION, "top_k": 2, "cost_weight": 0.5}))
    assert r.status_code == 200 and len(r.json()) == 2 and r.json()[0]["shortened"] is False
    long = "A law passage about contracts. " * 200 + INSTRUCTION   # far past max_instruction_tokens (64)
    r = post(client, "/rank", json.dumps({"instruction": long, "top_k": 1}))
    assert r.status_code == 200 and r.json()[0]["shortened"] is True


# ----- POST /models ------------------------------------------------------------------------------
@pytest.fixture
def writable(tiny_checkpoint: Path, tmp_path: Path):
    """A client over a copy of the checkpoint whose POST /models writes to the zoo, and that copy."""
    shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    router = Router.from_checkpoint(tmp_path / "ckpt")
    return TestClient(create_app(router, persist=True), raise_server_exceptions=False), router, tmp_path / "ckpt"


def model_body(router: Router, **fields: str) -> str:
    """A POST /models body: a good one, with `fields` (raw JSON values) replacing or adding fields."""
    unit = router.zoo.describe()[0]["cost_unit"]
    scores = "{" + ", ".join(f'"{q}": 1.0' for q in router.aptitude.question_ids) + "}"
    base = {"name": '"m-new"', "scores": scores, "cost": "1.0", "cost_unit": json.dumps(unit)} | fields
    return "{" + ", ".join(f'"{k}": {v}' for k, v in base.items()) + "}"


def one_score(router: Router, raw_value: str, key: str | None = None) -> str:
    qids = router.aptitude.question_ids
    return "{" + ", ".join(f'"{q}": 1.0' for q in qids[1:]) + f', "{key or qids[0]}": {raw_value}' + "}"


MODEL_BAD = ([("cost", v) for v in NOT_FINITE + ["-1", '"1"', "true"]]
             + [("params_b", v) for v in NOT_FINITE + ["-0.5", '"7"']]
             + [("name", v) for v in ['"\\ud83c"', '" m-math"', '"m-new "', '"a,b"', '"tab\\there"', '""',
                                      json.dumps("m" * 201), "null", "3"]]
             + [("cost_unit", v) for v in ['"\\ud83c"', "5", json.dumps("u" * 101)]]
             + [("missing", v) for v in ['"maybe"', "true"]]
             + [("scores", v) for v in ["[]", '"all"', "{}"]]
             + [("extra", "1")])


@pytest.mark.parametrize("field,raw_value", MODEL_BAD)
def test_add_model_refuses_each_bad_field_with_a_422_naming_it(writable, field: str, raw_value: str) -> None:
    client, router, ckpt = writable
    before = sorted((ckpt / "zoo").iterdir())
    assert_refused(post(client, "/models", model_body(router, **{field: raw_value})), field)
    assert sorted((ckpt / "zoo").iterdir()) == before and "m-new" not in router.zoo


@pytest.mark.parametrize("raw_value", NOT_FINITE + ["2", "-0.1", '"1"', "null"])
def test_add_model_refuses_scores_out_of_0_1_or_not_numbers(writable, raw_value: str) -> None:
    client, router, _ = writable
    r = post(client, "/models", model_body(router, scores=one_score(router, raw_value)))
    assert_refused(r, "scores")
    assert r.json()["detail"][0]["loc"][2] == router.aptitude.question_ids[0]   # names the question too
    r = post(client, "/models", model_body(router, scores=one_score(router, "1.0", key="\\ud83c")))
    assert_refused(r, "scores")


def test_add_model_keeps_one_cost_unit_and_checks_missing_scores(writable) -> None:
    client, router, ckpt = writable
    unit = router.zoo.describe()[0]["cost_unit"]
    assert unit and unit != "params_b"   # the tiny zoo's costs have a unit of their own
    r = post(client, "/models", model_body(router, cost_unit='"usd_per_1M_tokens"'))
    assert r.status_code == 422 and "usd_per_1M_tokens" in r.json()["detail"] and unit in r.json()["detail"]
    r = post(client, "/models", model_body(router, cost="null", params_b="7"))   # cost in params_b: another unit
    assert r.status_code == 422 and "params_b" in r.json()["detail"]
    qids = router.aptitude.question_ids
    one_short = "{" + ", ".join(f'"{q}": 1.0' for q in qids[1:]) + "}"
    assert post(client, "/models", model_body(router, scores=one_short)).status_code == 422   # missing: error
    three_short = "{" + ", ".join(f'"{q}": 1.0' for q in qids[3:]) + "}"        # 3 of 24 > 5%
    r = post(client, "/models", model_body(router, scores=three_short, missing='"wrong"'))
    assert r.status_code == 422 and "m-new" not in router.zoo
    r = post(client, "/models", model_body(router, scores=one_short, missing='"wrong"'))
    assert r.status_code == 201, r.text
    row = next(m for m in client.get("/models").json() if m["model"] == "m-new")
    assert row["missing"] == "wrong" and row["num_missing"] == 1
    assert "m-new" in Router.from_checkpoint(ckpt).models
    assert post(client, "/models", model_body(router, scores=one_short, missing='"wrong"')).status_code == 409


# ----- a real server: errors leave the keep-alive connection usable --------------------------------
@pytest.fixture
def server(router: Router):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(router), host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "the test server did not start in 20 s"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_errors_leave_the_connection_usable(server: str, router: Router, monkeypatch, caplog) -> None:
    connects = []

    def trace(event: str, info: dict) -> None:
        if event == "connection.connect_tcp.complete":
            connects.append(info)

    def boom(*args, **kwargs):
        raise RuntimeError("a bug inside the router")

    with httpx.Client(base_url=server, timeout=60, event_hooks={
            "request": [lambda request: request.extensions.update(trace=trace)]}) as c:
        bad = [rank_body("cost_weight", "NaN"), rank_body("top_k", "1e309"), '{"instruction": "\\ud83c"}']
        for raw in bad:
            r = c.post("/rank", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422 and r.json()["detail"][0]["loc"][0] == "body"
        with monkeypatch.context() as m:
            m.setattr(router, "rank", boom)
            r = c.post("/rank", json={"instruction": INSTRUCTION})
        assert r.status_code == 500 and r.json() == {"detail": "internal error: RuntimeError"}
        assert any("a bug inside the router" in str(rec.exc_info[1]) for rec in caplog.records if rec.exc_info)
        r = c.post("/rank", json={"instruction": INSTRUCTION, "top_k": 1})
        assert r.status_code == 200 and len(r.json()) == 1
        assert c.get("/health").status_code == 200
    assert len(connects) == 1   # one TCP connection served every request


def test_health_answers_while_a_ranking_holds_the_lock(server: str, router: Router, monkeypatch) -> None:
    entered, release = threading.Event(), threading.Event()
    rank = router.rank

    def slow(*args, **kwargs):
        entered.set()
        release.wait(timeout=30)
        return rank(*args, **kwargs)

    monkeypatch.setattr(router, "rank", slow)
    results = []
    worker = threading.Thread(target=lambda: results.append(
        httpx.post(f"{server}/rank", json={"instruction": INSTRUCTION}, timeout=60).status_code))
    worker.start()
    try:
        assert entered.wait(timeout=30)
        assert httpx.get(f"{server}/health", timeout=5).json()["models"] == len(router.models)
    finally:
        release.set()
        worker.join(timeout=60)
    assert results == [200]
