"""Shared-prefix packing vs one sequence per candidate: time to score K candidates for one instruction.

    python -m benchmarks.bench_packing --json                                    # SmolLM2-135M, K = 4,8,16,24,64
    python -m benchmarks.bench_packing --json --backbone tiny-llama --ks 4,8     # seconds, for a smoke test

The router is built as for training (default ModelConfig: LoRA on every linear layer, `mlp2x_gelu` connector,
structured capability of 50 tasks × 20 questions pooled to the default router's 8 soft tokens per candidate
(`--num-soft-tokens 0`: one per task, 50), random outcomes). One
instruction of `--instruction-tokens` tokens; for each K, `log_p_correct_separate` (one right-padded batch of K full
sequences) and `log_p_correct` (packed) are timed under torch.no_grad in fp32, best of `--repeats` (interleaved)
after a warm-up.
`token_ratio` = K·(L_x + L_c) / (L_x + K·L_c), the tokens the LLM processes separately vs packed: the speedup
that equal per-token cost would give (it tends to (L_x + L_c) / L_c as K grows).
One thread by default: on a shared machine OpenMP's barriers stall whenever one of its threads is descheduled,
which adds a fixed cost to every operator and swamps the comparison (`--threads 0` keeps torch's default).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from modelsat.config import ModelConfig
from modelsat.model import RouterModel, build_router_model

WORDS = ("the of a question which following is true answer option law biology physics history economics energy "
         "market court theorem proof cell reaction velocity contract tax price equation value function").split()


def make_instruction(model: RouterModel, n_tokens: int, seed: int) -> str:
    """A random instruction of exactly `n_tokens` tokens for this tokenizer (ending in multiple-choice options)."""
    rng = np.random.default_rng(seed)
    text = " ".join(rng.choice(WORDS, size=4 * n_tokens)) + "\nOptions: A. one B. two C. three D. four"
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    for cut in range(n_tokens, 0, -1):  # decoding and re-encoding may merge tokens at the edge: find an exact cut
        candidate = model.tokenizer.decode(ids[-cut:])
        if len(model.tokenizer(candidate, add_special_tokens=False)["input_ids"]) == n_tokens:
            return candidate
    raise RuntimeError(f"could not build an instruction of {n_tokens} tokens")


def best_times(fns: list, repeats: int) -> tuple[list[float], list]:
    """Best wall time of each function over `repeats` rounds, the functions interleaved within a round so that
    load from other processes on a shared machine hits them alike; also each function's last output."""
    best, outs = [float("inf")] * len(fns), [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best, outs


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_packing", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: a table)")
    parser.add_argument("--backbone", default="smollm2-135m-instruct", help="router LLM (model.llm)")
    parser.add_argument("--sentence-encoder", default=None, help="default: tiny-encoder for tiny-llama, else MiniLM")
    parser.add_argument("--ks", default="4,8,16,24,64", help="candidate counts K, comma-separated")
    parser.add_argument("--instruction-tokens", type=int, default=256)
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--per-task", type=int, default=20)
    parser.add_argument("--num-soft-tokens", type=int, default=8,
                        help="model.num_soft_tokens: 8 as in configs/default.yaml (0: one per task, 50)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default); see above")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ks = [int(k) for k in args.ks.split(",") if k]
    encoder = args.sentence_encoder or ("tiny-encoder" if args.backbone == "tiny-llama" else "all-minilm-l6-v2")
    cfg = ModelConfig(llm=args.backbone, sentence_encoder=encoder, num_soft_tokens=args.num_soft_tokens,
                      max_instruction_tokens=max(args.instruction_tokens, 9))
    model = build_router_model(cfg, per_task=args.per_task).eval()
    instruction = make_instruction(model, args.instruction_tokens, args.seed)
    rng = np.random.default_rng(args.seed)
    descriptions = [f"aptitude task {t}: {' '.join(rng.choice(WORDS, 3))}" for t in range(args.tasks)]
    pool = [model.model_features(rng.integers(0, 2, (args.tasks, args.per_task)).astype(np.float32), descriptions)
            for _ in range(max(ks))]                                              # each (N, F)
    Lx = len(model.prefix_ids([instruction])[0])
    Lc = len(model.block_ids(model.capability.num_tokens(pool[0].shape[0])))
    rows = []
    with torch.no_grad():
        warm = [torch.stack(pool[:min(ks)])]
        model.log_p_correct([instruction], warm), model.log_p_correct_separate([instruction], warm)
        for k in ks:
            feats = [torch.stack(pool[:k])]                                       # (K, N, F)
            (t_sep, t_packed), (separate, packed) = best_times(
                [lambda: model.log_p_correct_separate([instruction], feats), lambda: model.log_p_correct([instruction], feats)],
                args.repeats)
            row = {"k": k, "separate_s": round(t_sep, 4), "packed_s": round(t_packed, 4),
                   "speedup": round(t_sep / t_packed, 2),
                   "max_abs_diff": float((separate[0] - packed[0]).abs().max()),
                   "token_ratio": round(k * (Lx + Lc) / (Lx + k * Lc), 2)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    result = {"backbone": args.backbone, "device": f"cpu ({cpu_name()})", "threads": torch.get_num_threads(),
              "instruction_tokens": Lx, "candidate_tokens": Lc, "soft_tokens": Lc - len(model.prompt_ids),
              "repeats": args.repeats, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.backbone} on {result['device']}, {result['threads']} threads; L_x={Lx}, L_c={Lc}")
    print(f"{'K':>4} {'separate s':>11} {'packed s':>9} {'speedup':>8} {'token ratio':>12} {'max |diff|':>11}")
    for r in rows:
        print(f"{r['k']:>4} {r['separate_s']:>11.3f} {r['packed_s']:>9.3f} {r['speedup']:>8.2f} "
              f"{r['token_ratio']:>12.2f} {r['max_abs_diff']:>11.2e}")


if __name__ == "__main__":
    main()
