"""Would another value read from a candidate's bank give p_correct more routing signal? Two candidates, on val.

    python -m dev.analyses.evidence_inputs --checkpoint checkpoints/modelsat-smollm2-mmlupro \
        --predictions runs/bank-b/val/predictions-val.npz

Reads the routing table, the checkpoint's aptitude test and splits, and MiniLM embeddings (the table's cache); no
router LLM runs. Interaction AUC (`modelsat.metrics.interaction_auc`) on val, per zoo, over the zoo's training
models (their banks: aptitude answers + every train label), of:
  - `knn{k}`: each model's mean outcome over the k nearest questions of its bank (what the evidence's nn_k reads);
  - `ridge{λ}`: a per-candidate ridge probe — a linear map from a question's embedding to the model's outcome,
    fitted on its bank (λ the ridge penalty), the per-model signal an MLP router learns, from one bank alone;
  - `proj l{λ} d{d} k{k}`: kNN in a supervised projection of the embeddings — the d leading directions of a ridge
    map (penalty λ) from a train question's embedding to its outcome vector less the model and question means (the
    directions along which the training models' results differ), neighbours by cosine there; EmbedLLM-like;
  - `model-sat`: the router's own p_correct on the same pairs, from `--predictions` (eval_modelsat's cache);
  - `values`: each of the evidence's own values (`modelsat/evidence.py`) alone, as routing reads them.
Then the stage-0 head (`benchmarks/evidence_head.py`'s fit, out of fold and thinned as training does) over the
evidence with and without the ridge probe as a 14th value: the test of whether the model can use it; and, over
every training model on train (out of fold, whole banks), the head's interaction AUC beside single values'.
Prints one JSON object. Nothing here is chosen for a router: it says whether either input is worth a training run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modelsat.aptitude import Aptitude
from modelsat.checkpoint import check_checkpoint
from modelsat.config import load_config
from modelsat.data.prepare import Prepared
from modelsat.data.splits import load_splits
from modelsat.data.table import RoutingTable
from modelsat.embedding import cached_embedder
from modelsat.encoder import EvidenceEncoder
from modelsat.evidence import NAMES, Candidate, NeighbourSearch, category_accuracy
from modelsat.loss import fit_offset
from modelsat.metrics import interaction_auc
from modelsat.training_evidence import FULL, THIN_LEVELS, EvidenceTable


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Centred ridge regression of (n,) or (n, M) targets on (n, D) inputs: (weights, input mean, target mean)."""
    xm, ym = x.mean(axis=0), y.mean(axis=0)
    w = np.linalg.solve((x - xm).T @ (x - xm) + lam * np.eye(x.shape[1]), (x - xm).T @ (y - ym))
    return w, xm, ym


def read_probe(x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray, lam: float = 100.0) -> np.ndarray:
    """A ridge probe fitted on (n, D) embeddings and their (n,) outcomes, read at (Q, D) x: (Q,) in [0, 1]."""
    w, xm, ym = ridge(x_fit, y_fit, lam)
    return np.clip(ym + (x - xm) @ w, 0, 1)


def knn(keys: np.ndarray, outcomes: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """(Q, M) mean outcome of each model over its results on the k nearest keys (NaN: no result)."""
    near = np.argpartition(-(queries @ keys.T), k, axis=1)[:, :k]
    return np.stack([np.nanmean(outcomes[near, j], axis=1) for j in range(outcomes.shape[1])], axis=1)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m dev.analyses.evidence_inputs", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="checkpoints/modelsat-smollm2-mmlupro")
    p.add_argument("--predictions", default=None, help="eval_modelsat's predictions-val.npz of a router, optional")
    p.add_argument("--zoos", default="7b,mixed,large", help="zoos of the checkpoint's data.zoos, or all")
    args = p.parse_args()
    ckpt = check_checkpoint(args.checkpoint)
    cfg = load_config(ckpt / "config.yaml")
    aptitude = Aptitude.load(ckpt / "aptitude.json")
    table = RoutingTable.load(cfg.data.table_dir)
    splits = load_splits(ckpt / "splits.json", aptitude=aptitude)
    models = [m for m in table.model_names if m not in cfg.data.unseen_models]
    embed = cached_embedder(table, cfg.model.sentence_encoder, Path(cfg.data.table_dir))
    unit = lambda texts: F.normalize(torch.from_numpy(embed(texts)).float(), dim=-1)    # noqa: E731
    xa = unit([aptitude.texts[q] for q in aptitude.question_ids])
    xt, xv = unit(table.texts(splits["train"])), unit(table.texts(splits["val"]))
    ya = table.outcome_matrix(aptitude.question_ids, models)
    yt, yv = table.outcome_matrix(splits["train"], models), table.outcome_matrix(splits["val"], models)
    A, T = len(xa), len(xt)
    keys = torch.cat([xa, xt]).double().numpy()
    bank_y = np.concatenate([ya, yt])
    v = xv.double().numpy()

    def probe(rows: np.ndarray, j: int, x: np.ndarray, lam: float = 100.0) -> np.ndarray:
        """Model j's ridge probe over its bank rows (of `keys`), read at x: (Q,) in [0, 1]."""
        rows = rows[~np.isnan(bank_y[rows, j])]
        return read_probe(keys[rows], bank_y[rows, j], x, lam)

    scores = {f"knn{k}": knn(keys, bank_y, v, k) for k in (100, 400)}
    every = np.arange(A + T)
    for lam in (30.0, 100.0, 300.0):
        scores[f"ridge{lam:g}"] = np.stack([probe(every, j, v, lam) for j in range(len(models))], axis=1)
    t = xt.double().numpy()
    filled = np.where(np.isnan(yt), np.nanmean(yt, axis=0), yt)
    residual = filled - filled.mean(axis=1, keepdims=True) - filled.mean(axis=0) + filled.mean()
    for lam in (10.0, 100.0):
        w, xm, _ = ridge(t, residual, lam)
        u, s, _ = np.linalg.svd(w, full_matrices=False)
        for d in (8, 20):
            zt, zv = (t - xm) @ (u[:, :d] * s[:d]), (v - xm) @ (u[:, :d] * s[:d])
            zt, zv = zt / np.linalg.norm(zt, axis=1, keepdims=True), zv / np.linalg.norm(zv, axis=1, keepdims=True)
            scores[f"proj l{lam:g} d{d} k400"] = knn(zt, yt, zv, 400)
    if args.predictions:
        with np.load(args.predictions, allow_pickle=False) as z:
            col = {m: i for i, m in enumerate(z["models"].tolist())}
            row = {q: i for i, q in enumerate(z["question_ids"].tolist())}
            pm = np.full(yv.shape, np.nan)
            for j, m in enumerate(models):
                if m in col:
                    pm[:, j] = z["p"][[row[q] for q in splits["val"]], col[m]]
            scores["model-sat"] = pm
    out: dict = {"checkpoint": str(ckpt), "pairs": "val, each zoo's training models", "interaction_auc": {}}
    zoos = args.zoos.split(",")
    members = {z: table.model_names if z == "all" else cfg.data.zoos[z] for z in zoos}
    for name, s in scores.items():
        out["interaction_auc"][name] = {}
        for zoo in zoos:
            cols = [j for j, m in enumerate(models) if m in members[zoo] and not np.isnan(s[:, j]).all()]
            keep = ~np.isnan(yv[:, cols]).any(axis=1)
            out["interaction_auc"][name][zoo] = round(interaction_auc(s[keep][:, cols], yv[keep][:, cols]), 4)
        out["interaction_auc"][name]["mean"] = round(float(np.mean(list(out["interaction_auc"][name].values()))), 4)

    # The head over the evidence, with and without the probe as one more value (as training reads it).
    data = Prepared(table, aptitude, splits, models, list(cfg.data.unseen_models))
    ev = EvidenceTable(cfg, data, xt, xv, xa, log=lambda s: None)
    out["values"] = {}
    for i, name in enumerate(NAMES):
        out["values"][name] = {}
        for zoo in zoos:
            cols = [j for j, m in enumerate(models) if m in members[zoo]]
            keep = ~np.isnan(yv[:, cols]).any(axis=1)
            value = ev.val_values[:, :, i].numpy()
            out["values"][name][zoo] = round(interaction_auc(value[keep][:, cols], yv[keep][:, cols]), 4)
    fold = np.random.default_rng(cfg.train.seed).permutation(T) % cfg.train.bank_folds   # as EvidenceTable's
    probes = np.zeros((FULL + 1, T, len(models)))
    for f in range(cfg.train.bank_folds):
        inside, others = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        for level in range(FULL + 1):
            for j in range(len(models)):
                rows = others
                if level < FULL:
                    pick = np.random.default_rng([cfg.train.seed, f, level, j])
                    rows = np.sort(pick.permutation(others)[:THIN_LEVELS[level]])
                probes[level, inside, j] = probe(np.concatenate([np.arange(A), A + rows]), j, t[inside])
    levels = np.array([[ev.level(q, m) for m in models] for q in ev.train_ids])
    train_probe = torch.from_numpy(probes[levels, np.arange(T)[:, None], np.arange(len(models))[None]]).float()
    clf = ev.classifier
    proba_keys, proba_val = (None, None) if clf is None else (clf.proba(ev.keys), clf.proba(xv))
    names = table.model_names
    y_all = table.outcome_matrix(splits["val"], names)
    cands, val_probe = [], []
    for m in names:                                  # routing: seen models' whole banks, unseen models' aptitude
        a = table.outcome_matrix(aptitude.question_ids, [m])[:, 0]
        pos = (np.concatenate([np.arange(A), A + np.flatnonzero(~np.isnan(yt[:, models.index(m)]))])
               if m in models else np.arange(A))
        o = np.concatenate([a, yt[pos[A:] - A, models.index(m)]]) if m in models else a
        cands.append(Candidate(pos, o.astype(np.float32), float(a.mean()),
                               None if clf is None else category_accuracy(proba_keys[pos], o)))
        val_probe.append(read_probe(keys[pos], o, v))
    e_val = NeighbourSearch(ev.keys, cands).evidence(xv, proba_val)
    p_val = torch.from_numpy(np.stack(val_probe, axis=1)).float()[..., None]
    train_acc = np.nanmean(table.outcome_matrix(splits["train"], names), axis=0)
    out["head"] = {}
    for arm, tr, va in (("evidence", ev.train_values(), e_val),
                        ("evidence + ridge probe", torch.cat([ev.train_values(), train_probe[..., None]], -1),
                         torch.cat([e_val, p_val], -1))):
        torch.manual_seed(cfg.train.seed)
        head = EvidenceEncoder(tr.shape[-1], 8, offset="linear")
        fit_offset(head, tr, yt, "listwise", 400, 0.01, progress=False)
        with torch.no_grad():
            z = head.logit_offset(va.reshape(-1, va.shape[-1])).reshape(va.shape[:2]).numpy()
        out["head"][arm] = {}
        if arm == "evidence":                        # on train, out of fold, every bank whole: the fit's own data
            whole = ev.values[FULL]
            with torch.no_grad():
                zt = head.logit_offset(whole.reshape(-1, whole.shape[-1])).reshape(whole.shape[:2]).numpy()
            keep = ~np.isnan(yt).any(axis=1)
            out["train_out_of_fold"] = {"head": round(interaction_auc(zt[keep], yt[keep]), 4), **{
                name: round(interaction_auc(whole[keep][:, :, i].numpy(), yt[keep]), 4)
                for i, name in enumerate(NAMES) if name in ("nn400", "kernel", "category")}}
        for zoo in zoos:
            cols = [names.index(m) for m in members[zoo]]
            y = y_all[:, cols]
            keep = ~np.isnan(y).any(axis=1)
            y, zz = y[keep], z[keep][:, cols]
            best = int(np.argmax(train_acc[cols]))
            gain = 100 * (y[np.arange(len(y)), zz.argmax(axis=1)].mean() - y[:, best].mean())
            out["head"][arm][zoo] = {"gain": round(float(gain), 2), "interaction_auc": round(interaction_auc(zz, y), 4)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
