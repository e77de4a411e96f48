"""Routers side by side on one split: accuracy, gain over the best single model with a paired bootstrap CI,
gap closed, per-category accuracy, picks, Brier score and the cost–quality curve.

    modelsat evaluate --table data/mmlu-pro/table --zoos ../shared/data/mmlu_pro/zoos.json --zoo 7b \\
        --aptitude data/mmlu-pro/aptitude.json --splits data/mmlu-pro/splits.json --out runs/eval-7b
    metrics = evaluate(table, splits, aptitude, models, split="test", out=Path("runs/eval-7b"))

Every router is scored on the same instructions: those of the split on which *every* zoo model has a result
(the others are counted in `n_dropped_missing`). Ties between models are split evenly (the expected score of
a random tie-break). The best single model is chosen on the train split's labels (a yardstick, not a router).
The metrics are `modelsat/metrics.py`'s; `modelsat/report.py` writes `metrics.json`, `report.md` and the plots
into `out`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from modelsat.aptitude import Aptitude, build_aptitude
from modelsat.baselines import ROUTER_NAMES, BaseRouter, RoutingData, default_routers
from modelsat.checkpoint import check_checkpoint
from modelsat.choice import normalised_costs
from modelsat.config import load_config
from modelsat.data.converters import build_table
from modelsat.data.splits import load_splits, make_splits, save_splits
from modelsat.data.table import RoutingTable, TableError
from modelsat.embedding import Embed, cached_embedder
from modelsat.io_utils import atomic_dir
from modelsat.metrics import COST_WEIGHTS, N_BOOT, bootstrap_ci, interaction_auc_diff, routed_outcomes, router_metrics
from modelsat.report import write_outputs

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


# ------------------------------------------------------------------------------------------ evaluation
def _instructions(table: Any, splits: dict[str, list[str]], split: str,
                  models: list[str]) -> tuple[list[str], np.ndarray, int]:
    """The split's ids on which every zoo model has a result, their (Q, M) outcomes, and how many were dropped."""
    if split not in splits:
        raise EvaluationError(f"unknown split {split!r}; the splits are "
                              f"{', '.join(k for k in splits if k != 'aptitude_fingerprint')}")
    ids = list(splits[split])
    if not ids:
        raise EvaluationError(f"split {split!r} is empty: nothing to evaluate on")
    y = table.outcome_matrix(ids, models).astype(np.float64)
    complete = ~np.isnan(y).any(axis=1)
    if not complete.any():
        raise EvaluationError(f"no instruction of split {split!r} has results of every zoo model {models}")
    return [q for q, k in zip(ids, complete) if k], y[complete], int((~complete).sum())


def _train_accuracy(table: Any, splits: dict[str, list[str]], models: list[str]) -> np.ndarray:
    """(M,) train-split accuracy on the train instructions where every zoo model has a result."""
    ytr = table.outcome_matrix(list(splits.get("train", [])), models).astype(np.float64)
    ytr = ytr[~np.isnan(ytr).any(axis=1)]
    if not len(ytr):
        raise EvaluationError("the train split has no instruction with results of every zoo model: "
                              "cannot choose the best single model")
    return ytr.mean(axis=0)


def evaluate(table: Any, splits: dict[str, list[str]], aptitude: Aptitude, models: Sequence[str], split: str = "test",
             unseen: Sequence[str] = (), routers: Sequence[BaseRouter] | None = None, embed: Embed | None = None,
             checkpoint: str | Path | None = None, out: str | Path | None = None, seed: int = 0,
             zoo: str = "custom", log: Callable[[str], None] = logger.info,
             aptitude_only: Sequence[str] = ()) -> dict:
    """Fit every router with what its setting allows, score it on `split`, and (with `out`) write the outputs.

    `models` is the zoo; `unseen` models (added to the zoo if absent) are known only through their aptitude
    results: routers that need their labels are reported `{"applicable": false, "reason": ...}`. Without
    `routers`, every baseline runs (plus Model-SAT with `checkpoint`; otherwise it is marked absent).
    `embed` defaults to cached MiniLM embeddings. `aptitude_only`: zoo models that Model-SAT knows by their
    aptitude answers alone while the baselines read their labels (benchmarks/eval_modelsat.py's main runs).
    Model-SAT's `versus` holds, per other router, the accuracy difference and (both giving probabilities) the
    interaction AUC difference on the same pairs, each with its 95% paired bootstrap CI; with `aptitude_only`,
    also the AUC difference over the other models' pairs (`interaction_auc_labelled`). Returns the metrics dict
    written to metrics.json.
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
    outcomes: dict[str, np.ndarray] = {}                                   # router -> (Q,) outcome of its choices
    probabilities: dict[str, np.ndarray] = {}                              # router -> (Q, M) p_correct
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
        outcomes[r.name] = routed_outcomes(pred, y, norm)
        if r.probabilistic:
            probabilities[r.name] = np.asarray(pred, dtype=np.float64)
        results[r.name] = {**m, "uses": r.uses, "params": r.params()}
        if getattr(r, "notes", None):
            results[r.name]["notes"] = r.notes
        log(f"[{zoo}] {r.name}: accuracy {m['accuracy']:.4f}, gain {m['gain']:+.4f}")
    if "model-sat" in outcomes:                  # is Model-SAT above each other router? paired, same resamples
        labelled = [j for j, m in enumerate(models) if m not in aptitude_only]
        versus = {}
        for name, other in outcomes.items():
            if name == "model-sat":
                continue
            versus[name] = {"diff": float((outcomes["model-sat"] - other).mean()),
                            "ci": list(bootstrap_ci(outcomes["model-sat"] - other, seed=seed))}
            if "model-sat" in probabilities and name in probabilities:
                a, b = probabilities["model-sat"], probabilities[name]
                versus[name]["interaction_auc"] = interaction_auc_diff(a, b, y, seed=seed)
                if aptitude_only and len(labelled) >= 2:
                    versus[name]["interaction_auc_labelled"] = interaction_auc_diff(
                        a[:, labelled], b[:, labelled], y[:, labelled], seed=seed)
        results["model-sat"]["versus"] = versus
    if "model-sat" not in results:
        results["model-sat"] = {"applicable": False, "reason": "absent: no checkpoint given" if checkpoint is None
                                else "absent: not among the routers run"}
    metrics = {
        "zoo": zoo, "split": split, "models": models, "unseen": unseen, "aptitude_only": list(aptitude_only),
        "n_instructions": len(ids),
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

def run_evaluate_cli(args: argparse.Namespace) -> dict:
    """`modelsat evaluate`: load the table, aptitude test, splits and zoos the arguments name, then `evaluate`.

    Reads `args.table`, `checkpoint`, `split`, `splits`, `aptitude`, `zoo`, `zoos` (a JSON file or dict),
    `models`, `unseen`, `routers` (comma-separated; default: all), `encoder`, `out`, `seed`. Aptitude test and
    splits default to the checkpoint's; without a checkpoint and without them they are built (50×20 by task,
    val 0.1 / test 0.2, seeded) and saved beside the outputs. A folder of raw MMLU-Pro data is converted on the
    fly (its embeddings are then cached under ~/.cache/modelsat/mmlu-pro, never beside the public data)."""
    get = lambda k, d=None: getattr(args, k, d) if getattr(args, k, None) is not None else d  # noqa: E731
    split_list = lambda v: [x.strip() for x in v.split(",") if x.strip()] \
        if isinstance(v, str) else list(v or [])  # noqa: E731
    table_dir, seed = Path(get("table")), int(get("seed", 0))
    ckpt = Path(get("checkpoint")) if get("checkpoint") else None
    out = Path(get("out", "runs/evaluate"))
    cfg = None
    if ckpt is not None:
        cfg = load_config(check_checkpoint(ckpt) / "config.yaml")
    try:
        table, cache_dir = RoutingTable.load(table_dir), table_dir
    except TableError as e:
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
