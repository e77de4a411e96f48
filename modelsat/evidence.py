"""Aptitude evidence: what a candidate's aptitude results say about one instruction, as a learned model input.

    evidence = Evidence(keys, classifier)                         # keys: (A, D) unit embeddings of the aptitude questions
    e = evidence(instruction_emb, outcomes)                        # (Q, D) unit, (A, M) → (Q, M, E) in [0, 1]

For an instruction x and a candidate m, with s_a = cos(x, aptitude question a) and o_a the candidate's outcome:
    nn_k      mean o_a over the k aptitude questions nearest x, k in `NEIGHBOURS` (at most A)
    kernel    Σ_a softmax(s / τ)_a o_a                                  (τ = `TEMPERATURE`)
    category  Σ_c p(c | x) · (mean o_a over the aptitude questions of category c)   (with a category classifier)
    overall   mean o_a over the whole test
    nearness  the mean of the 10 largest s_a, the same for every candidate: how close the test comes to x
These were the inputs of the earlier routers' hand-weighted route priors (dev/LOG.md), turned into features, so that
the router learns how to weigh them. They depend only on aptitude results, so a model added to the zoo gets them too: its
evidence is computed from its zoo entry, never from its results on routed instructions.
"""
from __future__ import annotations

import numpy as np
import torch

from modelsat.category import CategoryClassifier

NEIGHBOURS = (10, 25, 50, 100, 200)
TEMPERATURE = 0.05
NAMES = tuple(f"nn{k}" for k in NEIGHBOURS) + ("kernel", "category", "overall", "nearness")
DIM = len(NAMES)


class Evidence:
    """Computes the (Q, M, E) aptitude evidence of M candidates for Q instructions (E = `DIM`, names `NAMES`).

    `keys`: (A, D) unit sentence embeddings of the aptitude questions, in `aptitude.question_ids` order (the rows of
    the outcomes). `classifier`: the category classifier (None: `category` repeats `overall`).
    Raises ValueError on shapes that do not fit."""

    def __init__(self, keys: torch.Tensor, classifier: CategoryClassifier | None = None) -> None:
        if keys.ndim != 2 or keys.shape[0] < 1:
            raise ValueError(f"aptitude keys must be (A, D) with A >= 1, got {tuple(keys.shape)}")
        self.keys = keys.float()
        self.classifier = classifier

    def __call__(self, instructions: torch.Tensor, outcomes: np.ndarray) -> torch.Tensor:
        """(Q, D) unit instruction embeddings and (A, M) aptitude outcomes → (Q, M, E) float32 evidence."""
        outcomes = np.asarray(outcomes, dtype=np.float64)
        if outcomes.ndim != 2 or outcomes.shape[0] != self.keys.shape[0]:
            raise ValueError(f"outcomes must be (A, M) with A = {self.keys.shape[0]} aptitude questions, "
                             f"got {outcomes.shape}")
        if instructions.ndim != 2 or instructions.shape[1] != self.keys.shape[1]:
            raise ValueError(f"instruction embeddings must be (Q, {self.keys.shape[1]}), got {tuple(instructions.shape)}")
        sim = (instructions.float() @ self.keys.T).double()                        # (Q, A)
        o = torch.from_numpy(outcomes)                                              # (A, M)
        ks = [min(k, sim.shape[1]) for k in NEIGHBOURS]
        top = sim.topk(max(ks), dim=1)                                              # nearest first
        near = o[top.indices]                                                       # (Q, kmax, M)
        cols = [near[:, :k].mean(dim=1) for k in ks]                                # each (Q, M)
        cols.append(torch.softmax(sim / TEMPERATURE, dim=1) @ o)                    # (Q, M)
        overall = o.mean(dim=0).expand(sim.shape[0], -1)                            # (Q, M)
        if self.classifier is not None:
            per_category = torch.from_numpy(self.classifier.per_category(outcomes))  # (C, M)
            cols.append(torch.from_numpy(self.classifier.proba(instructions.float())) @ per_category)
        else:
            cols.append(overall)
        cols.append(overall)
        cols.append(top.values[:, :10].mean(dim=1, keepdim=True).expand(-1, o.shape[1]).clamp(0, 1))
        return torch.stack(cols, dim=-1).float()                                    # (Q, M, E)
