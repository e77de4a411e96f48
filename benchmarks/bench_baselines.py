"""Every routing baseline on MMLU-Pro for the zoos 7b, mixed, large and all: prints JSON, writes a markdown table.

    python -m benchmarks.bench_baselines --work /tmp/modelsat-eval              # test split, the four zoos
    python -m benchmarks.bench_baselines --work /tmp/modelsat-eval --tune       # hyper-parameter grids on val

The routing table, aptitude test (50 tasks × 20 by task, seed 0) and splits (val 0.1, test 0.2, seed 0) are built
from ../shared/data/mmlu_pro into `--work` on first use; MiniLM embeddings are cached there
(`table/embeddings-all-minilm-l6-v2.npz`). Each zoo's full outputs go to `<work>/eval-<zoo>/`.
`--tune` never looks at the test split: it fits on train and scores on val, for every zoo.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from modelsat.logs import setup_logging
from modelsat.aptitude import Aptitude, build_aptitude
from modelsat.baselines import (BestPerCategoryRouter, InferenceDynamicsRouter, KNNRouter, MLPRouter,
                                UniRouteRouter)
from modelsat.data.converters import build_table
from modelsat.data.splits import load_splits, make_splits, save_splits
from modelsat.data.table import RoutingTable
from modelsat.embedding import cached_embedder
from modelsat.evaluate import evaluate, resolve_zoo

ZOOS = ["7b", "mixed", "large", "all"]


def prepare(data: Path, work: Path) -> tuple[RoutingTable, Aptitude, dict[str, list[str]]]:
    """Table, aptitude test and splits in `work`, built from the public MMLU-Pro data on first use."""
    if not (work / "table" / "questions.parquet").exists():
        build_table("mmlu-pro", data).save(work / "table")
    table = RoutingTable.load(work / "table")
    if not (work / "aptitude.json").exists():
        build_aptitude(table, num_tasks=50, per_task=20, tasks_by="task", seed=0).save(work / "aptitude.json")
    aptitude = Aptitude.load(work / "aptitude.json")
    if not (work / "splits.json").exists():
        save_splits(make_splits(table, aptitude, val=0.1, test=0.2, seed=0), work / "splits.json", aptitude)
    return table, aptitude, load_splits(work / "splits.json", aptitude=aptitude)


def tune_grid(seed: int) -> list:
    """The candidate hyper-parameters, each router instance renamed after its setting."""
    grid = [BestPerCategoryRouter(smoothing=a) for a in (0, 5, 20, 100)]
    grid += [KNNRouter(k=k) for k in (10, 25, 50, 100, 200, 400)]
    grid += [MLPRouter(hidden=h, seed=seed) for h in (64, 256, 1024)]
    grid += [UniRouteRouter(n_clusters=k, smoothing=a, seed=seed) for k in (2, 5, 10, 20, 40) for a in (5, 20, 50)]
    grid += [InferenceDynamicsRouter(temperature=t, smoothing=a) for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
             for a in (5, 20)]
    for r in grid:
        r.name = f"{type(r).name}({', '.join(f'{k}={v}' for k, v in r.params().items() if v is not None and k != 'epochs')})"
    return grid


def row(zoo: str, name: str, r: dict) -> str:
    if not r.get("applicable", True):
        return f"| {zoo} | {name} | n/a | | | {r['reason']} |"
    lo, hi = r["gain_ci"]
    gap = "–" if r["gap_closed"] is None else f"{r['gap_closed']:.3f}"
    return f"| {zoo} | {name} | {r['accuracy']:.4f} | {r['gain']:+.4f} [{lo:+.4f}, {hi:+.4f}] | {gap} | |"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_baselines", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "mmlu_pro")
    p.add_argument("--work", type=Path, default=Path("/tmp/modelsat-eval"))
    p.add_argument("--zoos", default=",".join(ZOOS))
    p.add_argument("--encoder", default="all-minilm-l6-v2")
    p.add_argument("--unseen", default="", help="comma-separated models to treat as unseen")
    p.add_argument("--tune", action="store_true", help="grids on the val split instead of the defaults on test")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    setup_logging()                    # modelsat's progress and warnings on stderr
    if not (a.data / "questions.parquet").exists():
        sys.exit(f"MMLU-Pro data not found at {a.data}; pass --data (see ../shared/data/README.md)")
    table, aptitude, splits = prepare(a.data, a.work)
    zoos = json.loads((a.data / "zoos.json").read_text())
    embed = cached_embedder(table, a.encoder, a.work / "table")
    embed(table.texts(splits["train"][:1]))            # encode (or load) every question once, up front
    unseen = [m for m in a.unseen.split(",") if m]
    summary, lines = {}, []
    for zoo in a.zoos.split(","):
        name, models = resolve_zoo(table.model_names, zoos, zoo, None, unseen)
        t0 = time.time()
        m = evaluate(table, splits, aptitude, models, split="val" if a.tune else "test", unseen=unseen,
                     routers=tune_grid(a.seed) if a.tune else None, embed=embed, seed=a.seed, zoo=name,
                     out=None if a.tune else a.work / f"eval-{name}")
        summary[name] = {"n_instructions": m["n_instructions"], "n_dropped_missing": m["n_dropped_missing"],
                         "oracle": m["oracle"], "random": m["random"], "best_single": m["best_single"],
                         "seconds": round(time.time() - t0, 1),
                         "routers": {k: {f: v.get(f) for f in ("accuracy", "gain", "gain_ci", "gap_closed", "brier",
                                                               "applicable", "reason")} | (
                             {"auc": v["cost_curve"]["auc"]} if v.get("applicable", True) else {})
                                     for k, v in m["routers"].items()}}
        bs = m["best_single"]
        lines.append(f"| {name} | oracle | {m['oracle']:.4f} | | | n={m['n_instructions']} "
                     f"(dropped {m['n_dropped_missing']}); best single {bs['model']} {bs['accuracy']:.4f} |")
        lines += [row(name, k, v) for k, v in m["routers"].items()]
    if a.tune:
        names = list(next(iter(summary.values()))["routers"])
        mean = {n: float(np.mean([s["routers"][n]["accuracy"] for s in summary.values()
                                  if s["routers"][n].get("applicable", True)])) for n in names if n != "model-sat"}
        summary["mean_val_accuracy"] = mean
    print(json.dumps(summary, indent=1))
    split = "val" if a.tune else "test"
    md = [f"Baselines on MMLU-Pro ({split} split; MiniLM embeddings; aptitude 50×20 by task, seed 0; splits "
          "val 0.1 / test 0.2, seed 0). Gain over the best single model (chosen on train) with a 95% paired "
          "bootstrap CI (1,000 resamples).", "",
          "| zoo | router | accuracy | gain [95% CI] | gap closed | note |", "|---|---|---:|---:|---:|---|"] + lines
    out = a.work / f"baselines-{split}.md"
    out.write_text("\n".join(md) + "\n")
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
