"""One's own files (issue 34): the demo data a first run trains on, a results CSV of three columns, and the mistakes a
new user makes with their files, each one line naming the file and what to do, exit 2, never read as defaults."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from modelsat.cli import main as cli
from modelsat.config import ConfigError, load_config, load_saved_config
from modelsat.data.converters import build_table
from modelsat.data.demo import MODELS, demo_csv, demo_table
from modelsat.data.table import RoutingTable, TableError


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_the_demo_table_is_seeded_valid_and_something_to_route() -> None:
    table = demo_table()
    table.validate("demo")
    assert len(table.questions) == 300 and table.model_names == sorted(MODELS)
    assert table.questions["benchmark"].eq("demo (synthetic)").all() and table.questions["text"].is_unique
    assert demo_table().results.equals(table.results)                              # the same on every machine
    accuracy = table.results.merge(table.questions, on="question_id").groupby(["category", "model"])["score"].mean()
    best = accuracy.groupby(level="category").idxmax().map(lambda pair: pair[1])
    assert best["code"] == "demo-code-13b" and best["humanities"] in ("demo-law-7b", "demo-generalist-70b")
    assert build_table("demo", None).results.equals(table.results)


def test_a_three_column_csv_is_a_routing_table(tmp_path: Path) -> None:
    file = tmp_path / "my-results.csv"
    demo_csv().to_csv(file, index=False)
    assert list(pd.read_csv(file).columns) == ["text", "model", "score"]
    table = RoutingTable.load(file)
    assert len(table.questions) == 300 and len(table.results) == 1800
    assert table.questions["category"].eq("all").all() and table.questions["benchmark"].eq("my-results").all()
    assert build_table("table", file).questions["question_id"].tolist() == table.questions["question_id"].tolist()


def test_modelsat_data_demo_writes_the_csv(tmp_path: Path, capsys) -> None:
    assert cli(["data", "demo", "--out", str(tmp_path / "d.csv")]) == 0
    assert "made-up" in capsys.readouterr().out and len(pd.read_csv(tmp_path / "d.csv")) == 1800
    assert cli(["data", "demo", "--out", str(tmp_path / "d.parquet")]) == 2
    assert "give a .csv file name" in one_line(capsys)


@pytest.mark.parametrize("content, expected", [
    ("", "is empty; results needs the columns model,question_id,score"),
    ("\n\n", "is empty; results needs the columns model,question_id,score"),
    ("model,question_id,score\n", "has only a header (model,question_id,score) and no data rows"),
])
def test_an_empty_or_header_only_results_file_is_one_line(tmp_path: Path, capsys, content: str, expected: str) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    pd.DataFrame({"question_id": ["q1"], "text": ["What is 2+2?"], "benchmark": ["b"], "category": ["math"],
                  "task": [""], "source": ["s"]}).to_csv(folder / "questions.csv", index=False)
    (folder / "results.csv").write_text(content)
    assert cli(["data", "build", "--source", "table", "--input", str(folder), "--out", str(tmp_path / "t")]) == 2
    err = one_line(capsys)
    assert str(folder / "results.csv") in err and expected in err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("content, expected", [
    ("", "is empty; long needs the columns text,model,score"),
    ("text,model,score\n", "has only a header (text,model,score) and no data rows"),
    ("question,model,score\nWhat?,m,1\n", "missing column(s) 'text'"),
    ("text,model,score\nWhat?,m,yes\n", "row 0, column 'score': 'yes' is not a number; write a number there in [0, 1]"),
    ("text,model,score\nWhat?,m,1\nWhat?,m,0\n", "duplicate row"),
])
def test_a_bad_three_column_csv_is_one_line_naming_the_file(tmp_path: Path, capsys, content: str,
                                                             expected: str) -> None:
    file = tmp_path / "my-results.csv"
    file.write_text(content)
    assert cli(["data", "build", "--source", "table", "--input", str(file), "--out", str(tmp_path / "t")]) == 2
    err = one_line(capsys)
    assert str(file) in err and expected in err, err


def test_zoo_add_of_a_header_only_results_file_says_it_has_no_rows(tmp_path: Path, capsys) -> None:
    from modelsat.zoo import ZooError, read_results

    (tmp_path / "r.csv").write_text("question_id,score\n")
    with pytest.raises(ZooError, match=r"r.csv: has no rows \(only a header\?\)"):
        read_results(tmp_path / "r.csv", "m")


def test_results_matching_no_question_say_so(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    pd.DataFrame({"question_id": ["q1"], "text": ["What is 2+2?"], "benchmark": ["b"], "category": ["math"],
                  "task": [""], "source": ["s"]}).to_csv(folder / "questions.csv", index=False)
    pd.DataFrame({"model": ["m"], "question_id": ["other-1"], "score": [1.0]}).to_csv(folder / "results.csv",
                                                                                       index=False)
    assert cli(["data", "build", "--source", "table", "--input", str(folder), "--out", str(tmp_path / "t")]) == 2
    assert "none of its 1 question ids is in questions.csv" in one_line(capsys)


@pytest.mark.parametrize("models, expected", [
    (pd.DataFrame({"model": ["m"], "params_b": ["7B"]}), "column 'params_b': '7B' is not a number; write a number"),
    (pd.DataFrame({"model": [1.5], "params_b": [7.0]}), "column 'model': 1.5 is not a string; write text there"),
    (pd.DataFrame({"model": ["m"], "cost": [1.0], "cost_unit": [3]}), "column 'cost_unit': 3 is not a string"),
])
def test_models_columns_of_the_wrong_type_are_one_line(tmp_path: Path, capsys, models, expected: str) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    pd.DataFrame({"question_id": ["q1"], "text": ["What is 2+2?"], "benchmark": ["b"], "category": ["math"],
                  "task": [""], "source": ["s"]}).to_csv(folder / "questions.csv", index=False)
    pd.DataFrame({"model": ["m"], "question_id": ["q1"], "score": [1.0]}).to_csv(folder / "results.csv", index=False)
    models.to_parquet(folder / "models.parquet")
    assert cli(["data", "build", "--source", "table", "--input", str(folder), "--out", str(tmp_path / "t")]) == 2
    err = one_line(capsys)
    assert str(folder / "models.parquet") in err and expected in err, err


def test_a_results_table_with_no_rows_is_not_a_merge_error() -> None:
    """The table of no results (built in code) has an empty model list, not pandas' float-vs-object merge error."""
    table = RoutingTable(pd.DataFrame(columns=["question_id", "text", "benchmark", "category", "task", "source"]),
                         pd.DataFrame({"model": pd.Series([], dtype=object), "question_id": pd.Series([], dtype=object),
                                       "score": pd.Series([], dtype=float)}))
    assert table.model_names == []


@pytest.mark.parametrize("text, expected", [
    ("", "is empty; a checkpoint's config.yaml holds the resolved config"),
    ("# nothing\n", "is empty; a checkpoint's config.yaml holds the resolved config"),
    ("data:\n  source: demo\nmodel:\n  llm: tiny-llama\n", "has no train section (a copy cut short?)"),
])
def test_a_checkpoints_empty_or_cut_config_is_refused_not_defaulted(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_saved_config(tmp_path / "config.yaml")


def test_a_routers_cut_config_names_the_file_not_the_adapter(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    from modelsat.checkpoint import CheckpointError
    from modelsat.router import Router

    ckpt = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    text = (ckpt / "config.yaml").read_text()
    (ckpt / "config.yaml").write_text(text[:text.index("train:")])                 # cut before its last section
    with pytest.raises(CheckpointError, match="config.yaml has no train section") as err:
        Router.from_pretrained(ckpt)
    assert "adapter_config" not in str(err.value)
    (ckpt / "config.yaml").write_text("")
    with pytest.raises(CheckpointError, match="config.yaml is empty"):
        Router.from_pretrained(ckpt)


def test_an_empty_config_file_is_an_error_naming_the_shipped_configs(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text("\n")
    with pytest.raises(ConfigError, match=r"mine.yaml is empty; .* by name \(default, gpu, own, own-smollm2"):
        load_config(tmp_path / "mine.yaml")


def test_the_first_run_configs_need_no_shared_data(tmp_path: Path, monkeypatch) -> None:
    """tiny trains on the demo data; own on a CSV of one's own: a fresh machine has both."""
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny").data.source == "demo"
    own = load_config("own", ["data.input=mine.csv"])
    assert (own.data.source, own.data.input, own.data.tasks_by) == ("table", "mine.csv", "cluster")


def test_a_missing_input_does_not_suggest_a_download_that_is_refused(tmp_path: Path, monkeypatch) -> None:
    from modelsat.data.prepare import prepare

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        prepare(load_config("own", ["data.input=absent.csv"]).data)
    assert "download" not in str(err.value) and "--config tiny" in str(err.value)


def test_train_tiny_on_a_fresh_machine_trains_from_the_demo_data(tmp_path: Path, monkeypatch, capsys) -> None:
    """`modelsat train --config tiny` as written, in an empty folder (no ../shared/data): a router that ranks."""
    from modelsat.router import Router

    monkeypatch.chdir(tmp_path)
    assert cli(["train", "--config", "tiny", "train.max_steps=4", "train.save_every=0"]) == 0, capsys.readouterr().err
    router = Router.from_pretrained("runs/tiny/run/final")
    assert set(router.models) == set(MODELS) - {"demo-science-8b"}                 # the unseen one joins by zoo add
    assert json.loads((tmp_path / "runs/tiny/run/final/metrics.json").read_text())["step"] == 4
