"""Every baseline (and Model-SAT, given a checkpoint) on RouterBench or RouterDC, on the dataset's own
train/test files: prints JSON, writes a markdown table.

    python -m benchmarks.bench_datasets --config configs/routerbench.yaml --out runs/routerbench-eval
    python -m benchmarks.bench_datasets --config configs/routerdc.yaml --out runs/routerdc-eval
    python -m benchmarks.bench_datasets --config configs/routerbench.yaml --out runs/routerbench-eval \\
        --checkpoint runs/routerbench/final
    python -m benchmarks.bench_datasets --config configs/routerdc.yaml --out runs/routerdc-eval \\
        --checkpoint runs/routerdc/final --max-per-source 150     # a seeded sample of each test file, for every router

The table, aptitude test (K-means clusters of the train files' questions) and splits (train files -> train/val,
every other file -> test) are those of the config (`data.split_by: source`), built on first use — the same
ones `train.py --config` uses. The zoo is every model of the table; `data.unseen_models` are known to Model-SAT
through their aptitude results only (and withheld from every router in the `test-unseen` run). Slices: the
whole test split, then each test file (for RouterDC that includes the out-of-distribution sets MATH
prealgebra, C-Eval, JavaScript and MBPP, which have no train file). Costs: the table's `models` cost (RouterBench:
mean US dollars per query), so the cost–quality curve is in dollars.
`--split val` measures on the val split (questions of the train files held out of training) instead, to choose
Model-SAT's settings (the baselines still fit on train; the MLP also stops early on val, so its val figure is
optimistic). Model-SAT routes by p_correct alone, as every router does (`modelsat/choice.py`):

    python -m benchmarks.bench_datasets --config configs/routerdc.yaml --out runs/routerdc-val --split val \
        --checkpoint checkpoints/modelsat-smollm2-routerdc
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.eval_modelsat import MatrixRouter, cached_scores, join_zoo
from modelsat.logs import setup_logging
from modelsat.baselines import ModelSATRouter, default_routers
from modelsat.config import load_config
from modelsat.data.prepare import prepare
from modelsat.embedding import cached_embedder
from modelsat.evaluate import evaluate


def fmt(r: dict) -> str:
    if not r.get("applicable", True):
        return "n/a"
    lo, hi = r["gain_ci"]
    return f"{r['accuracy']:.4f} ({100 * r['gain']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}])"


def by_source(ids: list[str], sources: dict[str, str]) -> dict[str, list[str]]:
    """`ids` grouped by their source file, sources sorted by name, each group in the order of `ids`."""
    groups: dict[str, list[str]] = {}
    for q in ids:
        groups.setdefault(sources[q], []).append(q)
    return dict(sorted(groups.items()))


def sample_per_source(ids: list[str], sources: dict[str, str], n: int, seed: int) -> list[str]:
    """At most `n` of `ids` per source, drawn at random with `seed`; the sample keeps the order of `ids`."""
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    for of_s in by_source(ids, sources).values():
        keep.update(of_s if len(of_s) <= n else rng.choice(of_s, size=n, replace=False).tolist())
    return [q for q in ids if q in keep]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_datasets", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", default=None, help="a Model-SAT router trained with this config")
    p.add_argument("--max-per-source", type=int, default=0,
                   help="at most N test instructions per test file, drawn with the config's seed (0: all); every "
                        "router, baselines included, is then measured on that same sample")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the config")
    args = p.parse_args()
    setup_logging()                    # modelsat's progress and warnings on stderr
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare(cfg.data, encoder_name=cfg.model.sentence_encoder, log=lambda s: print(s, file=sys.stderr))
    table, splits, aptitude = data.table, data.splits, data.aptitude
    models, unseen = table.model_names, list(data.unseen_models)
    sources = dict(zip(table.questions["question_id"], table.questions["source"]))
    if args.split == "val":                      # val stands in for test below; the baselines still fit on train
        splits = {**splits, "test": splits["val"]}
    if args.max_per_source > 0:
        splits = {**splits, "test": sample_per_source(splits["test"], sources, args.max_per_source, cfg.data.seed)}
    embed = cached_embedder(table, cfg.model.sentence_encoder, Path(cfg.data.table_dir))
    embed(table.texts(splits["train"][:1]))                                  # encode every question once, up front

    extra = []
    if args.checkpoint:
        from modelsat.router import Router

        router = Router.from_checkpoint(args.checkpoint)
        if router.aptitude.fingerprint != aptitude.fingerprint:
            sys.exit(f"{args.checkpoint}: its aptitude test differs from the config's ({cfg.data.aptitude})")
        join_zoo(router, table, models)
        texts = table.texts(splits["test"])
        cache = out / (f"predictions-{args.split}-per-source-{args.max_per_source}.npz" if args.max_per_source > 0
                       else f"predictions-{args.split}.npz")           # a sample run keeps the full run's scores
        same = router.config.model.sentence_encoder == cfg.model.sentence_encoder     # `embed`'s encoder
        matrix, scored = cached_scores(router, texts, splits["test"], models, cache, embed if same else None)
        extra = [MatrixRouter(router, texts, matrix, scored)]

    whole = args.split                                                    # the slice of the whole split
    slices = {whole: splits["test"], **by_source(splits["test"], sources)}
    runs = [(name, ids, []) for name, ids in slices.items()]
    if unseen:
        runs.append((f"{whole}-unseen", splits["test"], unseen))
    summary: dict = {"config": args.config, "checkpoint": args.checkpoint, "split": args.split,
                     "max_per_source": args.max_per_source,
                     "models": models, "unseen": unseen,
                     "aptitude": {"tasks": aptitude.num_tasks, "per_task": aptitude.per_task,
                                  "fingerprint": aptitude.fingerprint},
                     "splits": {k: len(v) for k, v in splits.items()}, "results": []}
    for name, ids, held_out in runs:
        routers = default_routers(cfg.data.seed) + [ModelSATRouter(router=r) for r in extra]
        m = evaluate(table, {**splits, "test": ids}, aptitude, models, "test", held_out, routers=routers,
                     embed=embed, out=out / name if name in (whole, f"{whole}-unseen") else None, zoo=name,
                     log=lambda s: None, aptitude_only=[] if held_out else unseen)
        summary["results"].append({
            "slice": name, "n": m["n_instructions"], "unseen": held_out, "best_single": m["best_single"],
            "oracle": m["oracle"],
            "routers": {k: {f: v.get(f) for f in ("accuracy", "gain", "gain_ci", "interaction_auc", "applicable")} | (
                {"cost_at_best_single": v["cost_curve"]["cost_at_best_single"], "cost_auc": v["cost_curve"]["auc"]}
                if v.get("applicable", True) and "cost_curve" in v else {}) for k, v in m["routers"].items()}})
        print(f"{name}: n={m['n_instructions']} " + ", ".join(
            f"{k} {v['accuracy']:.4f}" for k, v in m["routers"].items() if v.get("applicable", True)), file=sys.stderr)

    names = [k for k in summary["results"][0]["routers"] if k != "model-sat" or extra]
    lines = ["| slice (n) | best single | oracle | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for r in summary["results"]:
        lines.append(f"| {r['slice']} ({r['n']}) | {r['best_single']['accuracy']:.4f} ({r['best_single']['model']}) | "
                     f"{r['oracle']:.4f} | " + " | ".join(fmt(r["routers"][k]) for k in names) + " |")
    first = summary["results"][0]["routers"]
    lines += ["", f"Interaction AUC on the whole {whole} split (0.5: one fixed ranking of the models for every "
              "instruction): " + ", ".join(f"{k} {v['interaction_auc']:.3f}" for k, v in first.items()
                                           if v.get("interaction_auc") is not None)]
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
