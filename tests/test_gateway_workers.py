"""Issue 32, deliverable 5: `modelsat serve --workers 2` shares the zoo, the conversations, the answer ids, the
results banks and the metrics between its processes, and a restart keeps the conversations (a real server
process over the tiny checkpoint, fake upstreams on loopback)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fake_upstream import FakeUpstream, Served
from test_gateway import MESSAGES, endpoint_checkpoint
from test_gateway_features import follow_up, metric

from modelsat import Router
from modelsat.aptitude import Aptitude
from modelsat.zoo import Zoo


@pytest.fixture(scope="module")
def fakes():
    a, b = FakeUpstream("a"), FakeUpstream("b")
    with Served(a.app) as sa, Served(b.app) as sb:
        yield {"up-a": sa.url + "/v1", "up-b": sb.url + "/v1"}


@contextmanager
def serving(ckpt: Path, state: Path, workers: int = 2):
    """`modelsat serve --workers N --persist` over `ckpt` on a free port; its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "modelsat.cli", "serve", "--checkpoint", str(ckpt), "--port",
                             str(port), "--workers", str(workers), "--threads", "1", "--state-dir", str(state),
                             "--persist"], env={**os.environ, "FAKE_KEY": "k"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        seen: set[str] = set()
        while len(seen) < workers:       # every worker answers
            try:
                r = httpx.get(url + "/health", timeout=1)
                if r.status_code == 200:
                    seen.add(r.headers["x-modelsat-worker"])
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()[-3000:]
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def each(url: str, n: int, method: str = "GET", path: str = "/v1/models", **kwargs) -> list[httpx.Response]:
    """`n` requests, each on a new connection (so that both workers take some)."""
    return [httpx.request(method, url + path, timeout=30, **kwargs) for _ in range(n)]


def test_workers_share_the_zoo_conversations_feedback_and_metrics(tiny_checkpoint, tmp_path, fakes) -> None:
    ckpt = endpoint_checkpoint(tiny_checkpoint, tmp_path, fakes)
    scores = Zoo.load(ckpt / "zoo", Aptitude.load(ckpt / "aptitude.json")).get("up-a").scores
    chats = 0
    with serving(ckpt, tmp_path / "state") as url:
        # a zoo change made through one worker is seen by all at once (within the 1 s re-read)
        r = httpx.post(url + "/models", json={"name": "up-c", "scores": scores, "endpoint": fakes["up-a"],
                                              "upstream_model": "c", "price_in": 0.01, "price_out": 0.01})
        assert r.status_code == 201, r.text
        time.sleep(1.5)
        listed = each(url, 12)
        assert len({r.headers["x-modelsat-worker"] for r in listed}) == 2
        assert all("up-c" in [m["id"] for m in r.json()["data"]] for r in listed)
        # a conversation stays on its model whichever worker takes the next turn
        first = httpx.post(url + "/v1/chat/completions", timeout=30, json={
            "model": "modelsat", "messages": MESSAGES, "modelsat": {"cost_weight": 0.0}}).json()
        chats += 1
        turns = each(url, 10, "POST", "/v1/chat/completions", json={
            "model": "modelsat", "messages": follow_up(MESSAGES, first, "ok"), "modelsat": {"cost_weight": 1e6}})
        chats += 10
        assert len({r.headers["x-modelsat-worker"] for r in turns}) == 2
        assert {r.json()["model"] for r in turns} == {first["model"]} and all(r.json()["modelsat"]["sticky"]
                                                                           for r in turns)
        # an answer id given by one worker takes feedback through any, counted once
        if hasattr(Router, "add_feedback"):
            counted = [r.json()["counted"] for r in each(url, 6, "POST", "/v1/feedback",
                                                         json={"id": first["id"], "score": 1})]
            assert counted == [True] + [False] * 5
        # metrics add up every worker's requests
        text = httpx.get(url + "/metrics", timeout=10).text
        total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("modelsat_requests_total{"))
        assert total == chats and metric(text, "modelsat_ranking_seconds_count") >= 1
    with serving(ckpt, tmp_path / "state", workers=1) as url:      # restarted: the conversation is still known
        r = httpx.post(url + "/v1/chat/completions", timeout=30, json={
            "model": "modelsat", "messages": follow_up(MESSAGES, first, "ok"), "modelsat": {"cost_weight": 1e6}})
        assert r.json()["model"] == first["model"] and r.json()["modelsat"]["sticky"]
    shutil.rmtree(tmp_path / "state")
