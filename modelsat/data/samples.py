"""Training samples: groups of K (instruction, candidate model, label) triples.

    groups = build_groups(table, split["train"], train_models, group_size=8, mode="instruction", seed=0, epoch=e)
    loader = DataLoader(GroupDataset(groups, table), batch_size=4, collate_fn=collate_groups)

`instruction` mode (this project's default) puts one instruction with K candidate models, as routing
ranks models for one instruction; the group holds at least one model that answered it correctly
(score >= 0.5) and one that did not, where the instruction has both. `model` mode is the paper's: one
model with 1 instruction it answered correctly and K-1 it got wrong. Labels are the table's scores
(0/1 for multiple choice, fractions for sampled answers). Groups whose candidates are all right or all
wrong carry `weight = uniform_weight`. The same (seed, epoch) always gives the same groups in the same order; a
new epoch resamples the candidates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass
class Group:
    """One training group: K (instruction, model, label) triples and the group's loss weight."""

    question_ids: list[str]
    models: list[str]
    labels: list[float]
    weight: float = 1.0


def _instruction_groups(S: np.ndarray, qids: list[str], models: list[str], K: int, rng: np.random.Generator,
                        uniform_weight: float) -> list[Group]:
    groups = []
    for i, qid in enumerate(qids):
        avail = np.flatnonzero(~np.isnan(S[i]))  # models with a result on this instruction
        if len(avail) == 0:
            continue
        pos, neg = avail[S[i, avail] >= 0.5], avail[S[i, avail] < 0.5]
        uniform = len(pos) == 0 or len(neg) == 0
        if len(avail) <= K:
            pick = avail
        else:
            first = [] if uniform else [rng.choice(pos), rng.choice(neg)]
            rest = np.setdiff1d(avail, first)
            pick = np.concatenate([np.array(first, dtype=np.int64), rng.choice(rest, K - len(first), replace=False)])
        pick = rng.permutation(pick)  # position must not leak the label
        groups.append(Group([qid] * len(pick), [models[j] for j in pick], [float(S[i, j]) for j in pick],
                            uniform_weight if uniform else 1.0))
    return groups


def _model_groups(S: np.ndarray, qids: list[str], models: list[str], K: int, rng: np.random.Generator,
                  uniform_weight: float) -> list[Group]:
    groups = []
    for j, model in enumerate(models):
        col = S[:, j]
        pos, neg = np.flatnonzero(col >= 0.5), np.flatnonzero(col < 0.5)  # NaN (not evaluated) is in neither
        if len(pos) == 0:
            continue
        for p in rng.permutation(pos):  # one group per instruction the model answered correctly
            negs = rng.choice(neg, min(K - 1, len(neg)), replace=False)
            rows = rng.permutation(np.concatenate([[p], negs]).astype(np.int64))
            groups.append(Group([qids[r] for r in rows], [model] * len(rows), [float(col[r]) for r in rows],
                                1.0 if len(neg) else uniform_weight))
    return groups


def build_groups(table: Any, question_ids: list[str], models: list[str], group_size: int = 8,
                 mode: Literal["instruction", "model"] = "instruction", seed: int = 0, *, epoch: int = 0,
                 uniform_weight: float = 0.5) -> list[Group]:
    """Training groups over `question_ids` × `models`, deterministic for (seed, epoch), in shuffled order.

    instruction mode: one group per instruction with results, K candidates (all of them when fewer).
    model mode: per model, one group per instruction it answered correctly, with K-1 it got wrong.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be positive, got {group_size}")
    if mode not in ("instruction", "model"):
        raise ValueError(f"grouping mode must be 'instruction' or 'model', got {mode!r}")
    if not 0 <= uniform_weight <= 1:
        raise ValueError(f"uniform_weight must be in [0, 1], got {uniform_weight}")
    question_ids, models = [str(q) for q in question_ids], [str(m) for m in models]
    unknown = sorted(set(models) - set(table.model_names))
    if unknown:
        raise ValueError(f"models not in the routing table: {unknown[:10]}")
    if len(set(question_ids)) != len(question_ids):
        raise ValueError("question_ids lists a question twice")
    S = np.asarray(table.outcome_matrix(question_ids, models), dtype=np.float64)  # (Q, M), NaN = not evaluated
    rng = np.random.default_rng([seed, epoch])
    if mode == "instruction":
        groups = _instruction_groups(S, question_ids, models, group_size, rng, uniform_weight)
    else:
        groups = _model_groups(S, question_ids, models, group_size, rng, uniform_weight)
    return [groups[i] for i in rng.permutation(len(groups))]


class GroupDataset(Dataset):
    """Groups with their instruction texts; item i -> question_ids, instructions, models, labels (K,), weight."""

    def __init__(self, groups: list[Group], table: Any) -> None:
        self.groups = groups
        ids = sorted({q for g in groups for q in g.question_ids})
        self.texts = dict(zip(ids, table.texts(ids)))

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = self.groups[i]
        return {"question_ids": list(g.question_ids), "instructions": [self.texts[q] for q in g.question_ids],
                "models": list(g.models), "labels": torch.tensor(g.labels, dtype=torch.float32), "weight": g.weight}


def collate_groups(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep groups separate (they differ in size): lists per field, `weights` as a (B,) tensor."""
    return {"instructions": [b["instructions"] for b in batch], "question_ids": [b["question_ids"] for b in batch],
            "models": [b["models"] for b in batch], "labels": [b["labels"] for b in batch],
            "weights": torch.tensor([b["weight"] for b in batch], dtype=torch.float32)}
