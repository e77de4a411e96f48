"""The gateway's speed: its overhead beyond the router's ranking, and its throughput by workers and concurrency.

    python -m benchmarks.bench_gateway                                           # fake upstream, every phase
    python -m benchmarks.bench_gateway --upstream http://127.0.0.1:8080/v1 --upstream-model smollm2   # llama.cpp
    python -m benchmarks.bench_gateway --phases batching                         # one phase

A copy of the checkpoint (default: the shipped MMLU-Pro router, 24 candidates) gets every zoo model an endpoint:
`--upstream` (any OpenAI-compatible server, e.g. `python -m llama_cpp.server --model_alias smollm2 ...`) or an
in-process fake that answers at once (tests/fake_upstream.py). `modelsat serve` runs as a real process (the CLI),
so that workers, threads and memory are what an operator gets. Phases, printed as one JSON object:

- `batching`: the router alone: `--batch` instructions ranked one at a time (`Router.rank`) against in one batch
  (`Router.predict_matrix`, what the ranking thread does with concurrent requests), with 1 and 2 torch threads.
- `overhead`: at concurrency 1 and 8, routed chat requests through the gateway (the default workers x threads for
  the machine's cores); per request, its
  latency less the ranking (`modelsat.rank_ms`, queue included) and less the upstream (`modelsat.upstream_ms`) is
  what the gateway adds (issue 32's goal: median <= 20 ms at concurrency 8).
- `throughput`: requests per second and latency (p50/p99, total and beyond the upstream) at `--workers` x
  `--concurrency`, and "today" (1 worker, one ranking at a time, torch's default threads: how the gateway ranked
  before batching and workers) at concurrency 8, in the same run.
- `compare` (not in the default phases): today and the default layout served side by side, `--rounds` turns of
  32 requests at concurrency 8 each, in alternating order: on a machine shared with other jobs, the ratio of two
  runs minutes apart measures the other jobs as much as the gateway.
`beyond_ranking_in_gateway_ms` is what the gateway measured itself (`modelsat.elapsed_ms` less ranking and
upstream): the client's own time (this process's threads) is not in it.
The machine's load average is printed too: on a shared machine it moves every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

from modelsat.serving.workers import default_layout
from tests.fake_upstream import FakeUpstream, Served

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["Which enzyme unwinds the DNA double helix at the replication fork?", "What is the derivative of x^3?",
             "Which clause makes a contract voidable for duress?", "What does a central bank do to curb inflation?",
             "Which planet has the shortest year?", "Solve for x: 3x + 7 = 22.", "Who wrote the Republic?",
             "What is the time complexity of binary search?"]


def instruction(i: int) -> str:
    """A varied routed instruction (no two the same: nothing is cached per text)."""
    return f"{QUESTIONS[i % len(QUESTIONS)]} (case {i})\nA. first\nB. second\nC. third\nD. fourth"


def with_endpoints(src: Path, dst: Path, urls: dict[str, str] | str, upstream_model: str | None,
                   serving: dict[str, dict] | None = None) -> list[str]:
    """Copies the checkpoint (without step folders or a results bank) and gives its zoo models an endpoint: every
    model the same `url`, or (a dict) only the models named, each its own; `serving`: declared limits per model.
    Edits the zoo's JSON entries as `modelsat zoo add --endpoint` would write them. Returns the names, sorted."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("step-*", "bank.sqlite*"), symlinks=False)
    names = []
    for f in sorted((dst / "zoo").glob("*.json")):
        entry = json.loads(f.read_text())
        url = urls if isinstance(urls, str) else urls.get(entry["name"])
        if url is None:
            f.unlink()
            continue
        entry.update(endpoint=url, upstream_model=upstream_model or f"id-{entry['name']}",
                     **(serving or {}).get(entry["name"], {}))
        f.write_text(json.dumps(entry))
        names.append(entry["name"])
    return sorted(names)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MiB (Linux /proc)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return round(total, 1)


@contextmanager
def serve(ckpt: Path, *flags: str, env: dict | None = None, workers: int = 1):
    """`modelsat serve --checkpoint ckpt FLAGS` on a free port until every worker answers; yields (url, process).
    On leaving: SIGTERM, and the seconds it took to exit are put in the process's `exit_seconds`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.NamedTemporaryFile(prefix="modelsat-serve-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "modelsat.cli", "--log-level", "WARNING", "serve",
                             "--checkpoint", str(ckpt), "--port", str(port), "--workers", str(workers), *flags],
                            env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
    url, seen, deadline = f"http://127.0.0.1:{port}", set(), time.monotonic() + 300
    try:
        while len(seen) < workers:
            try:
                seen.add(httpx.get(url + "/health", timeout=2).headers["x-modelsat-worker"])
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"modelsat serve did not start (see {log.name})")
            time.sleep(0.3)
        yield url, proc
    finally:
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.exit_seconds = round(time.monotonic() - start, 2)


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)), 1) if xs else float("nan")


def run_load(url: str, n: int, concurrency: int, body_of, timeout: float = 600) -> dict:
    """`n` chat requests at `concurrency` (one keep-alive connection per thread): rps and latency figures (ms)."""
    def one(i: int):
        with httpx.Client(timeout=timeout) as http:   # its own connection: spread over the workers
            t = time.perf_counter()
            r = http.post(url + "/v1/chat/completions", json=body_of(i))
            return r, 1e3 * (time.perf_counter() - t)
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(n)))
    seconds = time.perf_counter() - start
    ok = [(r.json()["modelsat"], ms) for r, ms in results if r.status_code == 200]
    beyond_upstream = [ms - ext["upstream_ms"] for ext, ms in ok]
    beyond_ranking = [ms - ext["upstream_ms"] - (ext["rank_ms"] or 0.0) for ext, ms in ok]
    inside = [ext["elapsed_ms"] - ext["upstream_ms"] - (ext["rank_ms"] or 0.0) for ext, _ in ok
              if ext.get("elapsed_ms") is not None]      # measured by the gateway: no client time in it
    return {"requests": n, "concurrency": concurrency, "ok": len(ok), "seconds": round(seconds, 1),
            "rps": round(n / seconds, 2), "latency_ms": {"p50": pct([m for _, m in results], 50),
                                                        "p99": pct([m for _, m in results], 99)},
            "beyond_upstream_ms": {"p50": pct(beyond_upstream, 50), "p99": pct(beyond_upstream, 99)},
            "beyond_ranking_ms": {"p50": pct(beyond_ranking, 50), "p99": pct(beyond_ranking, 99)},
            "beyond_ranking_in_gateway_ms": {"p50": pct(inside, 50), "p99": pct(inside, 99)},
            "rank_ms": {"p50": pct([e["rank_ms"] or 0.0 for e, _ in ok], 50)},
            "upstream_ms": {"p50": pct([e["upstream_ms"] for e, _ in ok], 50)}}


def batching(ckpt: Path, batch: int) -> dict:
    import torch

    from modelsat import Router

    router = Router.from_checkpoint(ckpt)
    router.warm_up()
    texts = [instruction(i) for i in range(batch)]
    out = {"candidates": len(router.models), "batch": batch}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        router.predict_matrix(texts[:2], router.models)               # warm
        t = time.perf_counter()
        for text in texts:
            router.rank(text)
        alone = time.perf_counter() - t
        t = time.perf_counter()
        router.predict_matrix(texts, router.models)
        together = time.perf_counter() - t
        out[f"threads_{threads}"] = {"one_at_a_time_ms_per_request": round(1e3 * alone / batch, 1),
                                     "batched_ms_per_request": round(1e3 * together / batch, 1),
                                     "speedup": round(alone / together, 2)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_gateway", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "modelsat/routers/modelsat-smollm2-mmlupro"))
    p.add_argument("--upstream", help="an OpenAI-compatible base URL (default: an in-process fake)")
    p.add_argument("--upstream-model", help="the model id the upstream serves (with --upstream)")
    p.add_argument("--phases", default="batching,overhead,throughput")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--per-thread", type=int, default=4, help="requests per concurrent client in `throughput`")
    p.add_argument("--n", type=int, default=30, help="requests per concurrency level in `overhead`")
    p.add_argument("--batch", type=int, default=8, help="instructions of the `batching` phase")
    p.add_argument("--rounds", type=int, default=4, help="turns of each layout in `compare`")
    args = p.parse_args()
    src, phases = Path(args.checkpoint), args.phases.split(",")
    cores = os.cpu_count() or 1
    out = {"checkpoint": str(src), "upstream": args.upstream or "in-process fake", "cpu": platform.processor() or
           platform.machine(), "cores": cores, "load_average_before": os.getloadavg()}
    body = lambda i: {"model": "modelsat", "max_tokens": 4, "temperature": 0,  # noqa: E731
                      "messages": [{"role": "user", "content": instruction(i)}]}
    with tempfile.TemporaryDirectory() as tmp, Served((fake := FakeUpstream("fake")).app) as up:
        url = (args.upstream or up.url + "/v1").rstrip("/")
        ckpt = Path(tmp) / "ckpt"
        with_endpoints(src, ckpt, url, args.upstream_model)
        if "batching" in phases:
            out["batching"] = batching(ckpt, args.batch)
        common = ["--state-dir", str(Path(tmp) / "state"), "--upstream-timeout", "600", "--deadline", "900"]
        if "overhead" in phases:   # the default layout for this machine's cores (modelsat/serving/workers.py)
            workers, threads = default_layout(cores)
            out["overhead_layout"] = f"{workers} workers x {threads} threads"
            with serve(ckpt, *common, "--threads", str(threads), workers=workers) as (gw, _):
                run_load(gw, 3, 1, body)                                          # warm up
                out["overhead"] = {f"concurrency_{c}": run_load(gw, args.n, c, body) for c in (1, 8)}
        if "compare" in phases:   # today and the default layout, served side by side, measured in turns
            workers, threads = default_layout(cores)
            with serve(ckpt, *common, "--rank-batch", "1") as (today, _), \
                    serve(ckpt, *common, "--threads", str(threads), workers=workers) as (best, _):
                run_load(today, 3, 1, body), run_load(best, 3, 1, body)
                rounds = []
                for r in range(args.rounds):
                    order = [("today", today), ("default", best)][::1 if r % 2 == 0 else -1]
                    rounds.append({name: run_load(gw, 8 * args.per_thread, 8, body)["rps"] for name, gw in order})
            ratios = [x["default"] / x["today"] for x in rounds]
            out["compare"] = {"default_layout": f"{workers} workers x {threads} threads, rank-batch 8",
                              "today": "1 worker x 2 threads, one ranking at a time", "concurrency": 8,
                              "rounds_rps": rounds, "ratio_median": round(float(np.median(ratios)), 2),
                              "ratios": [round(x, 2) for x in ratios]}
        if "throughput" in phases:
            cells = {}
            with serve(ckpt, *common, "--rank-batch", "1") as (gw, _):           # today: one ranking at a time
                run_load(gw, 3, 1, body)
                cells["today_1_worker_unbatched_c8"] = run_load(gw, 8 * args.per_thread, 8, body)
            for workers in map(int, args.workers.split(",")):
                threads = max(1, cores // workers)
                with serve(ckpt, *common, "--threads", str(threads), workers=workers) as (gw, proc):
                    run_load(gw, 2 * workers, workers, body)
                    for c in map(int, args.concurrency.split(",")):
                        key = f"workers_{workers}x{threads}_threads_c{c}"
                        cells[key] = run_load(gw, max(8, c * args.per_thread) if c > 1 else 8, c, body)
                        cells[key]["rss_mib"] = tree_rss_mb(proc.pid)
            out["throughput"] = cells
    out["load_average_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
