"""The feedback curve: how an unseen model's routing improves as its results bank grows, with no retraining.

    python -m benchmarks.feedback_curve --checkpoint checkpoints/modelsat-smollm2-mmlupro --out runs/feedback
    python -m benchmarks.feedback_curve ... --trained-on runs/all-seen/final      # + the same model trained on

For each model of `data.unseen_models` (never trained on; it joined its zoo by its aptitude answers) and the
config's zoo that holds it, the router's gain over the best single model on the test split (points, 95% paired
bootstrap CI), as its bank grows by results it would get as feedback: its aptitude answers alone, then +100, +500
and +2,000 of its train-split results (seeded random draws, each larger draw holding the smaller ones; banked through
`Router.add_results` by their texts). A candidate's p_correct depends on that candidate alone (packing is exact), so
the zoo's other columns are scored once and only the unseen model's column again at each size. `--trained-on`: a
router trained with the same config but no unseen model (`data.unseen_models=[]`), whose bank holds every training
model's train labels: the same zoo scored by it is the reference ("the same model trained on"). Writes
`<out>/feedback_curve.json` (and each scored matrix, `p-MODEL-SIZE.npy`) and the figure
`benchmarks/figures/feedback_curve.png` (with `--figure`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.eval_modelsat import join_zoo
from modelsat.data.splits import load_splits
from modelsat.data.table import RoutingTable
from modelsat.embedding import cached_embedder
from modelsat.logs import setup_logging
from modelsat.metrics import bootstrap_ci, interaction_auc, routed_outcomes
from modelsat.router import Router

SIZES = (0, 100, 500, 2000)


def scores(router: Router, texts: list[str], emb: np.ndarray, models: list[str]) -> np.ndarray:
    """(Q, M) p_correct of `models` on `texts` (the instructions' cached embeddings passed along)."""
    return router.predict_matrix(texts, models, embeddings=emb if router.reads_instruction_embeddings else None)


def gain(p: np.ndarray, y: np.ndarray, best: int) -> dict:
    """Routed accuracy minus the best single model's, in points, with its 95% paired bootstrap CI."""
    routed = routed_outcomes(p, y, np.zeros(y.shape[1]))
    diff = routed - y[:, best]
    lo, hi = bootstrap_ci(diff)
    return {"gain": round(100 * float(diff.mean()), 2), "ci": [round(100 * lo, 2), round(100 * hi, 2)],
            "interaction_auc": round(interaction_auc(p, y), 4)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.feedback_curve", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="checkpoints/modelsat-smollm2-mmlupro")
    p.add_argument("--trained-on", help="a router trained with no unseen model (the reference), optional")
    p.add_argument("--split", default="test", choices=["val", "test"])
    p.add_argument("--out", default="runs/feedback")
    p.add_argument("--figure", help="write the plot here (e.g. benchmarks/figures/feedback_curve.png)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    setup_logging()
    source = Router.from_pretrained(args.checkpoint)
    cfg = source.config
    table = RoutingTable.load(cfg.data.table_dir)
    splits = load_splits(source.source / "splits.json", aptitude=source.aptitude)
    embed = cached_embedder(table, cfg.model.sentence_encoder, Path(cfg.data.table_dir))
    train = list(splits["train"])
    out: dict = {"checkpoint": args.checkpoint, "split": args.split, "sizes": list(SIZES), "models": {}}
    reference = Router.from_pretrained(args.trained_on) if args.trained_on else None
    start = time.time()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for unseen in cfg.data.unseen_models:
        zoo = next((z for z, ms in cfg.data.zoos.items() if unseen in ms), None)
        if zoo is None:
            continue
        models = list(cfg.data.zoos[zoo])
        y = table.outcome_matrix(splits[args.split], models)
        keep = ~np.isnan(y).any(axis=1)
        ids = [q for q, k in zip(splits[args.split], keep) if k]
        y, texts = y[keep], table.texts(ids)
        emb = embed(texts)
        ytr = table.outcome_matrix(train, models)                   # the evaluation's yardstick (modelsat/evaluate.py):
        best = int(np.argmax(ytr[~np.isnan(ytr).any(axis=1)].mean(axis=0)))   # train rows with every zoo model's result
        col = models.index(unseen)
        labels = table.outcome_matrix(train, [unseen])[:, 0]
        have = np.flatnonzero(~np.isnan(labels))
        order = np.random.default_rng(args.seed).permutation(have)
        row = {"zoo": zoo, "n": len(ids), "best_single": models[best], "curve": []}
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "router"
            shutil.copytree(source.source, ckpt)
            router = Router.from_pretrained(ckpt)
            join_zoo(router, table, [unseen])                           # by its aptitude answers, where missing
            matrix = scores(router, texts, emb, models)                         # aptitude answers alone
            banked = 0
            for size in SIZES:
                if size > banked:
                    pick = order[banked:size]
                    router.add_results(unseen, pd.DataFrame({"text": table.texts([train[i] for i in pick]),
                                                             "score": labels[pick]}))
                    banked = size
                    matrix[:, col] = scores(router, texts, emb, [unseen])[:, 0]
                row["curve"].append({"bank": size, **gain(matrix, y, best)})
                np.save(Path(args.out) / f"p-{unseen}-{size}.npy", matrix)
        if reference is not None:
            row["trained_on"] = gain(scores(reference, texts, emb, models), y, best)
        out["models"][unseen] = row
    out["seconds"] = round(time.time() - start, 1)
    (Path(args.out) / "feedback_curve.json").write_text(json.dumps(out, indent=1))
    if args.figure:
        plot(out, Path(args.figure))
    print(json.dumps(out, indent=1))


def plot(out: dict, path: Path) -> None:
    """Gain against bank size, one line per unseen model, the trained-on reference dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for k, (name, row) in enumerate(out["models"].items()):
        xs = [c["bank"] for c in row["curve"]]
        line = ax.plot(range(len(xs)), [c["gain"] for c in row["curve"]], marker="o",
                       label=f"{name} ({row['zoo']})")[0]
        if "trained_on" in row:
            ax.axhline(row["trained_on"]["gain"], ls="--", color=line.get_color(), lw=1)
    ax.set_xticks(range(len(out["sizes"])), ["aptitude only"] + [f"+{s:,}" for s in out["sizes"][1:]])
    ax.set_xlabel("results in the unseen model's bank (train-split results given as feedback)")
    ax.set_ylabel(f"gain over the best single model, {out['split']} (points)")
    ax.set_title("Routing an unseen model as feedback arrives (dashed: trained on)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
