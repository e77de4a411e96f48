"""Which candidate a router puts first, and second, for 20 varied instructions (a haiku, Chinese, Python, a lease,
physics, law, medicine, ...): issue 19's check "tried as a new user" of whether p_correct follows the instruction.

    python -m dev.analyses.varied_instructions [--checkpoint checkpoints/modelsat-smollm2-mmlupro]

Prints one JSON object: per instruction the first two candidates with their p_correct, and how often each
candidate comes first.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys

from modelsat import Router
from modelsat.checkpoint import CheckpointError

INSTRUCTIONS = [
    "Write a haiku about autumn leaves.",
    "中国的首都是哪座城市？",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Summarise the obligations of the lessee under clause 4 of this lease agreement.",
    "A 2.0 kg block slides down a frictionless incline of height 5.0 m. What is its speed at the bottom?",
    "What is the derivative of x^3 sin x?",
    "Which enzyme unwinds the DNA double helix?\nA. ligase\nB. helicase\nC. primase\nD. topoisomerase",
    "Explain the causes of the French Revolution.",
    "What is the time complexity of quicksort in the worst case?",
    "Translate 'good morning' into German.",
    "A company has revenue of $2M and costs of $1.5M. What is its profit margin?\nA. 20%\nB. 25%\nC. 33%\nD. 75%",
    "Which of these is a symptom of hypothyroidism?\nA. weight loss\nB. heat intolerance\nC. fatigue\nD. tremor",
    "In Kantian ethics, what is the categorical imperative?",
    "Balance the chemical equation: H2 + O2 -> H2O",
    "What does the Fourth Amendment of the US Constitution protect against?",
    "Compute the eigenvalues of the matrix [[2, 1], [1, 2]].",
    "Who wrote 'Pride and Prejudice'?",
    "What is the GDP deflator and how is it computed?",
    "Describe the function of mitochondria in eukaryotic cells.",
    "Solve for x: 3x + 7 = 22.",
]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m dev.analyses.varied_instructions", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="checkpoints/modelsat-smollm2-mmlupro")
    args = p.parse_args()
    try:
        router = Router.from_checkpoint(args.checkpoint)
    except (CheckpointError, OSError, ValueError) as e:     # a missing or foreign folder: one line, exit 2
        print(f"varied_instructions.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    rows = []
    for text in INSTRUCTIONS:
        first, second = router.rank(text, top_k=2)
        rows.append({"instruction": text, "first": first.model, "p_first": round(first.p_correct, 3),
                     "second": second.model, "p_second": round(second.p_correct, 3)})
    firsts = collections.Counter(r["first"] for r in rows)
    print(json.dumps({"checkpoint": args.checkpoint, "first_counts": dict(firsts.most_common()), "rows": rows},
                     indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
