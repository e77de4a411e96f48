"""What each `modelsat` subcommand does, given its parsed arguments (`modelsat/cli.py` parses them).

Imports inside a function, and why: the commands that run a model import torch, transformers and the router (about
10 s on a CPU) when they run, so that `modelsat zoo list`, `data` and the other file commands answer at once; and
`serve` imports FastAPI and uvicorn, which come with the `[serve]` extra, after checking that they are there (a
missing one is a one-line message naming the extra).

Each `cmd_<command>_<action>(args)` prints what it wrote or found and raises a ValueError (or OSError) naming the
file and field where the input is wrong; `cli.main` turns that into one line and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from modelsat.aptitude import Aptitude, build_aptitude
from modelsat.checkpoint import FORMAT_VERSION, check_checkpoint, copy_checkpoint, locate_checkpoint
from modelsat.data.converters import build_table
from modelsat.data.splits import make_splits, save_splits
from modelsat.data.table import RoutingTable, find_table_file, read_table_file
from modelsat.zoo import Zoo, ZooError, check_cost, check_endpoint, check_model_name, check_serving


def _models_arg(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def cmd_data_build(a: argparse.Namespace) -> None:
    table = build_table(a.source, Path(a.input) if a.input else None, download=a.download,
                        models=_models_arg(a.models))
    table.save(a.out)
    print(f"wrote {a.out}: {len(table.questions)} questions, {len(table.model_names)} models, "
          f"{len(table.results)} results")


def cmd_data_demo(a: argparse.Namespace) -> None:
    from modelsat.data.demo import demo_csv
    from modelsat.io_utils import atomic_write_text

    if Path(a.out).suffix != ".csv":
        raise ValueError(f"--out {a.out}: give a .csv file name (the demo is written as text, model, score rows)")
    rows = demo_csv()
    atomic_write_text(a.out, rows.to_csv(index=False))
    print(f"wrote {a.out}: {len(rows)} rows (text, model, score) of {rows['text'].nunique()} made-up questions and "
          f"{rows['model'].nunique()} made-up models: a demo, not real results")


def cmd_data_split(a: argparse.Namespace) -> None:
    splits = make_splits(RoutingTable.load(a.table), Aptitude.load(a.aptitude), val=a.val, test=a.test, seed=a.seed)
    save_splits(splits, a.out, aptitude=Aptitude.load(a.aptitude))
    print(f"wrote {a.out}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items() if isinstance(v, list)))


def cmd_aptitude_build(a: argparse.Namespace) -> None:
    embed = None
    if a.tasks_by == "cluster":
        from modelsat.pretrained import load_sentence_encoder     # (torch: see the module's docstring)

        encoder = load_sentence_encoder(a.encoder)
        embed = lambda texts: encoder.encode(texts).numpy()  # noqa: E731
    apt = build_aptitude(RoutingTable.load(a.table), num_tasks=a.tasks, per_task=a.per_task,
                         tasks_by=a.tasks_by, seed=a.seed, embed=embed)
    apt.save(a.out)
    print(f"wrote {a.out}: {apt.num_tasks} tasks x {apt.per_task} questions, fingerprint {apt.fingerprint[:12]}")


def cmd_aptitude_run(a: argparse.Namespace) -> None:
    if (a.model is None) == (a.endpoint is None):
        raise ValueError("give either --model (a Hugging Face model run here) or --endpoint URL --upstream-model ID "
                         "(an OpenAI-compatible chat endpoint)")
    if a.endpoint is None:
        if any(v is not None for v in (a.upstream_model, a.api_key_env, a.limit)):
            raise ValueError("--upstream-model, --api-key-env and --limit go with --endpoint, not --model")
        from modelsat.local_examiner import run_aptitude            # (torch)

        df = run_aptitude(a.model, Aptitude.load(a.aptitude), Path(a.out), batch_size=a.batch_size)
        print(f"wrote {a.out}: {len(df)} questions, accuracy {df['score'].mean():.3f}")
        return
    from modelsat.examiner import ExaminerError, answer_log_path, examine     # (httpx: only for this command)

    if a.upstream_model is None:
        raise ValueError("--endpoint needs --upstream-model, the model id the endpoint serves")
    summary = examine(a.endpoint, a.upstream_model, Aptitude.load(a.aptitude), Path(a.out), api_key_env=a.api_key_env,
                      limit=a.limit, concurrency=a.concurrency, retries=a.retries, timeout=a.timeout,
                      max_tokens=a.max_tokens)
    print("\n".join(summary.lines(Path(a.out))))
    print(f"wrote {a.out} ({summary.answered} questions; every answer is in {answer_log_path(Path(a.out))})")
    if summary.failed:
        raise ExaminerError(f"{len(summary.failed)} questions got no answer; rerun the same command to ask them again")


def _zoo(checkpoint: str, write: bool = False):
    """The zoo of a checkpoint (a folder, a shipped router's name or a hub id; checked: the folder is complete and
    the entries match its aptitude test). `write`: the command will write to it, refused at once, in one line saying
    to copy it, where it is read only (a shipped router, a hub snapshot)."""
    located = locate_checkpoint(checkpoint)
    if write and located.read_only is not None:
        raise ZooError(located.read_only)
    ckpt = check_checkpoint(located.path)
    zoo = Zoo.load(ckpt / "zoo", Aptitude.load(ckpt / "aptitude.json"))
    zoo.read_only = located.read_only
    return zoo


def _table_costs(results: str, name: str) -> tuple[dict, Path | None]:
    """Cost, params_b and cost unit of `name` from the models file beside a routing table's results, if any, and
    that file. In a typed file (parquet, JSONL) a cost that is a string ('5') or a bool is an error naming file and
    column, though the table reader takes it; a CSV file has only text, and its reader names a cell that is not a
    number."""
    models = find_table_file(Path(results).parent, "models", False)
    if models is None:
        return {}, None
    m = read_table_file(models, "models")          # checked: every cost a number or blank
    row = m[m["model"] == name]
    if row.empty:
        return {}, models
    if models.suffix != ".csv":          # what the file holds, before the reader turns '5' and True into numbers
        raw = (pd.read_parquet(models) if models.suffix == ".parquet" else
               pd.read_json(models, lines=True, dtype=False)).iloc[row.index[0]]
        for k in ("cost", "params_b"):
            v = raw.get(k)
            if isinstance(v, (bool, str, np.bool_)):
                v = v if isinstance(v, str) else bool(v)   # shown as the user wrote it, not as np.True_
                raise ValueError(f"{models}: model {name!r}, column {k!r}: {v!r} is not a number; write a number "
                                 f"there (or leave it empty), or give --{k.replace('_', '-')}")
    r = row.iloc[0]
    pick = {k: float(r[k]) for k in ("cost", "params_b") if k in r and r[k] == r[k]}  # NaN != NaN
    if "cost" in pick and "cost_unit" in r and isinstance(r["cost_unit"], str):
        pick["cost_unit"] = r["cost_unit"]
    return pick, models


def cmd_zoo_add(a: argparse.Namespace) -> None:
    check_model_name(a.name)
    check_cost(a.cost, "cost")  # refuses NaN, which Zoo.add reads as a table's blank cell
    check_cost(a.params_b, "params_b")
    if a.cost_unit and a.cost is None and a.price_in is None and a.price_out is None:
        raise ValueError(f"--cost-unit {a.cost_unit!r} names the unit of --cost; give --cost or drop it")
    where_to = check_endpoint(a.endpoint, a.upstream_model, a.api_key_env, a.price_in, a.price_out)
    zoo = _zoo(a.checkpoint, write=True)
    meta = {"cost": a.cost, "params_b": a.params_b, "cost_unit": a.cost_unit, **where_to,
            **check_serving(a.context_window, a.capabilities, a.tokenizer)}
    found, models_file = {}, None
    if a.cost is None and a.params_b is None and a.price_in is None:
        found, models_file = _table_costs(a.results, a.name)
    if found:
        meta.update(found)  # a routing table's results: its models file knows the model's cost
        print(f"{a.name}: cost from {models_file}: " + ", ".join(f"{k}={v}" for k, v in found.items() if v != ""))
    try:
        entry = zoo.add(a.name, a.results, missing=a.missing, **meta)
    except ZooError as e:
        if found and any(w in str(e) for w in ("cost", "params_b", "unit")):   # said on stderr, not only stdout
            raise ZooError(f"{e} (the cost was read from {models_file}; fix it there, or give --cost or "
                           "--params-b)") from e
        raise
    counted = f", {entry.num_missing} missing answers counted as wrong" if entry.num_missing else ""
    at = f", answering at {entry.endpoint} as {entry.upstream_model}" if entry.endpoint else ""
    print(f"added {entry.name} to {zoo.root} (aptitude accuracy {entry.accuracy:.3f}{counted}{at}); "
          f"the zoo now has {len(zoo)} models")


def cmd_zoo_list(a: argparse.Namespace) -> None:
    rows = _zoo(a.checkpoint).describe()
    if a.json:
        print(json.dumps(rows, indent=1, allow_nan=False))  # strict JSON: no Infinity or NaN
        return
    print(f"{'model':<40} {'aptitude acc':>12} {'bank':>7} {'cost':>10} {'cost unit':<12} {'params_b':>9} "
          f"{'missing':>13}")
    for r in rows:
        cost = "" if r["cost"] is None else f"{r['cost']:.4g}"
        unit = r["cost_unit"] if r["cost"] is not None else "params_b" if r["params_b"] is not None else ""
        params = "" if r["params_b"] is None else f"{r['params_b']:.1f}"
        missing = f"{r['num_missing']} as wrong" if r["missing"] == "wrong" else "0"
        at = f"  {r['endpoint']} ({r['upstream_model']})" if r.get("endpoint") else ""
        print(f"{r['model']:<40} {r['aptitude_accuracy']:>12.3f} {r['bank_results']:>7} {cost:>10} {unit:<12} "
              f"{params:>9} {missing:>13}{at}")


def cmd_zoo_remove(a: argparse.Namespace) -> None:
    zoo = _zoo(a.checkpoint, write=True)
    name = zoo.get(a.name).name  # an unknown name is an error; " Yi-34B " finds Yi-34B
    path = zoo.files[name]
    zoo.remove(name)
    print(f"removed {name} (deleted {path}); the zoo now has {len(zoo)} models")


def cmd_zoo_add_results(a: argparse.Namespace) -> None:
    from modelsat.bank import read_graded
    from modelsat.router import Router                                # (torch: the results are embedded)

    zoo = _zoo(a.checkpoint, write=True)                  # a read-only router or an unknown model: said at once
    try:
        name = zoo.get(a.name).name
    except ZooError as e:
        raise ZooError(f"--name: {e} (in {a.checkpoint}); add the model first with `modelsat zoo add`") from None
    rows = len(read_graded(a.results, model=name))        # a bad file: said before the router loads
    router = Router.from_pretrained(a.checkpoint)
    added = router.add_results(name, a.results)
    same = f" ({rows - added} of the {rows} rows already banked as they are, or repeated)" if added < rows else ""
    print(f"banked {added} new or changed results of {name} in {router.zoo.root}{same}; its bank now holds "
          f"{router.bank_size(name)} results beyond its aptitude answers")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from modelsat.evaluate import run_evaluate_cli                   # (torch)

    run_evaluate_cli(a)


def cmd_serve(a: argparse.Namespace) -> None:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ValueError(f"modelsat serve needs the [serve] extra ({e.name} is not installed); run "
                         "`pip install 'modelsat[serve]'`") from e
    import uuid

    from modelsat.serving.plan import GatewaySettings
    from modelsat.serving.workers import default_layout, default_state_dir, serve

    settings = GatewaySettings(max_attempts=a.max_attempts, timeout=a.upstream_timeout,
                               connect_timeout=a.connect_timeout, deadline=a.deadline,
                               max_answer_bytes=a.max_answer_bytes,
                               upstream_connections=a.upstream_connections)   # checked before the router loads
    workers, threads = default_layout()
    for flag, value in (("--workers", a.workers), ("--threads", a.threads), ("--rank-batch", a.rank_batch)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be an integer >= 1, got {value}")
    workers = a.workers or workers
    threads = a.threads or max(1, (os.cpu_count() or 1) // workers)
    for flag, value in (("--sticky-ttl", a.sticky_ttl), ("--feedback-ttl", a.feedback_ttl)):
        if not 0 <= value < float("inf"):
            raise ValueError(f"{flag} must be a number of seconds >= 0, got {value}")
    if a.persist:
        _zoo(a.checkpoint, write=True)              # --persist writes to the zoo: a read-only one is refused now
    state = Path(a.state_dir) if a.state_dir else default_state_dir(a.checkpoint)
    options = {"checkpoint": a.checkpoint, "persist": a.persist, "gateway": vars(settings), "state_dir": str(state),
               "sticky_ttl": a.sticky_ttl, "feedback_ttl": a.feedback_ttl, "rank_batch": a.rank_batch,
               "instance": uuid.uuid4().hex[:16], "threads": threads, "host": a.host, "port": a.port}
    print(f"modelsat serve: {workers} worker(s) x {threads} torch thread(s), state in {state}", flush=True)
    serve(options, workers, a.log_level)


def cmd_calibrate(a: argparse.Namespace) -> None:
    from modelsat.calibrate import calibrate                         # (torch)
    from modelsat.router import Router, read_instructions

    instructions = read_instructions(a.instructions)               # checked before the router loads
    result = calibrate(Router.from_pretrained(a.checkpoint), instructions, max_share_expensive=a.max_share_expensive,
                       max_mean_cost=a.max_mean_cost, models=_models_arg(a.models))
    print(json.dumps(result, indent=1, allow_nan=False))


def cmd_checkpoint_copy(a: argparse.Namespace) -> None:
    out = copy_checkpoint(a.checkpoint, a.out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"copied {a.checkpoint} to {out} ({size / 1e6:.1f} MB); `modelsat zoo add --checkpoint {out} ...` may "
          "change it")


def cmd_checkpoint_upgrade(a: argparse.Namespace) -> None:
    from modelsat.checkpoint_writer import upgrade_checkpoint        # (torch)

    for folder in a.checkpoint:
        done = upgrade_checkpoint(folder)
        print(f"{folder}: {'upgraded to' if done else 'already in'} format {FORMAT_VERSION}")
