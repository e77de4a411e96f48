"""Ablation (b) of issue 19: the aptitude evidence through a small learned head, with no LLM, beside the baselines.

    python -m benchmarks.evidence_head --checkpoint checkpoints/modelsat-smollm2-mmlupro --split val --out runs/evidence-head

The head is `EvidenceEncoder`'s logit offset alone (modelsat/encoder.py): the 9 evidence values of a candidate for
an instruction (modelsat/evidence.py) → p_correct, trained with train.py's loss (pointwise BCE + listwise
cross-entropy over all training models of an instruction) on the train split. Beside it: the hand-weighted route
prior of the router committed before issue 19 (dev/LOG.md, old §13: 2 × accuracy on the 100 nearest aptitude
questions + 2 × category accuracy, no p_correct), and the baselines. Prints JSON per zoo: gain over the best single
model, interaction AUC, Brier.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modelsat.logs import setup_logging
from modelsat.aptitude import Aptitude
from modelsat.baselines import (BaseRouter, BestPerCategoryRouter, BestSingleRouter, KNNRouter, MLPRouter,
                                RoutingData)
from modelsat.category import CategoryClassifier
from modelsat.config import load_config
from modelsat.data.splits import load_splits
from modelsat.data.table import RoutingTable
from modelsat.encoder import EvidenceEncoder
from modelsat.embedding import cached_embedder
from modelsat.evaluate import evaluate
from modelsat.evidence import DIM, NAMES, Evidence


class _EvidenceRouter(BaseRouter):
    """Shared: the evidence of every instruction for every zoo model, from aptitude results only."""

    handles_unseen = True
    uses = "aptitude results; MiniLM embeddings; a category classifier fitted on train categories"

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        keys = torch.from_numpy(data.embeddings(data.aptitude.question_ids)).float()
        train = data.train_ids
        self.classifier = CategoryClassifier.fit(data.embeddings(train), data.table.categories(train),
                                                 data.table.categories(data.aptitude.question_ids))
        self.evidence = Evidence(keys, self.classifier)
        self.data = data
        return models

    def features(self, question_ids: list[str], models: list[str]) -> torch.Tensor:
        emb = torch.from_numpy(self.data.embeddings(question_ids)).float()
        return self.evidence(emb, self.data.aptitude_scores(models))                # (Q, M, E)


class EvidenceHeadRouter(_EvidenceRouter):
    """p_correct = sigmoid(EvidenceEncoder offset(evidence)), learned on the train split's (instruction, model)
    pairs of every seen model (the head is the same for every model, so unseen models use it too)."""

    name = "evidence-head"

    def __init__(self, epochs: int = 400, lr: float = 0.01, seed: int = 0) -> None:
        super().__init__()
        self.epochs, self.lr, self.seed = epochs, lr, seed

    def params(self) -> dict:
        return {"epochs": self.epochs, "lr": self.lr, "loss": "pointwise BCE + listwise CE (train.py)"}

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        super()._fit(data, models)
        seen = list(data.seen)
        y = torch.from_numpy(data.labels(data.train_ids, seen)).float()             # (Q, M), NaN: no result
        e = self.features(data.train_ids, seen)                                      # (Q, M, E)
        ok = ~torch.isnan(y)
        y = torch.nan_to_num(y) >= 0.5
        torch.manual_seed(self.seed)
        self.head = EvidenceEncoder(DIM, 8)                                          # its token part is unused here
        torch.nn.init.normal_(self.head.offset[-1].weight, std=0.01)                 # a zero layer learns nothing
        opt = torch.optim.Adam(self.head.offset.parameters(), lr=self.lr)
        x = self.head.inputs(e.reshape(-1, DIM))
        target = (y & ok).float()
        has = target.sum(1) > 0
        for _ in range(self.epochs):
            z = self.head.offset(x).reshape(y.shape)                                 # (Q, M)
            point = F.binary_cross_entropy_with_logits(z[ok], y[ok].float())
            logp = z.masked_fill(~ok, -1e9).log_softmax(dim=1)
            listwise = -((target / target.sum(1, keepdim=True).clamp_min(1)) * logp).sum(1)[has].mean()
            opt.zero_grad()
            (point + listwise).backward()
            opt.step()
        return models

    @torch.no_grad()
    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        e = self.features(question_ids, self.models_)
        z = self.head.offset(self.head.inputs(e.reshape(-1, DIM))).reshape(e.shape[:2])
        return torch.sigmoid(z).double().numpy()


class HandPriorRouter(_EvidenceRouter):
    """The hand-weighted prior of the router before issue 19, alone: 2 × nn100 + 2 × category (dev/LOG.md, old §13;
    no p_correct)."""

    name, probabilistic = "hand-prior", False

    @torch.no_grad()
    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        e = self.features(question_ids, self.models_)
        return (2 * e[..., NAMES.index("nn100")] + 2 * e[..., NAMES.index("category")]).double().numpy()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.evidence_head", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="checkpoints/modelsat-smollm2-mmlupro")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--zoos", default="7b,mixed,large")
    p.add_argument("--out", default="runs/evidence-head")
    args = p.parse_args()
    setup_logging()                    # modelsat's progress and warnings on stderr
    ckpt = Path(args.checkpoint)
    cfg = load_config(ckpt / "config.yaml")
    aptitude = Aptitude.load(ckpt / "aptitude.json")
    table = RoutingTable.load(cfg.data.table_dir)
    splits = load_splits(ckpt / "splits.json", aptitude=aptitude)
    embed = cached_embedder(table, cfg.model.sentence_encoder, Path(cfg.data.table_dir))
    summary = {}
    for zoo in args.zoos.split(","):
        unseen = [m for m in cfg.data.unseen_models if m in cfg.data.zoos[zoo]]
        routers = [BestSingleRouter(), BestPerCategoryRouter(), KNNRouter(), MLPRouter(seed=0), HandPriorRouter(),
                   EvidenceHeadRouter()]
        m = evaluate(table, splits, aptitude, cfg.data.zoos[zoo], args.split, unseen, routers=routers, embed=embed,
                     out=Path(args.out) / f"{args.split}-{zoo}", zoo=zoo)
        summary[zoo] = {name: {k: (round(100 * r[k], 2) if k == "gain" else round(r[k], 4)) for k in
                               ("gain", "interaction_auc", "brier") if r.get(k) is not None}
                        for name, r in m["routers"].items() if r.get("applicable", True)}
    print(json.dumps({"split": args.split, "checkpoint": str(ckpt), "zoos": summary}, indent=1))


if __name__ == "__main__":
    main()
