"""The ranking thread of a `modelsat serve` worker: concurrent requests are ranked together, in batches.

The router's forward pass is CPU-bound and not thread-safe with the zoo changing under it, so one thread owns it:
requests queue their (text, candidates, cost_weight) and await the result; a request that ends while its ranking
waits (its deadline, its client gone) drops it from the queue. The thread takes up to `max_batch`
queued requests with the same candidates and scores them in one `Router.predict_matrix` call (one padded batch),
then orders each request's candidates by its own cost_weight (`modelsat/choice.py`, the rule `Router.rank` uses).
Batching pays where several requests wait at once (`benchmarks/bench_gateway.py` measures it); `max_batch=1`
ranks one at a time. Between rankings, and at least once a second when idle, the thread re-reads the zoo folder
(`zoo_syncer`). Everything that changes the router (a model added or removed, feedback) holds `lock`, as the
thread does while ranking.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from modelsat.choice import Ranked, ranking, utilities
from modelsat.router import Router

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    text: str
    models: tuple[str, ...]
    cost_weight: float
    top_k: int | None
    done: Callable[[list[Ranked] | None, BaseException | None], None]
    cancelled: bool = False      # its request ended (deadline, client gone) before the ranking began: skipped


class Ranker:
    """Ranks in one daemon thread, in batches of at most `max_batch` requests sharing their candidates; `sync` (the
    zoo re-read) runs between batches and at least every `idle` seconds. `observe(seconds, batch)`: called after
    each batch (metrics)."""

    def __init__(self, router: Router, lock: threading.Lock, sync: Callable[[], None], max_batch: int = 8,
                 idle: float = 1.0, observe: Callable[[float, int], None] | None = None) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch (--rank-batch) must be an integer >= 1, got {max_batch!r}")
        self.router, self.lock, self.sync, self.max_batch, self.idle = router, lock, sync, max_batch, idle
        self.observe = observe
        self._jobs: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._wake:
            if self._thread is None:
                self._stopped = False
                self._thread = threading.Thread(target=self._run, name="modelsat-ranker", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)

    def submit(self, text: str, models: list[str], cost_weight: float = 0.0, top_k: int | None = None,
               done: Callable[[list[Ranked] | None, BaseException | None], None] = None) -> _Job:
        """Queue a ranking; `done(ranking, error)` is called from the ranking thread. Returns the job (set its
        `cancelled` to drop it while it waits)."""
        self.start()
        job = _Job(text, tuple(models), cost_weight, top_k, done)
        with self._wake:
            self._jobs.append(job)
            self._wake.notify()
        return job

    @property
    def waiting(self) -> int:
        """Rankings queued, not yet begun."""
        return len(self._jobs)

    async def rank(self, text: str, models: list[str], cost_weight: float = 0.0,
                   top_k: int | None = None) -> list[Ranked]:
        """The candidates `models` for `text`, best first (as `Router.rank`); raises what it raises."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def done(result, error) -> None:
            def settle() -> None:
                if not future.done():
                    future.set_exception(error) if error is not None else future.set_result(result)
            loop.call_soon_threadsafe(settle)
        job = self.submit(text, models, cost_weight, top_k, done)
        try:
            return await future
        finally:
            job.cancelled = not future.done()   # its request ended first (deadline, client gone): not ranked

    def rank_now(self, text: str, models: list[str] | None, cost_weight: float = 0.0,
                 top_k: int | None = None) -> list[Ranked]:
        """The same, from a thread that may block (e.g. a sync endpoint)."""
        box: dict = {}
        ready = threading.Event()

        def done(result, error) -> None:
            box.update(result=result, error=error)
            ready.set()
        self.submit(text, models if models is not None else self.router.models, cost_weight, top_k, done)
        ready.wait()
        if box["error"] is not None:
            raise box["error"]
        return box["result"]

    def _take(self) -> list[_Job] | None:
        with self._wake:
            if not self._jobs and not self._stopped:
                self._wake.wait(self.idle)
            if self._stopped:
                return None
            while self._jobs and self._jobs[0].cancelled:
                self._jobs.popleft()
            if not self._jobs:
                return []
            first = self._jobs.popleft()
            batch, rest = [first], deque()
            while self._jobs and len(batch) < self.max_batch:
                job = self._jobs.popleft()
                if not job.cancelled:
                    (batch if job.models == first.models else rest).append(job)
            self._jobs.extendleft(reversed(rest))
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            with self.lock:
                try:
                    self.sync()
                except Exception:  # noqa: BLE001 (zoo_syncer reports its own; never let the thread die)
                    logger.exception("re-reading the zoo failed")
                if batch:
                    start = time.perf_counter()
                    self._rank(batch)
                    if self.observe is not None:
                        self.observe(time.perf_counter() - start, len(batch))

    def _rank(self, batch: list[_Job]) -> None:
        router = self.router
        if len(batch) > 1:
            try:
                models = list(batch[0].models)
                texts = [job.text for job in batch]
                scores = router.predict_matrix(texts, models)          # (Q, M) p_correct
                costs = router.zoo.costs(models)
                cut = router.shortened(texts)
                results = [ranking(models, scores[i], costs, utilities(scores[i:i + 1], costs, job.cost_weight)[0],
                                   job.top_k, cut[i]) for i, job in enumerate(batch)]
            except Exception:  # noqa: BLE001 (one bad text or a model gone: rank each alone for its own error)
                results = None
            if results is not None:
                for job, result in zip(batch, results):
                    job.done(result, None)
                return
        for job in batch:
            try:
                job.done(router.rank(job.text, list(job.models), job.cost_weight, job.top_k), None)
            except Exception as e:  # noqa: BLE001 (handed to the request that asked)
                job.done(None, e)
