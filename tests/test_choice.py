"""One choice rule (modelsat/choice.py) for Model-SAT's Router, the baselines and the evaluation: the utility is
p_correct − cost_weight · cost / max cost, computed here by hand, with no other term."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelsat import Router
from modelsat.baselines import BestSingleRouter, RoutingData
from modelsat.checkpoint import CheckpointError
from modelsat.choice import Ranked, choice_weights, normalised_costs, ranking, utilities
from modelsat.embedding import hashing_embed
from modelsat.metrics import choice_weights as evaluation_choice

INSTRUCTIONS = ["What is 2+2?\nA. 3\nB. 4", "Name the law of torts that covers negligence.", "A cell divides."]


def _with_route(tiny_checkpoint: Path, tmp_path: Path, **route) -> Path:
    """A copy of the checkpoint whose config.yaml carries the `route:` section of checkpoints written before the
    route priors were removed."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    cfg = yaml.safe_load((ckpt / "config.yaml").read_text())
    assert "route" not in cfg                                        # today's checkpoints have no route section
    cfg["route"] = route
    (ckpt / "config.yaml").write_text(yaml.safe_dump(cfg))
    return ckpt


@pytest.mark.parametrize("cost_weight", [0.0, 0.7])
def test_router_utility_is_p_correct_less_the_cost_term_and_nothing_else(tiny_checkpoint, cost_weight):
    router = Router.from_checkpoint(tiny_checkpoint)
    models = router.models
    p = router.predict_matrix(INSTRUCTIONS, models)                                     # (Q, M)
    costs = np.array([router.zoo.get(m).cost for m in models], dtype=float)
    assert np.isfinite(costs).all() and len(set(costs)) > 1         # the cost term differs between candidates
    by_hand = p - cost_weight * costs / costs.max()
    for q, ranked in enumerate(router.rank_many(INSTRUCTIONS, cost_weight=cost_weight)):
        got = {r.model: r.utility for r in ranked}
        np.testing.assert_allclose([got[m] for m in models], by_hand[q], atol=1e-12, rtol=0)
        assert [r.utility for r in ranked] == sorted((r.utility for r in ranked), reverse=True)
        assert {r.model: r.p_correct for r in ranked} == pytest.approx(dict(zip(models, p[q])))


def test_an_older_checkpoints_zero_route_priors_load_and_change_nothing(tiny_checkpoint, tmp_path):
    old = Router.from_checkpoint(_with_route(tiny_checkpoint, tmp_path, aptitude_prior=0.0, aptitude_neighbours=100,
                                             category_prior=0))
    assert old.config == Router.from_checkpoint(tiny_checkpoint).config          # the section is simply dropped


@pytest.mark.parametrize("key", ["aptitude_prior", "category_prior"])
def test_an_older_checkpoints_hand_weighted_prior_is_refused_in_one_line(tiny_checkpoint, tmp_path, key):
    ckpt = _with_route(tiny_checkpoint, tmp_path, **{key: 2.0})
    with pytest.raises(CheckpointError, match=rf"config.yaml: route.{key}=2.0: hand-weighted route priors are no "
                                              r"longer supported .*model.evidence=true") as e:
        Router.from_checkpoint(ckpt)
    assert "\n" not in str(e.value)


def test_baselines_and_the_evaluation_choose_by_the_same_rule() -> None:
    scores = np.array([[0.6, 0.6, 0.2], [0.1, 0.5, 0.55]])
    costs = np.array([1.0, np.nan, 4.0])
    u = utilities(scores, costs, 0.2)
    np.testing.assert_allclose(u, scores - 0.2 * np.array([0.25, 1.0, 1.0]))
    np.testing.assert_allclose(choice_weights(u), [[1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(evaluation_choice(scores, normalised_costs(costs), 0.2), choice_weights(u))
    assert ranking(["b", "a", "c"], scores[0], costs, utilities(scores, costs)[0]) == [
        Ranked("a", 0.6, None, 0.6), Ranked("b", 0.6, 1.0, 0.6), Ranked("c", 0.2, 4.0, 0.2)]   # a tie goes by name


def test_a_baselines_rank_is_the_shared_ranking() -> None:
    from test_evaluate import make_world

    table, aptitude, splits = make_world()
    models = ["A", "B", "C"]
    data = RoutingData(table, aptitude, splits["train"], splits["val"], seen=models, embed=hashing_embed)
    router = BestSingleRouter().fit(data, models)
    score = router.predict([""], ["anything"], models)[0]
    cost = np.array([router.costs_.get(m, np.nan) for m in models])
    assert router.rank("anything", models, cost_weight=0.3) == ranking(models, score, cost,
                                                                      utilities(score[None], cost, 0.3)[0])
