"""The evidence through a small learned head, with no LLM, beside the baselines: what the router LLM adds on top.

    python -m benchmarks.evidence_head --checkpoint checkpoints/modelsat-smollm2-mmlupro --split val --out runs/evidence-head

The head is `EvidenceEncoder`'s logit offset alone (modelsat/encoder.py) over a candidate's evidence for the
instruction (modelsat/evidence.py: its results on the nearest questions of its bank, how many and how near, its
category and overall accuracy), fitted as train.py's stage 0 (`modelsat.loss.fit_offset`) on the training models'
out-of-fold, thinned evidence (modelsat/training_evidence.py) with the checkpoint's config. At evaluation a seen
model's bank holds its aptitude answers and every train-split label; an unseen model's, its aptitude answers alone
(`--bank-labels false`: every bank holds the aptitude answers alone, the ablation of the bank). Prints JSON per zoo:
gain over the best single model, interaction AUC, Brier, for the head and the baselines (`--baselines`).
Used to choose the evidence's design on val in minutes, before the LLM trains (dev/LOG.md).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modelsat.aptitude import Aptitude
from modelsat.baselines import BaseRouter, BestPerCategoryRouter, BestSingleRouter, KNNRouter, MLPRouter, RoutingData
from modelsat.config import Config, load_config
from modelsat.data.prepare import Prepared
from modelsat.data.splits import load_splits
from modelsat.data.table import RoutingTable
from modelsat.embedding import cached_embedder
from modelsat.encoder import OFFSETS, EvidenceEncoder
from modelsat.evaluate import evaluate
from modelsat.evidence import DIM, Candidate, NeighbourSearch, category_accuracy
from modelsat.logs import setup_logging
from modelsat.loss import fit_offset, tier_groups
from modelsat.training_evidence import EvidenceTable


class EvidenceHeadRouter(BaseRouter):
    """p_correct = sigmoid(offset(evidence)): the head of `fit_head`, each zoo model's bank built as the router
    builds it (seen: aptitude answers + train labels; unseen: aptitude answers)."""

    name, handles_unseen = "evidence-head", True
    uses = "aptitude results of every model; train-split labels of seen models (their banks); MiniLM embeddings"

    def __init__(self, table: EvidenceTable, head: EvidenceEncoder, bank_labels: bool = True) -> None:
        super().__init__()
        self.table, self.head, self.bank_labels = table, head, bank_labels

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        t = self.table
        A = len(t.aptitude_keys)
        apt = data.aptitude_scores(models)                                               # (A, M)
        labels = t.train_outcomes
        clf = t.classifier
        proba = None if clf is None else clf.proba(t.keys)
        self.candidates = []
        for j, m in enumerate(models):
            rows = np.zeros(0, np.int64)
            if self.bank_labels and m in data.seen and m in t.col:
                col = labels[:, t.col[m]]
                rows = np.flatnonzero(~np.isnan(col))
            out = np.concatenate([apt[:, j], [] if not len(rows) else labels[rows, t.col[m]]]).astype(np.float32)
            pos = np.concatenate([np.arange(A), A + rows])
            self.candidates.append(Candidate(pos, out, float(apt[:, j].mean()),
                                             None if proba is None else category_accuracy(proba[pos], out)))
        self.search = NeighbourSearch(t.keys, self.candidates)
        return models

    @torch.no_grad()
    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        x = F.normalize(torch.from_numpy(self.data.embed(instructions)).float(), dim=-1)
        clf = self.table.classifier
        e = self.search.evidence(x, None if clf is None else clf.proba(x))                 # (Q, M, E)
        return torch.sigmoid(self.head.logit_offset(e.reshape(-1, DIM)).reshape(e.shape[:2])).double().numpy()


def read_checkpoint(ckpt: Path, cfg: Config) -> tuple:
    """What the evidence of a checkpoint's data needs, with `cfg` (its config.yaml, as the caller may have changed
    it): (aptitude, table, splits, training models (those not in data.unseen_models), the cached sentence embedder,
    `Prepared`, the unit embeddings (train, val, aptitude questions) that `EvidenceTable` takes)."""
    aptitude = Aptitude.load(ckpt / "aptitude.json")
    table = RoutingTable.load(cfg.data.table_dir)
    splits = load_splits(ckpt / "splits.json", aptitude=aptitude)
    train_models = [m for m in table.model_names if m not in cfg.data.unseen_models]
    embed = cached_embedder(table, cfg.model.sentence_encoder, Path(cfg.data.table_dir))
    data = Prepared(table, aptitude, splits, train_models, list(cfg.data.unseen_models))

    def unit(texts: list[str]) -> torch.Tensor:
        return F.normalize(torch.from_numpy(embed(texts)).float(), dim=-1)

    keys = (unit(table.texts(splits["train"])), unit(table.texts(splits["val"])),
            unit([aptitude.texts[q] for q in aptitude.question_ids]))
    return aptitude, table, splits, train_models, embed, data, keys


def fit_head(table: EvidenceTable, labels: np.ndarray, offset: str, loss: str, epochs: int, lr: float,
             seed: int = 0, tier: int = 0) -> EvidenceEncoder:
    """The stage-0 head: `EvidenceEncoder(offset=...)`'s offset fitted alone on every train pair at its bank level
    (over tiers of at most `tier` like models, as train.evidence_fit_tier; 0: every model in one group)."""
    torch.manual_seed(seed)
    head = EvidenceEncoder(DIM, 8, offset=offset)
    fit_offset(head, *tier_groups(table.train_values(), labels, tier), loss, epochs, lr, progress=False)
    return head


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.evidence_head", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="checkpoints/modelsat-smollm2-mmlupro",
                   help="its config, aptitude test and splits are used (not its weights)")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--zoos", default="7b,mixed,large", help="zoos of the checkpoint's data.zoos, or all")
    p.add_argument("--out", default="runs/evidence-head")
    p.add_argument("--offset", default="linear", choices=list(OFFSETS))
    p.add_argument("--loss", default="listwise")
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--tier", type=int, default=None, help="train.evidence_fit_tier (default: the config's)")
    p.add_argument("--bank-labels", default="true", choices=["true", "false"])
    p.add_argument("--bank-thin", type=float, default=None, help="train.bank_thin (default: the config's)")
    p.add_argument("--baselines", action="store_true", help="also score best single, best per category, kNN, MLP")
    args = p.parse_args()
    setup_logging()
    ckpt = Path(args.checkpoint)
    cfg = load_config(ckpt / "config.yaml")
    cfg.train.bank_labels = args.bank_labels == "true"
    if args.bank_thin is not None:
        cfg.train.bank_thin = args.bank_thin
    start = time.time()
    aptitude, table, splits, train_models, embed, data, keys = read_checkpoint(ckpt, cfg)
    ev = EvidenceTable(cfg, data, *keys, log=lambda s: None)
    built = time.time() - start
    tier = cfg.train.evidence_fit_tier if args.tier is None else args.tier
    head = fit_head(ev, table.outcome_matrix(splits["train"], train_models), args.offset, args.loss, args.epochs,
                    args.lr, cfg.train.seed, tier)
    fitted = time.time() - start - built
    summary = {}
    zoos = {**cfg.data.zoos, "all": table.model_names}
    for zoo in args.zoos.split(","):
        unseen = [m for m in cfg.data.unseen_models if m in zoos[zoo]]
        routers = [EvidenceHeadRouter(ev, head, cfg.train.bank_labels)]
        if args.baselines:
            routers = [BestSingleRouter(), BestPerCategoryRouter(), KNNRouter(), MLPRouter(seed=0)] + routers
        else:
            routers = [BestSingleRouter()] + routers
        m = evaluate(table, splits, aptitude, zoos[zoo], args.split, unseen, routers=routers, embed=embed,
                     out=Path(args.out) / f"{args.split}-{zoo}", zoo=zoo)
        summary[zoo] = {name: {k: (round(100 * r[k], 2) if k == "gain" else round(r[k], 4)) for k in
                               ("gain", "interaction_auc", "brier") if r.get(k) is not None}
                        for name, r in m["routers"].items() if r.get("applicable", True)}
    print(json.dumps({"split": args.split, "checkpoint": str(ckpt), "offset": args.offset, "loss": args.loss,
                      "tier": tier,
                      "bank_labels": cfg.train.bank_labels, "bank_thin": cfg.train.bank_thin,
                      "seconds": {"evidence": round(built, 1), "head": round(fitted, 1)}, "zoos": summary}, indent=1))


if __name__ == "__main__":
    main()
