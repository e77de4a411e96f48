"""The issue-7 ablations: one short training run per arm from `configs/default.yaml`, the same data, seed and
budget for every arm, compared on the val split (never the test split).

    python -m benchmarks.ablations --out runs/ablations [--steps 150] [--layers 4] [--arms base,text,...]

Arms (each changes one thing from `base`):
  base           structured capability encoder, instruction-centred listwise + pointwise loss, no
                 connector-only stage, 8 soft tokens per candidate
  text           capability encoder `text` (the paper's sentences) instead of `structured`
  model-centred  the paper's model-centred groups (one model, many instructions) instead of instruction-centred
  stage1         a connector-only first stage (LoRA frozen) for the first third of the steps
  soft-4, soft-16, soft-all
                 4 or 16 soft tokens per candidate, or one per aptitude task (no pooling)
  instruction-2  2 more soft tokens per candidate, pooled over its per-task tokens by the instruction

Each arm is `python train.py --config configs/default.yaml <shared overrides> <arm overrides>`; its
`final/metrics.json` gives val routing accuracy over the training models, AUC and Brier score of p(correct)
over every (instruction, model) pair, the interaction AUC (0.5: the same ranking of the models for every
instruction), and the training time. Prints one JSON object and writes
`<out>/ablations.json` and `<out>/ablations.md`. An arm whose `final/` exists is read, not re-run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ARMS = {
    "base": [],
    "text": ["model.encoder_mode=text"],
    "model-centred": ["train.grouping=model"],
    "stage1": ["train.stage1_steps={stage1}"],
    "soft-4": ["model.num_soft_tokens=4"],
    "soft-16": ["model.num_soft_tokens=16"],
    "soft-all": ["model.num_soft_tokens=0"],
    "instruction-2": ["model.instruction_tokens=2"],
}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ablations", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/ablations")
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--steps", type=int, default=150, help="optimizer steps per arm (the same for every arm)")
    p.add_argument("--layers", type=int, default=4, help="lower LLM layers kept (model.num_layers)")
    p.add_argument("--val", type=int, default=200, help="val instructions scored (train.max_val_instructions)")
    p.add_argument("--max-minutes", type=float, default=30.0, help="safety cap per arm")
    args = p.parse_args()
    out = Path(args.out)
    shared = [f"model.num_layers={args.layers}", f"train.max_steps={args.steps}", "train.save_every=0",
              f"train.max_minutes={args.max_minutes}", f"train.max_val_instructions={args.val}",
              "train.log_with=none", "train.warmup_steps=10"]
    rows = []
    for arm in args.arms.split(","):
        if arm not in ARMS:
            raise SystemExit(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
        run = out / arm
        overrides = [o.format(stage1=args.steps // 3) for o in ARMS[arm]]
        if not (run / "final" / "metrics.json").exists():
            cmd = [sys.executable, str(REPO / "train.py"), "--config", args.config, *shared, *overrides,
                   f"train.out_dir={run}"]
            print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
            run.mkdir(parents=True, exist_ok=True)
            with open(run / "train.log", "w") as log:
                subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        m = json.loads((run / "final" / "metrics.json").read_text())
        losses = [h["loss"] for h in m["history"]]
        rows.append({"arm": arm, "overrides": overrides, "steps": m["step"], "train_time_s": m["train_time_s"],
                     "trainable_parameters": m["trainable_parameters"],
                     "loss_last20": sum(losses[-20:]) / len(losses[-20:]), **m["val"]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

    lines = ["| arm | change | steps | train s | loss (last 20) | val accuracy | best single | AUC | Brier "
             "| interaction AUC |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {' '.join(r['overrides']) or '—'} | {r['steps']} | {r['train_time_s']:.0f} | "
                     f"{r['loss_last20']:.3f} | {r['accuracy']:.4f} | {r['best_single']:.4f} | {r['auc']:.4f} | "
                     f"{r['brier']:.4f} | {r.get('interaction_auc', float('nan')):.4f} |")
    out.mkdir(parents=True, exist_ok=True)
    result = {"shared_overrides": shared, "config": args.config, "rows": rows}
    (out / "ablations.json").write_text(json.dumps(result, indent=1))
    (out / "ablations.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
