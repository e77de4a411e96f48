"""Routers side by side on one split: accuracy, gain over the best single model with a paired bootstrap CI,
gap closed, per-category accuracy, picks, Brier score and the cost–quality curve.

    modelsat evaluate --table data/mmlu-pro/table --zoos ../shared/data/mmlu_pro/zoos.json --zoo 7b \\
        --aptitude data/mmlu-pro/aptitude.json --splits data/mmlu-pro/splits.json --out runs/eval-7b
    metrics = evaluate(table, splits, aptitude, models, split="test", out=Path("runs/eval-7b"))

Every router is scored on the same instructions: those of the split on which *every* zoo model has a result
(the others are counted in `n_dropped_missing`). Ties between models are split evenly (the expected score of
a random tie-break). The best single model is chosen on the train split's labels (a yardstick, not a router).
Writes `metrics.json`, `report.md`, `cost_quality.png` and `picks-<router>.png` into `out`.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import logging
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from modelsat.aptitude import Aptitude
from modelsat import choice
from modelsat.baselines import ROUTER_NAMES, BaseRouter, Embed, RoutingData, default_routers, hashing_embed
from modelsat.choice import normalised_costs
from modelsat.io_utils import atomic_dir, atomic_write_bytes

COST_WEIGHTS = [0.0] + np.geomspace(1e-3, 100.0, 29).tolist()
"""The cost_weight sweep of the cost–quality curve: 0, then 29 log-spaced values up to 100 (where every
router ends on the cheapest models, since p_correct differences are at most 1)."""
N_BOOT = 1000
logger = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """Bad arguments to an evaluation: unknown zoo or model, empty split, missing files."""


# ------------------------------------------------------------------------------------------ inputs
def resolve_zoo(table_models: Sequence[str], zoos: dict[str, Any] | None, zoo: str | None,
                models: Sequence[str] | None, unseen: Sequence[str] = ()) -> tuple[str, list[str]]:
    """(zoo name, models): a named zoo ("all" = every model of the table) or an explicit list; unseen models are
    added to it. Unknown names raise `EvaluationError` listing what is known."""
    known = list(table_models)
    named = {k: v for k, v in (zoos or {}).items() if not k.startswith("_")}
    if zoo is not None and models:
        raise EvaluationError("give either a zoo name or a list of models, not both")
    if models:
        name, chosen = "custom", list(models)
    elif zoo is None or zoo == "all" and not isinstance(named.get("all"), list):
        name, chosen = "all", known
    elif zoo in named:
        name, chosen = zoo, named[zoo]
        if not isinstance(chosen, list):
            raise EvaluationError(f"zoo {zoo!r} must be a list of model names, got {chosen!r}")
    else:
        raise EvaluationError(f"unknown zoo {zoo!r}; known zoos: {', '.join(sorted(set(named) | {'all'}))}")
    chosen = list(dict.fromkeys(list(chosen) + [m for m in unseen if m not in chosen]))
    bad = [m for m in chosen if m not in known]
    if bad:
        raise EvaluationError(f"unknown model(s) {bad} in zoo {name!r}; the table has: {', '.join(known)}")
    if not chosen:
        raise EvaluationError(f"zoo {name!r} is empty")
    return name, chosen


def cached_embedder(table: Any, encoder: str = "all-minilm-l6-v2", cache_dir: Path | None = None) -> Embed:
    """Sentence embeddings of texts; the table's question texts are encoded once and kept in
    `<cache_dir>/embeddings-<encoder>.npz` (embeddings, question ids, sha256 of the encoder's reading rule for
    long texts + ids + texts; written atomically, recomputed when the table changes). Texts outside the table are
    encoded on the fly. `encoder="hash"` uses the hashed bag of words (no model)."""
    if encoder == "hash":
        return hashing_embed
    state: dict[str, Any] = {}

    def encode(texts: list[str]) -> np.ndarray:
        if "enc" not in state:
            from modelsat.pretrained import load_sentence_encoder
            state["enc"] = load_sentence_encoder(encoder)
        order = np.argsort([len(t) for t in texts], kind="stable")         # similar lengths share a batch: less padding
        out = np.empty((len(texts), state["enc"].dim), dtype=np.float32)
        out[order] = state["enc"].encode([texts[i] for i in order]).float().numpy()   # (N, D), progress bar inside
        return out

    def lookup() -> dict[str, np.ndarray]:
        if "rows" in state:
            return state["rows"]
        ids = table.questions["question_id"].astype(str).tolist()
        texts = table.questions["text"].astype(str).tolist()
        from modelsat.pretrained import WINDOW_RULE   # in the key: long texts embedded another way are not reused

        digest = hashlib.sha256((WINDOW_RULE + "\0" + "\n".join(ids) + "\0" + "\n".join(texts)).encode()).hexdigest()
        path = cache_dir / f"embeddings-{re.sub(r'[^A-Za-z0-9._-]+', '_', encoder)}.npz" if cache_dir else None
        mat = None
        if path is not None and path.is_file():
            with np.load(path) as z:
                if str(z["sha256"]) == digest and len(z["embeddings"]) == len(ids):
                    mat = z["embeddings"]
        if mat is None:
            mat = encode(texts).astype(np.float32)
            if path is not None:
                buf = io.BytesIO()
                np.savez(buf, embeddings=mat, question_ids=np.array(ids), sha256=np.array(digest))
                try:
                    atomic_write_bytes(path, buf.getvalue())
                except OSError as e:
                    logger.warning("could not cache embeddings at %s: %s", path, e)
        state["rows"] = {t: mat[i] for i, t in enumerate(texts)}
        return state["rows"]

    def embed(texts: list[str]) -> np.ndarray:
        rows = lookup()
        missing = [t for t in dict.fromkeys(texts) if t not in rows]
        if missing:
            rows.update(zip(missing, encode(missing)))
        return np.stack([rows[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)

    return embed


# ------------------------------------------------------------------------------------------ metrics
def choice_weights(pred: np.ndarray, norm_cost: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
    """(Q, M) weights of the chosen model(s) by the shared rule (modelsat/choice.py): 1 at the argmax of
    pred − cost_weight·norm_cost, ties split evenly. `norm_cost` is already normalised (normalising is idempotent)."""
    return choice.choice_weights(choice.utilities(pred, norm_cost, cost_weight))


def routed_scores(pred: np.ndarray, y: np.ndarray, norm_cost: np.ndarray) -> np.ndarray:
    """(Q,) score of the model(s) a router chooses by its (Q, M) predictions `pred` (before cost) per instruction."""
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
    from sklearn.metrics import roc_auc_score

    pred = np.asarray(pred, dtype=np.float64)                            # a float32 mean is off by ~1e-6
    residual = np.round(pred - pred.mean(axis=0, keepdims=True), 9)     # rounding noise of the mean is a tie
    hit = y >= 0.5
    rows = np.where(hit.any(axis=1) & ~hit.all(axis=1))[0]
    return float(np.mean([roc_auc_score(hit[i], residual[i]) for i in rows])) if len(rows) else float("nan")


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
        out["brier"] = float(np.mean((np.clip(pred, 0, 1) - y) ** 2))
        out["interaction_auc"] = interaction_auc(pred, y)
        out["reliability"] = reliability(pred, y)
    out["picks"] = dict(zip(models, c.mean(axis=0).round(6).tolist()))
    out["per_category"] = {k: float(per[cats == k].mean()) for k in sorted(set(cats))}
    out["picks_per_category"] = {k: dict(zip(models, c[cats == k].mean(axis=0).round(6).tolist()))
                                 for k in sorted(set(cats))}
    out["cost_curve"] = cost_curve(pred, y, norm_cost, raw_cost, base)
    return out


# ------------------------------------------------------------------------------------------ evaluation
def _instructions(table: Any, splits: dict[str, list[str]], split: str,
                  models: list[str]) -> tuple[list[str], np.ndarray, int]:
    """The split's ids on which every zoo model has a result, their (Q, M) scores, and how many were dropped."""
    if split not in splits:
        raise EvaluationError(f"unknown split {split!r}; the splits are "
                              f"{', '.join(k for k in splits if k != 'aptitude_fingerprint')}")
    ids = list(splits[split])
    if not ids:
        raise EvaluationError(f"split {split!r} is empty: nothing to evaluate on")
    y = table.score_matrix(ids, models).astype(np.float64)
    complete = ~np.isnan(y).any(axis=1)
    if not complete.any():
        raise EvaluationError(f"no instruction of split {split!r} has results of every zoo model {models}")
    return [q for q, k in zip(ids, complete) if k], y[complete], int((~complete).sum())


def _train_accuracy(table: Any, splits: dict[str, list[str]], models: list[str]) -> np.ndarray:
    """(M,) train-split accuracy on the train instructions where every zoo model has a result."""
    ytr = table.score_matrix(list(splits.get("train", [])), models).astype(np.float64)
    ytr = ytr[~np.isnan(ytr).any(axis=1)]
    if not len(ytr):
        raise EvaluationError("the train split has no instruction with results of every zoo model: "
                              "cannot choose the best single model")
    return ytr.mean(axis=0)


def evaluate(table: Any, splits: dict[str, list[str]], aptitude: Aptitude, models: Sequence[str], split: str = "test",
             unseen: Sequence[str] = (), routers: Sequence[BaseRouter] | None = None, embed: Embed | None = None,
             checkpoint: str | Path | None = None, out: str | Path | None = None, seed: int = 0,
             zoo: str = "custom", log: Callable[[str], None] = logger.info) -> dict:
    """Fit every router with what its setting allows, score it on `split`, and (with `out`) write the outputs.

    `models` is the zoo; `unseen` models (added to the zoo if absent) are known only through their aptitude
    results: routers that need their labels are reported `{"applicable": false, "reason": ...}`. Without
    `routers`, every baseline runs (plus Model-SAT with `checkpoint`; otherwise it is marked absent).
    `embed` defaults to cached MiniLM embeddings. Returns the metrics dict written to metrics.json.
    """
    if not models and not unseen:
        raise EvaluationError("the zoo is empty: give at least one model")
    _, models = resolve_zoo(table.model_names, None, None, list(models) or list(unseen), unseen)
    unseen = list(dict.fromkeys(unseen))
    ids, y, n_dropped = _instructions(table, splits, split, models)
    train_acc = _train_accuracy(table, splits, models)
    best = int(np.argmax(train_acc))
    raw = table.costs(models)
    norm = normalised_costs(raw)
    raw_imputed = np.where(np.isfinite(raw), raw, np.nanmax(raw) if np.isfinite(raw).any() else 0.0)
    cats = np.array(table.categories(ids), dtype=object)
    oracle = float(y.max(axis=1).mean())
    if embed is None:
        embed = cached_embedder(table)
    data = RoutingData(table, aptitude, list(splits.get("train", [])), list(splits.get("val", [])),
                       seen=[m for m in models if m not in unseen], embed=embed)
    routers = list(routers) if routers is not None else default_routers(seed, checkpoint)
    texts = table.texts(ids)
    results: dict[str, dict] = {}
    scores: dict[str, np.ndarray] = {}                                     # router -> (Q,) score of its choices
    for r in routers:
        if unseen and not r.handles_unseen:
            results[r.name] = {"applicable": False, "uses": r.uses, "reason": (
                f"{r.name} learns per-model scores from train-split labels; it cannot score the unseen model(s) "
                f"{', '.join(unseen)} without using their labels")}
            continue
        log(f"[{zoo}] {r.name}: fitting on {len(data.train_ids)} train instructions")
        try:
            r.fit(data, models)
        except ValueError as e:
            if r.name != "model-sat":
                raise
            results[r.name] = {"applicable": False, "reason": f"model-sat could not be set up: {e}"}
            log(f"[{zoo}] warning: {results[r.name]['reason']}")
            continue
        pred = r.predict(ids, texts, models)
        m = router_metrics(pred, y, best, cats, models, norm, raw_imputed, oracle, r.probabilistic, seed)
        scores[r.name] = routed_scores(pred, y, norm)
        results[r.name] = {**m, "uses": r.uses, "params": r.params()}
        if getattr(r, "notes", None):
            results[r.name]["notes"] = r.notes
        log(f"[{zoo}] {r.name}: accuracy {m['accuracy']:.4f}, gain {m['gain']:+.4f}")
    if "model-sat" in scores:                  # is Model-SAT above each other router? paired, same resamples
        results["model-sat"]["versus"] = {
            name: {"diff": float((scores["model-sat"] - other).mean()),
                   "ci": list(bootstrap_ci(scores["model-sat"] - other, seed=seed))}
            for name, other in scores.items() if name != "model-sat"}
    if "model-sat" not in results:
        results["model-sat"] = {"applicable": False, "reason": "absent: no checkpoint given" if checkpoint is None
                                else "absent: not among the routers run"}
    metrics = {
        "zoo": zoo, "split": split, "models": models, "unseen": unseen, "n_instructions": len(ids),
        "n_dropped_missing": n_dropped, "oracle": oracle, "random": float(y.mean()),
        "best_single": {"model": models[best], "accuracy": float(y[:, best].mean()),
                        "train_accuracy": float(train_acc[best]), "cost": float(raw_imputed[best])},
        "cost": {"rule": "choice = argmax(predict - cost_weight * cost / max cost of the zoo); cost = models cost, "
                         "else params_b; unknown cost = the zoo's largest", "unknown": [m for m, c in zip(models, raw)
                                                                                       if not np.isfinite(c)],
                 "costs": dict(zip(models, raw_imputed.tolist())), "cost_weights": COST_WEIGHTS},
        "bootstrap": {"resamples": N_BOOT, "seed": seed, "level": 0.95, "paired": True},
        "categories": {k: {"n": int((cats == k).sum()), "oracle": float(y[cats == k].max(axis=1).mean()),
                           "best_single": float(y[cats == k, best].mean())} for k in sorted(set(cats))},
        "routers": results,
    }
    if out is not None:
        with atomic_dir(out) as tmp:
            write_outputs(metrics, tmp)
        log(f"wrote {out}/metrics.json, report.md and plots")
    return metrics


# ------------------------------------------------------------------------------------------ outputs
def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "–" if x is None else format(x, spec)


def report_markdown(metrics: dict) -> str:
    """The markdown report: one row per router, then per-category accuracy."""
    bs, routers = metrics["best_single"], metrics["routers"]
    lines = [f"# Routing evaluation: zoo `{metrics['zoo']}`, split `{metrics['split']}`", "",
             f"{metrics['n_instructions']} instructions ({metrics['n_dropped_missing']} dropped: a zoo model has no "
             f"result on them); {len(metrics['models'])} models; unseen: {', '.join(metrics['unseen']) or 'none'}.",
             f"Oracle {metrics['oracle']:.4f} · random (expected) {metrics['random']:.4f} · best single (chosen on "
             f"train): `{bs['model']}` {bs['accuracy']:.4f}.", "",
             "| router | accuracy | gain [95% CI] | gap closed | Brier | interaction AUC | cost AUC "
             "| cost at best-single acc. | most picked |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in routers.items():
        if not r.get("applicable", True):
            lines.append(f"| {name} | n/a | | | | | | | {r['reason']} |")
            continue
        top = max(r["picks"], key=r["picks"].get)
        at = r["cost_curve"]["cost_at_best_single"]
        lo, hi = r["gain_ci"]
        lines.append(f"| {name} | {r['accuracy']:.4f} | {r['gain']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                     f" | {_fmt(r['gap_closed'], '.3f')} | {_fmt(r.get('brier'))}"
                     f" | {_fmt(r.get('interaction_auc'), '.3f')} | {r['cost_curve']['auc']:.4f}"
                     f" | {_fmt(at and at['mean_cost'], '.4g')} | {top} ({r['picks'][top]:.0%}) |")
    cost = metrics["cost"]
    lines += ["", f"Gain = router − best single; 95% paired bootstrap CI over {metrics['bootstrap']['resamples']} "
              "resamples of the instructions. Gap closed = gain / (oracle − best single). Brier: mean squared error "
              "of p_correct over every (instruction, model). Interaction AUC: how well p_correct, less each model's "
              "mean, separates right from wrong models within an instruction (0.5: one fixed ranking of the models). "
              "Cost AUC: mean, over the zoo's cost range, of the best accuracy reachable at that mean cost (upper "
              "envelope of the cost_weight sweep). Cost at best-single "
              f"acc.: the lowest mean cost (best single model: {bs['cost']:.4g}) at which the sweep reaches the best "
              f"single model's accuracy. Cost rule: {cost['rule']}"
              + (f"; unknown cost: {', '.join(cost['unknown'])}." if cost["unknown"] else "."), ""]
    versus = routers.get("model-sat", {}).get("versus")
    if versus:
        lines += ["Model-SAT − each other router, accuracy on the same instructions (95% paired bootstrap CI): "
                  + "; ".join(f"{n} {v['diff']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]"
                              for n, v in versus.items()) + ".", ""]
    lines += ["## Per-category accuracy", ""]
    shown = [n for n, r in routers.items() if r.get("applicable", True)]
    lines += ["| category | n | best single | oracle | " + " | ".join(shown) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(shown)]
    for cat, c in metrics["categories"].items():
        lines.append(f"| {cat} | {c['n']} | {c['best_single']:.3f} | {c['oracle']:.3f} | "
                     + " | ".join(f"{routers[n]['per_category'][cat]:.3f}" for n in shown) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(metrics: dict, out: Path) -> None:
    """metrics.json, report.md, cost_quality.png, reliability.png (the reliability diagram of every router that
    gives probabilities) and one picks-<router>.png heatmap per applicable router."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (out / "report.md").write_text(report_markdown(metrics))
    live = {n: r for n, r in metrics["routers"].items() if r.get("applicable", True)}
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, r in live.items():
        pts = sorted(r["cost_curve"]["points"], key=lambda p: p["mean_cost"])
        ax.plot([p["mean_cost"] for p in pts], [p["accuracy"] for p in pts], marker=".", label=name)
    bs = metrics["best_single"]
    ax.axhline(bs["accuracy"], color="grey", ls="--", lw=1, label=f"best single ({bs['model']})")
    ax.axhline(metrics["oracle"], color="black", ls=":", lw=1, label="oracle")
    ax.set(xlabel="mean cost per instruction", ylabel="accuracy",
           title=f"cost–quality, zoo {metrics['zoo']} ({metrics['split']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "cost_quality.png", dpi=120)
    plt.close(fig)
    calibrated = {n: r for n, r in live.items() if "reliability" in r}
    if calibrated:
        fig, ax = plt.subplots(figsize=(5.5, 5))
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="calibrated")
        for name, r in calibrated.items():
            pts = [b for b in r["reliability"]["bins"] if b["n"]]
            ax.plot([b["mean_p"] for b in pts], [b["freq"] for b in pts], marker="o", ms=3,
                    label=f"{name} (ECE {r['reliability']['ece']:.3f}, Brier {r['brier']:.3f})")
        ax.set(xlabel="p_correct (mean in bin)", ylabel="share answered correctly", xlim=(0, 1), ylim=(0, 1),
               title=f"reliability, zoo {metrics['zoo']} ({metrics['split']})")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "reliability.png", dpi=120)
        plt.close(fig)
    models = metrics["models"]
    for name, r in live.items():
        cats = list(r["picks_per_category"])
        mat = np.array([[r["picks_per_category"][c][m] for m in models] for c in cats])
        fig, ax = plt.subplots(figsize=(1.0 + 0.45 * len(models), 1.2 + 0.32 * len(cats)))
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(models)), models, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(cats)), cats, fontsize=7)
        ax.set_title(f"{name}: share of picks per category", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.04)
        fig.tight_layout()
        fig.savefig(out / f"picks-{name}.png", dpi=110)
        plt.close(fig)


def run_evaluate_cli(args: argparse.Namespace) -> dict:
    """`modelsat evaluate`: load the table, aptitude test, splits and zoos the arguments name, then `evaluate`.

    Reads `args.table`, `checkpoint`, `split`, `splits`, `aptitude`, `zoo`, `zoos` (a JSON file or dict),
    `models`, `unseen`, `routers` (comma-separated; default: all), `encoder`, `out`, `seed`. Aptitude test and
    splits default to the checkpoint's; without a checkpoint and without them they are built (50×20 by task,
    val 0.1 / test 0.2, seeded) and saved beside the outputs. A folder of raw MMLU-Pro data is converted on the
    fly (its embeddings are then cached under ~/.cache/modelsat/mmlu-pro, never beside the public data)."""
    from modelsat.aptitude import build_aptitude
    from modelsat.data.splits import load_splits, make_splits, save_splits
    from modelsat.data.table import RoutingTable, TableError

    get = lambda k, d=None: getattr(args, k, d) if getattr(args, k, None) is not None else d  # noqa: E731
    split_list = lambda v: [x.strip() for x in v.split(",") if x.strip()] \
        if isinstance(v, str) else list(v or [])  # noqa: E731
    table_dir, seed = Path(get("table")), int(get("seed", 0))
    ckpt = Path(get("checkpoint")) if get("checkpoint") else None
    out = Path(get("out", "runs/evaluate"))
    cfg = None
    if ckpt is not None:
        from modelsat.config import load_config
        from modelsat.checkpoint import check_checkpoint

        cfg = load_config(check_checkpoint(ckpt) / "config.yaml")
    try:
        table, cache_dir = RoutingTable.load(table_dir), table_dir
    except TableError as e:
        from modelsat.data.converters import build_table

        try:
            table = build_table("mmlu-pro", table_dir)
        except Exception:  # noqa: BLE001 - the routing-table error is the one that speaks to the user
            raise EvaluationError(f"{e}\n(--table must be a routing table folder; build one with "
                                  "`modelsat data build`)") from e
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modelsat" / "mmlu-pro"
        logger.info(f"converted the raw MMLU-Pro data in {table_dir} (embeddings cached in {cache_dir})")
    saved: dict[str, Any] = {}
    apt_path = get("aptitude") or (ckpt / "aptitude.json" if ckpt else None)
    if apt_path is not None:
        aptitude = Aptitude.load(apt_path)
    else:
        logger.info("no --aptitude: building the aptitude test (50 tasks x 20 by task, seeded) and saving it with the outputs")
        aptitude = saved["aptitude"] = build_aptitude(table, 50, 20, "task", seed=seed)
    candidates = [ckpt / "splits.json", Path(cfg.data.splits)] if ckpt is not None and cfg is not None else []
    sp_path = get("splits") or next((p for p in candidates if p.is_file()), None)
    if sp_path is not None:
        splits = load_splits(sp_path, aptitude=aptitude)
    elif ckpt is not None:
        raise EvaluationError(f"checkpoint {ckpt} has no splits.json; pass --splits with the splits it was trained on")
    else:
        logger.info("no --splits: splitting the questions (val 0.1, test 0.2, seeded) and saving them with the outputs")
        splits = saved["splits"] = make_splits(table, aptitude, 0.1, 0.2, seed=seed)
    zoos = get("zoos")
    if isinstance(zoos, (str, Path)):
        try:
            zoos = json.loads(Path(zoos).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise EvaluationError(f"--zoos {zoos}: cannot read a JSON mapping of zoo names to model lists ({e})") from e
    elif zoos is None and cfg is not None and cfg.data.zoos:
        zoos = cfg.data.zoos
    elif zoos is None and (table_dir / "zoos.json").is_file():
        zoos = json.loads((table_dir / "zoos.json").read_text())
    unseen = split_list(get("unseen"))
    name, models = resolve_zoo(table.model_names, zoos, get("zoo"), split_list(get("models")), unseen)
    routers = default_routers(seed, ckpt)
    if get("routers"):
        wanted = split_list(get("routers"))
        bad = [n for n in wanted if n not in ROUTER_NAMES]
        if bad:
            raise EvaluationError(f"unknown router(s) {bad}; known: {', '.join(ROUTER_NAMES)}")
        routers = [r for r in routers if r.name in wanted]
    embed = cached_embedder(table, get("encoder", "all-minilm-l6-v2"), cache_dir)
    metrics = evaluate(table, splits, aptitude, models, get("split", "test"), unseen, routers=routers, embed=embed,
                       checkpoint=ckpt, seed=seed, zoo=name)
    with atomic_dir(out) as tmp:
        write_outputs(metrics, tmp)
        if "aptitude" in saved:
            saved["aptitude"].save(tmp / "aptitude.json")
        if "splits" in saved:
            save_splits(saved["splits"], tmp / "splits.json", aptitude)
    logger.info(f"wrote {out}/metrics.json, report.md and plots")
    return metrics
