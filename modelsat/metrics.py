"""Routing metrics of one router's predictions on a split: gain over the best single model with a paired
bootstrap CI, the cost–quality curve and its frontier AUC, interaction AUC, Brier score and the reliability diagram.

    m = router_metrics(pred, y, best, cats, models, norm_cost, raw_cost, oracle, probabilistic=True, seed=0)

`pred` and `y` are (Q, M): a router's predictions and the models' outcomes on Q instructions (1 = answered right;
the routing table's `score` column). Names: an *outcome* is a label, *p_correct* a router's probability (the
router model's log-probability is `log_p_correct`), the *utility* the value a router ranks by. The router
chooses by the shared rule of `modelsat/choice.py`; ties between models are split evenly (the expected score of a
random tie-break).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from modelsat import choice

COST_WEIGHTS = [0.0] + np.geomspace(1e-3, 100.0, 29).tolist()
"""The cost_weight sweep of the cost–quality curve: 0, then 29 log-spaced values up to 100 (where every
router ends on the cheapest models, since p_correct differences are at most 1)."""
N_BOOT = 1000
"""Bootstrap resamples of the instructions."""


def choice_weights(pred: np.ndarray, norm_cost: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
    """(Q, M) weights of the chosen model(s) by the shared rule (modelsat/choice.py): 1 at the argmax of
    pred − cost_weight·norm_cost, ties split evenly. `norm_cost` is already normalised (normalising is idempotent)."""
    return choice.choice_weights(choice.utilities(pred, norm_cost, cost_weight))


def routed_outcomes(pred: np.ndarray, y: np.ndarray, norm_cost: np.ndarray) -> np.ndarray:
    """(Q,) outcome (1 = answered right) of the model(s) a router chooses by its (Q, M) predictions `pred` (before
    cost) per instruction, from the (Q, M) outcomes `y`."""
    return (choice_weights(pred, norm_cost) * y).sum(axis=1)


def bootstrap_ci(diff: np.ndarray, n: int = N_BOOT, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of mean(diff) over `n` resamples of the instructions (same seed -> same resamples: paired)."""
    rng = np.random.default_rng(seed)
    means = np.concatenate([diff[rng.integers(0, len(diff), (min(100, n - s), len(diff)))].mean(axis=1)
                            for s in range(0, n, 100)])
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def frontier_auc(cost: Sequence[float], acc: Sequence[float], lo: float, hi: float) -> float:
    """Mean over c in [lo, hi] of the best accuracy reachable at mean cost <= c.

    The reachable set is the upper concave envelope of the sweep points (mixing two operating points at random
    reaches any point between them), made non-decreasing (spending more is never forced); below the cheapest
    point nothing is reachable (accuracy 0). With lo = hi (all costs equal) it is the best accuracy.
    """
    best: dict[float, float] = {}
    for c, a in zip(cost, acc):
        best[c] = max(a, best.get(c, -math.inf))
    hull: list[tuple[float, float]] = []
    for p in sorted(best.items()):
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) >= 0:
            hull.pop()
        hull.append(p)
    hull = hull[:int(np.argmax([a for _, a in hull])) + 1]
    xs, ys = np.array([c for c, _ in hull]), np.array([a for _, a in hull])
    if hi - lo <= 1e-12:
        return float(ys.max())
    start = max(lo, xs[0])
    if start >= hi:
        return 0.0
    grid = np.unique(np.concatenate([[start, hi], xs[(xs > start) & (xs < hi)]]))
    f = np.interp(grid, xs, ys)
    return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(grid)) / (hi - lo))


def cost_curve(pred: np.ndarray, y: np.ndarray, norm_cost: np.ndarray, raw_cost: np.ndarray, target: float) -> dict:
    """Sweep COST_WEIGHTS: points (cost_weight, mean cost, mean normalised cost, accuracy), `auc` (frontier_auc
    over the zoo's normalised cost range) and `cost_at_best_single`: the cheapest point reaching `target`."""
    points = []
    for w in COST_WEIGHTS:
        c = choice_weights(pred, norm_cost, w)
        points.append({"cost_weight": w, "accuracy": float((c * y).sum(axis=1).mean()),
                       "mean_cost": float((c @ raw_cost).mean()), "mean_norm_cost": float((c @ norm_cost).mean())})
    auc = frontier_auc([p["mean_norm_cost"] for p in points], [p["accuracy"] for p in points],
                       float(norm_cost.min()), float(norm_cost.max()))
    reach = [p for p in points if p["accuracy"] >= target - 1e-12]
    cheapest = min(reach, key=lambda p: p["mean_cost"]) if reach else None
    return {"points": points, "auc": auc, "cost_at_best_single": cheapest}


def interaction_auc(pred: np.ndarray, y: np.ndarray) -> float:
    """Routing signal beyond a fixed ranking of the models: each model's mean prediction over the instructions
    is removed, then the AUC of the rest separating the models that answered an instruction correctly from those
    that did not is averaged over the instructions that have both. 0.5: the predictions rank the models the same
    way for every instruction (a prior plus a per-instruction difficulty); 1.0: the residual alone routes
    perfectly. NaN where no instruction has both outcomes."""
    pred = np.asarray(pred, dtype=np.float64)                            # a float32 mean is off by ~1e-6
    hit = np.asarray(y) >= 0.5
    rows = hit.any(axis=1) & ~hit.all(axis=1)
    return float(_row_aucs(_residual(pred), hit)[rows].mean()) if rows.any() else float("nan")


def _residual(pred: np.ndarray) -> np.ndarray:
    """(Q, M) predictions less each model's mean over the Q instructions, rounded to 1e-9 (the mean's rounding
    noise is a tie)."""
    return np.round(pred - pred.mean(axis=0, keepdims=True), 9)


def _row_aucs(residual: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """(Q,) ROC AUC of each row's (M,) residuals separating its right (hit) from its wrong models, ties counted
    half (as sklearn's `roc_auc_score`); NaN where a row has one class only. The Mann–Whitney form over each row's
    average ranks: (Σ ranks of the right − P(P + 1)/2) / (P · N)."""
    ranks = rankdata(residual, axis=1)                                                 # ties: average rank
    pos = hit.sum(axis=1)
    neg = hit.shape[1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0),
                        ((ranks * hit).sum(axis=1) - pos * (pos + 1) / 2) / np.maximum(pos * neg, 1), np.nan)


def interaction_auc_diff(pred_a: np.ndarray, pred_b: np.ndarray, y: np.ndarray, n: int = N_BOOT, seed: int = 0,
                         level: float = 0.95) -> dict:
    """Router a's interaction AUC minus router b's on the same (Q, M) pairs, with a paired percentile bootstrap CI
    over `n` resamples of the instructions (each resample recomputes every model's mean prediction, as
    `interaction_auc` does on it; resamples drawn as `bootstrap_ci`'s with the same seed). Returns {"diff", "ci"}."""
    a, b = np.asarray(pred_a, dtype=np.float64), np.asarray(pred_b, dtype=np.float64)
    hit = np.asarray(y) >= 0.5
    if a.shape != hit.shape or b.shape != hit.shape:
        raise ValueError(f"predictions and outcomes must be equal (Q, M) shapes, got {a.shape}, {b.shape} and "
                         f"{hit.shape}")

    def diff(idx: np.ndarray) -> float:
        return interaction_auc(a[idx], hit[idx]) - interaction_auc(b[idx], hit[idx])

    rng = np.random.default_rng(seed)
    draws = [diff(rng.integers(0, len(hit), len(hit))) for _ in range(n)]
    lo, hi = np.nanpercentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return {"diff": diff(np.arange(len(hit))), "ci": [float(lo), float(hi)]}


def reliability(pred: np.ndarray, y: np.ndarray, bins: int = 10) -> dict:
    """The reliability diagram of probabilities `pred` against outcomes `y` (any equal shapes, scores >= 0.5 count
    as right): `bins` equal-width bins of [0, 1], each {"lo", "hi", "n", "mean_p", "freq"} (mean_p/freq None where
    empty), and the expected calibration error `ece` = sum over bins of n/N * |freq - mean_p| (Naeini et al. 2015;
    bin b holds b/bins <= p < (b+1)/bins, and p = 1 the last bin; sklearn's calibration_curve puts a p on an inner
    edge in the bin below, and gives no counts)."""
    p = np.clip(np.asarray(pred, dtype=np.float64).ravel(), 0, 1)
    hit = (np.asarray(y, dtype=np.float64).ravel() >= 0.5).astype(np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        mean_p = float(p[inside].mean()) if n else None
        freq = float(hit[inside].mean()) if n else None
        if n:
            ece += n / len(p) * abs(freq - mean_p)
        rows.append({"lo": b / bins, "hi": (b + 1) / bins, "n": n, "mean_p": mean_p, "freq": freq})
    return {"bins": rows, "ece": float(ece)}


def probability_metrics(pred: np.ndarray, y: np.ndarray) -> dict:
    """How well (Q, M) probabilities `pred` (p_correct) score the (Q, M) outcomes `y`: `brier` (mean squared error
    over every pair), `auc` (ROC AUC over every pair: right against wrong models, NaN with one class only) and
    `interaction_auc` (within instructions, beyond a fixed ranking of the models)."""
    p = np.clip(np.asarray(pred, dtype=np.float64), 0, 1)
    hit = np.asarray(y).ravel() >= 0.5
    auc = float(roc_auc_score(hit, p.ravel())) if 0 < hit.sum() < hit.size else float("nan")
    return {"auc": auc, "brier": float(np.mean((p - y) ** 2)), "interaction_auc": interaction_auc(pred, y)}


def router_metrics(pred: np.ndarray, y: np.ndarray, best: int, cats: np.ndarray, models: list[str],
                   norm_cost: np.ndarray, raw_cost: np.ndarray, oracle: float, probabilistic: bool,
                   seed: int) -> dict:
    """Every metric of one router's (Q, M) predictions `pred` against the (Q, M) scores `y`: the router chooses by
    `pred` (`modelsat/choice.py`), and Brier and AUC score it."""
    c = choice_weights(pred, norm_cost)
    per = (c * y).sum(axis=1)                                              # (Q,) score of the routed choice
    acc, base = float(per.mean()), float(y[:, best].mean())
    lo, hi = bootstrap_ci(per - y[:, best], seed=seed)
    out = {"applicable": True, "accuracy": acc, "gain": acc - base, "gain_ci": [lo, hi],
           "gap_closed": (acc - base) / (oracle - base) if oracle - base > 1e-12 else None}
    if probabilistic:
        out.update(probability_metrics(pred, y))
        out["reliability"] = reliability(pred, y)
    out["picks"] = dict(zip(models, c.mean(axis=0).round(6).tolist()))
    out["per_category"] = {k: float(per[cats == k].mean()) for k in sorted(set(cats))}
    out["picks_per_category"] = {k: dict(zip(models, c[cats == k].mean(axis=0).round(6).tolist()))
                                 for k in sorted(set(cats))}
    out["cost_curve"] = cost_curve(pred, y, norm_cost, raw_cost, base)
    return out
