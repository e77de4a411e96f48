"""The gateway under mixed load with faulty upstreams (issues 32 and 33), then SIGTERM with streams in flight.

    python -m benchmarks.bench_gateway_faults                         # 2,000 requests, concurrency 32, 10% faults
    python -m benchmarks.bench_gateway_faults --requests 300 --concurrency 8      # a quick look

`modelsat serve --workers 2` (a real process) over a copy of the shipped MMLU-Pro router whose zoo keeps
`--models` models, each behind its own fake upstream (tests/fake_upstream.py) in mode "chaos": every `--fault-every`-th
answer of each is the next kind of fault of FAULTS in turn (a 500, a timeout, a body that is not JSON, NaN, no
`choices`, a JSON list, a redirect, a JSON answer to a stream, a stream cut inside an event, a trickle past the
deadline, an answer over the size limit, a 429, an error event, a NaN event, a stream without [DONE], an empty
body, bytes that are not UTF-8, a stream cut between events). The models declare different capabilities and
windows (one declares nothing). The requests mix, seeded: plain, streaming, tools, images, JSON-schema answers,
multi-turn conversations (up to 6 turns), feedback on earlier answers (some sent twice), models named directly,
and clients that leave after 0.2 s. Counted, and printed as JSON:

- status codes; `unexplained_5xx`: any 5xx but a 502/504 whose every attempt failed (and the 503 of shutdown);
- `past_deadline`: requests whose answer ended later than the deadline + 1 s;
- `calls_after_client_left`: upstream requests (matched by x-request-id) that arrived after their client left;
- `routed_to_unable`: answers from a model whose declared capabilities lack what the request needed;
- `conversation_switches_without_cause`: turns answered by another model than the turn before with no attempt
  failed and no `sticky_lost`;
- feedback: posted, counted, counted twice (must be 0), refused; bank results added (GET /models);
- memory of the server's processes after each tenth of the requests (flat after warm-up);
- `sigterm`: seconds from SIGTERM to exit with 8 streams in flight, and how those streams ended.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx

from benchmarks.bench_gateway import REPO, instruction, serve, tree_rss_mb, with_endpoints
from tests.fake_upstream import FAULTS, FakeUpstream, Served

DEADLINE = 30.0   # at concurrency 32 a request waits several seconds for its ranking on a shared 2-core CPU
SERVING = [{"capabilities": ["json_schema", "tools", "vision"], "context_window": 100_000},
           {"capabilities": ["tools"], "context_window": 8_000}, {"capabilities": ["vision"]},
           {"capabilities": [], "context_window": 2_000}, {}, {"capabilities": ["json_schema", "tools"]}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}


class Load:
    """The request mix and what its answers showed."""

    def __init__(self, url: str, names: list[str], serving: dict[str, dict], seed: int = 0) -> None:
        self.url, self.names, self.serving = url, names, serving
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.codes: dict[int, int] = {}
        self.bad_5xx: list[str] = []
        self.past_deadline = self.unable = self.switches = self.stream_errors = 0
        self.switch_examples: list[dict] = []
        self.late: list[str] = []                     # what ended past the deadline + 1 s
        self.answers: list[str] = []                  # answer ids, for feedback
        self.conversations: dict[int, tuple[list, str]] = {}   # id -> (messages, model of the last turn)
        self.left: dict[str, float] = {}              # x-request-id -> when its client left
        self.feedback = {"posted": 0, "counted": 0, "repeated": 0, "refused": 0}
        self.fed: set[str] = set()

    def body(self, i: int) -> tuple[str, dict, tuple | None]:
        """(kind, request body, (conversation id, the model its history was answered by) for a turn)."""
        r = self.rng.random()
        messages = [{"role": "user", "content": instruction(i)}]
        with self.lock:
            if r < 0.25 and self.conversations:
                cid = self.rng.choice(list(self.conversations))
                history, model = self.conversations[cid]
                return "turn", {"model": "modelsat", "messages": [*history, {"role": "user", "content":
                                                                              self.rng.choice(["ok", "yes", "go on"])}]}, (cid, model)
        if r < 0.32:
            return "conversation", {"model": "modelsat", "messages": messages}, (i, None)
        if r < 0.57:
            return "stream", {"model": "modelsat", "messages": messages, "stream": True}, None
        if r < 0.67:
            return "tools", {"model": "modelsat", "messages": messages, "tools": TOOLS}, None
        if r < 0.74:
            return "image", {"model": "modelsat", "messages": [{"role": "user", "content": [
                {"type": "text", "text": instruction(i)}, IMAGE]}]}, None
        if r < 0.78:
            return "schema", {"model": "modelsat", "messages": messages, "response_format": SCHEMA}, None
        if r < 0.83:
            return "direct", {"model": self.rng.choice(self.names), "messages": messages}, None
        if r < 0.86:
            return "leave", {"model": "modelsat", "messages": messages}, None
        if r < 0.95:
            return "feedback", {}, None
        return "plain", {"model": "modelsat", "messages": messages}, None

    def needs(self, body: dict) -> set[str]:
        out = set()
        if body.get("tools"):
            out.add("tools")
        if body.get("response_format"):
            out.add("json_schema")
        if any(isinstance(m.get("content"), list) for m in body["messages"]):
            out.add("vision")
        return out

    def one(self, i: int) -> None:
        kind, body, turn = self.body(i)
        rid = f"bench-{i}"
        if kind == "feedback":
            return self.post_feedback()
        start = time.monotonic()
        try:
            with httpx.Client(timeout=0.2 if kind == "leave" else 120) as http:
                r = http.post(self.url + "/v1/chat/completions", json=body, headers={"x-request-id": rid})
                content = r.content
        except httpx.TimeoutException:
            with self.lock:
                self.left[rid] = time.monotonic()
            return
        took = time.monotonic() - start
        with self.lock:
            self.codes[r.status_code] = self.codes.get(r.status_code, 0) + 1
            if took > DEADLINE + 1:
                self.past_deadline += 1
                self.late.append(f"{kind} {r.status_code} {took:.1f} s: {content[:160]!r}")
            if r.status_code >= 500 and not (r.status_code in (502, 504) and r.json()["error"].get("attempts")):
                self.bad_5xx.append(f"{r.status_code}: {content[:200]!r}")
            if r.status_code != 200:
                return
            model = r.headers["x-modelsat-model"]
            declared = self.serving.get(model, {}).get("capabilities")
            if declared is not None and not self.needs(body) <= set(declared):
                self.unable += 1
            if body.get("stream"):
                events = content.rstrip(b"\n").split(b"\n\n")
                self.stream_errors += not events[-1] == b"data: [DONE]"
                return
            data = r.json()
            self.answers.append(data["id"])
            if kind in ("conversation", "turn"):
                history = [*body["messages"], {"role": "assistant", "content": data["choices"][0]["message"][
                    "content"]}]
                ext, (cid, before) = data["modelsat"], turn
                if kind == "turn" and model != before and not ext["attempts"] and not ext.get("sticky_lost"):
                    self.switches += 1     # against the model that answered the history this turn continues
                    self.switch_examples.append({"before": before, "after": model, "modelsat": ext})
                if len(history) < 12:
                    self.conversations[cid] = (history, model)
                else:
                    self.conversations.pop(cid, None)

    def post_feedback(self) -> None:
        with self.lock:
            if not self.answers:
                return
            answer = self.rng.choice(self.answers)
        with httpx.Client(timeout=60) as http:
            r = http.post(self.url + "/v1/feedback", json={"id": answer, "score": self.rng.choice([0, 0.5, 1])})
        with self.lock:
            self.feedback["posted"] += 1
            if r.status_code != 200:
                self.feedback["refused"] += 1
                self.bad_5xx += [f"feedback {r.status_code}: {r.text[:200]}"] if r.status_code >= 500 else []
            elif r.json()["counted"]:
                self.feedback["counted"] += 1
                if answer in self.fed:
                    self.feedback["counted_twice"] = self.feedback.get("counted_twice", 0) + 1
                self.fed.add(answer)
            else:
                self.feedback["repeated"] += 1


def bank_total(url: str) -> int:
    return sum(m.get("bank_results", 0) for m in httpx.get(url + "/models", timeout=60).json())


def sigterm(url: str, proc, fakes: list[FakeUpstream], names: list[str]) -> dict:
    """8 streams in flight (1,000 chunks, 0.5 s apart), then SIGTERM."""
    for fake in fakes:
        fake.mode, fake.delay = "long", 0.5
    ended: list[bytes] = []

    def stream(i: int) -> None:
        try:
            with httpx.stream("POST", url + "/v1/chat/completions", timeout=60, json={
                    "model": names[i % len(names)], "messages": [{"role": "user", "content": "hi"}],
                    "stream": True}) as r:
                ended.append(b"".join(r.iter_bytes()).rstrip(b"\n").split(b"\n\n")[-1])
        except httpx.HTTPError as e:
            ended.append(f"{type(e).__name__}".encode())
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    start = time.monotonic()
    proc.send_signal(15)
    proc.wait(30)
    seconds = time.monotonic() - start
    for t in threads:
        t.join(10)
    return {"streams": 8, "exit_seconds": round(seconds, 2),
            "ended_with_error_event": sum(b"shutting down" in e for e in ended),
            "other_endings": [e[:80].decode("utf-8", "replace") for e in ended if b"shutting down" not in e]}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_gateway_faults", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "modelsat/routers/modelsat-smollm2-mmlupro"))
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--fault-every", type=int, default=10, help="each upstream's every N-th answer is a fault")
    p.add_argument("--models", type=int, default=6, help="zoo models kept, each with its own fake upstream")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    out = {"requests": args.requests, "concurrency": args.concurrency, "fault_every": args.fault_every,
           "deadline_s": DEADLINE, "workers": args.workers, "load_average_before": os.getloadavg()}
    src = Path(args.checkpoint)
    all_names = sorted(json.loads(f.read_text())["name"] for f in (src / "zoo").glob("*.json"))
    names = all_names[::max(1, len(all_names) // args.models)][:args.models]
    fakes = [FakeUpstream(f"f{i}") for i in range(len(names))]
    for fake in fakes:
        fake.mode, fake.every, fake.slow, fake.big = "chaos", args.fault_every, 1.5, 2 << 20
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        served = [stack.enter_context(Served(f.app)) for f in fakes]
        serving = dict(zip(names, SERVING))
        ckpt = Path(tmp) / "ckpt"
        with_endpoints(src, ckpt, {n: s.url + "/v1" for n, s in zip(names, served)}, None, serving)
        flags = ["--state-dir", str(Path(tmp) / "state"), "--deadline", str(DEADLINE), "--upstream-timeout", "1",
                 "--connect-timeout", "1", "--max-answer-bytes", str(1 << 20)]
        with serve(ckpt, *flags, workers=args.workers) as (url, proc):
            bank_before = bank_total(url)
            load = Load(url, names, serving)
            memory, start = [tree_rss_mb(proc.pid)], time.monotonic()
            with ThreadPoolExecutor(args.concurrency) as pool:
                step = max(1, args.requests // 10)
                for s in range(0, args.requests, step):
                    list(pool.map(load.one, range(s, min(args.requests, s + step))))
                    memory.append(tree_rss_mb(proc.pid))
            out["seconds"] = round(time.monotonic() - start, 1)
            time.sleep(2.0)    # let any straggler reach an upstream
            arrivals = [(t, rid) for f in fakes for t, rid in f.arrivals]
            out.update({
                "status_codes": dict(sorted(load.codes.items())), "unexplained_5xx": len(load.bad_5xx),
                "unexplained_5xx_examples": load.bad_5xx[:5], "past_deadline": load.past_deadline,
                "clients_left": len(load.left),
                "calls_after_client_left": sum(1 for t, rid in arrivals if rid in load.left
                                               and t > load.left[rid] + 0.05),
                "past_deadline_examples": load.late[:5],
                "routed_to_unable": load.unable, "conversation_switches_without_cause": load.switches,
                "switch_examples": load.switch_examples[:3],
                "streams_ended_with_an_error_event": load.stream_errors,
                "upstream_faults_injected": {k: sum(f.faults.get(k, 0) for f in fakes) for k in FAULTS},
                "upstream_requests": sum(len(f.arrivals) for f in fakes), "feedback": load.feedback,
                "bank_results_added": bank_total(url) - bank_before,
                "rss_mib_after_each_tenth": memory})
            out["sigterm"] = sigterm(url, proc, fakes, names)
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
