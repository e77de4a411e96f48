"""Ablation (f) of issue 19: how routing through the aptitude evidence depends on the size of the aptitude test.

    python -m benchmarks.aptitude_size --checkpoint checkpoints/modelsat-smollm2-mmlupro --out runs/aptitude-size

The size of the test is what a new model must answer to join the zoo: its cost of joining. Each size is the
checkpoint's test cut to its first T tasks and the first k questions of each (`Aptitude.head`; the first 20 of each
task are the test before its top-up). For each size the aptitude evidence (`modelsat/evidence.py`) is computed from
that test alone, and two routers that read only the evidence are scored: the hand-weighted prior
(2 × nn100 + 2 × category) and the learned linear offset fitted as train.py's stage 0 does (`modelsat.loss.fit_offset`,
listwise loss, 400 epochs, lr 0.01) on the 21 training models. Both are scored on pooled 5-fold cross-validation of
the train split (folds of seed 1; the category classifier and the offset refitted on each fold's other four) and
on val (fitted on all of train). Gains are points over the best single model (chosen on the fitting questions), per
zoo, with a paired bootstrap CI against the first size. Prints one JSON object; draws `<out>/aptitude_size.png`.
The LLM is not retrained per size (that is hours per size on this CPU): this measures what the evidence carries.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modelsat.logs import setup_logging
from modelsat.aptitude import Aptitude, AptitudeError
from modelsat.category import CategoryClassifier
from modelsat.config import load_config
from modelsat.data.splits import load_splits
from modelsat.data.table import RoutingTable
from modelsat.encoder import EvidenceEncoder
from modelsat.embedding import cached_embedder
from modelsat.metrics import bootstrap_ci, routed_outcomes
from modelsat.evidence import APTITUDE_DIM as DIM, APTITUDE_NAMES as NAMES, AptitudeEvidence as Evidence
from modelsat.loss import fit_offset

ZOOS = ("7b", "mixed", "large")


def unit(a: np.ndarray) -> torch.Tensor:
    return F.normalize(torch.from_numpy(a).float(), dim=-1)


def gains(score: np.ndarray, y: np.ndarray, y_fit: np.ndarray, cols: list[int]) -> np.ndarray:
    """(Q,) per-question gain of routing by `score` (the shared choice rule: ties split evenly) over the best single
    model of the fitting questions `y_fit`, on the questions where every zoo model has a result."""
    s, yy = score[:, cols], y[:, cols]
    ok = ~np.isnan(yy).any(axis=1)
    best = int(np.argmax(np.nanmean(y_fit[:, cols], axis=0)))
    yy = yy[ok]
    return routed_outcomes(s[ok], yy, np.zeros(len(cols))) - yy[:, best]


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.aptitude_size", description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="checkpoints/modelsat-smollm2-mmlupro")
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="49x20,49x40,49x10,49x5,25x20,12x20",
                    help="TxK: the first T tasks, the first K questions of each; the first is the reference")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    setup_logging()                    # modelsat's progress and warnings on stderr
    torch.set_num_threads(1)
    ck, out = Path(args.checkpoint), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(ck / "config.yaml")
    full = Aptitude.load(ck / "aptitude.json")
    table = RoutingTable.load(cfg.data.table_dir)
    splits = load_splits(ck / "splits.json", aptitude=full)
    embed = cached_embedder(table, cfg.model.sentence_encoder, Path(cfg.data.table_dir))
    models = list(table.model_names)
    col = {m: j for j, m in enumerate(models)}
    train_models = [j for j, m in enumerate(models) if m not in set(cfg.data.unseen_models)
                    and (not cfg.data.train_models or m in cfg.data.train_models)]   # as data.prepare chooses them
    zoo_cols = {z: [col[m] for m in cfg.data.zoos[z]] for z in ZOOS}
    train, val = list(splits["train"]), list(splits["val"])
    emb = {q: e for q, e in zip(train + val, unit(embed(table.texts(train + val))))}
    y_all = {q: r for q, r in zip(train + val, table.outcome_matrix(train + val, models).astype(np.float64))}
    folds = np.array_split(np.random.default_rng(1).permutation(len(train)), args.folds)

    def routers(apt: Aptitude, fit: list[str], score_on: list[str]) -> dict[str, np.ndarray]:
        """(Q, M) scores of the hand prior and the fitted linear offset on `score_on`, fitted on `fit`."""
        keys = unit(embed([apt.texts[q] for q in apt.question_ids]))
        fit_emb = torch.stack([emb[q] for q in fit])
        clf = CategoryClassifier.fit(fit_emb, table.categories(fit), table.categories(apt.question_ids))
        evidence = Evidence(keys, clf)
        outcomes = table.outcome_matrix(apt.question_ids, models).astype(np.float64)
        e_fit, e = evidence(fit_emb, outcomes), evidence(torch.stack([emb[q] for q in score_on]), outcomes)
        hand = (2 * e[..., NAMES.index("nn100")] + 2 * e[..., NAMES.index("category")]).numpy()
        enc = EvidenceEncoder(DIM, 1, offset="linear")
        fit_offset(enc, e_fit[:, train_models], np.stack([y_all[q] for q in fit])[:, train_models], "listwise",
                   epochs=400, lr=0.01, progress=False)
        with torch.no_grad():
            learned = enc.logit_offset(e.reshape(-1, DIM)).reshape(e.shape[:2]).numpy()
        return {"hand prior": hand, "learned offset": learned}

    sizes = {}
    for size in args.sizes.split(","):
        t, _, k = size.partition("x")
        if not (t.isdigit() and k.isdigit()):
            print(f"aptitude_size.py: error: --sizes: {size!r} is not TxK (e.g. 49x20)", file=sys.stderr)
            sys.exit(2)
        try:
            sizes[size] = full.head(int(t), per_task=int(k))
        except AptitudeError as e:
            print(f"aptitude_size.py: error: --sizes {size}: {e}", file=sys.stderr)
            sys.exit(2)
    per_q: dict = {}
    for size, apt in sizes.items():
        start = time.time()
        res: dict = {}
        for f in folds:
            dev = [train[i] for i in sorted(f)]
            fit = [train[i] for i in sorted(set(range(len(train))) - set(f.tolist()))]
            y_fit, y_dev = np.stack([y_all[q] for q in fit]), np.stack([y_all[q] for q in dev])
            for name, score in routers(apt, fit, dev).items():
                for z, c in zoo_cols.items():
                    res.setdefault(("cv", name, z), []).append(gains(score, y_dev, y_fit, c))
        y_tr, y_val = np.stack([y_all[q] for q in train]), np.stack([y_all[q] for q in val])
        for name, score in routers(apt, train, val).items():
            for z, c in zoo_cols.items():
                res[("val", name, z)] = [gains(score, y_val, y_tr, c)]
        per_q[size] = {key: np.concatenate(v) for key, v in res.items()}
        print(f"{size}: {time.time() - start:.0f} s", file=sys.stderr, flush=True)

    ref = args.sizes.split(",")[0]
    rows = []
    for size, r in per_q.items():
        row = {"size": size, "questions": len(sizes[size].question_ids)}
        for (where, name, z), g in r.items():
            d = g - per_q[ref][(where, name, z)]
            lo, hi = bootstrap_ci(d)
            row.setdefault(where, {}).setdefault(name, {})[z] = {
                "gain": round(100 * float(g.mean()), 2), f"vs_{ref}": round(100 * float(d.mean()), 2),
                "ci": [round(100 * lo, 2), round(100 * hi, 2)]}
        for where in ("cv", "val"):
            for name, zs in row[where].items():
                zs["mean_mixed_large"] = round((zs["mixed"]["gain"] + zs["large"]["gain"]) / 2, 2)
        rows.append(row)
    result = {"checkpoint": str(ck), "reference": ref, "n_cv": len(train), "n_val": len(val), "sizes": rows}
    (out / "aptitude_size.json").write_text(json.dumps(result, indent=1))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(rows, key=lambda r: r["questions"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, where in zip(axes, ("cv", "val")):
        for name in ("learned offset", "hand prior"):
            for z, style in (("mixed", "-"), ("large", "--")):
                ax.plot([r["questions"] for r in order], [r[where][name][z]["gain"] for r in order], style,
                        marker="o", label=f"{name}, {z}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xscale="log", xlabel="aptitude questions a new model answers to join",
               title="pooled 5-fold CV of train" if where == "cv" else "val")
    axes[0].set_ylabel("gain over the best single model (points)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "aptitude_size.png", dpi=120)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
