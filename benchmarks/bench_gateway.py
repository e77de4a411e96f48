"""The gateway's overhead over its router's ranking, and its behaviour under load with a failing upstream.

    python -m benchmarks.bench_gateway                                            # in-process fake upstream
    python -m benchmarks.bench_gateway --upstream http://127.0.0.1:8080/v1 --upstream-model smollm2   # llama.cpp

A copy of the checkpoint (default: the committed MMLU-Pro router, 24 candidates) gets every zoo model an endpoint:
`--upstream` (any OpenAI-compatible server, e.g. `python -m llama_cpp.server --model_alias smollm2 ...`) or an
in-process fake that answers at once (tests/fake_upstream.py). `modelsat serve`'s app runs under uvicorn on a free
loopback port. Two phases, printed as one JSON object:

- `overhead`: `--n` rounds, each in this order, paired: `Router.rank` on the request's last user turn (`rank_ms`),
  the same chat request sent to the upstream directly (`direct_ms`) and through the gateway (`via_ms`). The
  gateway's overhead is `via - direct` (routing + proxying, upstream time excluded); `beyond_ranking_ms` is
  `via - direct - rank`, what the gateway adds to the router's own ranking latency (issue 20's goal: median
  <= 50 ms). Medians and 90th percentiles; the first 3 rounds warm up and are not counted.
- `load` (always against two fake upstreams, so that failures can be injected): `--requests` chat requests at
  `--concurrency` through a zoo of two candidates whose first-ranked one fails every `--fail-every`-th request
  with a 500. Reports the status codes the client saw, how many were answered by the second candidate after a
  retry, and this process's resident memory (gateway, router and clients share it) after each tenth of the
  requests: bounded memory shows as a flat series.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from tests.fake_upstream import FakeUpstream, Served
from modelsat import Router
from modelsat.serving.app import create_app

MESSAGES = [{"role": "user", "content": "Which enzyme unwinds the DNA double helix at the replication fork?\n"
             "A. DNA ligase\nB. Helicase\nC. Primase\nD. Topoisomerase"}]


def rss_mb() -> float:
    """Resident memory of this process in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def with_endpoints(src: Path, dst: Path, urls: dict[str, str] | str, upstream_model: str | None) -> list[str]:
    """Copies the checkpoint (without step folders) and gives its zoo models an endpoint: every model the same `url`,
    or (a dict) only the models named, each its own. Edits the zoo's JSON entries as `modelsat zoo add --endpoint`
    would write them. Returns the zoo's model names, sorted."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("step-*"))
    names = []
    for f in sorted((dst / "zoo").glob("*.json")):
        entry = json.loads(f.read_text())
        url = urls if isinstance(urls, str) else urls.get(entry["name"])
        if url is None:
            f.unlink()
            continue
        entry.update(endpoint=url, upstream_model=upstream_model or f"id-{entry['name']}")
        f.write_text(json.dumps(entry))
        names.append(entry["name"])
    return sorted(names)


def stats(xs: list[float]) -> dict:
    return {"median": round(1e3 * statistics.median(xs), 1), "p90": round(1e3 * float(np.percentile(xs, 90)), 1)}


def overhead(src: Path, url: str, upstream_model: str | None, n: int, tmp: Path) -> dict:
    ckpt = tmp / "overhead"
    with_endpoints(src, ckpt, url, upstream_model)
    router = Router.from_checkpoint(ckpt)
    router.warm_up()
    text = MESSAGES[0]["content"]
    body = {"model": "modelsat", "messages": MESSAGES, "max_tokens": 4, "temperature": 0}
    rank, direct, via = [], [], []
    with Served(create_app(router)) as gateway, httpx.Client(timeout=120) as http:
        for i in range(n + 3):
            t = time.perf_counter()
            router.rank(text)
            r_ = time.perf_counter() - t
            t = time.perf_counter()
            http.post(url + "/chat/completions", json={**body, "model": upstream_model or "id"}).raise_for_status()
            d = time.perf_counter() - t
            t = time.perf_counter()
            http.post(gateway.url + "/v1/chat/completions", json=body).raise_for_status()
            v = time.perf_counter() - t
            if i >= 3:
                rank.append(r_), direct.append(d), via.append(v)
    return {"candidates": len(router.models), "rounds": n, "rank_ms": stats(rank), "direct_ms": stats(direct),
            "via_ms": stats(via), "overhead_ms": stats([v - d for v, d in zip(via, direct)]),
            "beyond_ranking_ms": stats([v - d - r for v, d, r in zip(via, direct, rank)])}


def load(src: Path, requests: int, concurrency: int, fail_every: int, tmp: Path) -> dict:
    fakes = [FakeUpstream("a"), FakeUpstream("b")]
    with Served(fakes[0].app) as a, Served(fakes[1].app) as b:
        ckpt = tmp / "load"
        names = sorted(json.loads(f.read_text())["name"] for f in (src / "zoo").glob("*.json"))[:2]
        with_endpoints(src, ckpt, {names[0]: a.url + "/v1", names[1]: b.url + "/v1"}, None)
        router = Router.from_checkpoint(ckpt)
        router.warm_up()
        with Served(create_app(router)) as gateway, httpx.Client(timeout=120) as http:
            body = {"model": "modelsat", "messages": MESSAGES}
            first = http.post(gateway.url + "/v1/chat/completions", json=body).json()["model"]
            flaky = fakes[names.index(first)]
            flaky.mode, flaky.every, flaky.count = "flaky", fail_every, 0
            memory = [round(rss_mb(), 1)]
            codes: dict[int, int] = {}
            retried = 0
            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                for part in np.array_split(np.arange(requests), 10):
                    for r in pool.map(lambda _: http.post(gateway.url + "/v1/chat/completions", json=body), part):
                        codes[r.status_code] = codes.get(r.status_code, 0) + 1
                        retried += bool(r.status_code == 200 and r.json()["modelsat"]["attempts"])
                    memory.append(round(rss_mb(), 1))
            seconds = time.perf_counter() - start
    return {"requests": requests, "concurrency": concurrency, "fail_every": fail_every, "status_codes": codes,
            "upstream_failures": flaky.count // fail_every, "answered_after_retry": retried,
            "five_xx": sum(v for k, v in codes.items() if k >= 500), "seconds": round(seconds, 1),
            "rss_mib_after_each_tenth": memory}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_gateway", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints/modelsat-smollm2-mmlupro"))
    p.add_argument("--upstream", help="an OpenAI-compatible base URL (default: an in-process fake)")
    p.add_argument("--upstream-model", help="the model id the upstream serves (with --upstream)")
    p.add_argument("--n", type=int, default=30, help="paired rounds of the overhead phase")
    p.add_argument("--requests", type=int, default=1000, help="requests of the load phase (0: skip it)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--fail-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    src = Path(args.checkpoint)
    out = {"checkpoint": str(src), "upstream": args.upstream or "in-process fake", "torch_threads":
           torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    with tempfile.TemporaryDirectory() as tmp:
        if args.upstream:
            out["overhead"] = overhead(src, args.upstream.rstrip("/"), args.upstream_model, args.n, Path(tmp))
        else:
            fake = FakeUpstream("fake")
            with Served(fake.app) as up:
                out["overhead"] = overhead(src, up.url + "/v1", None, args.n, Path(tmp))
        if args.requests:
            out["load"] = load(src, args.requests, args.concurrency, args.fail_every, Path(tmp))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
