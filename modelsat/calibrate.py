"""Calibrate the cost knob: the smallest `cost_weight` that meets a budget on representative instructions.

    modelsat calibrate --checkpoint checkpoints/modelsat-smollm2-mmlupro --instructions sample.txt --max-share-expensive 0.2
    modelsat calibrate --checkpoint DIR --instructions sample.jsonl --max-mean-cost 30
    result = calibrate(Router.from_checkpoint(DIR), instructions, max_share_expensive=0.2)

The router is run once (`Router.rank_many` at cost_weight 0), which gives every candidate's p_correct, utility
and cost for every instruction. Since `utility(w) = utility(0) - w * cost / max_cost` (the router's rule; a model of
unknown cost counts as the most expensive), the top pick at any `w` follows without running the router again, and
the share of instructions sent to the most expensive candidate(s) and the mean cost of the picks can only fall as
`w` grows. The smallest `w` meeting the budget is found by bisection (to 1e-9 relative) over that one ranking.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from modelsat.router import Router, RouterError

SEARCH = ("bisection on cost_weight over one ranking at cost_weight 0 (utility - cost_weight * cost / max_cost; "
          "unknown cost counts as the most expensive)")


class CalibrationError(RouterError):
    """The budget cannot be met or the inputs do not allow calibrating (one line: what, where, what to do)."""


class _Sweep:
    """The top pick of every instruction at any cost_weight, from one ranking at cost_weight 0."""

    def __init__(self, router: Router, instructions: Sequence[str], models: Sequence[str] | None) -> None:
        ranked = router.rank_many(list(instructions), models, cost_weight=0.0)
        self.models = sorted(r.model for r in ranked[0])               # name order: the router's tie-break
        col = {m: j for j, m in enumerate(self.models)}
        Q, M = len(ranked), len(self.models)
        self.utility, self.p = np.zeros((Q, M)), np.zeros((Q, M))      # (Q, M) at cost_weight 0
        cost = {r.model: r.cost for r in ranked[0]}
        for i, row in enumerate(ranked):
            for r in row:
                self.utility[i, col[r.model]], self.p[i, col[r.model]] = r.utility, r.p_correct
        costs = np.array([np.nan if cost[m] is None else cost[m] for m in self.models])   # (M,)
        known = costs[~np.isnan(costs)]
        if not known.size or known.max() <= 0:
            raise CalibrationError("the candidates have no cost (or all cost 0): cost_weight changes nothing; give "
                                   "the zoo's models costs (`modelsat zoo add --cost` or --params-b)")
        self.max_cost = float(known.max())
        self.norm = np.nan_to_num(costs / self.max_cost, nan=1.0)     # (M,) the router's penalty per unit weight
        self.cost = np.nan_to_num(costs, nan=self.max_cost)           # unknown cost: as the most expensive
        self.expensive = self.norm >= 1.0
        self.unknown = [m for m, c in zip(self.models, costs) if np.isnan(c)]

    def picks(self, w: float) -> np.ndarray:
        """(Q,) column of each instruction's top pick at cost_weight `w` (first, i.e. by name, among equals)."""
        return np.argmax(self.utility - self.norm * w, axis=1) if w else np.argmax(self.utility, axis=1)

    def at(self, w: float) -> dict:
        pick = self.picks(w)
        rows = np.arange(len(pick))
        counts = np.bincount(pick, minlength=len(self.models))
        return {"cost_weight": w, "share_expensive": float(self.expensive[pick].mean()),
                "mean_cost": float(self.cost[pick].mean()), "expected_accuracy": float(self.p[rows, pick].mean()),
                "picks": {m: int(c) for m, c in zip(self.models, counts) if c}}


def calibrate(router: Router, instructions: Sequence[str], *, max_share_expensive: float | None = None,
              max_mean_cost: float | None = None, models: Sequence[str] | None = None) -> dict:
    """The smallest cost_weight at which at most `max_share_expensive` (a fraction in [0, 1]) of `instructions`
    go to the most expensive candidate(s), or the picks' mean cost is at most `max_mean_cost` (in the zoo's cost
    unit); give exactly one. Returns a JSON-ready dict: the cost_weight, the share, mean cost and expected accuracy
    (mean p_correct of the picks) there and at cost_weight 0, and the picks per model. Raises CalibrationError
    where the budget cannot be met even by the cheapest candidates."""
    if (max_share_expensive is None) == (max_mean_cost is None):
        raise CalibrationError("give exactly one budget: --max-share-expensive S (a fraction) or --max-mean-cost C")
    name, target = (("share_expensive", max_share_expensive) if max_share_expensive is not None
                    else ("mean_cost", max_mean_cost))
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target) or target < 0 \
            or (name == "share_expensive" and target > 1):
        flag = "--max-share-expensive (a fraction in [0, 1])" if name == "share_expensive" else "--max-mean-cost (>= 0)"
        raise CalibrationError(f"{flag} must be a finite number in range, got {target!r}")
    sweep = _Sweep(router, instructions, models)
    meets = lambda w: sweep.at(w)[name] <= target + 1e-12  # noqa: E731
    lo, hi = 0.0, 1.0
    if not meets(0.0):
        cheapest = np.argmax(np.where(sweep.norm == sweep.norm.min(), sweep.utility, -np.inf), axis=1)
        floor = {"share_expensive": float(sweep.expensive[cheapest].mean()), "mean_cost": float(sweep.cost[cheapest].mean())}
        if floor[name] > target + 1e-12:
            raise CalibrationError(f"{name} {target} cannot be met on these {len(instructions)} instructions: even "
                                   f"routing each to its best cheapest candidate gives {floor[name]:.4g}; raise the "
                                   "budget or add cheaper candidates")
        while not meets(hi):
            lo, hi = hi, hi * 2
        for _ in range(200):                                       # to 1e-9 of the weight: hi meets, lo does not
            if hi - lo <= 1e-9 * hi:
                break
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    else:
        hi = 0.0
    chosen, base = sweep.at(hi), sweep.at(0.0)
    return {**chosen, "target": {name: target}, "search": SEARCH, "instructions": len(instructions),
            "candidates": len(sweep.models), "most_expensive": [m for m, e in zip(sweep.models, sweep.expensive) if e],
            "unknown_cost": sweep.unknown, "max_cost": sweep.max_cost, "cost_unit": router.zoo.cost_unit,
            "at_cost_weight_0": {k: base[k] for k in ("share_expensive", "mean_cost", "expected_accuracy")}}
