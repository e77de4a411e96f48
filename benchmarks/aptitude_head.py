"""Does a small bilinear head over MiniLM × aptitude answers learn what the LLM router does not? On val only.

    python benchmarks/aptitude_head.py --checkpoint checkpoints/modelsat-smollm2-mmlupro \
        --predictions runs/src14/val/predictions-val.npz

The head needs no LLM and keeps Model-SAT's promise (a model is known only by its aptitude-test answers, so
unseen models work): logit(x, m) = f(x)·g(r_m) + g_0(r_m) + f_0(x), with x the instruction's MiniLM embedding,
r_m the model's answers on the aptitude test (`--features questions`, one per question) or its per-task
accuracy (`tasks`), f and g two-layer MLPs to `--dim` + 1 outputs. Trained with binary cross-entropy on the train
split's labels of the checkpoint's training models, then scored on val in every zoo (unseen models included).
Prints one JSON object: per setting and zoo, the gain over the best single model in points of the head alone and
of Model-SAT's cached val utility (p_correct + `route.aptitude_prior` × aptitude accuracy) plus `beta` × the
head's probability, and the interaction AUC of the head and of Model-SAT.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modelsat.aptitude import Aptitude  # noqa: E402
from modelsat.checkpoint import check_checkpoint  # noqa: E402
from modelsat.config import load_config  # noqa: E402
from modelsat.data.splits import load_splits  # noqa: E402
from modelsat.data.table import RoutingTable  # noqa: E402
from modelsat.evaluate import cached_embedder, interaction_auc  # noqa: E402

BETAS = [0.25, 0.5, 1.0]


class Head(nn.Module):
    def __init__(self, text_dim: int, model_dim: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.g = nn.Sequential(nn.Dropout(0.2), nn.Linear(model_dim, 128), nn.GELU(), nn.Linear(128, dim + 1))
        self.f = nn.Sequential(nn.Linear(text_dim, 128), nn.GELU(), nn.Linear(128, dim + 1))

    def forward(self, text: torch.Tensor, model: torch.Tensor) -> torch.Tensor:   # (Q, D), (M, R) → (Q, M) logits
        u, v = self.g(model), self.f(text)
        return v[:, :self.dim] @ u[:, :self.dim].T + u[None, :, self.dim] + v[:, self.dim:]


def train_head(text: torch.Tensor, model: torch.Tensor, y: np.ndarray, dim: int, epochs: int, seed: int) -> Head:
    torch.manual_seed(seed)
    head = Head(text.shape[1], model.shape[1], dim)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    labels = torch.tensor(y, dtype=torch.float32)
    seen = ~torch.isnan(labels)
    labels = torch.nan_to_num(labels)
    for _ in range(epochs):
        head.train()
        for b in torch.randperm(len(text)).split(256):
            loss = nn.functional.binary_cross_entropy_with_logits(head(text[b], model), labels[b], reduction="none")
            loss = (loss * seen[b]).sum() / seen[b].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="its config, aptitude test and splits are read")
    p.add_argument("--predictions", required=True, help="predictions-val.npz of eval_modelsat.py --split val")
    p.add_argument("--features", default="questions,tasks")
    p.add_argument("--epochs", default="10,30")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--dim", type=int, default=32)
    args = p.parse_args()
    ckpt = check_checkpoint(args.checkpoint)
    cfg = load_config(ckpt / "config.yaml")
    table = RoutingTable.load(cfg.data.table_dir)
    aptitude = Aptitude.load(ckpt / "aptitude.json")
    splits = load_splits(ckpt / "splits.json", aptitude=aptitude)
    train_models = [m for m in table.model_names if m not in cfg.data.unseen_models]
    train, val = list(splits["train"]), list(splits["val"])
    with np.load(args.predictions, allow_pickle=False) as cached:
        P, pm, pq = cached["p"], cached["models"].tolist(), cached["question_ids"].tolist()
    if pq != val:
        raise SystemExit(f"{args.predictions} does not hold this checkpoint's val split in order")
    embed = cached_embedder(table, "all-minilm-l6-v2", Path(cfg.data.table_dir))
    text_train = torch.tensor(embed(table.texts(train)), dtype=torch.float32)
    text_val = torch.tensor(embed(table.texts(val)), dtype=torch.float32)
    y_train = table.score_matrix(train, train_models)

    def model_features(models: list[str], kind: str) -> torch.Tensor:
        answers = table.score_matrix(aptitude.question_ids, models).astype(np.float32).T    # (M, A)
        if kind == "tasks":
            answers = answers.reshape(len(models), aptitude.num_tasks, aptitude.per_task).mean(axis=-1)
        return torch.tensor(answers)

    zoos = {**cfg.data.zoos, "all": table.model_names}
    out: dict = {"checkpoint": args.checkpoint, "predictions": args.predictions, "settings": {}}
    for kind in args.features.split(","):
        for epochs in map(int, args.epochs.split(",")):
            heads = [train_head(text_train, model_features(train_models, kind), y_train, args.dim, epochs, seed)
                     for seed in map(int, args.seeds.split(","))]
            rows = {}
            for zoo, models in zoos.items():
                y = table.score_matrix(val, models)
                keep = ~np.isnan(y).any(axis=1)
                y_tr = table.score_matrix(train, models)
                best = int(y_tr[~np.isnan(y_tr).any(axis=1)].mean(axis=0).argmax())
                with torch.no_grad():
                    head_p = np.mean([torch.sigmoid(h(text_val, model_features(models, kind))).numpy()
                                      for h in heads], axis=0)[keep]
                utility = P[np.ix_(keep, [pm.index(m) for m in models])] + cfg.route.aptitude_prior * np.nanmean(
                    table.score_matrix(aptitude.question_ids, models), axis=0)
                y = y[keep]

                def gain(u: np.ndarray) -> float:
                    return round(100 * float((y[np.arange(len(y)), u.argmax(axis=1)] - y[:, best]).mean()), 2)

                rows[zoo] = {"n": int(len(y)), "head": gain(head_p), "model_sat": gain(utility),
                             **{f"model_sat+{b}*head": gain(utility + b * head_p) for b in BETAS},
                             "interaction_auc_head": round(interaction_auc(head_p, y), 3),
                             "interaction_auc_model_sat": round(interaction_auc(utility, y), 3)}
            out["settings"][f"{kind}, {epochs} epochs, {len(heads)} seeds averaged"] = rows
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
