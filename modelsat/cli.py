"""The `modelsat` command: training, ranking, data, aptitude tests, the zoo, evaluation and the HTTP service.

    modelsat train --config default                     # or a YAML file, then key.sub=value overrides
    modelsat rank --checkpoint checkpoints/modelsat-smollm2-mmlupro "What is the derivative of x^2?"

    modelsat data build --source mmlu-pro --input ../shared/data/mmlu_pro --out data/mmlu-pro/table
    modelsat aptitude build --table data/mmlu-pro/table --out aptitude.json
    modelsat data split --table data/mmlu-pro/table --aptitude aptitude.json --out splits.json
    modelsat aptitude run --model smollm2-135m-instruct --aptitude aptitude.json --out smollm2.parquet
    modelsat zoo add --checkpoint DIR --name smollm2 --results smollm2.parquet --cost 0.135
    modelsat evaluate --checkpoint DIR --table data/mmlu-pro/table --split test --zoo mixed
    modelsat serve --checkpoint DIR
    modelsat checkpoint upgrade DIR

Errors in the input exit with status 2 and one line saying what is wrong (`modelsat --debug ...` shows the
traceback); output cut by a closed pipe (`modelsat zoo list --json | head -1`) ends quietly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from modelsat import __version__
from modelsat.config import shipped_configs
from modelsat.logs import add_logging_arguments, setup_logging
from modelsat.quiet import quiet_libraries

CHECKPOINT_HELP = "a router's checkpoint folder, e.g. checkpoints/modelsat-smollm2-mmlupro"
SOURCES = ["mmlu-pro", "mmlu-pro-raw", "routerdc", "routerbench", "leaderboard", "table"]


def _models_arg(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def cmd_data_build(a: argparse.Namespace) -> None:
    from modelsat.data.converters import build_table

    table = build_table(a.source, Path(a.input) if a.input else None, download=a.download,
                        models=_models_arg(a.models))
    table.save(a.out)
    print(f"wrote {a.out}: {len(table.questions)} questions, {len(table.model_names)} models, "
          f"{len(table.results)} results")


def cmd_data_split(a: argparse.Namespace) -> None:
    from modelsat.aptitude import Aptitude
    from modelsat.data.splits import make_splits, save_splits
    from modelsat.data.table import RoutingTable

    splits = make_splits(RoutingTable.load(a.table), Aptitude.load(a.aptitude), val=a.val, test=a.test, seed=a.seed)
    save_splits(splits, a.out, aptitude=Aptitude.load(a.aptitude))
    print(f"wrote {a.out}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items() if isinstance(v, list)))


def cmd_aptitude_build(a: argparse.Namespace) -> None:
    from modelsat.aptitude import build_aptitude
    from modelsat.data.table import RoutingTable

    embed = None
    if a.tasks_by == "cluster":
        from modelsat.pretrained import load_sentence_encoder

        encoder = load_sentence_encoder(a.encoder)
        embed = lambda texts: encoder.encode(texts).numpy()  # noqa: E731
    apt = build_aptitude(RoutingTable.load(a.table), num_tasks=a.tasks, per_task=a.per_task,
                         tasks_by=a.tasks_by, seed=a.seed, embed=embed)
    apt.save(a.out)
    print(f"wrote {a.out}: {apt.num_tasks} tasks x {apt.per_task} questions, fingerprint {apt.fingerprint[:12]}")


def cmd_aptitude_run(a: argparse.Namespace) -> None:
    from modelsat.aptitude import Aptitude, run_aptitude

    if (a.model is None) == (a.endpoint is None):
        raise ValueError("give either --model (a Hugging Face model run here) or --endpoint URL --upstream-model ID "
                         "(an OpenAI-compatible chat endpoint)")
    if a.endpoint is None:
        if any(v is not None for v in (a.upstream_model, a.api_key_env, a.limit)):
            raise ValueError("--upstream-model, --api-key-env and --limit go with --endpoint, not --model")
        df = run_aptitude(a.model, Aptitude.load(a.aptitude), Path(a.out), batch_size=a.batch_size)
        print(f"wrote {a.out}: {len(df)} questions, accuracy {df['score'].mean():.3f}")
        return
    from modelsat.examiner import ExaminerError, answer_log_path, examine

    if a.upstream_model is None:
        raise ValueError("--endpoint needs --upstream-model, the model id the endpoint serves")
    summary = examine(a.endpoint, a.upstream_model, Aptitude.load(a.aptitude), Path(a.out), api_key_env=a.api_key_env,
                      limit=a.limit, concurrency=a.concurrency, retries=a.retries, timeout=a.timeout,
                      max_tokens=a.max_tokens)
    print("\n".join(summary.lines(Path(a.out))))
    print(f"wrote {a.out} ({summary.answered} questions; every answer is in {answer_log_path(Path(a.out))})")
    if summary.failed:
        raise ExaminerError(f"{len(summary.failed)} questions got no answer; rerun the same command to ask them again")


def _zoo(checkpoint: str):
    """The zoo of a checkpoint (checked: the folder is complete and the entries match its aptitude test)."""
    from modelsat.aptitude import Aptitude
    from modelsat.checkpoint import check_checkpoint
    from modelsat.zoo import Zoo

    ckpt = check_checkpoint(checkpoint)
    return Zoo.load(ckpt / "zoo", Aptitude.load(ckpt / "aptitude.json"))


def _table_costs(results: str, name: str) -> tuple[dict, Path | None]:
    """Cost, params_b and cost unit of `name` from the models file beside a routing table's results, if any, and
    that file. In a typed file (parquet, JSONL) a cost that is a string ('5') or a bool is an error naming file and
    column, though the table reader takes it; a CSV file has only text, and its reader names a cell that is not a
    number."""
    import numpy as np
    import pandas as pd

    from modelsat.data.table import _find, _read

    models = _find(Path(results).parent, "models", False)
    if models is None:
        return {}, None
    m = _read(models, "models")          # checked: every cost a number or blank
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
    from modelsat.zoo import ZooError, check_cost, check_endpoint, check_model_name

    check_model_name(a.name)
    check_cost(a.cost, "cost")  # refuses NaN, which Zoo.add reads as a table's blank cell
    check_cost(a.params_b, "params_b")
    if a.cost_unit and a.cost is None and a.price_in is None and a.price_out is None:
        raise ValueError(f"--cost-unit {a.cost_unit!r} names the unit of --cost; give --cost or drop it")
    where_to = check_endpoint(a.endpoint, a.upstream_model, a.api_key_env, a.price_in, a.price_out)
    zoo = _zoo(a.checkpoint)
    meta = {"cost": a.cost, "params_b": a.params_b, "cost_unit": a.cost_unit, **where_to}
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
    print(f"{'model':<40} {'aptitude acc':>12} {'cost':>10} {'cost unit':<12} {'params_b':>9} {'missing':>13}")
    for r in rows:
        cost = "" if r["cost"] is None else f"{r['cost']:.4g}"
        unit = r["cost_unit"] if r["cost"] is not None else "params_b" if r["params_b"] is not None else ""
        params = "" if r["params_b"] is None else f"{r['params_b']:.1f}"
        missing = f"{r['num_missing']} as wrong" if r["missing"] == "wrong" else "0"
        at = f"  {r['endpoint']} ({r['upstream_model']})" if r.get("endpoint") else ""
        print(f"{r['model']:<40} {r['aptitude_accuracy']:>12.3f} {cost:>10} {unit:<12} {params:>9} {missing:>13}{at}")


def cmd_zoo_remove(a: argparse.Namespace) -> None:
    zoo = _zoo(a.checkpoint)
    name = zoo.get(a.name).name  # an unknown name is an error; " Yi-34B " finds Yi-34B
    path = zoo.files[name]
    zoo.remove(name)
    print(f"removed {name} (deleted {path}); the zoo now has {len(zoo)} models")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from modelsat.evaluate import run_evaluate_cli

    run_evaluate_cli(a)


def cmd_serve(a: argparse.Namespace) -> None:
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise ValueError(f"modelsat serve needs the [serve] extra ({e.name} is not installed); run "
                         "`pip install 'modelsat[serve]'`") from e
    from modelsat.gateway import GatewaySettings
    from modelsat.router import Router
    from modelsat.service import create_app

    settings = GatewaySettings(max_attempts=a.max_attempts, timeout=a.upstream_timeout,
                               connect_timeout=a.connect_timeout)   # checked before the router loads
    router = Router.from_checkpoint(a.checkpoint)
    router.warm_up()
    app = create_app(router, persist=a.persist, gateway=settings)
    uvicorn.run(app, host=a.host, port=a.port, log_level=a.log_level.lower())


def cmd_calibrate(a: argparse.Namespace) -> None:
    from modelsat.calibrate import calibrate
    from modelsat.router import read_instructions
    from modelsat.router import Router

    instructions = read_instructions(a.instructions)               # checked before the router loads
    result = calibrate(Router.from_checkpoint(a.checkpoint), instructions, max_share_expensive=a.max_share_expensive,
                       max_mean_cost=a.max_mean_cost, models=_models_arg(a.models))
    print(json.dumps(result, indent=1, allow_nan=False))


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Each option's help followed by its default, where it has one the help does not already give (a flag's
    False, None and "" are no default worth showing; 0 is)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("(default" in text or not action.option_strings or default is None or default is False or default == ""
                or default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _with_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` and every subcommand's parser under it, formatted by `DefaultsHelpFormatter`."""
    parser.formatter_class = DefaultsHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _with_defaults(sub)
    return parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelsat", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"modelsat {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    # train and rank parse their own options (`modelsat train --help`): listed here, run by `main`
    sub.add_parser("train", add_help=False, help="train a router: --config NAME_OR_FILE [key.sub=value ...] "
                   f"(shipped configs: {', '.join(shipped_configs())}; the same as train.py)")
    sub.add_parser("rank", add_help=False, help="rank the zoo of a router for an instruction: --checkpoint DIR "
                   "\"INSTRUCTION\" (the same as infer.py)")

    data = sub.add_parser("data", help="routing tables and splits").add_subparsers(dest="action", required=True)
    b = data.add_parser("build", help="convert a public source into a routing table")
    b.add_argument("--source", choices=SOURCES, required=True, help="the public source's format")
    b.add_argument("--input", help="file or folder of the source, as published")
    b.add_argument("--out", required=True, help="folder to write questions/results/models.parquet to")
    b.add_argument("--download", action="store_true", help="fetch the source from its public home first")
    b.add_argument("--models", help="comma-separated models to keep (default: all)")
    b.set_defaults(fn=cmd_data_build)
    s = data.add_parser("split", help="train/val/test question ids, disjoint from the aptitude test")
    s.add_argument("--table", required=True, help="routing table folder (`modelsat data build`)")
    s.add_argument("--aptitude", required=True, help="aptitude.json: its questions are kept out of every split")
    s.add_argument("--out", required=True, help="splits.json to write")
    s.add_argument("--val", type=float, default=0.1, help="share of the questions for validation")
    s.add_argument("--test", type=float, default=0.2, help="share of the questions for test")
    s.add_argument("--seed", type=int, default=0, help="random seed of the split")
    s.set_defaults(fn=cmd_data_split)

    apt = sub.add_parser("aptitude", help="aptitude tests").add_subparsers(dest="action", required=True)
    ab = apt.add_parser("build", help="choose T tasks x S discriminative questions")
    ab.add_argument("--table", required=True, help="routing table folder (`modelsat data build`)")
    ab.add_argument("--out", required=True, help="aptitude.json to write")
    ab.add_argument("--tasks", type=int, default=50, help="number of tasks T")
    ab.add_argument("--per-task", type=int, default=20, help="questions per task S")
    ab.add_argument("--tasks-by", choices=["task", "task_or_source", "cluster"], default="task",
                    help="what a task is: the table's task column, that or the source, or clusters of embeddings")
    ab.add_argument("--encoder", default="all-minilm-l6-v2", help="sentence encoder for --tasks-by cluster")
    ab.add_argument("--seed", type=int, default=0, help="random seed of the choice of questions")
    ab.set_defaults(fn=cmd_aptitude_build)
    ar = apt.add_parser("run", help="score a Hugging Face causal LM, or a model behind an OpenAI-compatible chat "
                                    "endpoint, on the aptitude questions")
    ar.add_argument("--model", help="HF id or local folder, or smollm2-135m-instruct / tiny-llama (run here)")
    ar.add_argument("--aptitude", required=True, help="aptitude.json, e.g. a checkpoint's")
    ar.add_argument("--out", required=True, help="results file (.parquet or .csv) for `modelsat zoo add`")
    ar.add_argument("--batch-size", type=int, default=8, help="with --model")
    ar.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1 (instead of --model)")
    ar.add_argument("--upstream-model", help="with --endpoint: the model id it serves")
    ar.add_argument("--api-key-env", help="with --endpoint: environment variable holding the API key (read per request)")
    ar.add_argument("--limit", type=int, help="with --endpoint: ask at most N questions (every task's first ones first)")
    ar.add_argument("--concurrency", type=int, default=8, help="with --endpoint: requests in flight at most")
    ar.add_argument("--retries", type=int, default=5, help="with --endpoint: retries of a timeout, 429 or 5xx")
    ar.add_argument("--timeout", type=float, default=60.0, help="with --endpoint: seconds per request")
    ar.add_argument("--max-tokens", type=int, default=32, help="with --endpoint: max_tokens of each answer")
    ar.set_defaults(fn=cmd_aptitude_run)

    zoo = sub.add_parser("zoo", help="the candidate models of a checkpoint").add_subparsers(dest="action", required=True)
    za = zoo.add_parser("add", help="add a model from its aptitude results (no retraining)")
    za.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    za.add_argument("--name", required=True, help="the model's name in the zoo")
    za.add_argument("--results", required=True, help="long-format (model, question_id, score) or (question_id, score)")
    za.add_argument("--cost", type=float, help="cost per request (default: from models.parquet beside --results)")
    za.add_argument("--cost-unit", default="", help="unit of --cost; a zoo has one unit")
    za.add_argument("--params-b", type=float, help="parameters in billions, the cost where --cost is absent")
    za.add_argument("--missing", choices=["error", "wrong"], default="error",
                    help="unanswered aptitude questions: refuse the results (default), or count them as wrong "
                         "(up to 5%% of the test)")
    za.add_argument("--endpoint", help="OpenAI-compatible base URL the gateway forwards to, e.g. "
                                       "http://127.0.0.1:8080/v1")
    za.add_argument("--upstream-model", help="the model id the endpoint knows (with --endpoint)")
    za.add_argument("--api-key-env", help="environment variable holding the endpoint's API key, read at request "
                                          "time (the key is never stored)")
    za.add_argument("--price-in", type=float, help="USD per 1M input tokens; with --price-out the cost is their mean "
                                                   "in usd_per_1M_tokens")
    za.add_argument("--price-out", type=float, help="USD per 1M output tokens")
    za.set_defaults(fn=cmd_zoo_add)
    zl = zoo.add_parser("list", help="the models of the zoo")
    zl.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    zl.add_argument("--json", action="store_true", help="print JSON instead of a table")
    zl.set_defaults(fn=cmd_zoo_list)
    zr = zoo.add_parser("remove", help="remove a model from the zoo")
    zr.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    zr.add_argument("--name", required=True, help="the model's name in the zoo")
    zr.set_defaults(fn=cmd_zoo_remove)

    ev = sub.add_parser("evaluate", help="routers side by side on a split")
    ev.add_argument("--checkpoint", help="a trained Model-SAT router (omit to run the baselines only)")
    ev.add_argument("--table", required=True, help="routing table folder (`modelsat data build`)")
    ev.add_argument("--split", default="test", choices=["train", "val", "test"], help="the split scored")
    ev.add_argument("--splits", help="splits.json (default: the checkpoint's)")
    ev.add_argument("--aptitude", help="aptitude.json (default: the checkpoint's)")
    ev.add_argument("--zoo", help="a named zoo (from --zoos or the checkpoint's config)")
    ev.add_argument("--zoos", help="a JSON file of named zoos, e.g. ../shared/data/mmlu_pro/zoos.json")
    ev.add_argument("--models", help="comma-separated candidate models")
    ev.add_argument("--unseen", help="comma-separated models never trained on, added through the zoo")
    ev.add_argument("--routers", help="comma-separated routers to run (default: all, e.g. knn,uniroute-kmeans,model-sat)")
    ev.add_argument("--encoder", default="all-minilm-l6-v2", help="sentence encoder of the kNN/MLP/cluster baselines")
    ev.add_argument("--out", default="runs/evaluate", help="folder for metrics.json, report.md and the plots")
    ev.add_argument("--seed", type=int, default=0, help="random seed of the baselines and the bootstrap")
    ev.set_defaults(fn=cmd_evaluate)

    sv = sub.add_parser("serve", help="HTTP JSON service over a checkpoint")
    sv.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sv.add_argument("--port", type=int, default=8000, help="port to listen on")
    sv.add_argument("--persist", action="store_true",
                    help="POST /models and DELETE /models/NAME also write to the checkpoint's zoo")
    sv.add_argument("--max-attempts", type=int, default=3,
                    help="gateway: candidates tried per chat request when upstreams fail (default 3)")
    sv.add_argument("--upstream-timeout", type=float, default=60.0,
                    help="gateway: seconds to wait for an upstream's answer or next streamed chunk (default 60)")
    sv.add_argument("--connect-timeout", type=float, default=5.0,
                    help="gateway: seconds to connect to an upstream (default 5)")
    sv.set_defaults(fn=cmd_serve)

    ca = sub.add_parser("calibrate", help="the smallest cost_weight that meets a budget on representative instructions")
    ca.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    ca.add_argument("--instructions", required=True, help="a .txt (one per line) or .jsonl ({\"instruction\": ...}) file")
    budget = ca.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-share-expensive", type=float,
                        help="at most this fraction of instructions to the most expensive candidate(s), e.g. 0.2")
    budget.add_argument("--max-mean-cost", type=float, help="at most this mean cost per instruction (the zoo's unit)")
    ca.add_argument("--models", help="comma-separated candidates (default: the whole zoo)")
    ca.set_defaults(fn=cmd_calibrate)

    ck = sub.add_parser("checkpoint", help="router checkpoints").add_subparsers(dest="action", required=True)
    cu = ck.add_parser("upgrade", help="bring a checkpoint written by an older modelsat to this one's format, in place")
    cu.add_argument("checkpoint", nargs="+", help="checkpoint folder(s)")
    cu.set_defaults(fn=cmd_checkpoint_upgrade)

    p.add_argument("--debug", action="store_true", help="on an error, show its traceback")
    add_logging_arguments(p)
    for leaf in (b, s, ab, ar, za, zl, zr, ev, sv, ca, cu):  # `--debug` and the log options after the command too
        leaf.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        add_logging_arguments(leaf, suppress_defaults=True)
    return _with_defaults(p)


def cmd_checkpoint_upgrade(a: argparse.Namespace) -> None:
    from modelsat.checkpoint import FORMAT_VERSION, upgrade_checkpoint

    for folder in a.checkpoint:
        done = upgrade_checkpoint(folder)
        print(f"{folder}: {'upgraded to' if done else 'already in'} format {FORMAT_VERSION}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command in ("train", "rank"):       # their own parsers; options given before the command go along
        given = (["--debug"] if args.debug else []) + ["--log-level", args.log_level] + (
            ["--log-json"] if args.log_json else [])
        if args.command == "train":
            from modelsat.train import cli as train

            return train(given + rest, prog="modelsat train")
        from modelsat.infer import main as rank

        return rank(given + rest, prog="modelsat rank")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    where = f"modelsat {args.command}" + (f" {args.action}" if getattr(args, "action", None) else "")
    quiet_libraries()   # an error is the one line on stderr, not after transformers' bars and warnings
    setup_logging(args.log_level, args.log_json)
    try:
        args.fn(args)
        if sys.stdout is None:   # started with stdout closed (`>&-`): print wrote nowhere; end as a closed pipe
            return 141
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:
        # the reader is gone (`| head`): end quietly, as Unix tools do, and keep Python's exit-time flush from
        # failing again (https://docs.python.org/3/library/signal.html#note-on-sigpipe)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass  # stdout is not a file (captured by a caller)
        return 141  # 128 + SIGPIPE, as a tool killed by the closed pipe reports
    except (ValueError, OSError) as e:  # bad input: the package's errors are ValueErrors naming file and field
        if args.debug:
            raise
        print(f"{where}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
