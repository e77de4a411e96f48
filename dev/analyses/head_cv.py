"""Which stage-0 head reads a dataset's evidence best? Judged by 5-fold cross-validation over its train split.

    python -m dev.analyses.head_cv --checkpoint runs/rb-bank/final --zoos all
    python -m dev.analyses.head_cv --checkpoint checkpoints/modelsat-smollm2-mmlupro --zoos 7b,mixed,large --arms A,B,C

A small val (RouterBench's 212 questions) moves an interaction AUC by about ±0.02 with the draw; the 1,900 or more
train instructions, out of fold, tell arms apart at 0.01. Reads the checkpoint's config, aptitude test and splits (not
its weights); no router LLM runs. For each arm, the head (an `EvidenceEncoder` offset, fitted as train.py's stage 0
by `modelsat.loss.fit_offset`, 400 full-batch epochs) is fitted on four folds of the train instructions' out-of-fold,
thinned evidence of the training models (`modelsat/training_evidence.py`) and scored by interaction AUC on the fifth
fold's (folds by instruction, seed 0); then fitted on the whole train split and scored on val per zoo as
`benchmarks/evidence_head.py` does. Arms:
    A  `linear` offset, listwise loss (the committed routers')
    B  `linear-logit` offset (one weight per value and per its logit), listwise
    C  `linear`, pairwise loss            D  `linear-logit`, pairwise
    H  `linear`, listwise + a pairwise term on the logits centred per model (z − each model's mean over the
       fitted instructions): what the interaction AUC ranks
    P  `linear`, the package's `bce+listwise` stage-0 loss (pointwise BCE pins each pair's level)
    E  linear over e and e × amount (the neighbour values' weights follow how much evidence there is; not a form of
       the package, fitted here only)
`--fit-thin X` fits the heads on evidence thinned as `train.bank_thin=X`; `--score-whole` scores the held-out folds
on whole (unthinned) out-of-fold evidence, as a seen model's routing reads it.
`--bank-folds K` builds the out-of-fold evidence with K folds (`train.bank_folds`).
`--values overall,category` restricts every arm's head to the named evidence values (`modelsat.evidence.NAMES`):
the others are held at 0.5 (a zero logit, a constant input) in fitting and in scoring.
`--classifier-cv` fits the category classifier with its C chosen by its own 5-fold log-loss
(`sklearn.linear_model.LogisticRegressionCV`) in place of `LogisticRegression`'s default C = 1.
Prints one line of JSON per arm: {"arm", "centred_weight" (H), "classifier_c" (with --classifier-cv: the C chosen),
"values" (with --values), "bank_folds", "fit_thin", "score_whole", "cv_auc", "cv_folds", zoo: [val gain in points, val
interaction AUC], "s"}.
The rules that read these numbers are in dev/LOG.md (2026-12-06, fourth and fifth sessions).
Assumptions: the head's folds (seed 0, 5) are the evidence's own folds at the committed configs' train.seed = 0 and
train.bank_folds = 5, so a held-out fold's evidence reads only the other folds' labels; with other values the
held-out evidence also reads other held-out instructions' labels, and CV figures across --bank-folds are not
comparable (judge those on val). A missing result counts as wrong in the CV score (the tables here have none).
The fit is 400 epochs at lr 0.01, the committed configs' train.evidence_fit_epochs / _lr, over the models not in
data.unseen_models.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from sklearn.linear_model import LogisticRegressionCV

import modelsat.category
from benchmarks.evidence_head import EvidenceHeadRouter, read_checkpoint
from modelsat.baselines import BestSingleRouter
from modelsat.config import load_config
from modelsat.encoder import EvidenceEncoder
from modelsat.evaluate import evaluate
from modelsat.evidence import DIM, NAMES
from modelsat.loss import fit_offset, group_loss
from modelsat.metrics import interaction_auc
from modelsat.training_evidence import EvidenceTable

ARMS = {"A": ("linear", "listwise"), "B": ("linear-logit", "listwise"), "C": ("linear", "pairwise"),
        "D": ("linear-logit", "pairwise"), "E": ("amount", "listwise"), "H": ("linear", "listwise+centred"),
        "P": ("linear", "bce+listwise")}
AMOUNT = NAMES.index("amount")


class AmountHead(nn.Module):
    """Arm E: a linear offset over [e, e × amount], starting at zero (as `EvidenceEncoder`'s)."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = nn.Sequential(nn.Linear(2 * DIM, 1))
        nn.init.zeros_(self.offset[0].weight)
        nn.init.zeros_(self.offset[0].bias)

    def logit_offset(self, e: torch.Tensor) -> torch.Tensor:
        e = e.float().clamp(1e-3, 1 - 1e-3)
        return self.offset(torch.cat([e, e * e[:, AMOUNT:AMOUNT + 1]], dim=-1)).squeeze(-1)


class Subset(nn.Module):
    """`--values`: a head that reads only the values at `keep` (indices into `NAMES`); the others are held at 0.5."""

    def __init__(self, head: nn.Module, keep: list[int]) -> None:
        super().__init__()
        self.head, self.offset = head, head.offset
        self.register_buffer("drop", torch.tensor([i not in keep for i in range(DIM)]))

    def logit_offset(self, e: torch.Tensor) -> torch.Tensor:
        return self.head.logit_offset(torch.where(self.drop, torch.full_like(e, 0.5), e))


class CVLogisticRegression:
    """`LogisticRegression`'s interface over `LogisticRegressionCV` (5 folds, log-loss), for `--classifier-cv`;
    `last_c` the C chosen at the last fit (one C for every class: log-loss is one score)."""

    last_c = float("nan")

    def __init__(self, max_iter: int = 2000) -> None:
        self.cv = LogisticRegressionCV(Cs=[1, 3, 10, 30, 100, 300, 1000], cv=5, scoring="neg_log_loss",
                                       max_iter=max_iter)

    def fit(self, x: np.ndarray, y: list) -> "CVLogisticRegression":
        self.cv.fit(x, y)
        self.coef_, self.intercept_, self.classes_ = self.cv.coef_, self.cv.intercept_, self.cv.classes_
        CVLogisticRegression.last_c = float(self.cv.C_[0])
        return self


def fit(arm: str, values: torch.Tensor, labels: np.ndarray, centred_weight: float = 1.0,
        keep: list[int] | None = None) -> nn.Module:
    form, loss = ARMS[arm]
    torch.manual_seed(0)
    head = AmountHead() if form == "amount" else EvidenceEncoder(DIM, 8, offset=form)
    if keep is not None:
        head = Subset(head, keep)
    if loss == "listwise+centred":
        fit_centred(head, values, labels, weight=centred_weight)
    else:
        fit_offset(head, values, labels, loss, 400, 0.01, progress=False)
    return head


def fit_centred(head: nn.Module, values: torch.Tensor, labels: np.ndarray, weight: float = 1.0, epochs: int = 400,
                lr: float = 0.01) -> None:
    """Arm H: `fit_offset`'s full-batch Adam on listwise + `weight` × pairwise over the per-model centred logits."""
    y = torch.as_tensor(labels)
    mask, y = ~torch.isnan(y), torch.nan_to_num(y)
    flat, ones = values.reshape(-1, DIM).float(), torch.ones(y.shape[0])
    optimizer = torch.optim.Adam(head.offset.parameters(), lr=lr)
    for _ in range(epochs):
        z = head.logit_offset(flat).reshape(y.shape)                                         # (Q, M)
        mean = (z * mask).sum(0, keepdim=True) / mask.sum(0, keepdim=True).clamp_min(1)
        loss = (group_loss(z, y, mask, ones, 0.0, 1.0, 0.0)
                + weight * group_loss(z - mean, y, mask, ones, 0.0, 0.0, 1.0)) / y.shape[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m dev.analyses.head_cv", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="its config, aptitude test and splits are used")
    p.add_argument("--zoos", default="all", help="zoos of the checkpoint's data.zoos, or all")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--classifier-cv", action="store_true")
    p.add_argument("--fit-thin", type=float, default=None,
                   help="train.bank_thin of the evidence the heads are fitted on (default: the config's)")
    p.add_argument("--score-whole", action="store_true",
                   help="score each held-out fold on whole (unthinned) out-of-fold evidence, as a seen model routes")
    p.add_argument("--bank-folds", type=int, default=None,
                   help="train.bank_folds of the out-of-fold evidence (default: the config's)")
    p.add_argument("--centred-weight", type=float, default=1.0, help="arm H: the weight of its centred pairwise term")
    p.add_argument("--values", default=None, help="comma-separated evidence values the heads read (default: all)")
    p.add_argument("--out", default="runs/head-cv")
    args = p.parse_args()

    def listed(option: str, given: str, allowed) -> list[str]:
        unknown = [x for x in given.split(",") if x not in allowed]
        if unknown:
            p.error(f"{option}: unknown {', '.join(unknown)}; use some of {', '.join(allowed)}")
        return given.split(",")

    arms = listed("--arms", args.arms, ARMS)
    keep = [NAMES.index(n) for n in listed("--values", args.values, NAMES)] if args.values else None
    if args.classifier_cv:
        modelsat.category.LogisticRegression = CVLogisticRegression
    ckpt = Path(args.checkpoint)
    cfg = load_config(ckpt / "config.yaml")
    if args.bank_folds:
        cfg.train.bank_folds = args.bank_folds
    aptitude, table, splits, train_models, embed, data, keys = read_checkpoint(ckpt, cfg)

    def evidence(thin: float) -> EvidenceTable:
        cfg.train.bank_thin = thin
        return EvidenceTable(cfg, data, *keys, log=lambda s: None)

    thin = cfg.train.bank_thin if args.fit_thin is None else args.fit_thin
    ev = evidence(thin)
    values = ev.train_values()                                                           # (Q, M, E) fitted on
    scored = evidence(0.0).train_values() if args.score_whole and thin > 0 else values   # (Q, M, E) scored on
    labels = table.outcome_matrix(splits["train"], train_models).astype(np.float32)      # (Q, M)
    fold = np.random.default_rng(0).permutation(len(labels)) % 5
    zoos = {**cfg.data.zoos, "all": table.model_names}
    for arm in arms:
        start, aucs = time.time(), []
        for f in range(5):
            held = fold == f
            head = fit(arm, values[torch.from_numpy(~held)], labels[~held], args.centred_weight, keep)
            with torch.no_grad():
                v = scored[torch.from_numpy(held)]
                p_correct = head.logit_offset(v.reshape(-1, DIM)).reshape(v.shape[:2]).sigmoid().double().numpy()
            aucs.append(interaction_auc(p_correct, np.nan_to_num(labels[held], nan=0.0)))
        head = fit(arm, values, labels, args.centred_weight, keep)
        result = {"arm": arm}
        if args.values:
            result["values"] = args.values
        if ARMS[arm][1] == "listwise+centred":
            result["centred_weight"] = args.centred_weight
        if args.classifier_cv and ev.classifier is not None:
            result["classifier_c"] = float(modelsat.category.LogisticRegression.last_c)
        result |= {"bank_folds": cfg.train.bank_folds, "fit_thin": thin, "score_whole": args.score_whole,
                   "cv_auc": round(float(np.mean(aucs)), 4), "cv_folds": [round(a, 4) for a in aucs]}
        tag = "-".join(f"{k}{v}" for k, v in result.items() if k not in ("cv_auc", "cv_folds"))
        for zoo in args.zoos.split(","):
            unseen = [m for m in cfg.data.unseen_models if m in zoos[zoo]]
            m = evaluate(table, splits, aptitude, zoos[zoo], "val", unseen,
                         routers=[BestSingleRouter(), EvidenceHeadRouter(ev, head, True)], embed=embed,
                         out=Path(args.out) / f"{tag}-{zoo}", zoo=zoo, log=lambda s: None)
            r = m["routers"]["evidence-head"]
            result[zoo] = [round(100 * r["gain"], 2), round(r["interaction_auc"], 4)]
        result["s"] = round(time.time() - start, 1)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
