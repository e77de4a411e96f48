"""How long a trained router takes to start and to rank: load, warm-up, one instruction at a time, and in batches.

    python -m benchmarks.bench_router                                   # the committed router, 40 instructions
    python -m benchmarks.bench_router --recompute-embeddings            # as if the checkpoint stored no embeddings

Steps, each timed once with wall clock, in this order:
  - `load_s`: `Router.from_checkpoint` (backbone, adapter, connector, zoo and, where stored, the aptitude questions'
    embeddings);
  - `warm_up_s`: `Router.warm_up()` (every zoo model's capability features and connector tokens and, where the
    model reads the aptitude evidence and the checkpoint stores no embeddings, encoding the aptitude questions);
  - `rank_ms`: `Router.rank` on one instruction at a time over the whole zoo (median and 90th percentile);
  - `rank_many_per_s`: `Router.rank_many` on all of them at once (instructions per second);
  - with `--candidates 10,100`: `Router.rank` on one instruction at a time over that many candidates (median ms over
    the first 20 instructions × 3 passes; paired: each instruction is ranked at every count in turn, the order of
    the counts alternating between passes, so that a busy moment of the machine falls on all counts alike; the
    evidence's search over each set of candidates is built before its timer starts, as a ranking of the same set
    finds it), and `largest_over_smallest`, the ratio of the largest count's median to the smallest's. Beyond the
    zoo's own models the candidates are copies of them added under new names through `Router.add_model` (from their
    aptitude results, as any new model joins), so the count is what varies.
  - with `--big-bank N`: on a copy of the checkpoint, one zoo model's results bank grows by N results (random unit
    embeddings, random scores: the search does not care what they are), then `Router.rank` over the whole zoo is
    timed again on the same instructions (`big_bank`: median ms before and after, and the time to bank them);
    `added_ms` is paired, robust to a busy machine: the median of ranking the grown model alone minus that of
    ranking another zoo model (an ordinary bank) alone, interleaved over 3 passes of the instructions.
`start_to_first_ranking_s` = load + warm-up + the first ranking: what `infer.py` waits for one instruction.
The instructions are the first `--n` questions of the checkpoint's aptitude test (present in every checkpoint; the
timing does not depend on which questions they are). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PASSES = 3
"""Passes over the instructions when timing by candidate count (`--candidates`)."""

from modelsat import Router
from modelsat.bank import text_key


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_router", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints/modelsat-smollm2-mmlupro"))
    p.add_argument("--n", type=int, default=40, help="instructions to rank")
    p.add_argument("--chunk-size", type=int, default=0, help="candidates per packed sequence (0: the Router's default)")
    p.add_argument("--candidates", default="", help="comma-separated candidate counts to time, e.g. 10,100 "
                                                    "(default: only the zoo as it is)")
    p.add_argument("--big-bank", type=int, default=0, help="also time ranking after one model's bank grows by this "
                   "many results (e.g. 1000000), on a copy of the checkpoint")
    p.add_argument("--recompute-embeddings", action="store_true",
                   help="ignore the checkpoint's stored aptitude embeddings: warm_up encodes the questions")
    args = p.parse_args()
    parts = [c.strip() for c in args.candidates.split(",") if c.strip()]
    if not all(c.isdigit() and int(c) >= 1 for c in parts) or len({int(c) for c in parts}) < len(parts):
        p.error(f"--candidates: give distinct counts of at least 1, e.g. 10,100; got {args.candidates!r}")
    counts = [int(c) for c in parts]
    if args.chunk_size < 0:
        p.error(f"--chunk-size: give a count of at least 1 (0: the Router's default); got {args.chunk_size}")

    start = time.perf_counter()
    router = Router.from_checkpoint(args.checkpoint, **({"chunk_size": args.chunk_size} if args.chunk_size else {}))
    load_s = time.perf_counter() - start
    stored = router._aptitude_emb is not None
    if args.recompute_embeddings:
        router._aptitude_emb = None
    start = time.perf_counter()
    router.warm_up()
    warm_up_s = time.perf_counter() - start

    texts = [router.aptitude.texts[q] for q in router.aptitude.question_ids[:args.n]]
    times = []
    for text in texts:
        start = time.perf_counter()
        router.rank(text)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    router.rank_many(texts)
    many_s = time.perf_counter() - start

    zoo_size = len(router.models)
    originals = list(router.models)
    names = list(originals)
    while len(names) < max(counts, default=0):          # copies of the zoo's models, joined by aptitude results
        original = originals[len(names) % len(originals)]
        name = f"{original} (copy {len(names)})"
        scores = dict(zip(router.aptitude.question_ids, router.zoo.outcomes(original).ravel().tolist()))
        entry = router.zoo.get(original)
        router.add_model(name, scores, cost=entry.cost, params_b=entry.params_b,
                         cost_unit=entry.cost_unit if entry.cost is not None else "")
        names.append(name)
    timed = {count: [] for count in counts}
    for rep in range(PASSES):                           # paired: each instruction at every count in turn
        for text in texts[:20]:
            for count in (counts if rep % 2 == 0 else counts[::-1]):
                router._neighbour_search(names[:count])  # built untimed: the rows before pairing reused it too
                start = time.perf_counter()
                router.rank(text, models=names[:count])
                timed[count].append(time.perf_counter() - start)
    by_count = {count: round(1000 * float(np.median(t)), 1) for count, t in timed.items()}
    ratio = round(by_count[max(counts)] / by_count[min(counts)], 2) if len(counts) > 1 else None

    big = None
    if args.big_bank:
        big = time_big_bank(args.checkpoint, texts[:20], args.big_bank, router.chunk_size)

    print(json.dumps({
        "checkpoint": args.checkpoint, "models": zoo_size, "aptitude_questions": len(router.aptitude.question_ids),
        "evidence": router.reads_evidence,
        "embeddings_stored": stored,
        "embeddings_used": stored and not args.recompute_embeddings,
        "load_s": round(load_s, 2), "warm_up_s": round(warm_up_s, 2),
        "start_to_first_ranking_s": round(load_s + warm_up_s + times[0], 2),
        "rank_ms": {"median": round(1000 * float(np.median(times)), 1),
                    "p90": round(1000 * float(np.percentile(times, 90)), 1), "n": len(times)},
        "rank_many_per_s": round(len(texts) / many_s, 2), "batch_size": router.batch_size,
        "rank_ms_by_candidates": by_count, "largest_over_smallest": ratio, "chunk_size": router.chunk_size,
        "big_bank": big,
        "hardware": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(),
                     "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }, indent=1))


def time_big_bank(checkpoint: str, texts: list[str], n: int, chunk_size: int) -> dict:
    """Median ms of `Router.rank` over the whole zoo before and after one model's bank grows by `n` results."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "router"
        shutil.copytree(Router.from_pretrained(checkpoint).source, ckpt)
        router = Router.from_pretrained(ckpt, chunk_size=chunk_size)
        router.warm_up()

        def median_ms() -> float:
            timed = []
            for text in texts:
                start = time.perf_counter()
                router.rank(text)
                timed.append(time.perf_counter() - start)
            return round(1000 * float(np.median(timed)), 1)

        median_ms()                                                        # warm
        before = median_ms()
        name, rng = router.models[0], np.random.default_rng(0)
        dim = router.aptitude_embeddings().shape[1]
        start = time.perf_counter()
        for s in range(0, n, 100_000):
            size = min(100_000, n - s)

            def embed(idx: list[int]) -> np.ndarray:
                x = rng.normal(size=(len(idx), dim)).astype(np.float32)
                return x / np.linalg.norm(x, axis=1, keepdims=True)

            router.results_bank.add(name, [text_key(f"big {s + i}") for i in range(size)],
                                    rng.integers(0, 2, size).astype(float).tolist(), "results", embed=embed)
        banked_s = time.perf_counter() - start
        router.rank(texts[0])                                               # reads the grown bank once
        after = median_ms()
        twin = router.models[1]                  # an ordinary bank: the same LLM work, only the search differs
        grown, ordinary = [], []
        for _ in range(3):
            for text in texts:                   # interleaved, so that the machine's noise falls on both alike
                for who, out in ((name, grown), (twin, ordinary)):
                    start = time.perf_counter()
                    router.rank(text, models=[who])
                    out.append(time.perf_counter() - start)
        paired = 1000 * (float(np.median(grown)) - float(np.median(ordinary)))
        return {"model": name, "results": router.bank_size(name), "before_ms": before, "after_ms": after,
                "added_ms": round(paired, 1), "alone_ms": {name: round(1000 * float(np.median(grown)), 1),
                                                           twin: round(1000 * float(np.median(ordinary)), 1)},
                "twin_results": router.bank_size(twin), "bank_s": round(banked_s, 1),
                "cells": None if router.results_bank.centroids is None else len(router.results_bank.centroids)}


if __name__ == "__main__":
    main()
