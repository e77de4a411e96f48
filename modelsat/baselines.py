"""Routing baselines and the Model-SAT adapter, all behind one interface.

    data = RoutingData(table, aptitude, splits["train"], splits["val"], seen=models, embed=embed)
    router = KNNRouter().fit(data, models)
    p = router.predict(question_ids, texts, models)          # (Q, M), higher = better
    router.rank("What is 2+2?\\nA. 3\\nB. 4", models, cost_weight=0.2, top_k=3)

Choice rule, the same for every router (Model-SAT included; `modelsat/choice.py`): pick the argmax over the zoo
of `predict − cost_weight · cost / max_cost`, with cost = `models.parquet` cost, else `params_b`; a model of
unknown cost counts as the most expensive of the zoo (normalised cost 1.0). All routers but `random`
predict probabilities of being correct, so `cost_weight` reads as "accuracy points given up per unit of
the zoo's largest cost". Exact ties are split evenly by the evaluation (expected value of a random pick).

Settings: `seen` models may be learned from their train-split labels; every other zoo model is *unseen* and
known only through its aptitude-test results. `RoutingData.labels` refuses labels of unseen models, so no
router can use them silently. Hyper-parameter defaults: the best *mean val accuracy* over the MMLU-Pro zoos 7b,
mixed, large and all (`python -m benchmarks.bench_baselines --tune`: fit on train, score on val; MiniLM embeddings,
aptitude 50×20 by task, splits val 0.1 / test 0.2, seed 0). Val has ~830-960 instructions per zoo, so
differences under ~0.01 are noise; the grids are in that script.

Why one module: the baseline routers side by side, 30-70 lines each behind one interface
(`BaseRouter`), so that their differences read at a glance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits
from torch import nn

from modelsat.aptitude import Aptitude
from modelsat.choice import Ranked, normalised_costs, ranking, utilities  # noqa: F401 (re-exported)
from modelsat.embedding import Embed
from modelsat.router import Router


class RoutingError(ValueError):
    """A router was used outside what it can do (unfitted, unknown or unseen models, bad arguments)."""


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (cosine similarity = dot product)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _smoothed_mean(y: np.ndarray, groups: np.ndarray, n_groups: int, prior: np.ndarray, strength: float) -> np.ndarray:
    """(G, M) per-group mean of y (N, M), NaN-aware, shrunk toward `prior` (M,) with `strength` pseudo-counts."""
    seen = ~np.isnan(y)
    s, n = np.zeros((n_groups, y.shape[1])), np.zeros((n_groups, y.shape[1]))
    np.add.at(s, groups, np.where(seen, y, 0.0))
    np.add.at(n, groups, seen)
    return np.where(n + strength > 0, (s + strength * prior) / np.maximum(n + strength, 1e-12), prior)


@dataclass
class RoutingData:
    """What a router may learn from: train/val instructions, labels of `seen` models, aptitude results of all."""

    table: Any                     # modelsat.data.table.RoutingTable
    aptitude: Aptitude
    train_ids: list[str]
    val_ids: list[str]
    seen: list[str]
    embed: Embed

    def labels(self, question_ids: Sequence[str], models: Sequence[str]) -> np.ndarray:
        """(Q, M) scores of seen models (NaN = no result); asking for an unseen model's labels is an error."""
        bad = [m for m in models if m not in self.seen]
        if bad:
            raise RoutingError(f"labels of {bad} were requested, but they are unseen models: only their "
                               "aptitude results may be used")
        return self.table.outcome_matrix(list(question_ids), list(models)).astype(np.float64)

    def aptitude_scores(self, models: Sequence[str]) -> np.ndarray:
        """(A, M) scores on the aptitude questions in task-major order (NaN where a model has no result)."""
        return self.table.outcome_matrix(self.aptitude.question_ids, list(models)).astype(np.float64)

    def embeddings(self, question_ids: Sequence[str]) -> np.ndarray:
        """(N, D) unit-norm embeddings of the table's texts of `question_ids`."""
        return unit(self.embed(self.table.texts(list(question_ids))))


class BaseRouter:
    """Shared plumbing: fitting bookkeeping, column selection and `rank` (subclasses fill `_fit`/`_predict`)."""

    name = ""
    probabilistic = True
    handles_unseen = False
    uses = ""

    def __init__(self) -> None:
        self.models_: list[str] = []
        self.costs_: dict[str, float] = {}
        self.data: RoutingData | None = None

    def params(self) -> dict[str, Any]:
        """Hyper-parameters, for the report."""
        return {}

    def fit(self, data: RoutingData, models: Sequence[str]) -> "BaseRouter":
        """Learn what the setting allows for the zoo `models`; returns self."""
        self.data, models = data, list(models)
        self.costs_ = dict(zip(models, data.table.costs(models).tolist()))
        self.models_ = self._fit(data, models)
        return self

    def predict(self, question_ids: Sequence[str], instructions: Sequence[str], models: Sequence[str]) -> np.ndarray:
        """(Q, M) scores, higher = better (p_correct where `probabilistic`)."""
        if self.data is None:
            raise RoutingError(f"router {self.name!r} is not fitted; call fit(data, models) first")
        pos = {m: j for j, m in enumerate(self.models_)}
        bad = [m for m in models if m not in pos]
        if bad:
            raise RoutingError(f"router {self.name!r} cannot score {bad}: it was fitted on {self.models_}"
                               + ("" if self.handles_unseen else " and cannot handle unseen models"))
        full = self._predict(list(question_ids), list(instructions))          # (Q, M_fitted)
        return full[:, [pos[m] for m in models]].astype(np.float64)

    def rank(self, instruction: str, models: Sequence[str] | None = None, cost_weight: float = 0.0,
             top_k: int | None = None, question_id: str = "") -> list[Ranked]:
        """The candidates for one instruction, best first, by score − cost_weight · normalised cost
        (`modelsat/choice.py`)."""
        if not math.isfinite(cost_weight) or cost_weight < 0:
            raise RoutingError(f"cost_weight must be a finite number >= 0, got {cost_weight!r}")
        models = list(models) if models is not None else list(self.models_)
        score = self.predict([question_id], [instruction], models)[0]
        cost = np.array([self.costs_.get(m, math.nan) for m in models])
        utility = utilities(score[None, :], cost, cost_weight)[0]
        return ranking(models, score, cost, utility, top_k)

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        raise NotImplementedError

    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        raise NotImplementedError


class RandomRouter(BaseRouter):
    """Uniformly random pick: every model tied at 0, so the evaluation reports the expected accuracy."""

    name, probabilistic, handles_unseen, uses = "random", False, True, "nothing"

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        return models

    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        return np.zeros((len(question_ids), len(self.models_)))

    def rank(self, instruction: str, models: Sequence[str] | None = None, cost_weight: float = 0.0,
             top_k: int | None = None, question_id: str = "") -> list[Ranked]:
        """The shared rule's ranking with its ties (every candidate of one cost) in a random order."""
        full = super().rank(instruction, models, cost_weight, None, question_id)
        shuffled = [full[j] for j in self.rng.permutation(len(full))]
        return sorted(shuffled, key=lambda r: -r.utility)[:top_k]


class BestSingleRouter(BaseRouter):
    """Always the model with the best estimated accuracy: train-split accuracy for seen models (on the train
    instructions where every seen model has a result, as the evaluation's yardstick), aptitude accuracy for
    unseen ones (their only information). p_correct = that accuracy, for every instruction."""

    name, handles_unseen = "best-single", True
    uses = "train-split labels of seen models; aptitude results of unseen models"

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        seen = [m for m in models if m in data.seen]
        y = data.labels(data.train_ids, seen)
        complete = ~np.isnan(y).any(axis=1)
        acc = dict(zip(seen, np.nanmean(y[complete] if complete.any() else y, axis=0))) if seen else {}
        unseen = [m for m in models if m not in data.seen]
        if unseen:
            acc.update(zip(unseen, np.nanmean(data.aptitude_scores(unseen), axis=0)))
        self.accuracy = np.array([acc[m] for m in models])
        return models

    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        return np.tile(self.accuracy, (len(question_ids), 1))


class BestPerCategoryRouter(BaseRouter):
    """Per category (or task) of the instruction, the model with the best train-split accuracy there, shrunk
    toward its overall accuracy with `smoothing` pseudo-counts. Unknown categories use overall accuracy.
    Uses train-split labels of seen models and the table's category of each question id.
    Val (mean over the zoos): smoothing 0/5/20/100 -> 0.6233/0.6233/0.6233/0.6231; default 20 (tied best)."""

    name, uses = "best-per-category", "train-split labels of seen models; the question's category"

    def __init__(self, by: str = "category", smoothing: float = 20.0) -> None:
        super().__init__()
        self.by, self.smoothing = by, smoothing

    def params(self) -> dict[str, Any]:
        return {"by": self.by, "smoothing": self.smoothing}

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        seen = [m for m in models if m in data.seen]
        q = data.table.questions
        if self.by not in q.columns:
            raise RoutingError(f"best-per-category: the table has no {self.by!r} column")
        self.group_of = dict(zip(q["question_id"].astype(str), q[self.by].fillna("").astype(str)))
        y = data.labels(data.train_ids, seen)                                # (N, M)
        names = sorted({self.group_of[i] for i in data.train_ids})
        self.index = {g: k for k, g in enumerate(names)}
        self.overall = np.nanmean(y, axis=0)
        groups = np.array([self.index[self.group_of[i]] for i in data.train_ids], dtype=np.int64)
        self.table_ = _smoothed_mean(y, groups, len(names), self.overall, self.smoothing)
        return seen

    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        rows = [self.index.get(self.group_of.get(i, "\0"), -1) for i in question_ids]
        return np.stack([self.table_[r] if r >= 0 else self.overall for r in rows]) if rows else \
            np.zeros((0, len(self.models_)))


class KNNRouter(BaseRouter):
    """p_correct of a model = its mean score on the `k` train instructions nearest by cosine similarity of the
    embeddings (NaN-aware; the model's train accuracy where no neighbour has a result). Uses train-split
    instructions and labels of seen models.
    Val (mean over the zoos): k 10/25/50/100/200/400 -> 0.5597/0.5960/0.6074/0.6158/0.6156/0.6179; default 400."""

    name, uses = "knn", "train-split instruction embeddings and labels of seen models"

    def __init__(self, k: int = 400, chunk: int = 1024) -> None:
        super().__init__()
        self.k, self.chunk = k, chunk

    def params(self) -> dict[str, Any]:
        return {"k": self.k}

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        seen = [m for m in models if m in data.seen]
        self.x = data.embeddings(data.train_ids)                             # (N, D)
        self.y = data.labels(data.train_ids, seen)                           # (N, M)
        self.prior = np.nanmean(self.y, axis=0)
        return seen

    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        e = unit(self.data.embed(instructions))                              # (Q, D)
        k = min(self.k, len(self.x))
        out = np.empty((len(e), self.y.shape[1]))
        for s in range(0, len(e), self.chunk):
            sim = e[s:s + self.chunk] @ self.x.T                              # (C, N)
            nbr = np.argpartition(-sim, k - 1, axis=1)[:, :k]                 # (C, k)
            yn = self.y[nbr]                                                  # (C, k, M)
            n = (~np.isnan(yn)).sum(axis=1)
            out[s:s + self.chunk] = np.where(n > 0, np.nansum(yn, axis=1) / np.maximum(n, 1), self.prior)
        return out


class MLPRouter(BaseRouter):
    """A multi-label MLP (embedding -> hidden -> one logit per seen model) trained with masked binary cross-
    entropy on the train split, early-stopped on the val split's loss. Fixed zoo: it cannot score unseen models.
    Val (mean over the zoos): hidden 64/256/1024 -> 0.6125/0.6139/0.6164; default 1024."""

    name, uses = "mlp", "train-split instruction embeddings and labels of seen models; val split for early stopping"

    def __init__(self, hidden: int = 1024, dropout: float = 0.1, lr: float = 1e-3, weight_decay: float = 1e-4,
                 max_epochs: int = 200, patience: int = 10, batch_size: int = 256, seed: int = 0) -> None:
        super().__init__()
        self.hidden, self.dropout, self.lr, self.weight_decay = hidden, dropout, lr, weight_decay
        self.max_epochs, self.patience, self.batch_size, self.seed = max_epochs, patience, batch_size, seed

    def params(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "dropout": self.dropout, "lr": self.lr, "epochs": getattr(self, "epochs_", None)}

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        seen = [m for m in models if m in data.seen]
        torch.manual_seed(self.seed)
        x, y = torch.from_numpy(data.embeddings(data.train_ids)), torch.from_numpy(data.labels(data.train_ids, seen))
        val = (torch.from_numpy(data.embeddings(data.val_ids)), torch.from_numpy(data.labels(data.val_ids, seen))) \
            if data.val_ids else None
        self.net = nn.Sequential(nn.Linear(x.shape[1], self.hidden), nn.GELU(), nn.Dropout(self.dropout),
                                 nn.Linear(self.hidden, len(seen)))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)   # tiny matrices: extra threads only add sync overhead (10x slower on a busy CPU)
        try:
            self._train(x, y, val)
        finally:
            torch.set_num_threads(threads)
        self.net.eval()
        return seen

    def _loss(self, x: Any, y: Any) -> Any:
        """Binary cross-entropy over the (instruction, model) pairs that have a label."""
        mask = ~torch.isnan(y)
        return torch.nn.functional.binary_cross_entropy_with_logits(self.net(x)[mask], y[mask].float())

    def _train(self, x: Any, y: Any, val: tuple[Any, Any] | None) -> None:
        """Mini-batch AdamW; keep the weights of the best val loss, stop after `patience` epochs without gain
        (without a val split: 50 epochs)."""
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        best, best_state, stale, self.epochs_ = math.inf, None, 0, None
        for epoch in range(self.max_epochs if val is not None else 50):
            self.net.train()
            for b in torch.randperm(len(x), generator=gen).split(self.batch_size):
                opt.zero_grad()
                self._loss(x[b], y[b]).backward()
                opt.step()
            if val is None:
                continue
            self.net.eval()
            with torch.no_grad():
                loss = float(self._loss(*val))
            if loss < best - 1e-5:
                best, stale, self.epochs_ = loss, 0, epoch + 1
                best_state = {k: v.clone() for k, v in self.net.state_dict().items()}
            elif (stale := stale + 1) >= self.patience:
                break
        if best_state is not None:
            self.net.load_state_dict(best_state)

    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(self.net(torch.from_numpy(unit(self.data.embed(instructions))))).double().numpy()


class UniRouteRouter(BaseRouter):
    """UniRoute-style K-means routing (arXiv 2502.08773): K-means on the *unlabelled* train-split instruction
    embeddings; each model's per-cluster accuracy is estimated on its aptitude questions falling in that cluster
    (shrunk toward its aptitude accuracy with `smoothing` pseudo-counts); an instruction goes to its cluster's
    estimate (error = 1 − that). Needs no labels of routed models, so it handles unseen models.
    Val (mean over the zoos), K 2/5/10/20/40 × smoothing 5/20/50: best K=10, smoothing 50 (0.6107; K=2 and 5 reach
    0.6104/0.6101 at their best smoothing, K=40 at most 0.6035); the defaults."""

    name, handles_unseen = "uniroute-kmeans", True
    uses = "train-split instruction embeddings (no labels) for clustering; aptitude results of every model"

    def __init__(self, n_clusters: int = 10, smoothing: float = 50.0, seed: int = 0) -> None:
        super().__init__()
        self.n_clusters, self.smoothing, self.seed = n_clusters, smoothing, seed

    def params(self) -> dict[str, Any]:
        return {"n_clusters": self.n_clusters, "smoothing": self.smoothing}

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        x = data.embeddings(data.train_ids)
        if len(x) < self.n_clusters:
            raise RoutingError(f"uniroute-kmeans: {len(x)} train instructions for {self.n_clusters} clusters")
        with threadpool_limits(1):   # ~10k x 384: one thread is fastest (5x faster than 2 on a busy 2-core CPU)
            self.kmeans = KMeans(n_clusters=self.n_clusters, n_init=4, random_state=self.seed).fit(x)
        r = data.aptitude_scores(models)                                     # (A, M)
        cluster = self.kmeans.predict(data.embeddings(data.aptitude.question_ids))
        self.acc = _smoothed_mean(r, cluster, self.n_clusters, np.nanmean(r, axis=0), self.smoothing)   # (K, M)
        return models

    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        return self.acc[self.kmeans.predict(unit(self.data.embed(instructions)))]


class InferenceDynamicsRouter(BaseRouter):
    """InferenceDynamics-style profile routing (arXiv 2505.16303): each model's profile is its per-task accuracy
    on the aptitude test (shrunk toward its aptitude accuracy with `smoothing` pseudo-counts); an instruction's
    task mix is softmax(cos(instruction, task centroid) / temperature), and p_correct = mix · profile. Task
    centroids average the embeddings of the task's aptitude questions and of the train-split instructions whose
    table `task` equals the task's name (metadata only, no labels). Handles unseen models.
    Val (mean over the zoos), temperature 0.01/0.02/0.05/0.1/0.2/0.5/1.0 × smoothing 5/20: best 0.2 with smoothing 20
    (0.6083; 0.01 -> 0.6022; >= 0.5 -> 0.6053: the mix goes flat, i.e. best single by aptitude); the defaults."""

    name, handles_unseen = "inferencedynamics", True
    uses = "aptitude results of every model; train-split instructions' embeddings and task names (no labels)"

    def __init__(self, temperature: float = 0.2, smoothing: float = 20.0) -> None:
        super().__init__()
        self.temperature, self.smoothing = temperature, smoothing

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "smoothing": self.smoothing}

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        apt = data.aptitude
        r = data.aptitude_scores(models)                                     # (A, M), task-major
        task_of = np.repeat(np.arange(apt.num_tasks), apt.per_task)
        self.profile = _smoothed_mean(r, task_of, apt.num_tasks, np.nanmean(r, axis=0), self.smoothing)  # (T, M)
        q = data.table.questions
        extra: dict[str, list[str]] = {}
        if "task" in q.columns:
            train = q[q["question_id"].isin(set(data.train_ids))]
            extra = train.groupby(train["task"].astype(str))["question_id"].agg(list).to_dict()
        cents = []
        for t in apt.tasks:
            cents.append(data.embeddings(t.question_ids + extra.get(t.name, [])).mean(axis=0))
        self.centroids = unit(np.stack(cents))                               # (T, D)
        return models

    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        logits = unit(self.data.embed(instructions)) @ self.centroids.T / self.temperature   # (Q, T)
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (w / w.sum(axis=1, keepdims=True)) @ self.profile


class ModelSATRouter(BaseRouter):
    """Model-SAT from a checkpoint (`modelsat.router.Router`): p_correct from the trained router. Unseen models
    (and zoo models missing from the checkpoint's zoo) join through their aptitude results from the table."""

    name, handles_unseen = "model-sat", True
    uses = "the trained checkpoint; aptitude results of models added to its zoo"

    def __init__(self, checkpoint: str | Path | None = None, router: Any = None) -> None:
        super().__init__()
        if checkpoint is None and router is None:
            raise RoutingError("model-sat needs a checkpoint folder (or a loaded Router)")
        self.checkpoint, self.router, self.notes = checkpoint, router, []

    def params(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint) if self.checkpoint else None}

    def _fit(self, data: RoutingData, models: list[str]) -> list[str]:
        if self.router is None:
            self.router = Router.from_checkpoint(self.checkpoint)
        if self.router.aptitude.fingerprint != data.aptitude.fingerprint:
            raise RoutingError("model-sat: the checkpoint's aptitude test differs from the evaluation's "
                               "(fingerprints differ); evaluate with the checkpoint's aptitude.json")
        res = data.table.results
        apt = res[res["question_id"].isin(set(data.aptitude.question_ids))]
        for m in models:
            if m in data.seen and m in self.router.models:
                continue
            if m in self.router.models:
                self.router.remove_model(m)
                self.notes.append(f"{m} was in the checkpoint's zoo; re-added from its aptitude results")
            elif m in data.seen:
                self.notes.append(f"{m} is not in the checkpoint's zoo: added from its aptitude results")
            rows = apt[apt["model"] == m][["model", "question_id", "score"]]
            self.router.add_model(m, rows, **data.table.model_meta(m))    # cost or params_b, in the zoo's unit
        return models

    def _predict(self, question_ids: list[str], instructions: list[str]) -> np.ndarray:
        return np.asarray(self.router.predict_matrix(instructions, self.models_, progress=len(instructions) > 64))


def default_routers(seed: int = 0, checkpoint: str | Path | None = None) -> list[BaseRouter]:
    """Every baseline with its default hyper-parameters, plus Model-SAT when a checkpoint is given."""
    routers: list[BaseRouter] = [RandomRouter(seed), BestSingleRouter(), BestPerCategoryRouter(), KNNRouter(),
                                 MLPRouter(seed=seed), UniRouteRouter(seed=seed), InferenceDynamicsRouter()]
    if checkpoint is not None:
        routers.append(ModelSATRouter(checkpoint))
    return routers


ROUTER_NAMES = ["random", "best-single", "best-per-category", "knn", "mlp", "uniroute-kmeans",
                "inferencedynamics", "model-sat"]
