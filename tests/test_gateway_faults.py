"""Issue 33: every upstream misbehaviour ends in a fallback or a clean error, within a deadline. One test (or more)
per kind of fault, against fake upstreams served by uvicorn on loopback (tests/fake_upstream.py) and, for SIGTERM,
a real `modelsat serve` process."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fake_upstream import FakeUpstream, Served, stream_events
from test_gateway import MESSAGES, endpoint_checkpoint, relayed

from modelsat import Router
from modelsat.serving.app import create_app
from modelsat.serving.plan import GatewaySettings
from modelsat.zoo import Zoo

DEADLINE = 3.0
SETTINGS = GatewaySettings(max_attempts=3, timeout=1.0, connect_timeout=0.5, deadline=DEADLINE,
                           max_answer_bytes=1 << 20, upstream_connections=4)


@pytest.fixture(scope="module")
def fakes():
    a, b = FakeUpstream("a"), FakeUpstream("b")
    with Served(a.app) as sa, Served(b.app) as sb:
        yield {"up-a": (a, sa.url + "/v1"), "up-b": (b, sb.url + "/v1")}


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint, tmp_path_factory, fakes):
    return endpoint_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("faults"),
                               {n: u for n, (_, u) in fakes.items()})


@pytest.fixture(scope="module")
def served(ckpt):
    app = create_app(Router.from_checkpoint(ckpt), persist=True, gateway=SETTINGS)
    with Served(app) as server:
        yield app, server.url


@pytest.fixture
def gateway(served):
    with httpx.Client(base_url=served[1], timeout=30) as http:
        yield http


@pytest.fixture(autouse=True)
def reset(fakes, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test-123")
    for fake, _ in fakes.values():
        fake.mode, fake.delay, fake.requests[:], fake.count, fake.slow, fake.big, fake.drip = \
            "ok", 0.0, [], 0, 2.0, 2 << 20, 0.5


def chat(http, model="modelsat", **body) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": MESSAGES, **body})


def ranked(http) -> list[str]:
    return [r["model"] for r in chat(http).json()["modelsat"]["ranking"]]


def whole_events(content: bytes) -> list[object]:
    """Every SSE event of a relayed stream, parsed; fails on an event that is not whole `data: <JSON>`."""
    assert content.endswith(b"\n\n"), content[-80:]
    out = []
    for event in content[:-2].split(b"\n\n"):
        assert event.startswith(b"data: "), event[:80]
        out.append("[DONE]" if event == b"data: [DONE]" else json.loads(event[6:]))
    return out


# ----- 1. names with surrounding spaces --------------------------------------------------------------------------
def test_names_with_surrounding_spaces_are_trimmed_everywhere(gateway) -> None:
    r = chat(gateway, modelsat={"models": [" up-a", "up-b "]})
    assert r.status_code == 200, r.text
    assert {m["model"] for m in r.json()["modelsat"]["ranking"]} == {"up-a", "up-b"}
    r = chat(gateway, modelsat={"models": [" up-a", "up-a"]})
    assert r.status_code == 400 and "distinct" in r.json()["error"]["message"]
    r = chat(gateway, model=" up-b ")
    assert r.status_code == 200 and r.json()["model"] == "up-b"
    r = gateway.post("/v1/feedback", json={"model": " up-b ", "instruction": "hi", "score": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "score"


# ----- 2. one slow provider cannot starve the others ---------------------------------------------------------------
def test_a_slow_upstream_fills_only_its_own_pool(gateway, fakes, served) -> None:
    slow = fakes["up-a"][0]
    slow.delay = 0.5            # each stream: 5 events, ~2 s
    def stream(_):
        with httpx.Client(base_url=served[1], timeout=30) as http:
            return http.post("/v1/chat/completions", json={"model": "up-a", "messages": MESSAGES, "stream": True})
    with ThreadPoolExecutor(6) as pool:
        streams = [pool.submit(stream, i) for i in range(6)]    # 4 fill up-a's pool (upstream_connections=4)
        time.sleep(0.3)
        start = time.monotonic()
        r = chat(gateway, model="up-b")
        took = time.monotonic() - start
        results = [s.result() for s in streams]
    assert r.status_code == 200 and took < 1.0, (r.status_code, took)
    codes = sorted(x.status_code for x in results)
    assert codes.count(200) >= 4 and set(codes) <= {200, 504}, codes
    for x in results:
        if x.status_code == 504:
            assert "no free connection" in x.json()["error"]["attempts"][0]["error"]


# ----- 3. one deadline for the whole request ------------------------------------------------------------------------
def test_a_trickling_upstream_ends_at_the_deadline(gateway, fakes) -> None:
    fake = fakes["up-a"][0]
    fake.mode, fake.drip = "trickle", 0.2          # one byte every 0.2 s: never a read timeout, never done
    start = time.monotonic()
    r = chat(gateway, model="up-a")
    assert r.status_code == 504 and time.monotonic() - start < DEADLINE + 1
    assert "deadline of 3 s" in r.json()["error"]["attempts"][0]["error"]
    start = time.monotonic()
    r = chat(gateway, model="up-a", stream=True)
    assert time.monotonic() - start < DEADLINE + 1
    # a stream cannot start before its first whole event: this one never completes one, so it is a 504 too
    assert r.status_code == 504
    fake.mode, fake.delay = "ok", 0.9             # a stream that starts, then goes on past the deadline
    start = time.monotonic()
    r = chat(gateway, model="up-a", stream=True)
    events = whole_events(r.content)
    assert time.monotonic() - start < DEADLINE + 1 and r.status_code == 200
    assert "deadline" in events[-1]["error"]["message"] and len(events) >= 2
    deadline = time.monotonic() + 3
    while fake.open and time.monotonic() < deadline:   # the gateway stopped reading: the upstream sees it go
        time.sleep(0.1)
    assert fake.open == 0


# ----- 4. answers that are not a chat completion --------------------------------------------------------------------
@pytest.mark.parametrize("mode,error", [
    ("nan", "not strict JSON"), ("no_choices", "no `choices`"), ("array", "JSON list, not an object"),
    ("redirect", "HTTP 302"), ("empty", "not strict JSON"), ("not_utf8", "not strict JSON"),
    ("huge", "over the limit"), ("500", "HTTP 500")])
def test_an_answer_that_is_not_a_completion_fails_over(gateway, fakes, mode, error) -> None:
    first, second = ranked(gateway)
    fakes[first][0].mode = mode
    r = chat(gateway)
    assert r.status_code == 200 and r.json()["model"] == second, r.text
    [attempt] = r.json()["modelsat"]["attempts"]
    assert attempt["model"] == first and error in attempt["error"], attempt


@pytest.mark.parametrize("mode,error", [("not_sse", "content type 'application/json'"),
                                        ("error_event", "began with an error event"), ("500", "HTTP 500")])
def test_a_stream_that_is_not_an_sse_stream_fails_over(gateway, fakes, mode, error, caplog) -> None:
    first, second = ranked(gateway)
    fakes[first][0].mode = mode
    r = chat(gateway, stream=True)
    assert r.status_code == 200 and r.headers["x-modelsat-model"] == second
    assert whole_events(r.content)[-1] == "[DONE]"
    failed = [rec.attempt for rec in caplog.records if hasattr(rec, "attempt")]
    assert failed and failed[-1]["model"] == first and error in failed[-1]["error"], failed


# ----- 5. a stream cut midway ends with a whole error event ----------------------------------------------------------
@pytest.mark.parametrize("mode,sent,why", [("cut_mid_event", 2, "broke midway"), ("cut", 2, "broke midway"),
                                           ("nan_event", 2, "not strict JSON"), ("no_done", 5, "without [DONE]"),
                                           ("huge", None, "over the limit")])
def test_a_broken_stream_ends_with_one_whole_error_event(gateway, fakes, mode, sent, why) -> None:
    fakes["up-a"][0].mode = mode
    r = chat(gateway, model="up-a", stream=True)
    events = whole_events(r.content)      # every event whole: none glued onto a half-sent line
    assert r.status_code == 200 and why in events[-1]["error"]["message"], events[-1]
    if sent is not None:
        first = events[0]["id"]
        assert r.content.startswith(relayed(stream_events("a", "up-a-upstream-id")[:sent], first, "up-a"))
        assert len(events) == sent + 1


def test_the_openai_client_raises_an_api_error_for_a_cut_stream(served, fakes) -> None:
    openai = pytest.importorskip("openai", reason="the openai package is not installed")
    client = openai.OpenAI(base_url=served[1] + "/v1", api_key="unused", max_retries=0)
    fakes["up-a"][0].mode = "cut_mid_event"
    with pytest.raises(openai.APIError, match="broke midway"):
        list(client.chat.completions.create(model="up-a", messages=MESSAGES, stream=True))


# ----- 6. a client that leaves cancels the upstream call and any fallback --------------------------------------------
def test_a_client_that_disconnects_cancels_the_fallback(served, fakes) -> None:
    first, second = ["up-a", "up-b"]
    fakes[first][0].mode, fakes[first][0].slow = "timeout", 1.5   # the gateway's read times out after 1 s
    with httpx.Client(base_url=served[1], timeout=0.3) as http:
        with pytest.raises(httpx.TimeoutException):
            chat(http, modelsat={"models": [first, second], "cost_weight": 0.0})
    time.sleep(2.0)
    assert len(fakes[first][0].requests) == 1 and fakes[second][0].requests == []   # no call for nobody
    fakes[first][0].mode, fakes[first][0].delay = "ok", 0.5
    with httpx.Client(base_url=served[1], timeout=30) as http:     # a stream left midway
        with http.stream("POST", "/v1/chat/completions",
                         json={"model": first, "messages": MESSAGES, "stream": True}) as s:
            next(s.iter_bytes())
    deadline = time.monotonic() + 2
    while fakes[first][0].open and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fakes[first][0].open == 0


# ----- 7. a zoo entry pointing at the gateway itself ----------------------------------------------------------------
def test_an_endpoint_that_is_the_gateway_itself_is_refused(gateway, served, ckpt, fakes) -> None:
    app, url = served
    port = url.rsplit(":", 1)[1]
    scores = Zoo.load(ckpt / "zoo", app.state.gateway.router.aptitude).get("up-a").scores
    for endpoint in (url + "/v1", f"http://localhost:{port}/v1", f"http://127.0.0.1:{port}"):
        r = gateway.post("/models", json={"name": "loop", "scores": scores, "endpoint": endpoint,
                                          "upstream_model": "x", "price_in": 1.0, "price_out": 1.0})
        assert r.status_code == 422 and "this gateway itself" in r.json()["detail"], (endpoint, r.text)
    disk = Zoo.load(ckpt / "zoo", app.state.gateway.router.aptitude)   # as `modelsat zoo add` in another shell
    disk.add("loop", scores, endpoint=url + "/v1", upstream_model="x", price_in=0.01, price_out=0.01)
    try:
        deadline = time.monotonic() + 3
        while "loop" not in app.state.gateway.router.zoo and time.monotonic() < deadline:
            time.sleep(0.1)
        r = chat(gateway)
        assert r.status_code == 200 and r.json()["model"] != "loop"
        assert {"model": "loop", "reason": f"has as its endpoint this gateway itself ({url}/v1)"} in \
            r.json()["modelsat"]["excluded"]
        assert chat(gateway, model="loop").status_code == 400
        r = gateway.post("/v1/chat/completions", json={"model": "up-a", "messages": MESSAGES},
                         headers={"x-modelsat-via": f"other,{app.state.gateway.instance}"})
        assert r.status_code == 508
        assert sum(len(f.requests) for f, _ in fakes.values()) == 1    # only the routed chat reached an upstream
    finally:
        disk.remove("loop")


# ----- 9. 429 and Retry-After ---------------------------------------------------------------------------------------
def test_a_rate_limited_model_named_directly_answers_429_with_retry_after(gateway, fakes) -> None:
    fakes["up-a"][0].mode = "429"
    r = chat(gateway, model="up-a")
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    assert r.json()["error"]["type"] == "rate_limit_error"
    r = chat(gateway)                               # routed: the other candidate answers
    assert r.status_code == 200 and r.json()["model"] == "up-b"
    fakes["up-b"][0].mode = "429"
    r = chat(gateway)                               # every candidate rate-limited: 429 too
    assert r.status_code == 429 and r.headers["retry-after"] == "7"


# ----- SIGTERM: `modelsat serve` stops within seconds whatever upstreams do -------------------------------------------
def test_sigterm_stops_the_server_within_seconds_and_ends_streams_with_an_error(ckpt, fakes, tmp_path) -> None:
    fake = fakes["up-a"][0]
    fake.mode, fake.slow = "ok", 2.0
    fake.delay = 30.0                              # a stream that sends its first event, then waits 30 s
    copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, copy)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "modelsat.cli", "serve", "--checkpoint", str(copy), "--port",
                             str(port), "--workers", "1", "--threads", "1", "--state-dir", str(tmp_path / "state"),
                             "--deadline", "120", "--upstream-timeout", "60"],
                            env={**os.environ, "FAKE_KEY": "k"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-2000:]
            time.sleep(0.3)
        got: dict = {}

        def stream() -> None:
            with httpx.stream("POST", url + "/v1/chat/completions", timeout=60,
                              json={"model": "up-a", "messages": MESSAGES, "stream": True}) as r:
                got["content"] = b"".join(r.iter_bytes())
        reader = threading.Thread(target=stream)
        reader.start()
        time.sleep(1.5)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        took = time.monotonic() - start
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took < 5, took
    events = whole_events(got["content"])
    assert "shutting down" in events[-1]["error"]["message"] and len(events) == 2
