"""How much per-category signal an aptitude test carries, and what aptitude-derived priors do to routing, on val.

    python -m dev.analyses.aptitude_signal --aptitude data/mmlu-pro/aptitude-src14.json \
        --splits data/mmlu-pro/splits-src14.json
    python -m dev.analyses.aptitude_signal --aptitude checkpoints/modelsat-smollm2-mmlupro/aptitude.json \
        --splits checkpoints/modelsat-smollm2-mmlupro/splits.json --predictions runs/top20/val/predictions-val.npz

`signal`: per zoo, the correlation between the models' per-category accuracy on the aptitude test and on the val
split, after removing each model's and each category's mean (the model × category interaction, the part a router
can use; a main effect alone routes every question to one model). With `--predictions` (the scores
`eval_modelsat.py --split val` caches), the gain over the best single model in points when the router's utility
adds, to p_correct, `lam ×` one of three aptitude-only priors:
  - `global`: the candidate's aptitude accuracy;
  - `local`: its accuracy on the k aptitude questions nearest the instruction (MiniLM cosine);
  - `category`: its aptitude accuracy per category, weighted by a logistic-regression guess of the instruction's
    category from its MiniLM embedding (fitted on the train split's categories; no model labels);
  - `category-apt`: the same with the guess fitted on the aptitude questions' own categories only (what a
    checkpoint could ship without the train split);
  - `kernel-τ`: its scores on every aptitude question, weighted by softmax(cosine / τ) (a soft neighbourhood);
  - `combined`: `a ×` local-k plus `b ×` category, for the k, a, b of old §13's hand-weighted route (dev/LOG.md; the
    route priors are gone from modelsat: this analysis is what motivated the aptitude evidence, `model.evidence`).
Prints one JSON object. Use it on val only.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]

from modelsat.logs import setup_logging
from modelsat.aptitude import Aptitude
from modelsat.config import load_config
from modelsat.data.splits import load_splits
from modelsat.data.table import RoutingTable
from modelsat.embedding import cached_embedder

LAMBDAS = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 1000.0]   # 1000: the prior alone, p_correct breaks ties
NEIGHBOURS = [10, 25, 50, 100, 200]
TEMPERATURES = [0.01, 0.02, 0.05, 0.1]
COMBINED = [(k, a, b) for k in (100, 200) for a in (1, 2) for b in (1, 2)]     # local-k × a + category × b


def interaction(x: np.ndarray) -> np.ndarray:
    """(C, M) with row and column means removed."""
    return x - x.mean(axis=0, keepdims=True) - x.mean(axis=1, keepdims=True) + x.mean()


def category_signal(table: RoutingTable, apt_ids: list[str], val: list[str], models: list[str]) -> float:
    """Correlation of the aptitude test's and val's model × category interaction (categories on both sides)."""
    ca, cv = np.array(table.categories(apt_ids)), np.array(table.categories(val))
    a = table.outcome_matrix(apt_ids, models).astype(float)
    v = table.outcome_matrix(val, models).astype(float)
    cats = [c for c in sorted(set(cv)) if (ca == c).any()]
    A = np.stack([np.nanmean(a[ca == c], axis=0) for c in cats])
    V = np.stack([np.nanmean(v[cv == c], axis=0) for c in cats])
    return float(np.corrcoef(interaction(A).ravel(), interaction(V).ravel())[0, 1])


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m dev.analyses.aptitude_signal", description=__doc__.split("\n")[0])
    p.add_argument("--aptitude", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--config", default=str(REPO / "configs/default.yaml"), help="for the table and the zoos")
    p.add_argument("--predictions", help="predictions-val.npz of eval_modelsat.py (made with this aptitude test)")
    args = p.parse_args()
    setup_logging()                    # modelsat's progress and warnings on stderr
    cfg = load_config(args.config)
    table = RoutingTable.load(cfg.data.table_dir)
    aptitude = Aptitude.load(args.aptitude)
    splits = load_splits(args.splits, aptitude=aptitude)
    apt_ids, zoos = aptitude.question_ids, dict(cfg.data.zoos)
    out: dict = {"aptitude": args.aptitude, "num_tasks": aptitude.num_tasks, "per_task": aptitude.per_task,
                 "signal": {z: round(category_signal(table, apt_ids, splits["val"], m), 4) for z, m in zoos.items()}}
    if args.predictions:
        from sklearn.linear_model import LogisticRegression

        with np.load(args.predictions, allow_pickle=False) as z:
            P, pm, pq = z["p"], z["models"].tolist(), z["question_ids"].tolist()
        embed = cached_embedder(table, "all-minilm-l6-v2", Path(cfg.data.table_dir))
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        E_q, E_a = unit(embed(table.texts(pq))), unit(embed(table.texts(apt_ids)))
        cosine = E_q @ E_a.T
        nearest = np.argsort(-cosine, axis=1)                                # (Q, A) aptitude questions, nearest first
        kernels = {}
        for tau in TEMPERATURES:
            w = np.exp((cosine - cosine.max(axis=1, keepdims=True)) / tau)
            kernels[tau] = w / w.sum(axis=1, keepdims=True)                  # (Q, A) soft neighbourhood
        train = list(splits["train"])
        clf = LogisticRegression(max_iter=2000).fit(embed(table.texts(train)), table.categories(train))
        proba, classes = clf.predict_proba(E_q), list(clf.classes_)
        ca = np.array(table.categories(apt_ids))
        clf_apt = LogisticRegression(max_iter=2000).fit(E_a, ca)                 # the aptitude questions only
        proba_apt = clf_apt.predict_proba(E_q)
        out["category_guess_accuracy"] = float(np.mean(np.array(classes)[proba.argmax(1)] == table.categories(pq)))
        out["gain"] = {}
        for zoo, models in zoos.items():
            y = table.outcome_matrix(pq, models).astype(float)
            ok = ~np.isnan(y).any(axis=1)
            ytr = table.outcome_matrix(train, models).astype(float)
            best = int(np.nanmean(ytr[~np.isnan(ytr).any(axis=1)], axis=0).argmax())
            a = table.outcome_matrix(apt_ids, models).astype(float)            # (A, M)
            acc = np.nanmean(a, axis=0)
            per_cat = np.stack([np.nanmean(a[ca == c], axis=0) if (ca == c).any() else acc for c in classes])
            per_cat_apt = np.stack([np.nanmean(a[ca == c], axis=0) for c in clf_apt.classes_])
            a0 = np.where(np.isnan(a), acc, a)                                # a missing score counts as the mean
            pz = P[:, [pm.index(m) for m in models]]

            def gain(prior: np.ndarray, lam: float) -> float:
                pick = (pz + lam * prior).argmax(axis=1)
                return round(100 * float((y[np.arange(len(y)), pick] - y[:, best])[ok].mean()), 2)

            priors = {"global": np.broadcast_to(acc, pz.shape), "category": proba @ per_cat,
                      "category-apt": proba_apt @ per_cat_apt,
                      **{f"local-{k}": np.nanmean(a[nearest[:, :k]], axis=1) for k in NEIGHBOURS},
                      **{f"kernel-{tau}": kernels[tau] @ a0 for tau in TEMPERATURES}}
            out["gain"][zoo] = {name: {str(lam): gain(prior, lam) for lam in LAMBDAS} for name, prior in priors.items()}
            out.setdefault("combined", {})[zoo] = {
                f"local-{k}x{a}+categoryx{b}": gain(a * priors[f"local-{k}"] + b * priors["category"], 1.0)
                for k, a, b in COMBINED}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
