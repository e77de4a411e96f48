"""Rank the zoo of a trained router for instructions.

    python infer.py --checkpoint checkpoints/modelsat-smollm2-mmlupro --instruction "What is 2+2?\nA. 3\nB. 4"
    python infer.py --checkpoint DIR --file instructions.jsonl --models a,b,c --cost-weight 0.2 --top-k 3 --json

--file takes a .txt (one instruction per line) or a .jsonl (one {"instruction": ...} per line).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_instructions(path: Path) -> list[str]:
    """Instructions from a .txt (one per line) or .jsonl ({"instruction": ...} per line) file."""
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".txt":
        return lines
    if path.suffix != ".jsonl":
        raise ValueError(f"{path}: use a .txt or .jsonl file")
    out = []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {i + 1} is not JSON: {e}") from e
        if not isinstance(record, dict) or not isinstance(record.get("instruction"), str):
            raise ValueError(f'{path}: line {i + 1} needs a string field "instruction"')
        out.append(record["instruction"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Rank the zoo of a trained modelsat router.")
    p.add_argument("--checkpoint", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--instruction", help="one instruction (\\n in the text is read as a new line)")
    src.add_argument("--file", type=Path, help="a .txt or .jsonl file of instructions")
    p.add_argument("--models", help="comma-separated candidates (default: the whole zoo)")
    p.add_argument("--cost-weight", type=float, default=0.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)

    from modelsat.router import Router  # after parsing: --help stays fast

    try:
        instructions = ([args.instruction.replace("\\n", "\n")] if args.instruction is not None
                        else read_instructions(args.file))
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        router = Router.from_checkpoint(args.checkpoint)
        rankings = router.rank_many(instructions, models, cost_weight=args.cost_weight, top_k=args.top_k)
    except ValueError as e:
        print(f"infer.py: error: {e}", file=sys.stderr)
        return 2

    if args.json:
        out = [[r._asdict() for r in ranking] for ranking in rankings]
        print(json.dumps(out[0] if args.instruction is not None else out, indent=1))
        return 0
    for text, ranking in zip(instructions, rankings):
        head = text.strip().splitlines()[0]
        print(f"\n{head[:100]}{'...' if len(head) > 100 else ''}")
        print(f"  {'#':>2}  {'model':<40} {'p_correct':>9} {'cost':>10} {'utility':>8}")
        for i, r in enumerate(ranking, 1):
            cost = "" if r.cost is None else f"{r.cost:.4g}"
            print(f"  {i:>2}  {r.model:<40} {r.p_correct:>9.3f} {cost:>10} {r.utility:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
