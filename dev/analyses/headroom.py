"""How much a router can gain over the best single model in each zoo: the per-category ceiling, in hindsight.

    python -m dev.analyses.headroom --checkpoint checkpoints/modelsat-smollm2-mmlupro

Reads only the routing table and the checkpoint's splits; no router runs. Per zoo and split, on the instructions
every zoo model has a result for, gains over the best single model (chosen on train) in points:
  - `oracle`: the best model of each instruction;
  - `per_category_hindsight`: the best model of each category, chosen on that split's own labels — the most any
    router that sends a whole category to one model can gain there (it reads the labels it is scored on, so it
    is a ceiling, not a router; the best-per-category baseline makes the same choice on train).
A router that beats `per_category_hindsight` must tell apart questions within a category. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from modelsat.aptitude import Aptitude
from modelsat.checkpoint import check_checkpoint
from modelsat.config import load_config
from modelsat.data.splits import load_splits
from modelsat.data.table import RoutingTable


def complete(table: RoutingTable, ids: list[str], models: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labels (Q, M) and categories (Q,) of the instructions with a result for every model."""
    y = table.outcome_matrix(ids, models).astype(float)
    keep = ~np.isnan(y).any(axis=1)
    return y[keep], np.array(table.categories(ids))[keep]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m dev.analyses.headroom", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="its config (table, zoos) and splits are read")
    p.add_argument("--splits", default="train,val,test")
    args = p.parse_args()
    ckpt = check_checkpoint(args.checkpoint)
    cfg = load_config(ckpt / "config.yaml")
    table = RoutingTable.load(cfg.data.table_dir)
    splits = load_splits(ckpt / "splits.json", aptitude=Aptitude.load(ckpt / "aptitude.json"))
    out: dict = {"checkpoint": args.checkpoint, "zoos": {}}
    for zoo, models in {**cfg.data.zoos, "all": table.model_names}.items():
        best = int(complete(table, list(splits["train"]), models)[0].mean(axis=0).argmax())
        rows = {}
        for split in args.splits.split(","):
            y, cats = complete(table, list(splits[split]), models)
            base = y[:, best].mean()
            hindsight = np.array([y[cats == c].mean(axis=0).max() * (cats == c).sum() for c in np.unique(cats)])
            rows[split] = {"n": int(len(y)), "best_single": models[best], "best_single_accuracy": round(float(base), 4),
                           "oracle": round(100 * float(y.max(axis=1).mean() - base), 2),
                           "per_category_hindsight": round(100 * float(hindsight.sum() / len(y) - base), 2)}
        out["zoos"][zoo] = rows
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
