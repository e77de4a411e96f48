"""Would a confidence margin stop Model-SAT from hurting where one model dominates? Checked on cached scores.

    python -m dev.analyses.margin_rule --checkpoint checkpoints/modelsat-smollm2-mmlupro \
        --predictions runs/ix2-650/val/predictions-val.npz

The rule: keep the zoo's default model (the highest aptitude-test accuracy, known for unseen models too) unless
another model's p_correct beats it by at least `margin`. Reads the scores `eval_modelsat.py --split val` cached,
so no router runs. Prints one JSON object: per zoo and margin, the gain over the default model in points.
Use it on val only.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from modelsat.aptitude import Aptitude
from modelsat.checkpoint import check_checkpoint
from modelsat.config import load_config
from modelsat.data.table import RoutingTable
from modelsat.zoo import Zoo

MARGINS = [0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m dev.analyses.margin_rule", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--predictions", required=True, help="predictions-<split>.npz written by eval_modelsat.py")
    args = p.parse_args()
    ckpt = check_checkpoint(args.checkpoint)  # only its config and zoo are read: no model is loaded
    cfg = load_config(ckpt / "config.yaml")
    zoo = Zoo.load(ckpt / "zoo", Aptitude.load(ckpt / "aptitude.json"))
    table = RoutingTable.load(cfg.data.table_dir)
    with np.load(args.predictions, allow_pickle=False) as cached:  # names are unicode arrays: nothing to unpickle
        scores, models, qids = cached["p"], cached["models"].tolist(), cached["question_ids"].tolist()
    aptitude = {r["model"]: r["aptitude_accuracy"] for r in zoo.describe()}
    out = {"checkpoint": args.checkpoint, "predictions": args.predictions, "zoos": {}}
    for zoo, members in {**cfg.data.zoos, "all": table.model_names}.items():
        labels = table.outcome_matrix(qids, members)
        keep = ~np.isnan(labels).any(axis=1)
        labels, p_zoo = labels[keep], scores[np.ix_(keep, [models.index(m) for m in members])]
        default = int(np.argmax([aptitude[m] for m in members]))
        rows = np.arange(len(labels))
        gains = {}
        for margin in MARGINS:
            pick = p_zoo.argmax(axis=1)
            pick = np.where(p_zoo.max(axis=1) - p_zoo[:, default] < margin, default, pick) if margin else pick
            gains[str(margin)] = round(100 * float(labels[rows, pick].mean() - labels[:, default].mean()), 2)
        out["zoos"][zoo] = {"n": int(len(labels)), "default": members[default], "gain_points": gains}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
