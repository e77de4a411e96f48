"""`GET /metrics`: the gateway's Prometheus metrics (prometheus-client), summed over every worker process.

    modelsat_requests_total{model, status, routed}        chat requests answered, by the model that answered
                                                          ("none" where none did) and HTTP status
    modelsat_failed_attempts_total{model, reason}         upstream attempts that failed (each one a fallback)
    modelsat_ranking_seconds                               histogram: one ranking batch's time
    modelsat_ranking_batch_size                            histogram: requests ranked together
    modelsat_upstream_seconds{model}                       histogram: request sent -> answer checked (a stream: its
                                                          first event)
    modelsat_tokens_total{model, kind}                     prompt / completion tokens, as the upstream counted them
    modelsat_cost_total{model, unit}                       the answers' cost: USD where the entry has prices (from
                                                          the tokens), else the entry's cost per request
    modelsat_cost_saved_total{unit}                        the same answers at the zoo's most expensive model, less
                                                          their cost
    modelsat_conversations_total{outcome}                  multi-turn requests: kept on their model, or not (lost)
    modelsat_feedback_total{outcome}                       feedback results: counted, repeated, refused

With several workers (`modelsat serve --workers N`) every process writes its values to files in the folder named
by the environment variable PROMETHEUS_MULTIPROC_DIR (set by `modelsat serve` before prometheus-client is imported)
and `/metrics` adds them up (prometheus-client's multiprocess mode); otherwise the values live in this process.
"""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401 (re-exported for the endpoint)

from modelsat.zoo import ZooEntry

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The gateway's metrics (see the module's docstring); `exposition()` is the text `/metrics` answers."""

    def __init__(self) -> None:
        self.multiprocess = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = CollectorRegistry()
        reg = None if self.multiprocess else self.registry   # multiprocess: values go to files, collected below
        self.requests = Counter("modelsat_requests", "Chat requests answered, by model and HTTP status",
                                ["model", "status", "routed"], registry=reg)
        self.failed = Counter("modelsat_failed_attempts", "Upstream attempts that failed", ["model", "reason"],
                              registry=reg)
        self.ranking = Histogram("modelsat_ranking_seconds", "Time of one ranking batch", buckets=LATENCY_BUCKETS,
                                 registry=reg)
        self.batch = Histogram("modelsat_ranking_batch_size", "Requests ranked together",
                               buckets=(1, 2, 4, 8, 16, 32), registry=reg)
        self.upstream = Histogram("modelsat_upstream_seconds", "Upstream latency to a checked answer (a stream: "
                                  "its first event)", ["model"], buckets=LATENCY_BUCKETS, registry=reg)
        self.tokens = Counter("modelsat_tokens", "Tokens, as the upstream counted them", ["model", "kind"],
                              registry=reg)
        self.cost = Counter("modelsat_cost", "Estimated cost of the answers", ["model", "unit"], registry=reg)
        self.saved = Counter("modelsat_cost_saved", "Cost saved against the zoo's most expensive model", ["unit"],
                             registry=reg)
        self.conversations = Counter("modelsat_conversations", "Multi-turn requests: kept on their model or not",
                                     ["outcome"], registry=reg)
        self.feedback = Counter("modelsat_feedback", "Feedback results", ["outcome"], registry=reg)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric (all workers' in multiprocess mode)."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def answered(self, entry: ZooEntry, entries: dict[str, ZooEntry], tokens: tuple[int, int] | None) -> None:
        """Count an answer's tokens, its cost and the cost saved against the most expensive model of `entries`."""
        if tokens is not None:
            self.tokens.labels(entry.name, "prompt").inc(tokens[0])
            self.tokens.labels(entry.name, "completion").inc(tokens[1])
        priced = [e for e in entries.values() if e.price_in is not None]
        if entry.price_in is not None:
            if tokens is None:
                return
            cost = (tokens[0] * entry.price_in + tokens[1] * entry.price_out) / 1e6
            top = max(priced, key=lambda e: e.cost or 0.0)
            self.cost.labels(entry.name, "usd").inc(cost)
            self.saved.labels("usd").inc(max(0.0, (tokens[0] * top.price_in + tokens[1] * top.price_out) / 1e6 - cost))
            return
        own = entry.cost if entry.cost is not None else entry.params_b
        if own is None:
            return
        unit = entry.unit or ""
        known = [e.cost if e.cost is not None else e.params_b for e in entries.values() if e.unit == entry.unit]
        self.cost.labels(entry.name, unit).inc(own)
        self.saved.labels(unit).inc(max(0.0, max(k for k in known if k is not None) - own))

