"""Issue 32: capability-aware candidates, conversations that stay on one model (across restarts), feedback over
HTTP, metrics and access logs, batched ranking; against fake upstreams on loopback (tests/fake_upstream.py). The
several-worker tests run a real `modelsat serve --workers 2` (tests/test_gateway_workers.py)."""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fake_upstream import FakeUpstream, Served
from test_gateway import MESSAGES, endpoint_checkpoint

from modelsat import Router
from modelsat.aptitude import Aptitude
from modelsat.cli import main as cli
from modelsat.serving.app import create_app
from modelsat.serving.batching import Ranker, _Job
from modelsat.serving.capabilities import TokenCounter, estimate_tokens, request_needs
from modelsat.serving.plan import GatewaySettings
from modelsat.zoo import Zoo, ZooEntry

SETTINGS = GatewaySettings(max_attempts=3, timeout=2.0, connect_timeout=0.5, deadline=10.0)
TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def declare(ckpt: Path, name: str, **serving) -> None:
    """Give zoo entry `name` of the checkpoint at `ckpt` its declared limits (rewritten as `zoo add` would)."""
    zoo = Zoo.load(ckpt / "zoo", Aptitude.load(ckpt / "aptitude.json"))
    e = zoo.get(name)
    zoo.add(name, e.scores, endpoint=e.endpoint, upstream_model=e.upstream_model, api_key_env=e.api_key_env,
            price_in=e.price_in, price_out=e.price_out, replace=True, **serving)


@pytest.fixture(scope="module")
def fakes():
    a, b = FakeUpstream("a"), FakeUpstream("b")
    with Served(a.app) as sa, Served(b.app) as sb:
        yield {"up-a": (a, sa.url + "/v1"), "up-b": (b, sb.url + "/v1")}


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint, tmp_path_factory, fakes):
    """up-a: tools and vision, a large window; up-b: no capability, a 300-token window."""
    ckpt = endpoint_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("features"),
                               {n: u for n, (_, u) in fakes.items()})
    declare(ckpt, "up-a", capabilities=["tools", "vision"], context_window=100_000)
    declare(ckpt, "up-b", capabilities=[], context_window=300)
    return ckpt


@contextmanager
def gateway_over(ckpt: Path, **kwargs):
    """An httpx client of a gateway served over `ckpt` (create_app's `kwargs`), and its app."""
    app = create_app(Router.from_checkpoint(ckpt), persist=True, gateway=SETTINGS, **kwargs)
    with Served(app) as served, httpx.Client(base_url=served.url, timeout=30) as http:
        yield http, app


@pytest.fixture(scope="module")
def served(ckpt, tmp_path_factory):
    with gateway_over(ckpt, state_dir=tmp_path_factory.mktemp("state")) as (http, app):
        yield http, app


@pytest.fixture
def gateway(served):
    return served[0]


@pytest.fixture(autouse=True)
def reset(fakes, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test-123")
    for fake, _ in fakes.values():
        fake.mode, fake.delay, fake.requests[:], fake.count = "ok", 0.0, [], 0


def chat(http, messages=MESSAGES, model="modelsat", **body) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": messages, **body})


# ----- 1. capabilities and limits ---------------------------------------------------------------------------------
def test_requests_go_only_to_candidates_that_can_serve_them(gateway, fakes) -> None:
    r = chat(gateway, tools=TOOLS, modelsat={"cost_weight": 1e6})     # cost alone would pick the cheap up-b
    ext = r.json()["modelsat"]
    assert r.status_code == 200 and r.json()["model"] == "up-a" and ext["needs"] == ["tools"]
    assert ext["excluded"] == [{"model": "up-b", "reason": "does not serve tools"}]
    assert [m["model"] for m in ext["ranking"]] == ["up-a"]
    image = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]}]
    assert chat(gateway, image, modelsat={"cost_weight": 1e6}).json()["model"] == "up-a"
    tool_turn = [*MESSAGES, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "get_time", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "noon"}]
    assert chat(gateway, tool_turn, modelsat={"cost_weight": 1e6}).json()["model"] == "up-a"
    long = [{"role": "user", "content": "Which option? " + "word " * 400}]     # ~700 tokens > up-b's 300
    r = chat(gateway, long, max_tokens=50, modelsat={"cost_weight": 1e6})
    assert r.json()["model"] == "up-a" and "context window of 300 tokens" in r.json()["modelsat"]["excluded"][0][
        "reason"]
    assert chat(gateway, MESSAGES, max_tokens=50, modelsat={"cost_weight": 1e6}).json()["model"] == "up-b"
    fakes["up-a"][0].mode, fakes["up-b"][0].requests[:] = "500", []   # the only one that can serve fails:
    r = chat(gateway, tools=TOOLS)                                     # no fallback to one that cannot
    assert r.status_code == 502 and [a["model"] for a in r.json()["error"]["attempts"]] == ["up-a"]
    assert fakes["up-b"][0].requests == []


@pytest.mark.parametrize("body,status,param,message", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, 400, "messages",
     "no candidate can serve this request (it needs json_schema)"),
    ({"model": "up-b", "tools": TOOLS}, 400, "model", "model 'up-b' cannot serve this request: it does not serve tools"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, 400, "messages",
     "messages[0].content[0].type 'input_audio' is not a content part"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages", "messages[0].role 'wizard'"),
    ({"response_format": {"type": "yaml"}}, 400, "response_format", "response_format must be an object"),
    ({"tools": "get_time"}, 400, "tools", "`tools` must be a list of objects"),
    ({"max_tokens": 0}, 400, "max_tokens", "`max_tokens` must be an integer >= 1"),
    ({"max_tokens": 10 ** 9}, 400, "messages", "no candidate can serve"),
])
def test_requests_no_candidate_can_serve_get_a_400_naming_what_they_need(gateway, body, status, param,
                                                                           message) -> None:
    r = gateway.post("/v1/chat/completions", json={"model": "modelsat", "messages": MESSAGES, **body})
    assert r.status_code == status and r.json()["error"]["param"] == param, r.text
    assert message in r.json()["error"]["message"]


def test_undeclared_limits_are_allowed_with_a_warning(ckpt, tmp_path, caplog) -> None:
    copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, copy)
    declare(copy, "up-b")                            # capabilities and window undeclared again
    with gateway_over(copy) as (http, _):
        with caplog.at_level(logging.WARNING, logger="modelsat"):
            r = chat(http, tools=TOOLS, modelsat={"cost_weight": 1e6})
    assert r.status_code == 200 and r.json()["model"] == "up-b" and r.json()["modelsat"]["excluded"] == []
    assert any("'up-b' does not declare its capabilities" in rec.getMessage() for rec in caplog.records)


def test_declared_limits_are_checked_in_post_models_and_zoo_add(gateway, ckpt, tmp_path, capsys) -> None:
    scores = Zoo.load(ckpt / "zoo", Aptitude.load(ckpt / "aptitude.json")).get("up-a").scores
    base = {"name": "new", "scores": scores, "price_in": 1.0, "price_out": 1.0}
    for bad in ({"capabilities": ["teleport"]}, {"capabilities": "tools"}, {"capabilities": ["tools", "tools"]},
                {"context_window": 0}, {"context_window": "100"}, {"context_window": 1.5}, {"tokenizer": " x"}):
        r = gateway.post("/models", json={**base, **bad})
        assert r.status_code == 422 and next(iter(bad)) in r.text, (bad, r.text)
    copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, copy)
    results = tmp_path / "r.csv"
    results.write_text("question_id,score\n" + "".join(f"{q},1\n" for q in scores))
    add = ["zoo", "add", "--checkpoint", str(copy), "--results", str(results), "--price-in", "1", "--price-out", "1"]
    assert cli(add + ["--name", "m1", "--capabilities", "tools,vision", "--context-window", "8192"]) == 0
    entry = Zoo.load(copy / "zoo", Aptitude.load(copy / "aptitude.json")).get("m1")
    assert entry.capabilities == ["tools", "vision"] and entry.context_window == 8192
    capsys.readouterr()
    for flags, message in ((["--capabilities", "teleport"], "unknown capability 'teleport'"),
                           (["--context-window", "0"], "context_window must be a positive integer")):
        assert cli(add + ["--name", "m2", *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_tokens_are_counted_by_the_entry_tokenizer_or_a_conservative_estimate(tmp_path, caplog) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(tmp_path / "tok")
    needs = request_needs({"messages": [{"role": "user", "content": "hello world hello"}]})
    counter = TokenCounter()
    with_tok = ZooEntry("m", {}, "f", tokenizer=str(tmp_path / "tok"))
    assert counter.count(with_tok, needs) == (3 + 4 + 3, f"tokenizer {tmp_path / 'tok'}")
    assert counter.count(ZooEntry("m", {}, "f"), needs) == (estimate_tokens(["hello world hello"]) + 7, "estimate")
    with caplog.at_level(logging.WARNING, logger="modelsat"):
        assert counter.count(ZooEntry("m", {}, "f", tokenizer=str(tmp_path / "absent")), needs)[1] == "estimate"
    assert any("does not load" in rec.getMessage() for rec in caplog.records)
    assert estimate_tokens(["abc" * 100]) == 100 and estimate_tokens(["日本"]) == 3   # 6 UTF-8 bytes / 2


# ----- 2. conversations stay on one model ------------------------------------------------------------------------
def follow_up(messages: list[dict], answer: dict, text: str) -> list[dict]:
    return [*messages, {"role": "assistant", "content": answer["choices"][0]["message"]["content"]},
            {"role": "user", "content": text}]


def test_a_conversation_stays_on_its_model(gateway, fakes) -> None:
    first = chat(gateway, modelsat={"cost_weight": 0.0}).json()
    model = first["model"]
    other = {"up-a", "up-b"} - {model}
    weight = 1e6 if model == "up-a" else 0.0          # a weight that would send "ok" to the other model
    turn = follow_up(MESSAGES, first, "ok")
    for _ in range(3):
        r = chat(gateway, turn, modelsat={"cost_weight": weight}).json()
        assert r["model"] == model and r["modelsat"]["sticky"] and r["modelsat"]["ranking"] == []
        turn = follow_up(turn, r, "yes")
    fresh = chat(gateway, [{"role": "user", "content": "ok"}], modelsat={"cost_weight": weight}).json()
    assert fresh["model"] in other and not fresh["modelsat"]["sticky"]   # a new conversation is routed afresh
    # a named conversation stays put whatever its messages
    named = {"conversation": "user-42-chat-7", "cost_weight": 0.0}
    start = chat(gateway, modelsat=named).json()["model"]
    r = chat(gateway, [{"role": "user", "content": "another thing"}], modelsat={**named, "cost_weight": weight})
    assert r.json()["model"] == start and r.json()["modelsat"]["sticky"]


def test_a_conversation_moves_only_with_cause(gateway, fakes) -> None:
    first = chat(gateway, modelsat={"cost_weight": 1e6}).json()
    assert first["model"] == "up-b"
    r = chat(gateway, follow_up(MESSAGES, first, "ok"), tools=TOOLS).json()      # up-b cannot serve tools
    assert r["model"] == "up-a" and "up-b does not serve tools" in r["modelsat"]["sticky_lost"]
    r = chat(gateway, follow_up(MESSAGES, first, "ok"), modelsat={"models": ["up-a"]}).json()   # not a candidate
    assert r["model"] == "up-a" and "no longer a candidate" in r["modelsat"]["sticky_lost"]
    fakes["up-b"][0].mode = "500"                                                # its model fails: fallback
    turn = follow_up(MESSAGES, first, "and then?")
    r = chat(gateway, turn, modelsat={"cost_weight": 1e6}).json()
    assert r["model"] == "up-a" and r["modelsat"]["attempts"][0]["model"] == "up-b"
    assert [m["model"] for m in r["modelsat"]["ranking"]] == ["up-a"]          # the others ranked after it failed
    fakes["up-b"][0].mode = "ok"
    r = chat(gateway, follow_up(turn, r, "thanks"), modelsat={"cost_weight": 1e6}).json()
    assert r["model"] == "up-a" and r["modelsat"]["sticky"]                    # it now stays where it moved


def test_a_streamed_turn_is_remembered_too(gateway, fakes) -> None:
    r = chat(gateway, stream=True, modelsat={"cost_weight": 1e6})
    model = r.headers["x-modelsat-model"]
    text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "")
                   for e in r.content.split(b"\n\n") if e.startswith(b"data: {"))
    turn = [*MESSAGES, {"role": "assistant", "content": text}, {"role": "user", "content": "ok"}]
    r = chat(gateway, turn, modelsat={"cost_weight": 0.0 if model == "up-b" else 1e6}).json()
    assert r["model"] == model and r["modelsat"]["sticky"]


def test_conversations_survive_a_restart_and_the_ttl_turns_them_off(ckpt, tmp_path) -> None:
    with gateway_over(ckpt, state_dir=tmp_path / "state") as (http, _):
        first = chat(http, modelsat={"cost_weight": 1e6}).json()
    with gateway_over(ckpt, state_dir=tmp_path / "state") as (http, _):        # a new process would read the same
        r = chat(http, follow_up(MESSAGES, first, "ok"), modelsat={"cost_weight": 0.0}).json()
        assert r["model"] == first["model"] and r["modelsat"]["sticky"]
    with gateway_over(ckpt, state_dir=tmp_path / "off", sticky_ttl=0) as (http, _):
        first = chat(http, modelsat={"cost_weight": 1e6}).json()
        r = chat(http, follow_up(MESSAGES, first, "ok"), modelsat={"cost_weight": 0.0}).json()
        assert not r["modelsat"]["sticky"]


# ----- 3. feedback ------------------------------------------------------------------------------------------------
@pytest.fixture
def banked(served, monkeypatch):
    """The served router's add_feedback replaced by a recorder with the bank's contract (a feedback_id counted
    once; ZooError for an unknown model)."""
    router, calls = served[1].state.gateway.router, []

    def add_feedback(name, instruction, score, *, feedback_id=None):
        router.zoo.get(name)
        if feedback_id is not None and any(c[3] == feedback_id for c in calls):
            return False
        calls.append((name, instruction, score, feedback_id))
        return True
    monkeypatch.setattr(router, "add_feedback", add_feedback, raising=False)
    return calls


def test_feedback_by_answer_id_is_counted_once(gateway, banked) -> None:
    answer = chat(gateway).json()
    assert answer["id"].startswith("chatcmpl-msat-") and answer["modelsat"]["upstream_id"] == "chatcmpl-" + \
        answer["model"][-1]
    r = gateway.post("/v1/feedback", json={"id": answer["id"], "score": 1})
    assert r.status_code == 200 and r.json() == {"counted": True, "model": answer["model"], "score": 1.0,
                                                 "id": answer["id"]}
    assert gateway.post("/v1/feedback", json={"id": answer["id"], "score": 0.5}).json()["counted"] is False
    assert banked == [(answer["model"], "Answer with one letter.\n\n" + MESSAGES[1]["content"], 1.0, answer["id"])]
    r = gateway.post("/v1/feedback", json={"model": "up-b", "instruction": "2+2?", "score": 0, "feedback_id": "f1"})
    assert r.json()["counted"] is True and banked[-1] == ("up-b", "2+2?", 0.0, "f1")
    direct = chat(gateway, model="up-a").json()                 # a model named directly: its answer takes feedback
    r = gateway.post("/v1/feedback", json={"id": direct["id"], "score": 0})
    assert r.json()["counted"] is True and banked[-1][0] == "up-a"


@pytest.mark.parametrize("body,status,param", [
    ({"id": "chatcmpl-msat-" + "0" * 32, "score": 1}, 404, "id"),
    ({"id": "chatcmpl-abc", "score": 1}, 404, "id"),
    ({"id": 5, "score": 1}, 404, "id"),
    ({"id": "chatcmpl-msat-x", "score": 1.5}, 400, "score"),
    ({"id": "chatcmpl-msat-x", "score": True}, 400, "score"),
    ({"id": "chatcmpl-msat-x", "score": "1"}, 400, "score"),
    ({"id": "chatcmpl-msat-x"}, 400, "score"),
    ({"id": "chatcmpl-msat-x", "score": 1, "model": "up-a"}, 400, "model"),
    ({"model": "gpt-9", "instruction": "hi", "score": 1}, 404, "model"),
    ({"model": "up-a", "instruction": "  ", "score": 1}, 400, "instruction"),
    ({"model": "up-a", "instruction": "hi", "score": -0.1}, 400, "score"),
    ({"model": "up-a", "instruction": "hi", "score": 1, "feedback_id": ""}, 400, "feedback_id"),
    ([1, 2], 400, None),
])
def test_bad_feedback_gets_a_4xx_naming_the_field(gateway, banked, body, status, param) -> None:
    r = gateway.post("/v1/feedback", json=body)
    assert r.status_code == status and r.json()["error"]["param"] == param, r.text
    assert banked == []
    r = gateway.post("/v1/feedback", content=b'{"model": "up-a", "instruction": "hi", "score": NaN}',
                     headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_an_expired_answer_id_is_a_410(ckpt, tmp_path, monkeypatch) -> None:
    with gateway_over(ckpt, state_dir=tmp_path, feedback_ttl=0.5) as (http, app):
        monkeypatch.setattr(app.state.gateway.router, "add_feedback", lambda *a, **k: True, raising=False)
        answer = chat(http).json()
        time.sleep(0.7)
        r = http.post("/v1/feedback", json={"id": answer["id"], "score": 1})
        assert r.status_code == 410 and r.json()["error"]["param"] == "id" and "expired" in r.text


def test_feedback_reaches_the_results_bank(ckpt, tmp_path) -> None:
    if not hasattr(Router, "add_feedback"):
        pytest.skip("the results bank (Router.add_feedback, issue 31) is not in this tree yet")
    copy = tmp_path / "ckpt"
    shutil.copytree(ckpt, copy)
    with gateway_over(copy, state_dir=tmp_path / "state") as (http, app):
        answer = chat(http).json()
        assert http.post("/v1/feedback", json={"id": answer["id"], "score": 1}).json()["counted"] is True
        assert http.post("/v1/feedback", json={"id": answer["id"], "score": 1}).json()["counted"] is False
        assert app.state.gateway.router.bank_size(answer["model"]) == 1


# ----- 4. metrics and logs ----------------------------------------------------------------------------------------
def metric(text: str, name: str, **labels) -> float:
    """The value of one sample of the Prometheus text `text` (0 where absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            have = dict(kv.split("=", 1) for kv in line[line.find("{") + 1:line.find("}")].split(",") if "=" in kv)
            if all(have.get(k) == f'"{v}"' for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_fallbacks_latency_tokens_and_cost(ckpt, tmp_path, fakes) -> None:
    with gateway_over(ckpt, state_dir=tmp_path) as (http, _):
        for _ in range(3):
            assert chat(http, modelsat={"cost_weight": 1e6}).json()["model"] == "up-b"
        fakes["up-b"][0].mode = "500"
        assert chat(http, modelsat={"cost_weight": 1e6}).json()["model"] == "up-a"
        assert chat(http, model="up-b").status_code == 502
        r = http.get("/metrics")
    text = r.text
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert metric(text, "modelsat_requests_total", model="up-b", status="200", routed="true") == 3
    assert metric(text, "modelsat_requests_total", model="up-a", status="200", routed="true") == 1
    assert metric(text, "modelsat_requests_total", model="up-b", status="502", routed="false") == 1
    assert metric(text, "modelsat_failed_attempts_total", model="up-b", reason="http_5xx") == 2
    assert metric(text, "modelsat_ranking_seconds_count") >= 4
    assert metric(text, "modelsat_upstream_seconds_count", model="up-b") == 3
    assert metric(text, "modelsat_tokens_total", model="up-b", kind="prompt") == 300   # 100 per answer
    usd_b, usd_a = (100 * 0.1 + 20 * 0.3) / 1e6, (100 * 1.0 + 20 * 3.0) / 1e6
    assert metric(text, "modelsat_cost_total", model="up-b", unit="usd") == pytest.approx(3 * usd_b)
    assert metric(text, "modelsat_cost_saved_total", unit="usd") == pytest.approx(3 * (usd_a - usd_b))


def test_access_log_lines_carry_the_request_id_of_the_routing_line(gateway, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="modelsat"):
        r = chat(gateway)
        mine = gateway.post("/v1/chat/completions", json={"model": "modelsat", "messages": MESSAGES},
                            headers={"x-request-id": "trace-123"})
    rid = r.headers["x-request-id"]
    assert len(rid) == 32 and mine.headers["x-request-id"] == "trace-123"
    access = [rec for rec in caplog.records if rec.name == "modelsat.access" and rec.request_id == rid]
    routing = [rec for rec in caplog.records if hasattr(rec, "routing") and rec.request_id == rid]
    assert len(access) == 1 and access[0].access["status"] == 200 and access[0].access["path"] == \
        "/v1/chat/completions"
    assert len(routing) == 1 and routing[0].routing["answer_id"] == r.json()["id"]
    from modelsat.logs import JsonLinesFormatter

    line = json.loads(JsonLinesFormatter().format(access[0]))
    assert line["request_id"] == rid and line["access"]["duration_ms"] > 0


# ----- 5. ranking in batches ----------------------------------------------------------------------------------------
def test_concurrent_rankings_run_as_one_batch_with_the_same_results(tiny_checkpoint) -> None:
    router = Router.from_checkpoint(tiny_checkpoint)
    sizes = []
    ranker = Ranker(router, threading.Lock(), lambda: None, max_batch=8, observe=lambda s, n: sizes.append(n))
    texts = [f"A math question about algebra number {i}: which option is right?" for i in range(5)]
    with ranker._wake:                     # queue five at once: the thread takes them together
        ranker.start()
        results, done = {}, threading.Event()

        def finish(i):
            def cb(result, error):
                results[i] = (result, error)
                if len(results) == len(texts):
                    done.set()
            return cb
        for i, text in enumerate(texts):
            ranker._jobs.append(_Job(text, tuple(router.models), 0.5 * (i % 2), None, finish(i)))
        ranker._wake.notify()
    assert done.wait(60)
    ranker.stop()
    assert sizes == [5]
    for i, text in enumerate(texts):
        alone = router.rank(text, router.models, cost_weight=0.5 * (i % 2))
        got, error = results[i]
        assert error is None and [r.model for r in got] == [r.model for r in alone]
        assert [r.p_correct for r in got] == pytest.approx([r.p_correct for r in alone], abs=1e-5)
