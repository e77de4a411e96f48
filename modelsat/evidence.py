"""Evidence: what a candidate's graded results say about one instruction, as a learned model input.

    search = NeighbourSearch(keys, candidates)                # once per set of candidates and bank state
    e = search.evidence(instruction_emb, category_proba)      # (Q, D) unit, (Q, C) → (Q, M, E) in [0, 1]

A candidate's results (`Candidate`) are rows of a shared key matrix (the unit sentence embeddings of the questions
they answer: its aptitude answers, and whatever its results bank holds, `modelsat/bank.py`) with their outcomes.
For an instruction x, with s_j = cos(x, question j) over the candidate's n results, nearest first:
    nn_k      mean outcome of its k nearest results, k in `NEIGHBOURS` (all n where n < k)
    kernel    Σ_j softmax(s / τ)_j o_j over its `max(NEIGHBOURS)` nearest (τ = `TEMPERATURE`)
    overall   mean outcome over all its results
    aptitude  its aptitude accuracy (the test every model takes: comparable across candidates)
    category  Σ_c p(c | x) · acc_c, with acc_c its accuracy per category, each result weighted by the category
              classifier's p(c | question) and shrunk toward `overall` (`category_accuracy`); `overall` where there
              is no classifier (data with one category or none)
    near10, near100   the mean similarity of its 10 and 100 nearest results: how close its evidence lies
    amount    log(1 + n) / log(1 + 10^6): how much evidence there is
so that the router learns when to trust thin evidence (490 aptitude answers) and when thick (thousands of labels).
The same code computes the evidence in training (out of fold, banks thinned: `modelsat/training_evidence.py`) and in
routing (`modelsat/router.py`). A candidate with more than `bank.EXACT_LIMIT` results is searched through its cells.

`AptitudeEvidence` is the earlier input (model.evidence_source = "aptitude", checkpoints of modelsat 0.2): the
same kind of values over the aptitude answers alone, with the aptitude questions' own categories.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from modelsat.bank import EXACT_LIMIT, PROBE_ROWS
from modelsat.category import CategoryClassifier

NEIGHBOURS = (10, 25, 50, 100, 200, 400)
TEMPERATURE = 0.05
CATEGORY_STRENGTH = 5.0
"""Pseudo-results of the overall accuracy added to each category's (a category with little evidence keeps near it)."""
AMOUNT_SCALE = math.log1p(1e6)
NAMES = (*(f"nn{k}" for k in NEIGHBOURS), "kernel", "overall", "aptitude", "category", "near10", "near100", "amount")
DIM = len(NAMES)


def category_accuracy(proba: np.ndarray, outcomes: np.ndarray, strength: float = CATEGORY_STRENGTH) -> np.ndarray:
    """(C,) accuracy per category from (n, C) category probabilities of n answered questions and their (n,)
    outcomes: (Σ_j p_jc o_j + strength · overall) / (Σ_j p_jc + strength)."""
    outcomes = np.asarray(outcomes, dtype=np.float64)
    overall = float(outcomes.mean()) if len(outcomes) else 0.5
    return (proba.T @ outcomes + strength * overall) / (proba.sum(axis=0) + strength)


@dataclass
class Candidate:
    """What the evidence reads of one candidate: `positions` (n,) rows of the key matrix, their `outcomes` (n,) in
    [0, 1], its `aptitude` accuracy, its `category` accuracy (C,) where there is a classifier, and `cells` (n,) the
    cell of each row's question where it is searched through cells (more than EXACT_LIMIT rows)."""
    positions: np.ndarray
    outcomes: np.ndarray
    aptitude: float
    category: np.ndarray | None = None
    cells: np.ndarray | None = None

    _by_cell: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.positions) != len(self.outcomes) or len(self.positions) == 0:
            raise ValueError(f"a candidate needs as many outcomes as rows, at least one: got {len(self.positions)} "
                             f"rows and {len(self.outcomes)} outcomes")

    def by_cell(self, num_cells: int) -> tuple[np.ndarray, np.ndarray]:
        """Its rows ordered by cell, and the offsets (C + 1,) of each cell's run; computed once per candidate (a
        search over another subset of the zoo reuses it: sorting 1 M rows takes ~80 ms)."""
        if self._by_cell is None or len(self._by_cell[1]) != num_cells + 1:
            order = np.argsort(self.cells, kind="stable")
            self._by_cell = (order, np.searchsorted(self.cells[order], np.arange(num_cells + 1)))
        return self._by_cell


class NeighbourSearch:
    """The evidence of a set of candidates, prepared once (the union of their rows, read exactly) and computed per
    batch of instructions. `keys`: (N, D) unit embeddings (float16 or float32) of every question a candidate's rows
    point at; `centroids` (C, D) the cells' centroids, needed where a candidate has more than EXACT_LIMIT rows.
    Raises ValueError on rows outside `keys`."""

    def __init__(self, keys: np.ndarray | torch.Tensor, candidates: list[Candidate],
                 centroids: np.ndarray | None = None) -> None:
        self.keys = keys.numpy() if isinstance(keys, torch.Tensor) else keys
        self.candidates = candidates
        self.centroids = centroids
        for c in candidates:
            if c.positions.min() < 0 or c.positions.max() >= len(self.keys):
                raise ValueError(f"candidate rows must lie in [0, {len(self.keys)}), got {c.positions.max()}")
        exact = [len(c.positions) <= EXACT_LIMIT or centroids is None or c.cells is None for c in candidates]
        union = (np.unique(np.concatenate([c.positions for c, e in zip(candidates, exact) if e])) if any(exact)
                 else np.zeros(0, np.int64))
        self.union = torch.from_numpy(np.asarray(self.keys[union], dtype=np.float32))              # (U, D)
        self.columns = [torch.from_numpy(np.searchsorted(union, c.positions)) if e else None
                        for c, e in zip(candidates, exact)]
        self.sorted = [None if e else c.by_cell(len(centroids)) for c, e in zip(candidates, exact)]

    def evidence(self, instructions: torch.Tensor, category_proba: np.ndarray | None = None) -> torch.Tensor:
        """(Q, D) unit instruction embeddings (and (Q, C) their category probabilities, where the candidates have
        category accuracies) → (Q, M, E) float32 evidence."""
        x = instructions.float()
        if x.ndim != 2 or x.shape[1] != self.keys.shape[1]:
            raise ValueError(f"instruction embeddings must be (Q, {self.keys.shape[1]}), got {tuple(x.shape)}")
        sim = x @ self.union.T                                                               # (Q, U)
        out = []
        for c, cols, by_cell in zip(self.candidates, self.columns, self.sorted):
            if cols is not None:
                top_s, top_o = _top(sim[:, cols], torch.from_numpy(c.outcomes.astype(np.float32)))
            else:
                top_s, top_o = self._probe(x, c, by_cell)
            out.append(_values(top_s, top_o, c, category_proba))
        return torch.stack(out, dim=1)                                                      # (Q, M, E)

    def _probe(self, x: torch.Tensor, c: Candidate, by_cell: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """Top rows of a candidate searched through its cells: per instruction, its rows in the cells nearest the
        instruction until PROBE_ROWS are read."""
        order, offsets = by_cell
        near = (x @ torch.from_numpy(self.centroids).T).argsort(dim=1, descending=True).numpy()   # (Q, C)
        tops_s, tops_o = [], []
        for q in range(len(x)):
            sizes = offsets[near[q] + 1] - offsets[near[q]]
            take = near[q][:int(np.searchsorted(np.cumsum(sizes), PROBE_ROWS)) + 1]
            rows = np.concatenate([order[offsets[k]:offsets[k + 1]] for k in take])
            keys = torch.from_numpy(np.asarray(self.keys[c.positions[rows]], dtype=np.float32))
            s, o = _top((x[q:q + 1] @ keys.T), torch.from_numpy(c.outcomes[rows].astype(np.float32)))
            tops_s.append(s)
            tops_o.append(o)
        width = min(t.shape[1] for t in tops_s)
        return torch.cat([t[:, :width] for t in tops_s]), torch.cat([t[:, :width] for t in tops_o])


def _top(sim: torch.Tensor, outcomes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, n) similarities and (n,) outcomes → the similarities and outcomes of the max(NEIGHBOURS) nearest, nearest
    first: (Q, k), k = min(n, max(NEIGHBOURS))."""
    top = sim.topk(min(max(NEIGHBOURS), sim.shape[1]), dim=1)
    return top.values, outcomes[top.indices]


def _values(top_s: torch.Tensor, top_o: torch.Tensor, c: Candidate, category_proba: np.ndarray | None) -> torch.Tensor:
    """(Q, E) evidence of one candidate from its nearest results (Q, k), nearest first."""
    q, k = top_o.shape
    n = len(c.outcomes)
    csum = top_o.double().cumsum(dim=1)
    cols = [csum[:, min(kk, k) - 1] / min(kk, k) for kk in NEIGHBOURS]                          # each (Q,)
    cols.append((torch.softmax(top_s.double() / TEMPERATURE, dim=1) * top_o.double()).sum(dim=1))
    overall = float(np.mean(c.outcomes))
    full = torch.full((q,), 1.0, dtype=torch.float64)
    cols += [full * overall, full * float(c.aptitude)]
    if c.category is not None and category_proba is not None:
        cols.append(torch.from_numpy(np.asarray(category_proba, dtype=np.float64) @ c.category))
    else:
        cols.append(full * overall)
    cols.append(top_s[:, :10].double().mean(dim=1).clamp(0, 1))
    cols.append(top_s[:, :100].double().mean(dim=1).clamp(0, 1))
    cols.append(full * min(math.log1p(n) / AMOUNT_SCALE, 1.0))
    return torch.stack(cols, dim=-1).float()                                                    # (Q, E)


# ----- the earlier input: aptitude answers alone (model.evidence_source = "aptitude") -------------------------------
APTITUDE_NEIGHBOURS = (10, 25, 50, 100, 200)
APTITUDE_NAMES = tuple(f"nn{k}" for k in APTITUDE_NEIGHBOURS) + ("kernel", "category", "overall", "nearness")
APTITUDE_DIM = len(APTITUDE_NAMES)


def evidence_dim(source: str) -> int:
    """E, the number of evidence values of `model.evidence_source` ("bank" or "aptitude")."""
    if source not in ("bank", "aptitude"):
        raise ValueError(f"unknown evidence source {source!r}; use 'bank' or 'aptitude'")
    return DIM if source == "bank" else APTITUDE_DIM


class AptitudeEvidence:
    """The (Q, M, E) aptitude evidence of modelsat 0.2 (E = APTITUDE_DIM): nn_k and a softmax kernel over the aptitude
    questions nearest the instruction, the category value with the aptitude questions' own categories, the overall
    aptitude accuracy and how near the test comes (the mean of the 10 largest similarities, the same for every
    candidate). `keys`: (A, D) unit embeddings of the aptitude questions. Raises ValueError on shapes that do not
    fit."""

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
            raise ValueError(f"instruction embeddings must be (Q, {self.keys.shape[1]}), got "
                             f"{tuple(instructions.shape)}")
        sim = (instructions.float() @ self.keys.T).double()                        # (Q, A)
        o = torch.from_numpy(outcomes)                                              # (A, M)
        ks = [min(k, sim.shape[1]) for k in APTITUDE_NEIGHBOURS]
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
