"""modelsat.Client, the gateway in-process (issue 20): routing, forwarding, streaming, retries and errors against
fake upstreams on loopback (tests/fake_upstream.py)."""
from __future__ import annotations

import time

import pytest
from fake_upstream import FakeUpstream, Served, stream_events
from test_gateway import MESSAGES, endpoint_checkpoint

import modelsat
from modelsat.serving.errors import GatewayError
from modelsat.serving.plan import GatewaySettings
from modelsat.zoo import Zoo


@pytest.fixture(scope="module")
def fakes():
    a, b = FakeUpstream("a"), FakeUpstream("b")
    with Served(a.app) as sa, Served(b.app) as sb:
        yield {"up-a": a, "up-b": b}, {"up-a": sa.url + "/v1", "up-b": sb.url + "/v1"}


@pytest.fixture(scope="module")
def client(tiny_checkpoint, tmp_path_factory, fakes):
    ckpt = endpoint_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("client"), fakes[1])
    with modelsat.Client(checkpoint=ckpt, settings=GatewaySettings(timeout=0.5, connect_timeout=0.5)) as c:
        yield c


@pytest.fixture(autouse=True)
def reset(fakes, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-client")
    for fake in fakes[0].values():
        fake.mode, fake.delay, fake.requests[:], fake.count = "ok", 0.0, [], 0


def test_create_routes_and_answers_like_the_openai_client(client, fakes) -> None:
    r = client.chat.completions.create(model="modelsat", messages=MESSAGES, temperature=0.1)
    best = r.modelsat.ranking[0].model
    assert r.model == best and r.choices[0].message.content == f"answer from {best[-1]}"
    assert r["choices"][0]["message"]["content"] == r.choices[0].message.content   # a dict too
    sent, headers = fakes[0][best].requests[-1]
    assert sent == {"model": f"{best}-upstream-id", "messages": MESSAGES, "temperature": 0.1}
    assert headers["authorization"] == "Bearer sk-client"
    cheap = client.chat.completions.create(model="modelsat:cost_weight=1e6", messages=MESSAGES)
    assert cheap.model == "up-b" and cheap.modelsat.cost_weight == 1e6
    named = client.chat.completions.create(model="up-a", messages=MESSAGES)
    assert named.model == "up-a" and not named.modelsat.routed
    with pytest.raises(AttributeError):
        r.no_such_field  # noqa: B018


def test_stream_yields_chunks_as_they_arrive(client, fakes) -> None:
    fake = fakes[0]["up-a"]
    fake.delay, fake.finished = 0.4, None
    stream = client.chat.completions.create(model="modelsat", messages=MESSAGES, stream=True,
                                            modelsat={"models": ["up-a"]})
    assert stream.model == "up-a" and stream.modelsat["ranking"][0]["model"] == "up-a"
    chunks, first_at = [], None
    for chunk in stream:
        first_at = first_at or time.monotonic()
        chunks.append(chunk)
    assert first_at < fake.finished - 1.0
    assert "".join(c.choices[0].delta.content for c in chunks) == "Héllo from the fake upstream"
    assert len(chunks) == len(stream_events("a", "x")) - 1   # all but [DONE]


def test_failures_are_retried_then_raised(client, fakes) -> None:
    first = client.chat.completions.create(model="modelsat", messages=MESSAGES).model
    second = ({"up-a", "up-b"} - {first}).pop()
    fakes[0][first].mode = "timeout"
    r = client.chat.completions.create(model="modelsat", messages=MESSAGES)
    assert r.model == second and r.modelsat.attempts[0].model == first
    assert "timed out" in r.modelsat.attempts[0].error
    fakes[0][first].mode = "500"
    stream = client.chat.completions.create(model="modelsat", messages=MESSAGES, stream=True)
    assert stream.model == second and len(list(stream)) == 5
    fakes[0][second].mode = "malformed"
    with pytest.raises(GatewayError) as e:
        client.chat.completions.create(model="modelsat", messages=MESSAGES)
    assert e.value.status == 502 and [a["model"] for a in e.value.body()["error"]["attempts"]] == [first, second]
    fakes[0][second].mode = "cut"
    stream = client.chat.completions.create(model=second, messages=MESSAGES, stream=True)
    with pytest.raises(GatewayError, match="broke after 2 chunks"):
        list(stream)
    fakes[0][second].mode = "400"
    with pytest.raises(GatewayError, match="refused the request: HTTP 400") as e:
        client.chat.completions.create(model=second, messages=MESSAGES)
    assert e.value.status == 400
    with pytest.raises(GatewayError, match="not in the zoo") as e:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert e.value.status == 404


def test_the_client_sees_the_zoo_change_on_disk(client) -> None:
    disk = Zoo.load(client.router.zoo.root, client.router.aptitude)
    disk.remove("up-a")
    time.sleep(1.1)   # the folder is checked at most once a second
    r = client.chat.completions.create(model="modelsat", messages=MESSAGES)
    assert r.model == "up-b" and [m.model for m in r.modelsat.ranking] == ["up-b"]


def test_a_client_needs_one_of_checkpoint_or_router() -> None:
    with pytest.raises(ValueError, match="give one of checkpoint="):
        modelsat.Client()
