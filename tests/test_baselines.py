"""Baselines on a synthetic routing table where the right answer is known.

Two categories with disjoint vocabularies: model A is perfect on math and wrong on law, B the reverse, C is right
on exactly 60% of each split of each category (so C is the best single model), and D behaves like B but is only
ever used as an *unseen* model. Costs: A 1, B 2, C 4, D 3.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelsat.aptitude import Aptitude, AptitudeTask
from modelsat.baselines import (BestPerCategoryRouter, BestSingleRouter, InferenceDynamicsRouter, KNNRouter,
                                MLPRouter, ModelSATRouter, RandomRouter, RoutingData, RoutingError, UniRouteRouter,
                                normalised_costs)
from modelsat.data.table import RoutingTable
from modelsat.embedding import hashing_embed

WORDS = {"math": "algebra equation integral derivative matrix polynomial", "law": "court statute contract plaintiff tort appeal"}
N = 45   # per category: 0-9 aptitude, 10-29 train, 30-34 val, 35-44 test (multiples of 5 keep C at exactly 0.6)


def make_world() -> tuple[RoutingTable, Aptitude, dict[str, list[str]]]:
    """The synthetic table, a 2-task aptitude test (10 questions each) and the splits."""
    qs, rs = [], []
    for cat, words in WORDS.items():
        for i in range(N):
            qid = f"{cat}-{i:02d}"
            qs.append({"question_id": qid, "text": f"{words} {cat}{i}", "benchmark": "synth", "category": cat,
                       "task": cat, "source": "synth"})
            right = {"A": cat == "math", "B": cat == "law", "C": i % 5 < 3, "D": cat == "law"}
            rs += [{"model": m, "question_id": qid, "score": float(v)} for m, v in right.items()]
    models = pd.DataFrame({"model": list("ABCD"), "cost": [1.0, 2.0, 4.0, 3.0], "params_b": np.nan, "cost_unit": "usd"})
    table = RoutingTable(pd.DataFrame(qs), pd.DataFrame(rs), models)
    table.validate()
    ids = lambda lo, hi: [f"{c}-{i:02d}" for c in WORDS for i in range(lo, hi)]  # noqa: E731
    tasks = [AptitudeTask(c, c, [f"{c}-{i:02d}" for i in range(10)]) for c in sorted(WORDS)]
    aptitude = Aptitude(tasks, {q: t for q, t in zip(table.questions.question_id, table.questions.text)
                                if int(q[-2:]) < 10})
    return table, aptitude, {"train": ids(10, 30), "val": ids(30, 35), "test": ids(35, 45)}


@pytest.fixture
def world():
    return make_world()


def fitted(router, world, models=("A", "B", "C"), unseen=()):
    table, aptitude, splits = world
    data = RoutingData(table, aptitude, splits["train"], splits["val"], [m for m in models if m not in unseen],
                       hashing_embed)
    return router.fit(data, list(models))


def routed_accuracy(router, world, models=("A", "B", "C")) -> float:
    table, _, splits = world
    ids = splits["test"]
    pred = router.predict(ids, table.texts(ids), list(models))
    y = table.outcome_matrix(ids, list(models))
    return float(y[np.arange(len(ids)), pred.argmax(axis=1)].mean())


@pytest.mark.parametrize("router", [BestPerCategoryRouter(), KNNRouter(k=5), MLPRouter(hidden=64),
                                    UniRouteRouter(n_clusters=2, smoothing=1),
                                    InferenceDynamicsRouter(temperature=0.02, smoothing=1)], ids=lambda r: r.name)
def test_category_aware_routers_reach_the_oracle(world, router):
    assert routed_accuracy(fitted(router, world), world) == 1.0


def test_best_single_picks_c_and_random_ties_everything(world):
    best = fitted(BestSingleRouter(), world)
    np.testing.assert_allclose(best.accuracy, [0.5, 0.5, 0.6])
    assert routed_accuracy(best, world) == pytest.approx(0.6)
    rnd = fitted(RandomRouter(), world)
    assert not rnd.probabilistic and (rnd.predict(["math-40"], ["x"], ["A", "B", "C"]) == 0).all()


def test_probabilities_are_the_known_rates(world):
    table, _, splits = world
    p = fitted(BestPerCategoryRouter(smoothing=0), world).predict(["math-40", "law-40"], ["", ""], ["A", "B", "C"])
    np.testing.assert_allclose(p, [[1, 0, 0.6], [0, 1, 0.6]])
    knn = fitted(KNNRouter(k=5), world)
    p = knn.predict(["math-40"], table.texts(["math-40"]), ["A", "B"])
    np.testing.assert_allclose(p, [[1, 0]])


def test_uniroute_uses_aptitude_per_cluster_with_smoothing(world):
    r = fitted(UniRouteRouter(n_clusters=2, smoothing=0), world)
    p = r.predict(["math-40"], world[0].texts(["math-40"]), ["A", "B", "C"])
    np.testing.assert_allclose(p, [[1.0, 0.0, 0.6]])       # aptitude math questions 0-9: C right on 6 of 10
    r = fitted(UniRouteRouter(n_clusters=2, smoothing=10), world)
    p = r.predict(["math-40"], world[0].texts(["math-40"]), ["A"])
    assert p[0, 0] == pytest.approx((10 + 10 * 0.5) / 20)  # shrunk toward A's aptitude accuracy 0.5


def test_inferencedynamics_mixes_task_profiles(world):
    r = fitted(InferenceDynamicsRouter(temperature=1e6, smoothing=0), world)   # flat mix: mean of the two tasks
    p = r.predict(["law-40"], world[0].texts(["law-40"]), ["A", "B", "C"])
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.6]], atol=1e-5)


def test_unseen_models_only_through_aptitude(world):
    models, unseen = ("A", "C", "D"), ("D",)
    for router in (UniRouteRouter(n_clusters=2, smoothing=1), InferenceDynamicsRouter(temperature=0.02, smoothing=1)):
        assert routed_accuracy(fitted(router, world, models, unseen), world, models) == 1.0
    best = fitted(BestSingleRouter(), world, models, unseen)
    np.testing.assert_allclose(best.accuracy, [0.5, 0.6, 0.5])                # D: its aptitude accuracy
    for router in (KNNRouter(k=5), MLPRouter(hidden=16, max_epochs=2), BestPerCategoryRouter()):
        assert not router.handles_unseen
        r = fitted(router, world, models, unseen)
        with pytest.raises(RoutingError, match="cannot score"):
            r.predict(["math-40"], ["x"], list(models))
    table, aptitude, splits = world
    data = RoutingData(table, aptitude, splits["train"], splits["val"], ["A", "C"], hashing_embed)
    with pytest.raises(RoutingError, match="unseen"):
        data.labels(splits["train"], ["D"])


def test_rank_applies_the_cost_rule(world):
    r = fitted(KNNRouter(k=5), world)
    text = world[0].texts(["math-40"])[0]
    ranked = r.rank(text, ["A", "B", "C"])
    assert [c.model for c in ranked] == ["A", "C", "B"] and ranked[0].cost == 1.0
    ranked = r.rank(text, ["A", "B", "C"], cost_weight=100.0, top_k=2)     # cost dominates: cheapest first
    assert [c.model for c in ranked] == ["A", "B"]
    assert ranked[1].utility == pytest.approx(0 - 100 * 2 / 4)
    with pytest.raises(RoutingError, match="cost_weight"):
        r.rank(text, ["A"], cost_weight=-1)
    with pytest.raises(RoutingError, match="not fitted"):
        KNNRouter().predict(["math-40"], ["x"], ["A"])


def test_normalised_costs_treat_unknown_as_most_expensive():
    np.testing.assert_allclose(normalised_costs(np.array([1.0, np.nan, 4.0])), [0.25, 1.0, 1.0])
    np.testing.assert_allclose(normalised_costs(np.array([np.nan, np.nan])), [0.0, 0.0])


class FakeRouter:
    """Stands in for modelsat.router.Router: p_correct = 0.9 for the category's expert, 0.2 otherwise."""

    def __init__(self, aptitude: Aptitude) -> None:
        self.aptitude, self.models, self.added = aptitude, ["A", "B", "C"], {}

    def add_model(self, name, results, cost=None, params_b=None, cost_unit=""):
        self.added[name] = results
        self.models.append(name)

    def remove_model(self, name):
        self.models.remove(name)

    def predict_matrix(self, instructions, models, progress=False):
        expert = {"A": "algebra", "B": "court", "D": "court"}
        return np.array([[0.9 if expert.get(m, "?") in t else 0.2 for m in models] for t in instructions])


def test_model_sat_adapter_adds_unseen_models_from_aptitude(world):
    table, aptitude, splits = world
    fake = FakeRouter(aptitude)
    r = fitted(ModelSATRouter(router=fake), world, ("A", "C", "D"), ("D",))
    assert set(fake.added) == {"D"}
    added = fake.added["D"]
    assert sorted(added["question_id"]) == sorted(aptitude.question_ids) and set(added["model"]) == {"D"}
    assert routed_accuracy(r, world, ("A", "C", "D")) == 1.0


def test_model_sat_adds_unseen_models_in_the_zoos_cost_unit(tiny_checkpoint, tmp_path):
    """The real Router: an unseen model joins with the cost and unit of the table's models file (a zoo has one
    cost unit, so a cost without its unit would be refused)."""
    from conftest import make_synthetic_table
    from modelsat.data.table import RoutingTable
    from modelsat.router import Router

    router = Router.from_checkpoint(tiny_checkpoint)
    table = RoutingTable.load(make_synthetic_table(tmp_path / "table"))
    assert "m-all" not in router.models and router.zoo.cost_unit == "USD/query"
    ids = table.questions["question_id"].tolist()
    rest = [q for q in ids if q not in set(router.aptitude.question_ids)]
    data = RoutingData(table, router.aptitude, rest[:100], rest[100:120], ["m-math", "m-bio"], hashing_embed)
    ModelSATRouter(router=router).fit(data, ["m-math", "m-bio", "m-all"])
    entry = router.zoo.get("m-all")
    assert (entry.cost, entry.cost_unit) == (4.0, "USD/query")
