"""The zoo: add -> list -> remove on disk, atomic writes with the usual file modes, and bad results, costs, names
and entry files rejected with a message naming the file."""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelsat.aptitude import Aptitude, AptitudeError, AptitudeTask
from modelsat.checkpoint import FORMAT_FILE, FORMAT_VERSION
from modelsat.cli import main as cli
from modelsat.io_utils import atomic_dir, atomic_write_bytes
from modelsat.zoo import Zoo, ZooError, _file_name, check_cost, check_model_name


@pytest.fixture
def aptitude() -> Aptitude:
    tasks = [AptitudeTask(f"t{t}", f"task {t}", [f"q{t}{s}" for s in range(3)]) for t in range(2)]
    return Aptitude(tasks, {q: f"question {q}" for t in tasks for q in t.question_ids})


def results_for(apt: Aptitude, model: str, value: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"model": model, "question_id": apt.question_ids, "score": value})


def test_add_list_remove_round_trip_on_disk(tmp_path: Path, aptitude: Aptitude) -> None:
    zoo = Zoo(aptitude, tmp_path)
    zoo.add("org/model-a", results_for(aptitude, "org/model-a", 1.0), params_b=2.0)
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
    with pytest.raises(AptitudeError, match="^the results of 'm' miss 2 of the 6 aptitude questions.*--missing wrong"):
        Zoo(aptitude, tmp_path).add("m", partial)
    with pytest.raises(ZooError, match="more than the 0 "):  # 5% of 6 questions: none may be missing
        Zoo(aptitude, tmp_path).add("m", partial, missing="wrong")
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
    (ckpt / FORMAT_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION}))
    res = tmp_path / "new.csv"
    results_for(aptitude, "new-llm", 0.5).to_csv(res, index=False)
    assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", "new-llm", "--results", str(res), "--cost", "3"]) == 0
    assert cli(["zoo", "list", "--checkpoint", str(ckpt), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert listed == [{"model": "new-llm", "aptitude_accuracy": 0.5, "bank_results": 0, "cost": 3.0, "cost_unit": "", "params_b": None,
                       "missing": "error", "num_missing": 0}]
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
    (ckpt / FORMAT_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION}))
    table = tmp_path / "table"
    table.mkdir()
    pd.concat([results_for(aptitude, m, v) for m, v in (("big", 1.0), ("priced", 0.0), ("cheap", 0.5))]).to_parquet(
        table / "results.parquet")
    pd.DataFrame({"model": ["big", "priced", "cheap"], "cost": [float("nan"), 0.5, 0.1],
                  "params_b": [70.0, float("nan"), 7.0], "cost_unit": ["", "usd", "usd"]}).to_parquet(
        table / "models.parquet")
    res = str(table / "results.parquet")
    for name in ("priced", "cheap"):
        assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", name, "--results", res]) == 0
    capsys.readouterr()
    # big has only a parameter count: another unit than the zoo's dollars
    assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", "big", "--results", res]) == 2
    assert "'params_b'" in (err := capsys.readouterr().err) and "'usd'" in err
    assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", "given", "--results", res, "--cost", "7",
                "--cost-unit", "usd"]) == 2
    assert "given" in capsys.readouterr().err  # no results for 'given' in the file: the add fails, naming it
    assert cli(["zoo", "list", "--checkpoint", str(ckpt), "--json"]) == 0
    listed = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert (listed["priced"]["cost"], listed["priced"]["cost_unit"], listed["priced"]["params_b"]) == (0.5, "usd", None)
    assert (listed["cheap"]["cost"], listed["cheap"]["cost_unit"], listed["cheap"]["params_b"]) == (0.1, "usd", 7.0)
    assert set(listed) == {"priced", "cheap"}


# ---- partial results: --missing wrong, up to 5% of the test -------------------------------------------------
def test_missing_answers_count_as_wrong_up_to_five_percent(tmp_path: Path) -> None:
    tasks = [AptitudeTask(f"t{t}", f"task {t}", [f"q{t}-{s}" for s in range(40)]) for t in range(49)]
    big = Aptitude(tasks, {q: f"question {q}" for t in tasks for q in t.question_ids})  # 1,960 questions, as shipped
    ids = big.question_ids
    full = pd.DataFrame({"question_id": ids, "score": 1.0})
    zoo = Zoo(big, tmp_path)
    with pytest.raises(ZooError, match="miss 1 of the 1960 aptitude questions.*--missing wrong"):
        zoo.add("m", full.iloc[1:])                                    # the default still refuses
    entry = zoo.add("m", full.iloc[1:], missing="wrong")
    assert (entry.missing, entry.num_missing, entry.scores[ids[0]]) == ("wrong", 1, 0.0)
    assert entry.accuracy == pytest.approx(1959 / 1960)
    zoo.add("m98", full.iloc[98:], missing="wrong")                    # 98 = 5% of 1,960: still allowed
    with pytest.raises(ZooError, match="miss 99 of the 1960 aptitude questions, more than the 98"):
        zoo.add("m99", full.iloc[99:], missing="wrong")
    with pytest.raises(ZooError, match="missing must be 'error' or 'wrong'"):
        zoo.add("m2", full, missing="zero")
    again = Zoo.load(tmp_path, big)
    rows = {r["model"]: r for r in again.describe()}
    assert (rows["m"]["missing"], rows["m"]["num_missing"], rows["m98"]["num_missing"]) == ("wrong", 1, 98)
    assert again.outcomes("m").sum() == 1959 and "m99" not in again


# ---- costs: finite numbers >= 0, one unit per zoo -------------------------------------------------------
@pytest.mark.parametrize("field, value, shown", [("cost", -1, "-1.0"), ("cost", float("inf"), "inf"),
                                                 ("cost", "abc", "'abc'"), ("cost", True, "True"),
                                                 ("params_b", -1.0, "-1.0"), ("params_b", float("inf"), "inf"),
                                                 ("params_b", 10 ** 400, "inf")])
def test_bad_costs_are_refused_at_add(tmp_path: Path, aptitude: Aptitude, field: str, value, shown: str) -> None:
    with pytest.raises(ZooError, match=f"^{field} must be a finite number >= 0, got {shown}$"):
        Zoo(aptitude, tmp_path).add("m", results_for(aptitude, "m"), **{field: value})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field, value", [("params_b", float("nan")), ("cost", np.float32("nan")),
                                          ("cost", np.float64("nan"))])
def test_nan_is_refused_not_read_as_unknown(tmp_path: Path, aptitude: Aptitude, field: str, value) -> None:
    """NaN is not "unknown cost" (None is): a NaN from a computation would hide a bug (issue 21, case 9)."""
    with pytest.raises(ZooError, match=f"{field} must be a finite number >= 0, got nan"):
        Zoo(aptitude, tmp_path).add("m", results_for(aptitude, "m"), **{field: value})
    assert list(tmp_path.iterdir()) == []
    entry = Zoo(aptitude, tmp_path).add("m", results_for(aptitude, "m"), cost=None, params_b=np.float32(7.0))
    assert (entry.cost, entry.params_b, entry.unit) == (None, 7.0, "params_b")


def test_a_tables_blank_cells_reach_the_zoo_as_unknown(tmp_path: Path, aptitude: Aptitude) -> None:
    """save_checkpoint and evaluation add models with RoutingTable.model_meta: blank (NaN) cells become None
    (unknown), never the NaN that Zoo.add refuses."""
    from modelsat.data.table import RoutingTable

    table = RoutingTable(pd.DataFrame({"question_id": ["x"], "text": ["t"], "benchmark": ["b"], "category": ["c"],
                                       "task": [""], "source": ["s"]}),
                         pd.DataFrame({"model": ["m", "n"], "question_id": ["x", "x"], "score": [1.0, 0.0]}),
                         pd.DataFrame({"model": ["m", "n"], "cost": [np.nan, 0.5], "params_b": [7.0, np.nan],
                                       "cost_unit": [np.nan, "usd"]}))
    assert table.model_meta("m") == {"cost": None, "params_b": 7.0, "cost_unit": ""}
    assert table.model_meta("n") == {"cost": 0.5, "params_b": None, "cost_unit": "usd"}
    assert table.model_meta("absent") == {"cost": None, "params_b": None, "cost_unit": ""}
    zoo = Zoo(aptitude, tmp_path)
    zoo.add("m", results_for(aptitude, "m"), **table.model_meta("m"))
    assert (zoo.get("m").cost, zoo.get("m").params_b) == (None, 7.0)


def test_minus_zero_is_stored_as_zero(tmp_path: Path, aptitude: Aptitude) -> None:
    entry = Zoo(aptitude, tmp_path).add("m", results_for(aptitude, "m"), params_b=-0.0)
    assert math.copysign(1.0, entry.params_b) == 1.0
    assert '"params_b": 0.0' in next(tmp_path.glob("*.json")).read_text()
    assert math.copysign(1.0, check_cost(-0.0, "cost")) == 1.0


@pytest.mark.parametrize("field, text, message", [
    ("cost", "-1", "cost must be a finite number >= 0, got -1.0"),
    ("cost", "Infinity", "cost must be a finite number >= 0, got inf"),
    ("cost", "NaN", "cost must be a finite number >= 0, got nan"),
    ("cost", '"abc"', "cost must be a finite number >= 0, got 'abc'"),
    ("params_b", "-7", "params_b must be a finite number >= 0, got -7.0"),
    ("num_missing", "3", r"num_missing must be an integer in \[0, 0\] with missing='error', got 3"),
    ("missing", '"maybe"', "missing must be 'error' or 'wrong', got 'maybe'"),
    ("name", '" padded "', "has leading or trailing whitespace"),
    ("name", '"a,b"', "holds a comma"),
])
def test_bad_values_on_disk_are_refused_at_load_naming_the_file(tmp_path: Path, aptitude: Aptitude, field: str,
                                                                 text: str, message: str) -> None:
    Zoo(aptitude, tmp_path).add("m", results_for(aptitude, "m"), cost=1.0)
    entry = next(tmp_path.glob("*.json"))
    doc = json.loads(entry.read_text())
    doc[field] = "@"
    entry.write_text(json.dumps(doc).replace('"@"', text))
    with pytest.raises(ZooError, match=f"^{entry}: .*{message}.*delete the file and add the model again"):
        Zoo.load(tmp_path, aptitude)


def test_one_cost_unit_per_zoo(tmp_path: Path, aptitude: Aptitude) -> None:
    zoo = Zoo(aptitude, tmp_path)
    zoo.add("p7", results_for(aptitude, "p7"), params_b=7.0)
    zoo.add("unknown", results_for(aptitude, "unknown"))  # no cost at all: fits any zoo
    with pytest.raises(ZooError, match=r"'usd_per_1M_tokens', but this zoo's costs are in 'params_b'"):
        zoo.add("api", results_for(aptitude, "api"), cost=0.15, cost_unit="usd_per_1M_tokens")
    with pytest.raises(ZooError, match=r"has its cost in no unit \(''\), but this zoo's costs are in 'params_b'"):
        zoo.add("api", results_for(aptitude, "api"), cost=0.15)
    zoo.add("p70", results_for(aptitude, "p70"), params_b=70.0, cost_unit="")
    assert zoo.cost_unit == "params_b"

    usd = Zoo(aptitude, tmp_path / "usd")
    usd.add("a", results_for(aptitude, "a"), cost=1.0, cost_unit="usd")
    with pytest.raises(ZooError, match=r"in no unit \(''\), but this zoo's costs are in 'usd'"):
        usd.add("b", results_for(aptitude, "b"), cost=2.0)
    usd.add("a", results_for(aptitude, "a"), cost=3.0, cost_unit="eur", replace=True)  # its only entry: any unit
    assert usd.cost_unit == "eur"

    other = Zoo(aptitude, tmp_path / "other")  # a file from a zoo in another unit, copied in by hand
    other.add("b", results_for(aptitude, "b"), cost=2.0, cost_unit="usd")
    (tmp_path / "usd" / "b.json").write_bytes(next((tmp_path / "other").glob("*.json")).read_bytes())
    with pytest.raises(ZooError, match=r"b.json gives its cost in 'usd' but .*a-\w+.json in 'eur'"):
        Zoo.load(tmp_path / "usd", aptitude)


# ---- names: what can be selected afterwards ------------------------------------------------------------------
@pytest.mark.parametrize("name, message", [(" Yi-34B", "leading or trailing whitespace"),
                                           ("Yi-34B\t", "leading or trailing whitespace"),
                                           ("Yi,34B", "holds a comma"), ("Yi\x0034B", "U\\+0000"),
                                           ("Yi\u0085-34B", "U\\+0085"), ("Yi\ud83c", "U\\+D83C"),
                                           ("", "non-empty string"), (None, "non-empty string"),
                                           ("m" * 201, "201 characters long, over 200")])
def test_names_that_cannot_be_selected_are_refused(tmp_path: Path, aptitude: Aptitude, name, message: str) -> None:
    with pytest.raises(ZooError, match=message):
        check_model_name(name)
    with pytest.raises(ZooError, match=message):
        Zoo(aptitude, tmp_path).add(name, results_for(aptitude, "m").drop(columns="model"))
    assert list(tmp_path.iterdir()) == []
    assert check_model_name("org/Yi-34B v2 (chat)") == "org/Yi-34B v2 (chat)"


@pytest.mark.parametrize("name, message", [
    ("Yi-34B\u200b", "U\\+200B"), ("\u202eB43-iY", "U\\+202E"), ("\ufeffYi-34B", "U\\+FEFF"),   # format (Cf)
    ("Yi\u00a034B", "U\\+00A0"), ("Yi\u300034B", "U\\+3000"),                    # spaces other than U+0020
    ("Yi\u2028x", "U\\+2028"), ("Yi\u2029x", "U\\+2029"),                          # line, paragraph separators
    ("Yi\ue000", "U\\+E000"), ("Yi\u0378", "U\\+0378"),                           # private use, unassigned
    (".", "only dots"), ("..", "only dots"), ("...", "only dots"),
    ("../Yi-34B", "starts with '../'"), ("..\\Yi", "starts with '../'")])
def test_invisible_characters_and_path_like_names_are_refused(tmp_path: Path, aptitude: Aptitude, name,
                                                              message: str) -> None:
    """Two names that look alike must be the same name (issue 21, cases 7 and 13)."""
    with pytest.raises(ZooError, match=message):
        check_model_name(name)
    with pytest.raises(ZooError, match=message):
        Zoo(aptitude, tmp_path).add(name, results_for(aptitude, "m").drop(columns="model"))
    assert list(tmp_path.iterdir()) == []


def test_look_alike_letters_and_inner_dots_are_legitimate_names(tmp_path: Path, aptitude: Aptitude) -> None:
    """Non-ASCII names are names: the Cyrillic і (U+0456) of "Yі-34B" is a letter, not an invisible character."""
    for name in ("Y\u0456-34B", "Qwen2.5-7B", ".hidden-model", "a..b", "模型-7B", "Yi 34B"):
        assert check_model_name(name) == name
    zoo = Zoo(aptitude, tmp_path)
    zoo.add("Y\u0456-34B", results_for(aptitude, "m").drop(columns="model"))
    assert "Yi-34B" not in zoo and "Y\u0456-34B" in Zoo.load(tmp_path, aptitude)


def test_names_asked_for_are_trimmed_and_case_sensitive(tmp_path: Path, aptitude: Aptitude) -> None:
    zoo = Zoo(aptitude, tmp_path)
    zoo.add("Yi-34B", results_for(aptitude, "m").drop(columns="model"))
    zoo.add("qwen", results_for(aptitude, "m").drop(columns="model"))
    assert " Yi-34B " in zoo and zoo.get("\tYi-34B\n").name == "Yi-34B"
    assert "yi-34b" not in zoo
    with pytest.raises(ZooError, match="unknown model 'yi-34b'; the zoo has: Yi-34B, qwen"):
        zoo.remove(" yi-34b ")
    zoo.remove(" Yi-34B ")
    assert zoo.names == ["qwen"] and [json.loads(p.read_text())["name"] for p in tmp_path.glob("*.json")] == ["qwen"]


def test_scores_on_disk_must_be_numbers(tmp_path: Path, aptitude: Aptitude) -> None:
    """`true` or "0.5" are not scores, though float() takes them (issue 21, case 10)."""
    Zoo(aptitude, tmp_path).add("m", results_for(aptitude, "m"))
    entry = next(tmp_path.glob("*.json"))
    good = json.loads(entry.read_text())
    q = aptitude.question_ids[0]
    for value, shown in [(True, "true"), ("0.5", '"0.5"'), (None, "null"), ([1], r"\[1\]")]:
        entry.write_text(json.dumps({**good, "scores": {**good["scores"], q: value}}))
        with pytest.raises(ZooError, match=f"^{entry}: the score of question '{q}' is {shown}, not a number in "
                                           r"\[0, 1\]; delete the file"):
            Zoo.load(tmp_path, aptitude)


def test_a_zoo_or_results_of_the_wrong_kind_is_named(tmp_path: Path, aptitude: Aptitude) -> None:
    (tmp_path / "zoo").write_text("")
    with pytest.raises(ZooError, match=f"zoo {tmp_path / 'zoo'} is a file, not a folder"):
        Zoo.load(tmp_path / "zoo", aptitude)
    (tmp_path / "res.csv").mkdir()
    with pytest.raises(ZooError, match="results .*res.csv is a folder, not a file"):
        Zoo(aptitude, tmp_path / "z").add("m", tmp_path / "res.csv")


# ---- entry files: remove deletes the right one, duplicates and damage are named -------------------------
def test_remove_deletes_the_file_it_was_loaded_from(tmp_path: Path, aptitude: Aptitude) -> None:
    Zoo(aptitude, tmp_path).add("m", results_for(aptitude, "m"))
    Zoo(aptitude, tmp_path).add("keep", results_for(aptitude, "keep"))
    next(tmp_path.glob("m-*.json")).rename(tmp_path / "renamed by hand.json")
    zoo = Zoo.load(tmp_path, aptitude)
    zoo.add("m", results_for(aptitude, "m", 0.0), replace=True)  # replacing writes the file it came from
    assert sorted(p.name for p in tmp_path.glob("*.json") if not p.name.startswith("keep")) == ["renamed by hand.json"]
    zoo.remove("m")
    assert not (tmp_path / "renamed by hand.json").exists()
    assert Zoo.load(tmp_path, aptitude).names == ["keep"]


def test_two_files_with_one_name_are_an_error_naming_both(tmp_path: Path, aptitude: Aptitude) -> None:
    Zoo(aptitude, tmp_path).add("m", results_for(aptitude, "m"))
    original = next(tmp_path.glob("*.json"))
    copy = tmp_path / "backup.json"
    copy.write_bytes(original.read_bytes())
    with pytest.raises(ZooError, match=f"{copy} and {original} both hold model 'm'; delete one of the two files"):
        Zoo.load(tmp_path, aptitude)


def test_a_file_name_held_by_another_model_is_not_overwritten(tmp_path: Path, aptitude: Aptitude) -> None:
    Zoo(aptitude, tmp_path).add("a", results_for(aptitude, "a"))
    target = tmp_path / _file_name("b")
    next(tmp_path.glob("a-*.json")).rename(target)  # renamed by hand to the file name b's entry would get
    zoo = Zoo.load(tmp_path, aptitude)
    before = target.read_bytes()
    with pytest.raises(ZooError, match="holds model 'a', not 'b'"):
        zoo.add("b", results_for(aptitude, "b"))
    zoo.add("b", results_for(aptitude, "b"), persist=False)  # in memory only: removing it deletes no file of a's
    zoo.remove("b")
    assert target.read_bytes() == before and Zoo.load(tmp_path, aptitude).names == ["a"]


@pytest.mark.parametrize("damage, message", [
    (lambda d: {**d, "scores": dict(list(d["scores"].items())[:1])}, "the scores of 'm' miss 5 of the 6 aptitude"),
    (lambda d: {**d, "scores": {**d["scores"], "q00": 1.5}}, "score of question 'q00' is 1.5, not a number in"),
    (lambda d: {**d, "scores": {**d["scores"], "q00": "x"}}, "score of question 'q00' is \"x\", not a number in"),
    (lambda d: [d], "not a valid zoo entry .*TypeError"),
])
def test_entry_errors_name_the_file_and_what_to_do(tmp_path: Path, aptitude: Aptitude, damage, message: str) -> None:
    Zoo(aptitude, tmp_path).add("m", results_for(aptitude, "m"))
    entry = next(tmp_path.glob("*.json"))
    entry.write_text(json.dumps(damage(json.loads(entry.read_text()))))
    with pytest.raises(ZooError, match=f"^{entry}: .*{message}.*delete the file and add the model again"):
        Zoo.load(tmp_path, aptitude)


def test_undecodable_entry_names_the_file(tmp_path: Path, aptitude: Aptitude) -> None:
    (tmp_path / "binary.json").write_bytes(bytes(range(128, 256)) * 4)
    with pytest.raises(ZooError, match="binary.json: not a valid zoo entry .UnicodeDecodeError"):
        Zoo.load(tmp_path, aptitude)


# ---- file modes: as open() and mkdir() give them, not the temporary files' private ones ------------------
@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_written_files_and_folders_get_the_usual_modes(tmp_path: Path, aptitude: Aptitude, mask: int,
                                                       file_mode: int, dir_mode: int) -> None:
    old = os.umask(mask)
    try:
        zoo = Zoo(aptitude, tmp_path / "zoo")
        zoo.add("m", results_for(aptitude, "m"))
        atomic_write_bytes(tmp_path / "plain.bin", b"x")
        with atomic_dir(tmp_path / "folder") as tmp:
            atomic_write_bytes(tmp / "inner.bin", b"y")
        kept = tmp_path / "private.bin"
        kept.write_bytes(b"old")
        kept.chmod(0o600)
        atomic_write_bytes(kept, b"new")                 # writing over a file keeps its mode, as open() does
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert [mode(p) for p in (zoo.files["m"], tmp_path / "plain.bin", tmp_path / "folder" / "inner.bin")] == \
        [file_mode] * 3
    assert mode(tmp_path / "folder") == dir_mode
    assert (mode(kept), kept.read_bytes()) == (0o600, b"new")


def test_declared_limits_round_trip_and_absent_means_undeclared(tmp_path: Path, aptitude: Aptitude) -> None:
    zoo = Zoo(aptitude, tmp_path)
    zoo.add("a", results_for(aptitude, "a"), context_window=8192, capabilities="vision, tools",
            tokenizer="org/tok")
    zoo.add("b", results_for(aptitude, "b"), capabilities=[])
    zoo.add("c", results_for(aptitude, "c"))
    again = Zoo.load(tmp_path, aptitude)
    a, b, c = (again.get(n) for n in "abc")
    assert (a.context_window, a.capabilities, a.tokenizer) == (8192, ["tools", "vision"], "org/tok")
    assert b.capabilities == [] and b.context_window is None          # declared: none
    assert c.capabilities is None and c.context_window is None        # undeclared
    assert "capabilities" not in json.loads(again.files["c"].read_text())
    rows = {r["model"]: r for r in again.describe()}
    assert rows["a"]["capabilities"] == ["tools", "vision"] and "context_window" not in rows["c"]


@pytest.mark.parametrize("field, value, message", [
    ("context_window", 0, "context_window must be a positive integer"),
    ("context_window", 4096.0, "context_window must be a positive integer"),
    ("context_window", True, "context_window must be a positive integer"),
    ("context_window", "4096", "context_window must be a positive integer"),
    ("capabilities", ["tools", "telepathy"], "unknown capability 'telepathy'"),
    ("capabilities", ["tools", "tools"], "name 'tools' twice"),
    ("capabilities", {"tools": True}, "capabilities must be a list"),
    ("tokenizer", " org/tok", "tokenizer must be"),
])
def test_bad_declared_limits_are_refused_at_add_and_load(tmp_path: Path, aptitude: Aptitude, field: str, value,
                                                         message: str) -> None:
    zoo = Zoo(aptitude, tmp_path)
    with pytest.raises(ZooError, match=message):
        zoo.add("m", results_for(aptitude, "m"), **{field: value})
    assert not list(tmp_path.glob("*.json"))                             # nothing written
    zoo.add("m", results_for(aptitude, "m"))
    path = zoo.files["m"]
    entry = json.loads(path.read_text())
    entry[field] = value
    path.write_text(json.dumps(entry))
    with pytest.raises(ZooError, match=str(path.name)):
        Zoo.load(tmp_path, aptitude)


def test_a_malformed_jsonl_results_file_names_the_line(tmp_path: Path, aptitude: Aptitude) -> None:
    from modelsat.zoo import read_results

    f = tmp_path / "r.jsonl"
    f.write_text('{"question_id": "q1", "score": 1}\n{"question_id": "q2", "score": \n')
    with pytest.raises(ZooError, match="r.jsonl: line 2 is not valid JSON"):
        read_results(f, "m")
