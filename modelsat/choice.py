"""The choice rule every router shares: Model-SAT's `Router.rank`, the baselines' `rank`, `modelsat evaluate`,
`modelsat serve` and the gateway all choose with these functions.

    utility = score − cost_weight · cost / max_cost

`score` is the router's prediction for each (instruction, candidate): p_correct for Model-SAT and the probabilistic
baselines. Nothing else enters: no router adds a term of its own when choosing. Costs are divided by the largest known cost among the
candidates ranked, and a candidate of unknown cost counts as the most expensive, so `cost_weight` reads as
"probability given up per unit of the most expensive candidate's cost" (RouteLLM's threshold plays the same role
for two models). A ranking orders by utility, ties by name; an evaluation splits a tie evenly between the tied
candidates (the expected score over tie-breaks).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class Ranked(NamedTuple):
    """One candidate of a ranking, best first: its name, p_correct (the router's score), its cost (None: unknown),
    its utility, and whether the instruction was longer than a reading window (read as its first third + end)."""

    model: str
    p_correct: float
    cost: float | None
    utility: float
    shortened: bool = False


def normalised_costs(costs: np.ndarray) -> np.ndarray:
    """(M,) costs divided by the largest known one; unknown (NaN) costs count as the largest (1.0); all unknown or
    all zero → 0."""
    costs = np.asarray(costs, dtype=np.float64)
    known = costs[np.isfinite(costs)]
    if not known.size or known.max() <= 0:
        return np.zeros_like(costs)
    return np.where(np.isfinite(costs), costs, known.max()) / known.max()


def utilities(scores: np.ndarray, costs: np.ndarray, cost_weight: float = 0.0) -> np.ndarray:
    """(Q, M) utility of M candidates for Q instructions from (Q, M) scores and (M,) raw costs (NaN: unknown)."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores - cost_weight * normalised_costs(costs)[None, :]


def ranking(models: Sequence[str], scores: np.ndarray, costs: np.ndarray, utility: np.ndarray,
            top_k: int | None = None, shortened: bool = False) -> list[Ranked]:
    """One instruction's candidates best first by (M,) `utility`, ties by name, at most `top_k` of them."""
    order = sorted(range(len(models)), key=lambda j: (-utility[j], models[j]))[:top_k]
    return [Ranked(models[j], float(scores[j]), None if np.isnan(costs[j]) else float(costs[j]), float(utility[j]),
                   shortened) for j in order]


def choice_weights(utility: np.ndarray) -> np.ndarray:
    """(Q, M) weights of the chosen candidate(s): 1 at the argmax of each row of `utility`, a tie split evenly."""
    tie = utility >= utility.max(axis=1, keepdims=True) - 1e-9
    return tie / tie.sum(axis=1, keepdims=True)
