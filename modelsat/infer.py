"""Rank the zoo of a trained router for instructions.

    modelsat rank "What is 2+2?\nA. 3\nB. 4"                       # the shipped router modelsat-smollm2-mmlupro
    modelsat rank --checkpoint modelsat-smollm2-routerbench "..."   # another shipped one, a folder or a hub id
    modelsat rank --checkpoint DIR --file instructions.jsonl --models a,b,c --cost-weight 0.2 --top-k 3 --json
    python infer.py --checkpoint DIR --instruction "..."      # the script at the repository's root: the same

--file takes a UTF-8 .txt (one instruction per line) or .jsonl (one {"instruction": ...} per line). An instruction
longer than the router reads is read as its first third and its end; the output says so ("shortened"). Bad input
ends with one line on stderr and exit code 2 (`--debug` shows the traceback). The router (torch, transformers) is
imported once the arguments are read, so `--help` and a usage error answer at once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from modelsat.arguments import CHECKPOINT_HELP, DEBUG_HELP, DefaultsHelpFormatter
from modelsat.checkpoint import DEFAULT_ROUTER
from modelsat.logs import add_logging_arguments, setup_logging
from modelsat.quiet import quiet_libraries


def parse_models(text: str | None) -> list[str] | None:
    """The names of `--models` (None: the whole zoo); an empty list or name is an error, not "every model"."""
    if text is None:
        return None
    names = [m.strip() for m in text.split(",")]
    if not any(names):
        raise ValueError("--models is empty; give comma-separated model names, or leave --models out to rank the "
                         "whole zoo")
    if "" in names:
        raise ValueError(f"--models {text!r} has an empty name (two commas in a row, or one at an end); give "
                         "comma-separated model names")
    return names


def run(args: argparse.Namespace) -> int:
    from modelsat.router import (Router, RouterError, check_cost_weight, check_text, check_top_k,  # (docstring)
                                 read_instructions)

    instructions = ([check_text(args.instruction.replace("\\n", "\n"), "--instruction")]
                    if args.instruction is not None else read_instructions(args.file))
    models = parse_models(args.models)
    try:   # checked before the router loads (seconds), named as the user typed them
        cost_weight, top_k = check_cost_weight(args.cost_weight), check_top_k(args.top_k)
    except RouterError as e:
        raise RouterError(f"--{str(e).replace('_', '-', 1)}") from None
    router = Router.from_pretrained(args.checkpoint, device=args.device, dtype=args.dtype)
    rankings = router.rank_many(instructions, models, cost_weight=cost_weight, top_k=top_k)

    if args.json:
        out = [[r._asdict() for r in ranking] for ranking in rankings]
        print(json.dumps(out[0] if args.instruction is not None else out, indent=1))
    else:
        print_table(instructions, rankings)
    if sys.stdout is None:   # started with stdout closed (`>&-`): print wrote nowhere; end as a closed pipe
        return 141
    sys.stdout.flush()  # a closed pipe shows here, inside main's handler
    return 0


def print_table(instructions: list[str], rankings: list) -> None:
    for text, ranking in zip(instructions, rankings):
        head = text.strip().splitlines()[0]
        print(f"\n{head[:100]}{'...' if len(head) > 100 else ''}")
        if ranking and ranking[0].shortened:
            print("  (shortened: longer than the router reads, so read as its first third and its end)")
        print(f"  {'#':>2}  {'model':<40} {'p_correct':>9} {'cost':>10} {'utility':>8}")
        for i, r in enumerate(ranking, 1):
            cost = "" if r.cost is None else f"{r.cost:.4g}"
            print(f"  {i:>2}  {r.model:<40} {r.p_correct:>9.3f} {cost:>10} {r.utility:>8.3f}")


def main(argv: list[str] | None = None, prog: str = "infer.py") -> int:
    """Rank the zoo for the instruction(s) of `argv`; returns the exit code (2 on bad input, with one line on
    stderr starting with `prog`)."""
    args = build_parser(prog).parse_args(argv)
    if args.text is not None:
        args.instruction = args.text
    setup_logging(args.log_level, args.log_json)
    quiet_libraries()   # an error is the one line on stderr, not after transformers' bars and warnings
    try:
        return run(args)
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as the Python docs recommend
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a tool killed by the closed pipe reports (the same as `modelsat`)
    except Exception as e:
        if args.debug:
            raise
        bad_input = isinstance(e, (ValueError, OSError))   # the modules' errors (RouterError, CheckpointError...)
        hint = "" if bad_input else f" ({type(e).__name__}; rerun with --debug for the traceback)"
        print(f"{prog}: error: {' '.join(str(e).split())}{hint}", file=sys.stderr)
        return 2 if bad_input else 1


def build_parser(prog: str = "infer.py") -> argparse.ArgumentParser:
    """The options of `modelsat rank` / `infer.py`, each with its help and default."""
    p = argparse.ArgumentParser(prog=prog, description="Rank the zoo of a trained modelsat router.",
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_ROUTER, help=CHECKPOINT_HELP)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("text", nargs="?", metavar="INSTRUCTION", help="one instruction (as --instruction)")
    src.add_argument("--instruction", help="one instruction (\\n in the text is read as a new line)")
    src.add_argument("--file", type=Path, help="a .txt or .jsonl file of instructions")
    p.add_argument("--models", help="comma-separated candidates (default: the whole zoo)")
    p.add_argument("--cost-weight", type=float, default=0.0, help="probability given up per the most expensive "
                   "candidate's cost")
    p.add_argument("--top-k", type=int, help="show the best K (default: every candidate)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--device", default="cpu", help="where the router runs: cpu, cuda, cuda:N, or auto (CUDA where "
                   "present)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="the router LLM's dtype (default: "
                   "float32; bfloat16 or float16 on a GPU)")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    add_logging_arguments(p)
    return p


if __name__ == "__main__":
    sys.exit(main())
