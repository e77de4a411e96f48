"""The zoo: add -> list -> remove on disk, atomic writes, and bad results rejected with a clear message."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from modelsat.aptitude import Aptitude, AptitudeError, AptitudeTask
from modelsat.cli import main as cli
from modelsat.zoo import Zoo, ZooError


@pytest.fixture
def aptitude() -> Aptitude:
    tasks = [AptitudeTask(f"t{t}", f"task {t}", [f"q{t}{s}" for s in range(3)]) for t in range(2)]
    return Aptitude(tasks, {q: f"question {q}" for t in tasks for q in t.question_ids})


def results_for(apt: Aptitude, model: str, value: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"model": model, "question_id": apt.question_ids, "score": value})


def test_add_list_remove_round_trip_on_disk(tmp_path: Path, aptitude: Aptitude) -> None:
    zoo = Zoo(aptitude, tmp_path)
    zoo.add("org/model-a", results_for(aptitude, "org/model-a", 1.0), cost=2.0)
    zoo.add("model-b", results_for(aptitude, "model-b", 0.0).drop(columns="model"), params_b=7.0)
    again = Zoo.load(tmp_path, aptitude)
    assert again.names == ["model-b", "org/model-a"]
    assert again.outcomes("org/model-a").shape == (2, 3)
    assert again.outcomes("model-b").sum() == 0
    assert list(again.costs(["org/model-a", "model-b"])) == [2.0, 7.0]
    again.remove("org/model-a")
    assert Zoo.load(tmp_path, aptitude).names == ["model-b"]


def test_long_results_pick_the_named_model(tmp_path: Path, aptitude: Aptitude) -> None:
    both = pd.concat([results_for(aptitude, "a", 1.0), results_for(aptitude, "b", 0.0)])
    Zoo(aptitude, tmp_path).add("b", both)
    assert Zoo.load(tmp_path, aptitude).outcomes("b").max() == 0.0
    with pytest.raises(ZooError, match="no rows for model 'c'"):
        Zoo(aptitude, tmp_path).add("c", both)


def test_failed_write_leaves_the_old_entry(tmp_path: Path, aptitude: Aptitude, monkeypatch) -> None:
    zoo = Zoo(aptitude, tmp_path)
    zoo.add("m", results_for(aptitude, "m", 1.0))
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("modelsat.io_utils.os.replace", crash)
    with pytest.raises(OSError, match="disk full"):
        zoo.add("m", results_for(aptitude, "m", 0.0), replace=True)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before
    assert Zoo.load(tmp_path, aptitude).outcomes("m").min() == 1.0


def test_results_missing_aptitude_questions(tmp_path: Path, aptitude: Aptitude) -> None:
    partial = results_for(aptitude, "m").iloc[:-2]
    with pytest.raises(AptitudeError, match="miss 2 of the 6 aptitude questions"):
        Zoo(aptitude, tmp_path).add("m", partial)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("score, message", [(1.7, "row 0, column 'score'"), ("x", "row 0, column 'score'")])
def test_bad_scores_name_row_and_column(tmp_path: Path, aptitude: Aptitude, score, message: str) -> None:
    df = results_for(aptitude, "m").astype({"score": object})
    df.loc[0, "score"] = score
    with pytest.raises(ZooError, match=message):
        Zoo(aptitude, tmp_path).add("m", df)


def test_fingerprint_mismatch_is_an_error(tmp_path: Path, aptitude: Aptitude) -> None:
    Zoo(aptitude, tmp_path).add("m", results_for(aptitude, "m"))
    entry = next(tmp_path.glob("*.json"))
    data = json.loads(entry.read_text())
    data["fingerprint"] = "0" * 64
    entry.write_text(json.dumps(data))
    with pytest.raises(ZooError, match="aptitude test"):
        Zoo.load(tmp_path, aptitude)


def test_corrupt_entry_names_the_file(tmp_path: Path, aptitude: Aptitude) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ZooError, match="broken.json"):
        Zoo.load(tmp_path, aptitude)


def test_duplicate_and_unknown_names(tmp_path: Path, aptitude: Aptitude) -> None:
    zoo = Zoo(aptitude, tmp_path)
    zoo.add("m", results_for(aptitude, "m"))
    with pytest.raises(ZooError, match="already in the zoo"):
        zoo.add("m", results_for(aptitude, "m"))
    with pytest.raises(ZooError, match="unknown model 'nope'"):
        zoo.remove("nope")


def test_cli_zoo_add_list_remove(tmp_path: Path, aptitude: Aptitude, capsys) -> None:
    ckpt = tmp_path / "ckpt"
    (ckpt / "zoo").mkdir(parents=True)
    aptitude.save(ckpt / "aptitude.json")
    for name in ("config.yaml", "adapter_model.safetensors", "adapter_config.json", "connector.safetensors"):
        (ckpt / name).write_text("")  # zoo commands only need the aptitude test and the zoo
    res = tmp_path / "new.csv"
    results_for(aptitude, "new-llm", 0.5).to_csv(res, index=False)
    assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", "new-llm", "--results", str(res), "--cost", "3"]) == 0
    assert cli(["zoo", "list", "--checkpoint", str(ckpt), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert listed == [{"model": "new-llm", "aptitude_accuracy": 0.5, "cost": 3.0, "cost_unit": "", "params_b": None}]
    assert cli(["zoo", "remove", "--checkpoint", str(ckpt), "--name", "new-llm"]) == 0
    assert cli(["zoo", "remove", "--checkpoint", str(ckpt), "--name", "new-llm"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_cli_zoo_add_takes_the_cost_from_the_table_beside_the_results(tmp_path: Path, aptitude: Aptitude,
                                                                       capsys) -> None:
    ckpt = tmp_path / "ckpt"
    (ckpt / "zoo").mkdir(parents=True)
    aptitude.save(ckpt / "aptitude.json")
    for name in ("config.yaml", "adapter_model.safetensors", "adapter_config.json", "connector.safetensors"):
        (ckpt / name).write_text("")
    table = tmp_path / "table"
    table.mkdir()
    pd.concat([results_for(aptitude, "big", 1.0), results_for(aptitude, "priced", 0.0)]).to_parquet(
        table / "results.parquet")
    pd.DataFrame({"model": ["big", "priced"], "cost": [float("nan"), 0.5], "params_b": [70.0, float("nan")],
                  "cost_unit": ["", "usd"]}).to_parquet(table / "models.parquet")
    res = str(table / "results.parquet")
    for name in ("big", "priced"):
        assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", name, "--results", res]) == 0
    assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", "given", "--results", res, "--params-b", "7"]) == 2
    assert "given" in capsys.readouterr().err  # no results for 'given' in the file: the add fails, naming it
    capsys.readouterr()
    assert cli(["zoo", "list", "--checkpoint", str(ckpt), "--json"]) == 0
    listed = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert (listed["big"]["params_b"], listed["big"]["cost"]) == (70.0, None)
    assert (listed["priced"]["cost"], listed["priced"]["cost_unit"], listed["priced"]["params_b"]) == (0.5, "usd", None)
    assert set(listed) == {"big", "priced"}
