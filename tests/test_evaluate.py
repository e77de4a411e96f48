"""The evaluation: metrics with known values on a synthetic table, outputs, the unseen setting, the CLI entry and
bad arguments. The table: category math (model A perfect, B wrong) and law (the reverse); C right on exactly 60%
of each split of each category; D like B, used as an unseen model. Costs A 1, B 2, C 4, D 3."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from modelsat.aptitude import Aptitude, AptitudeTask
from modelsat.baselines import (BestPerCategoryRouter, BestSingleRouter, InferenceDynamicsRouter, KNNRouter,
                                MLPRouter, RandomRouter, UniRouteRouter)
from modelsat.data.splits import save_splits
from modelsat.data.table import RoutingTable
from modelsat.embedding import hashing_embed
from modelsat.evaluate import EvaluationError, evaluate, resolve_zoo, run_evaluate_cli
from modelsat.metrics import (bootstrap_ci, choice_weights, cost_curve, frontier_auc, interaction_auc,
                              interaction_auc_diff, reliability, router_metrics)
from modelsat.report import write_outputs

from test_baselines import WORDS, make_world  # noqa: E402 - the same synthetic world


def routers() -> list:
    return [RandomRouter(), BestSingleRouter(), BestPerCategoryRouter(), KNNRouter(k=5), MLPRouter(hidden=64, max_epochs=60),
            UniRouteRouter(n_clusters=2, smoothing=1), InferenceDynamicsRouter(temperature=0.02, smoothing=1)]


@pytest.fixture(scope="module")
def seen_metrics():
    table, aptitude, splits = make_world()
    return evaluate(table, splits, aptitude, ["A", "B", "C"], routers=routers(), embed=hashing_embed, log=lambda m: None)


# ------------------------------------------------------------------------------------------ metric functions
def test_choice_weights_split_ties_and_apply_cost():
    pred = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.35]])
    np.testing.assert_allclose(choice_weights(pred, np.zeros(3)), [[0.5, 0.5, 0], [0, 1, 0]])
    np.testing.assert_allclose(choice_weights(pred, np.array([0.1, 1.0, 0.2]), 1.0), [[1, 0, 0], [0, 0, 1]])


def test_bootstrap_ci_is_seeded_and_paired():
    assert bootstrap_ci(np.full(50, 0.25)) == pytest.approx((0.25, 0.25))
    d = np.random.default_rng(1).normal(0.1, 1.0, 400)
    lo, hi = bootstrap_ci(d, seed=3)
    assert (lo, hi) == bootstrap_ci(d, seed=3) and lo < d.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.2)


def test_frontier_auc_known_areas():
    assert frontier_auc([0, 1], [0.5, 0.7], 0, 1) == pytest.approx(0.6)
    assert frontier_auc([0, 0.5, 1], [0.5, 0.5, 0.7], 0, 1) == pytest.approx(0.6)    # below the envelope
    assert frontier_auc([0, 0.5, 1], [0.5, 0.8, 0.7], 0, 1) == pytest.approx(0.725)  # flat after the best point
    assert frontier_auc([0.5, 1], [0.6, 0.8], 0, 1) == pytest.approx(0.35)           # nothing reachable below 0.5
    assert frontier_auc([2, 2], [0.4, 0.6], 2, 2) == pytest.approx(0.6)              # all costs equal


def test_cost_curve_of_a_perfect_predictor():
    table, _, splits = make_world()
    y = table.outcome_matrix(splits["test"], ["A", "B", "C"]).astype(float)
    raw = np.array([1.0, 2.0, 4.0])
    curve = cost_curve(y.copy(), y, raw / 4, raw, target=0.6)
    first, last = curve["points"][0], curve["points"][-1]
    assert first["cost_weight"] == 0 and first["accuracy"] == 1.0
    assert last["accuracy"] == 0.5 and last["mean_cost"] == 1.0           # always A, the cheapest
    assert curve["cost_at_best_single"]["accuracy"] >= 0.6
    assert curve["cost_at_best_single"]["mean_cost"] == pytest.approx(1.5)  # A on math, B on law: no C needed
    assert 0.5 <= curve["auc"] <= 1.0


# ------------------------------------------------------------------------------------------ evaluate()
def test_interaction_auc_separates_a_fixed_ranking_from_routing():
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=float)
    prior = np.tile([0.75, 0.5, 0.25], (4, 1)) + np.array([[0], [0.125], [0.25], [0.375]])  # prior + difficulty
    assert interaction_auc(prior, y) == pytest.approx(0.5)                        # (dyadic values: exact ties)
    assert interaction_auc(y + prior, y) == pytest.approx(1.0)                    # the residual routes perfectly
    assert interaction_auc(-y, y) == pytest.approx(0.0)
    assert np.isnan(interaction_auc(prior, np.ones_like(y)))                     # every model right: undefined
    assert interaction_auc(np.tile([0.1, 0.7, 0.3], (3, 1)), np.tile([1.0, 0, 0], (3, 1))) == 0.5  # inexact mean: ties
    rng = np.random.default_rng(0)                                                  # a float32 prior, 800 rows
    prior32 = np.tile(rng.random(8, dtype=np.float32), (800, 1))
    assert interaction_auc(prior32, (rng.random((800, 8)) < 0.5).astype(float)) == 0.5


def test_interaction_auc_is_the_mean_of_sklearns_per_instruction_aucs():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(1)
    pred = np.round(rng.random((200, 6)), 1)                                        # many ties
    pred[:, 4] = pred[:, 3]
    y = (rng.random((200, 6)) < 0.5).astype(float)
    residual = np.round(pred - pred.mean(axis=0), 9)
    rows = [i for i in range(200) if 0 < y[i].sum() < 6]
    assert interaction_auc(pred, y) == pytest.approx(np.mean([roc_auc_score(y[i], residual[i]) for i in rows]))


def test_interaction_auc_diff_is_paired_and_its_ci_covers_it():
    rng = np.random.default_rng(2)
    y = (rng.random((300, 5)) < 0.5).astype(float)
    prior = np.tile(rng.random(5), (300, 1))
    informed = prior + 0.3 * y + rng.normal(0, 0.3, y.shape)                       # reads the outcomes a little
    d = interaction_auc_diff(informed, prior, y, n=200)
    assert d["diff"] == pytest.approx(interaction_auc(informed, y) - interaction_auc(prior, y))
    assert 0 < d["ci"][0] <= d["diff"] <= d["ci"][1]                               # clearly better: CI above 0
    assert interaction_auc_diff(prior, prior, y, n=50) == {"diff": 0.0, "ci": [0.0, 0.0]}
    assert interaction_auc_diff(informed, prior, y, n=50, seed=3) == interaction_auc_diff(informed, prior, y, n=50,
                                                                                           seed=3)
    with pytest.raises(ValueError, match="equal"):
        interaction_auc_diff(prior[:, :4], prior, y)


def test_evaluate_known_values(seen_metrics):
    m = seen_metrics
    assert m["n_instructions"] == 20 and m["n_dropped_missing"] == 0
    assert m["oracle"] == 1.0 and m["random"] == pytest.approx((0.5 + 0.5 + 0.6) / 3)
    assert m["best_single"]["model"] == "C" and m["best_single"]["accuracy"] == pytest.approx(0.6)
    r = m["routers"]
    assert r["random"]["accuracy"] == pytest.approx(m["random"]) and "brier" not in r["random"]
    assert r["best-single"]["gain"] == 0 and r["best-single"]["gap_closed"] == 0
    assert r["best-single"]["picks"] == {"A": 0, "B": 0, "C": 1}
    for name in ("best-per-category", "knn", "mlp", "uniroute-kmeans", "inferencedynamics"):
        assert r[name]["accuracy"] == 1.0, name
        assert r[name]["gain"] == pytest.approx(0.4) and r[name]["gap_closed"] == pytest.approx(1.0)
        lo, hi = r[name]["gain_ci"]
        assert 0 < lo <= 0.4 <= hi
        assert r[name]["per_category"] == {"law": 1.0, "math": 1.0}
        assert r[name]["picks"] == {"A": 0.5, "B": 0.5, "C": 0.0}
        assert r[name]["picks_per_category"]["math"]["A"] == 1.0
    # smoothing 20 toward the overall 0.5 turns A's 1.0 on math into 0.75 (20 train questions per category)
    assert r["best-per-category"]["brier"] == pytest.approx((0.25**2 + 0.25**2 + 0.24) / 3)
    assert r["best-single"]["brier"] == pytest.approx((0.25 + 0.25 + 0.24) / 3)
    assert r["model-sat"] == {"applicable": False, "reason": "absent: no checkpoint given"}
    assert m["categories"]["math"] == {"n": 10, "oracle": 1.0, "best_single": 0.6}


def test_evaluate_unseen_models(tmp_path):
    table, aptitude, splits = make_world()
    m = evaluate(table, splits, aptitude, ["A", "C"], unseen=["D"], routers=routers(), embed=hashing_embed,
                 out=tmp_path / "out", zoo="synth", log=lambda m: None)
    assert m["models"] == ["A", "C", "D"] and m["unseen"] == ["D"]
    r = m["routers"]
    for name in ("best-per-category", "knn", "mlp"):
        assert r[name]["applicable"] is False and "unseen" in r[name]["reason"], name
    for name in ("uniroute-kmeans", "inferencedynamics"):
        assert r[name]["accuracy"] == 1.0 and r[name]["picks"]["D"] == 0.5
    assert r["best-single"]["picks"]["C"] == 1.0                       # D's aptitude accuracy is 0.5 < 0.6
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| knn | n/a |" in report and "unseen: D" in report


def test_model_sat_is_compared_with_every_other_router_on_the_same_instructions(tmp_path):
    class Stand(BestSingleRouter):                 # stands in for Model-SAT: always C, right on 60%
        name = "model-sat"

    table, aptitude, splits = make_world()
    m = evaluate(table, splits, aptitude, ["A", "B", "C"], routers=[Stand(), BestSingleRouter(), KNNRouter(k=5)],
                 embed=hashing_embed, out=tmp_path / "out", log=lambda m: None)
    versus = m["routers"]["model-sat"]["versus"]
    assert set(versus) == {"best-single", "knn"}
    assert versus["best-single"] == {"diff": 0.0, "ci": [0.0, 0.0],       # the same picks: no difference at all
                                     "interaction_auc": {"diff": 0.0, "ci": [0.0, 0.0]}}
    assert versus["knn"]["diff"] == pytest.approx(-0.4)                  # kNN is right on every instruction
    lo, hi = versus["knn"]["ci"]
    assert lo <= -0.4 <= hi < 0
    assert "versus" not in m["routers"]["knn"]
    assert "Model-SAT − each other router" in (tmp_path / "out" / "report.md").read_text()


def test_model_sat_auc_is_compared_on_the_same_pairs_and_on_the_labelled_models(tmp_path):
    class Stand(KNNRouter):                        # stands in for Model-SAT: a coarser kNN
        name = "model-sat"

    table, aptitude, splits = make_world()
    m = evaluate(table, splits, aptitude, ["A", "B", "C"], routers=[Stand(k=15), KNNRouter(k=5), RandomRouter()],
                 embed=hashing_embed, out=tmp_path / "out", log=lambda m: None, aptitude_only=["C"])
    r, versus = m["routers"], m["routers"]["model-sat"]["versus"]
    auc = versus["knn"]["interaction_auc"]
    assert auc["diff"] == pytest.approx(r["model-sat"]["interaction_auc"] - r["knn"]["interaction_auc"])
    assert auc["ci"][0] <= auc["diff"] <= auc["ci"][1]
    assert "interaction_auc_labelled" in versus["knn"]                   # over A and B, the models known by label
    assert "interaction_auc" not in versus["random"]                     # no probabilities: accuracy only
    assert m["aptitude_only"] == ["C"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "interaction AUC on the same pairs" in report and "all but C" in report


def test_missing_results_are_dropped_and_counted():
    table, aptitude, splits = make_world()
    r = table.results
    table = RoutingTable(table.questions, r[~((r.model == "B") & (r.question_id == "law-40"))], table.models)
    m = evaluate(table, splits, aptitude, ["A", "B", "C"], routers=[BestSingleRouter()], embed=hashing_embed,
                 log=lambda m: None)
    assert m["n_instructions"] == 19 and m["n_dropped_missing"] == 1


def test_outputs_are_written(tmp_path, seen_metrics):

    write_outputs(seen_metrics, tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"metrics.json", "report.md", "cost_quality.png", "reliability.png", "picks-knn.png",
            "picks-random.png"} <= files
    assert "picks-model-sat.png" not in files
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert set(doc) >= {"zoo", "split", "n_instructions", "oracle", "random", "best_single", "routers"}
    assert set(doc["routers"]["knn"]) >= {"accuracy", "gain", "gain_ci", "gap_closed", "brier",
                                          "interaction_auc", "picks", "per_category", "cost_curve"}
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert sum(line.startswith("| knn |") for line in lines) == 1


# ------------------------------------------------------------------------------------------ CLI and errors
def write_world(tmp_path):
    table, aptitude, splits = make_world()
    table.save(tmp_path / "table")
    aptitude.save(tmp_path / "aptitude.json")
    save_splits(splits, tmp_path / "splits.json", aptitude)
    (tmp_path / "zoos.json").write_text(json.dumps({"_note": "x", "pair": ["A", "B"], "all": "every model"}))
    return tmp_path


def cli_args(tmp_path, **kw) -> argparse.Namespace:
    base = dict(checkpoint=None, table=str(tmp_path / "table"), split="test", splits=str(tmp_path / "splits.json"),
                aptitude=str(tmp_path / "aptitude.json"), zoo="pair", zoos=str(tmp_path / "zoos.json"), models=None,
                unseen=None, encoder="hash", out=str(tmp_path / "eval"), seed=0)
    return argparse.Namespace(**{**base, **kw})


def test_run_evaluate_cli_writes_the_three_outputs(tmp_path):
    write_world(tmp_path)
    m = run_evaluate_cli(cli_args(tmp_path, unseen="C"))
    assert m["zoo"] == "pair" and m["models"] == ["A", "B", "C"] and m["unseen"] == ["C"]
    out = tmp_path / "eval"
    assert (out / "metrics.json").is_file() and (out / "report.md").is_file() and (out / "cost_quality.png").is_file()
    assert json.loads((out / "metrics.json").read_text())["routers"]["knn"]["applicable"] is False


def test_bad_arguments_give_clear_errors(tmp_path):
    table, aptitude, splits = make_world()
    with pytest.raises(EvaluationError, match=r"unknown zoo 'huge'; known zoos: all, pair"):
        resolve_zoo(table.model_names, {"pair": ["A", "B"]}, "huge", None)
    with pytest.raises(EvaluationError, match=r"unknown model\(s\) \['Z'\]"):
        resolve_zoo(table.model_names, None, None, ["A", "Z"])
    with pytest.raises(EvaluationError, match="not both"):
        resolve_zoo(table.model_names, {"pair": ["A"]}, "pair", ["A"])
    assert resolve_zoo(table.model_names, {"all": "every model"}, "all", None) == ("all", ["A", "B", "C", "D"])
    with pytest.raises(EvaluationError, match="split 'test' is empty"):
        evaluate(table, {**splits, "test": []}, aptitude, ["A"], routers=[], embed=hashing_embed)
    with pytest.raises(EvaluationError, match="unknown split 'dev'"):
        evaluate(table, splits, aptitude, ["A"], split="dev", routers=[], embed=hashing_embed)
    with pytest.raises(EvaluationError, match=r"unknown model\(s\) \['Q'\]"):
        evaluate(table, splits, aptitude, ["A"], unseen=["Q"], routers=[], embed=hashing_embed)
    write_world(tmp_path)
    with pytest.raises(EvaluationError, match="unknown zoo"):
        run_evaluate_cli(cli_args(tmp_path, zoo="nope"))


@pytest.mark.needs_data
def test_cli_runs_on_the_raw_mmlu_pro_folder(shared_data, tmp_path):
    """`modelsat evaluate --table ../shared/data/mmlu_pro`: converted on the fly, aptitude and splits built and saved."""
    args = cli_args(tmp_path, table=str(shared_data / "mmlu_pro"), splits=None, aptitude=None, zoo="large",
                    zoos=str(shared_data / "mmlu_pro" / "zoos.json"), unseen="Qwen1.5-110B",
                    routers="best-single,best-per-category,inferencedynamics")
    m = run_evaluate_cli(args)
    assert "Qwen1.5-110B" in m["models"] and len(m["models"]) == 5 and m["unseen"] == ["Qwen1.5-110B"]
    assert m["n_instructions"] > 1500 and m["n_dropped_missing"] > 0        # DeepSeek-Coder-V2 lacks questions
    assert m["best_single"]["model"] == "gemini-1.5-pro-002" and m["cost"]["unknown"] == ["gemini-1.5-pro-002"]
    assert m["routers"]["best-per-category"]["applicable"] is False
    assert 0.5 < m["routers"]["inferencedynamics"]["accuracy"] <= m["oracle"]
    out = tmp_path / "eval"
    assert {"metrics.json", "report.md", "cost_quality.png", "aptitude.json", "splits.json"} <= {p.name for p in out.iterdir()}


def test_router_metrics_choose_by_pred_and_score_it():
    """The router chooses by its predictions (ties split evenly), and Brier scores the same predictions."""

    pred = np.array([[0.6, 0.55], [0.6, 0.6], [0.4, 0.5]])
    y = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    args = (y, 0, np.array(["a", "a", "b"]), ["m0", "m1"], np.array([0.0, 1.0]), np.array([1.0, 2.0]), 1.0, True, 0)
    m = router_metrics(pred, *args)
    assert m["accuracy"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert m["picks"] == pytest.approx({"m0": 1.5 / 3, "m1": 1.5 / 3})
    assert m["brier"] == pytest.approx(np.mean((pred - y) ** 2))
    assert m["cost_curve"]["points"][0]["mean_cost"] == pytest.approx((1.0 + 1.5 + 2.0) / 3)   # at cost weight 0

def test_the_reliability_diagram_and_its_ece_by_hand() -> None:

    pred = np.array([[0.05, 0.15], [0.12, 0.95], [1.0, 0.98]])
    y = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    r = reliability(pred, y, bins=10)
    by_lo = {round(b["lo"], 1): b for b in r["bins"]}
    assert by_lo[0.0] == {"lo": 0.0, "hi": 0.1, "n": 1, "mean_p": 0.05, "freq": 0.0}
    assert by_lo[0.1]["n"] == 2 and by_lo[0.1]["mean_p"] == pytest.approx(0.135) and by_lo[0.1]["freq"] == 0.5
    assert by_lo[0.9]["n"] == 3 and by_lo[0.9]["freq"] == pytest.approx(2 / 3)   # p = 1.0 falls in the last bin
    assert by_lo[0.5] == {"lo": 0.5, "hi": 0.6, "n": 0, "mean_p": None, "freq": None}
    by_hand = (1 * 0.05 + 2 * abs(0.5 - 0.135) + 3 * abs(2 / 3 - (0.95 + 1.0 + 0.98) / 3)) / 6
    assert r["ece"] == pytest.approx(by_hand)
