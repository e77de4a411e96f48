"""Running `modelsat serve`: one process, or `--workers N` processes sharing one listening socket (uvicorn's
supervisor), each with its own router and ranking thread using `--threads` torch threads.

What the workers share, so that a change made through one is seen by all without a restart:
- the zoo: its folder, re-read by every worker when its files change (`Router.sync_zoo`, at least once a second);
- the results banks: SQLite files beside the zoo (`Router.add_feedback` appends, `sync_zoo` reads);
- conversations and answer ids: `<state dir>/state.sqlite` (SQLite, WAL mode);
- metrics: prometheus-client's multiprocess mode, in a fresh folder named by PROMETHEUS_MULTIPROC_DIR.
A worker is given its settings through the environment variable MODELSAT_SERVE (JSON), read by `app_from_env`,
the factory uvicorn calls in each worker process.

`default_layout(cores)` is the default workers × threads for a machine's core count (what
`benchmarks/bench_gateway.py` measured best on a 2-core CPU: one worker per core, one torch thread each; the
ranking is CPU-bound, so more processes than cores only add memory).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ENV = "MODELSAT_SERVE"
MAX_DEFAULT_WORKERS = 4          # each worker holds its own router (the shipped one: about 1 GB resident)


def default_layout(cores: int | None = None) -> tuple[int, int]:
    """(workers, torch threads per worker) for `cores` CPU cores (default: this machine's)."""
    cores = cores or os.cpu_count() or 1
    workers = max(1, min(cores, MAX_DEFAULT_WORKERS))
    return workers, max(1, cores // workers)


def default_state_dir(checkpoint: str | Path) -> Path:
    """Where conversations and answer ids are kept by default: $XDG_STATE_HOME/modelsat (~/.local/state/modelsat)
    / <the checkpoint folder's name>-<a hash of its absolute path>, so that a restart finds them again."""
    path = Path(checkpoint).expanduser().resolve()
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "modelsat"
    return base / f"{path.name}-{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"


def build_app(options: dict):
    """The app of one worker from its options (checkpoint, persist, gateway, state_dir, sticky_ttl, feedback_ttl,
    rank_batch, instance, threads, host, port)."""
    import torch

    from modelsat.router import Router
    from modelsat.serving.app import create_app
    from modelsat.serving.plan import GatewaySettings

    torch.set_num_threads(options["threads"])
    # The event loop shares the GIL with the ranking thread: hand it over every 1 ms rather than 5 (Python's
    # default), so that a request's own work does not wait behind a ranking's Python steps.
    sys.setswitchinterval(0.001)
    router = Router.from_pretrained(options["checkpoint"])
    router.warm_up()
    app = create_app(router, persist=options["persist"], gateway=GatewaySettings(**options["gateway"]),
                     state_dir=options["state_dir"], sticky_ttl=options["sticky_ttl"],
                     feedback_ttl=options["feedback_ttl"], rank_batch=options["rank_batch"],
                     instance=options["instance"])
    app.state.gateway.myself.learn(options["host"], options["port"])
    return app


def app_from_env():
    """uvicorn's factory in each worker process: `build_app` of the options in MODELSAT_SERVE."""
    return build_app(json.loads(os.environ[ENV]))


def serve(options: dict, workers: int, log_level: str = "info") -> None:
    """Serve until SIGTERM or SIGINT: in this process (`workers` 1) or in `workers` processes."""
    import uvicorn

    host, port = options["host"], options["port"]
    common = dict(host=host, port=port, log_level=log_level.lower(), access_log=False,
                  timeout_graceful_shutdown=3)
    if workers == 1:
        uvicorn.Server(uvicorn.Config(build_app(options), **common)).run()
        return
    from uvicorn.supervisors import Multiprocess

    own_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if own_dir:   # set before any worker imports prometheus-client
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="modelsat-metrics-")
    os.environ[ENV] = json.dumps(options)
    config = uvicorn.Config("modelsat.serving.workers:app_from_env", factory=True, workers=workers, **common)
    try:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    finally:
        if own_dir:
            shutil.rmtree(os.environ.pop("PROMETHEUS_MULTIPROC_DIR"), ignore_errors=True)
