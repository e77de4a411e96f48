"""`modelsat calibrate`: the smallest cost_weight meeting a budget, checked against the router's own rankings on the
tiny checkpoint with known costs."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from modelsat.calibrate import CalibrationError, calibrate
from modelsat.router import read_instructions

INSTRUCTIONS = [f"A {cat} question about {task} number {i}: which option is right?\nA. one\nB. two\nC. three"
                for cat, task in [("math", "algebra"), ("biology", "genetics"), ("law", "torts"), ("math", "geometry")]
                for i in range(5)]


@pytest.fixture(scope="module")
def router(tiny_checkpoint: Path):
    """The tiny router, its zoo re-priced in memory: the model it picks most at cost_weight 0 costs 10, the others
    1, 2, 3, ... (USD/query), so that a cost_weight has something to trade."""
    from modelsat.router import Router

    r = Router.from_checkpoint(tiny_checkpoint)
    favourite = Counter(row[0].model for row in r.rank_many(INSTRUCTIONS)).most_common(1)[0][0]
    others = iter(range(1, 100))
    for name in list(r.models):
        entry = r.zoo.get(name)
        r.remove_model(name)
        r.add_model(name, dict(entry.scores), cost=10.0 if name == favourite else float(next(others)),
                    cost_unit="USD/query")
    return r


def top_picks(router, w: float) -> list:
    return [row[0] for row in router.rank_many(INSTRUCTIONS, cost_weight=w)]


def test_share_of_the_most_expensive_is_met_at_the_smallest_weight(router) -> None:
    base = top_picks(router, 0.0)
    expensive = max(router.zoo.get(m).cost for m in router.models)
    share0 = sum(p.cost == expensive for p in base) / len(base)
    assert share0 > 0.2                                   # the budget binds
    result = calibrate(router, INSTRUCTIONS, max_share_expensive=0.2)
    w = result["cost_weight"]
    picks = top_picks(router, w)                          # the router itself, at the chosen weight
    share = sum(p.cost == expensive for p in picks) / len(picks)
    assert share <= 0.2 and result["share_expensive"] == pytest.approx(share)
    assert result["mean_cost"] == pytest.approx(sum(p.cost for p in picks) / len(picks))
    assert result["expected_accuracy"] == pytest.approx(sum(p.p_correct for p in picks) / len(picks))
    assert result["picks"] == dict(Counter(p.model for p in picks))
    below = top_picks(router, w * (1 - 1e-4))             # a hair less weight misses the budget: the smallest
    assert sum(p.cost == expensive for p in below) / len(below) > 0.2
    assert result["at_cost_weight_0"]["share_expensive"] == pytest.approx(share0)
    assert result["cost_unit"] == "USD/query"
    assert result["most_expensive"] == [m for m in router.models if router.zoo.get(m).cost == expensive]
    assert result["search"].startswith("bisection") and result["instructions"] == len(INSTRUCTIONS)


def test_mean_cost_budget(router) -> None:
    base = calibrate(router, INSTRUCTIONS, max_mean_cost=1e9)
    assert base["cost_weight"] == 0.0                     # already met: no penalty needed
    target = (base["mean_cost"] + 1.0) / 2                # between the cheapest model's cost and today's mean
    result = calibrate(router, INSTRUCTIONS, max_mean_cost=target)
    picks = top_picks(router, result["cost_weight"])
    mean = sum(p.cost for p in picks) / len(picks)
    assert mean <= target and result["mean_cost"] == pytest.approx(mean) and result["cost_weight"] > 0
    below = top_picks(router, result["cost_weight"] * (1 - 1e-4))
    assert sum(p.cost for p in below) / len(below) > target


def test_budgets_that_cannot_be_met_or_are_malformed(router) -> None:
    with pytest.raises(CalibrationError, match="cannot be met .* even routing each to its best cheapest candidate"):
        calibrate(router, INSTRUCTIONS, max_mean_cost=0.5)          # below the cheapest model's cost (1)
    with pytest.raises(CalibrationError, match="exactly one budget"):
        calibrate(router, INSTRUCTIONS, max_share_expensive=0.2, max_mean_cost=3.0)
    with pytest.raises(CalibrationError, match=r"--max-share-expensive \(a fraction in \[0, 1\]\)"):
        calibrate(router, INSTRUCTIONS, max_share_expensive=1.5)
    with pytest.raises(CalibrationError, match="--max-mean-cost"):
        calibrate(router, INSTRUCTIONS, max_mean_cost=float("nan"))


def test_cli_prints_json_and_refuses_bad_input_in_one_line(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    from modelsat.cli import main

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    file = tmp_path / "sample.jsonl"
    file.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in INSTRUCTIONS[:6]) + "\n")
    assert read_instructions(file) == INSTRUCTIONS[:6]
    assert main(["calibrate", "--checkpoint", str(ckpt), "--instructions", str(file), "--max-share-expensive", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cost_weight"] == 0.0 and out["instructions"] == 6 and out["target"] == {"share_expensive": 1.0}
    assert set(out) >= {"share_expensive", "mean_cost", "expected_accuracy", "picks", "most_expensive", "cost_unit"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "fine"}\n{"text": "no field"}\n')
    assert main(["calibrate", "--checkpoint", str(ckpt), "--instructions", str(bad), "--max-mean-cost", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'line 2 needs a string field "instruction"' in err
    with pytest.raises(SystemExit):                       # argparse: one budget, not both
        main(["calibrate", "--checkpoint", str(ckpt), "--instructions", str(file), "--max-mean-cost", "1",
              "--max-share-expensive", "0.2"])
