"""The `modelsat` command: training, ranking, data, aptitude tests, the zoo, evaluation and the HTTP service.

    modelsat rank "What is the derivative of x^2?"       # the shipped router modelsat-smollm2-mmlupro
    modelsat train --config tiny                        # a shipped config by name, or a YAML file; key.sub=value

    modelsat data build --source mmlu-pro --input ../shared/data/mmlu_pro --out data/mmlu-pro/table
    modelsat aptitude build --table data/mmlu-pro/table --out aptitude.json
    modelsat data split --table data/mmlu-pro/table --aptitude aptitude.json --out splits.json
    modelsat aptitude run --model smollm2-135m-instruct --aptitude aptitude.json --out smollm2.parquet
    modelsat zoo add --checkpoint DIR --name smollm2 --results smollm2.parquet --cost 0.135
    modelsat evaluate --checkpoint DIR --table data/mmlu-pro/table --split test --zoo mixed
    modelsat serve --checkpoint DIR
    modelsat checkpoint copy modelsat-smollm2-mmlupro DIR      # a copy of a shipped router that may be written to
    modelsat checkpoint upgrade DIR

This module only parses (`modelsat/commands.py` does the work): it imports the commands, `train` and `rank` after
the arguments are parsed, so `--help`, `--version` and a usage error answer at once, before torch loads.

Errors in the input exit with status 2 and one line saying what is wrong (`modelsat --debug ...` shows the
traceback); output cut by a closed pipe (`modelsat zoo list --json | head -1`) ends quietly.
"""
from __future__ import annotations

import argparse
import os
import sys

from modelsat.version import __version__
from modelsat.config import shipped_configs
from modelsat.arguments import CHECKPOINT_HELP, DEBUG_HELP, with_defaults
from modelsat.logs import add_logging_arguments, setup_logging
from modelsat.quiet import quiet_libraries

SOURCES = ["mmlu-pro", "mmlu-pro-raw", "routerdc", "routerbench", "leaderboard", "table", "demo"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelsat", description=__doc__.split("\n")[0])
    p.add_argument("--version", action="version", version=f"modelsat {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    # train and rank parse their own options (`modelsat train --help`): listed here, run by `main`
    sub.add_parser("train", add_help=False, help="train a router: --config NAME_OR_FILE [key.sub=value ...] "
                   f"(shipped configs: {', '.join(shipped_configs())}; the same as train.py)")
    sub.add_parser("rank", add_help=False, help="rank the zoo of a router for an instruction: \"INSTRUCTION\" "
                   "[--checkpoint NAME_OR_DIR] (the same as infer.py)")

    groups = {name: sub.add_parser(name, help=text) for name, text in (
        ("data", "routing tables and splits"), ("aptitude", "aptitude tests"),
        ("zoo", "the candidate models of a checkpoint"))}
    data = groups["data"].add_subparsers(dest="action", required=True)
    b = data.add_parser("build", help="convert a public source into a routing table")
    b.add_argument("--source", choices=SOURCES, required=True, help="the public source's format")
    b.add_argument("--input", help="file or folder of the source, as published (none for demo)")
    b.add_argument("--out", required=True, help="folder to write questions/results/models.parquet to")
    b.add_argument("--download", action="store_true", help="fetch the source from its public home first")
    b.add_argument("--models", help="comma-separated models to keep (default: all)")
    b.set_defaults(fn="cmd_data_build")
    dd = data.add_parser("demo", help="write the demo data (made up: 300 questions x 6 models) as a 3-column CSV of "
                                      "text, model, score, the shape of your own results (docs/own-data.md)")
    dd.add_argument("--out", required=True, help="the .csv file to write")
    dd.set_defaults(fn="cmd_data_demo")
    s = data.add_parser("split", help="train/val/test question ids, disjoint from the aptitude test")
    s.add_argument("--table", required=True, help="routing table folder (`modelsat data build`)")
    s.add_argument("--aptitude", required=True, help="aptitude.json: its questions are kept out of every split")
    s.add_argument("--out", required=True, help="splits.json to write")
    s.add_argument("--val", type=float, default=0.1, help="share of the questions for validation")
    s.add_argument("--test", type=float, default=0.2, help="share of the questions for test")
    s.add_argument("--seed", type=int, default=0, help="random seed of the split")
    s.set_defaults(fn="cmd_data_split")

    apt = groups["aptitude"].add_subparsers(dest="action", required=True)
    ab = apt.add_parser("build", help="choose T tasks x S discriminative questions")
    ab.add_argument("--table", required=True, help="routing table folder (`modelsat data build`)")
    ab.add_argument("--out", required=True, help="aptitude.json to write")
    ab.add_argument("--tasks", type=int, default=50, help="number of tasks T")
    ab.add_argument("--per-task", type=int, default=20, help="questions per task S")
    ab.add_argument("--tasks-by", choices=["task", "task_or_source", "cluster"], default="task",
                    help="what a task is: the table's task column, that or the source, or clusters of embeddings")
    ab.add_argument("--encoder", default="all-minilm-l6-v2", help="sentence encoder for --tasks-by cluster")
    ab.add_argument("--seed", type=int, default=0, help="random seed of the choice of questions")
    ab.set_defaults(fn="cmd_aptitude_build")
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
    ar.set_defaults(fn="cmd_aptitude_run")

    zoo = groups["zoo"].add_subparsers(dest="action", required=True)
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
    za.add_argument("--context-window", type=int, help="tokens the model reads and writes in one request: the "
                                                       "gateway sends it only requests that fit (default: undeclared)")
    za.add_argument("--capabilities", help="what the model serves, comma-separated: tools, vision, json_schema "
                                           "('' declares none; default: undeclared)")
    za.add_argument("--tokenizer", help="Hugging Face id or path of the model's tokenizer, to count its tokens")
    za.set_defaults(fn="cmd_zoo_add")
    zl = zoo.add_parser("list", help="the models of the zoo")
    zl.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    zl.add_argument("--json", action="store_true", help="print JSON instead of a table")
    zl.set_defaults(fn="cmd_zoo_list")
    zr = zoo.add_parser("remove", help="remove a model from the zoo")
    zr.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    zr.add_argument("--name", required=True, help="the model's name in the zoo")
    zr.set_defaults(fn="cmd_zoo_remove")
    zb = zoo.add_parser("add-results", help="bank a model's graded results (prompt text or question_id, score): "
                        "routing reads them at once, no retraining")
    zb.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    zb.add_argument("--name", required=True, help="the model's name in the zoo")
    zb.add_argument("--results", required=True, help="a .csv, .jsonl or .parquet file with the columns text (or "
                    "question_id) and score in [0, 1]")
    zb.set_defaults(fn="cmd_zoo_add_results")

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
    ev.set_defaults(fn="cmd_evaluate")

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
                    help="gateway: seconds to connect to an upstream, or to wait for a free connection (default 5)")
    sv.add_argument("--deadline", type=float, default=300.0,
                    help="gateway: seconds for a whole chat request, every attempt and the whole answer, streams "
                         "included (default 300)")
    sv.add_argument("--max-answer-bytes", type=int, default=16 << 20,
                    help="gateway: an upstream answer (or stream) over this many bytes fails (default 16 MiB)")
    sv.add_argument("--upstream-connections", type=int, default=64,
                    help="gateway: connections open at most to one upstream host:port (default 64)")
    sv.add_argument("--workers", type=int, help="worker processes sharing the port (default: one per CPU core, "
                                                "at most 4)")
    sv.add_argument("--threads", type=int, help="torch threads per worker (default: cores / workers)")
    sv.add_argument("--rank-batch", type=int, default=8,
                    help="requests ranked together at most, per worker (1: one at a time; default 8)")
    sv.add_argument("--state-dir", help="folder of the conversation and answer-id store, shared by the workers "
                                        "(default: ~/.local/state/modelsat/<checkpoint>-<hash>)")
    sv.add_argument("--sticky-ttl", type=float, default=3600.0,
                    help="seconds a conversation stays on the model that answered it (0: off; default 3600)")
    sv.add_argument("--feedback-ttl", type=float, default=7 * 86400.0,
                    help="seconds an answer's id takes feedback (POST /v1/feedback; default 7 days)")
    sv.set_defaults(fn="cmd_serve")

    ca = sub.add_parser("calibrate", help="the smallest cost_weight that meets a budget on representative instructions")
    ca.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    ca.add_argument("--instructions", required=True, help="a .txt (one per line) or .jsonl ({\"instruction\": ...}) file")
    budget = ca.add_mutually_exclusive_group(required=True)
    budget.add_argument("--max-share-expensive", type=float,
                        help="at most this fraction of instructions to the most expensive candidate(s), e.g. 0.2")
    budget.add_argument("--max-mean-cost", type=float, help="at most this mean cost per instruction (the zoo's unit)")
    ca.add_argument("--models", help="comma-separated candidates (default: the whole zoo)")
    ca.set_defaults(fn="cmd_calibrate")

    groups["checkpoint"] = sub.add_parser("checkpoint", help="router checkpoints: copy a shipped one, upgrade an old one")
    ck = groups["checkpoint"].add_subparsers(dest="action", required=True)
    cc = ck.add_parser("copy", help="copy a router (a shipped name, a folder or a hub id) whole to a new folder, "
                                    "which `zoo add` and the other writes may change")
    cc.add_argument("checkpoint", help="the router to copy, e.g. modelsat-smollm2-mmlupro")
    cc.add_argument("out", help="the new folder (absent, or empty)")
    cc.set_defaults(fn="cmd_checkpoint_copy")
    cu = ck.add_parser("upgrade", help="bring a checkpoint written by an older modelsat to this one's format, in place")
    cu.add_argument("checkpoint", nargs="+", help="checkpoint folder(s)")
    cu.set_defaults(fn="cmd_checkpoint_upgrade")

    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    add_logging_arguments(p)
    for parser in (*groups.values(), b, dd, s, ab, ar, za, zb, zl, zr, ev, sv, ca, cc, cu):  # also after the command
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        add_logging_arguments(parser, suppress_defaults=True)
    return with_defaults(p)


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
            from modelsat.train import cli as train      # (as `commands` below)

            return train(given + rest, prog="modelsat train")
        from modelsat.infer import main as rank

        return rank(given + rest, prog="modelsat rank")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    where = f"modelsat {args.command}" + (f" {args.action}" if getattr(args, "action", None) else "")
    quiet_libraries()   # an error is the one line on stderr, not after transformers' bars and warnings
    setup_logging(args.log_level, args.log_json)
    from modelsat import commands      # torch and transformers load once the arguments are known

    try:
        getattr(commands, args.fn)(args)
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
