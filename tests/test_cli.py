"""The `modelsat` command on bad input: one line on stderr naming what is wrong and where, exit 2, no traceback
(unless --debug), nothing written; a closed stdout pipe ends quietly."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from modelsat.aptitude import Aptitude, AptitudeTask
from modelsat.checkpoint import FORMAT_FILE, FORMAT_VERSION
from modelsat.cli import main as cli
from modelsat.zoo import Zoo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def aptitude() -> Aptitude:
    """2 tasks x 20 multiple-choice questions: 5% of the test is 2 questions."""
    tasks = [AptitudeTask(f"t{t}", f"task {t}", [f"q{t}-{s:02d}" for s in range(20)]) for t in range(2)]
    texts = {q: f"Question {q}?\nA. yes\nB. no" for t in tasks for q in t.question_ids}
    return Aptitude(tasks, texts, {q: "A" for q in texts})


@pytest.fixture
def ckpt(tmp_path: Path, aptitude: Aptitude) -> Path:
    """A checkpoint folder as far as the zoo commands read it: the aptitude test and the zoo."""
    ckpt = tmp_path / "ckpt"
    (ckpt / "zoo").mkdir(parents=True)
    aptitude.save(ckpt / "aptitude.json")
    for name in ("config.yaml", "adapter_model.safetensors", "adapter_config.json", "connector.safetensors"):
        (ckpt / name).write_text("")
    (ckpt / FORMAT_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION}))
    return ckpt


def results_file(tmp_path: Path, aptitude: Aptitude, drop: int = 0, name: str = "res.csv") -> str:
    path = tmp_path / name
    pd.DataFrame({"question_id": aptitude.question_ids[drop:], "score": 1.0}).to_csv(path, index=False)
    return str(path)


def run(*args: str, timeout: float = 120, module: str = "modelsat.cli") -> subprocess.CompletedProcess:
    """`modelsat ARGS` (`python -m MODULE ARGS`) in a fresh process, offline."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip("\n")


# ---- numbers that are not numbers ---------------------------------------------------------------------------
@pytest.mark.parametrize("args, shown", [(["--cost", "-1"], "cost must be a finite number >= 0, got -1.0"),
                                         (["--cost", "inf"], "cost must be a finite number >= 0, got inf"),
                                         (["--cost", "nan"], "cost must be a finite number >= 0, got nan"),
                                         (["--cost", "1e309"], "cost must be a finite number >= 0, got inf"),
                                         (["--params-b", "-1"], "params_b must be a finite number >= 0, got -1.0"),
                                         (["--params-b", "inf"], "params_b must be a finite number >= 0, got inf")])
def test_zoo_add_refuses_costs_that_are_not_finite_numbers(ckpt: Path, tmp_path: Path, aptitude: Aptitude, capsys,
                                                           args: list[str], shown: str) -> None:
    res = results_file(tmp_path, aptitude)
    assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", "m", "--results", res, *args]) == 2
    assert error_line(capsys) == f"modelsat zoo add: error: {shown}"
    assert list((ckpt / "zoo").iterdir()) == []


def test_zoo_add_refuses_a_second_cost_unit(ckpt: Path, tmp_path: Path, aptitude: Aptitude, capsys) -> None:
    res = results_file(tmp_path, aptitude)
    base = ["zoo", "add", "--checkpoint", str(ckpt), "--results", res]
    assert cli([*base, "--name", "Yi-34B", "--params-b", "34.4"]) == 0
    capsys.readouterr()
    assert cli([*base, "--name", "api", "--cost", "0.15", "--cost-unit", "usd_per_1M_tokens"]) == 2
    line = error_line(capsys)
    assert "'usd_per_1M_tokens'" in line and "'params_b'" in line and "--params-b" in line
    assert cli([*base, "--name", "api", "--cost", "0.15"]) == 2   # a cost without unit is not a size either
    assert "no unit ('')" in error_line(capsys)
    assert len(list((ckpt / "zoo").iterdir())) == 1


def test_zoo_list_prints_strict_json_and_refuses_an_infinite_cost_on_disk(ckpt: Path, aptitude: Aptitude,
                                                                          capsys) -> None:
    scores = {q: 1.0 for q in aptitude.question_ids}
    Zoo(aptitude, ckpt / "zoo").add("m", scores, cost=2.0, cost_unit="usd")
    assert cli(["zoo", "list", "--checkpoint", str(ckpt), "--json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    entry = next((ckpt / "zoo").glob("*.json"))
    entry.write_text(entry.read_text().replace('"cost": 2.0', '"cost": Infinity'))
    assert cli(["zoo", "list", "--checkpoint", str(ckpt), "--json"]) == 2
    line = error_line(capsys)
    assert str(entry) in line and "cost must be a finite number >= 0, got inf" in line
    assert capsys.readouterr().out == ""


# ---- names that do not identify one model -------------------------------------------------------------------
@pytest.mark.parametrize("name, message", [(" Yi-34B", "leading or trailing whitespace"),
                                           ("Yi-34B\t", "leading or trailing whitespace"),
                                           ("Yi-34B,Yi-6B", "holds a comma")])
def test_zoo_add_refuses_names_that_cannot_be_selected(ckpt: Path, tmp_path: Path, aptitude: Aptitude, capsys,
                                                       name: str, message: str) -> None:
    res = results_file(tmp_path, aptitude)
    assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", name, "--results", res]) == 2
    assert message in error_line(capsys)
    assert list((ckpt / "zoo").iterdir()) == []


# ---- partial aptitude results ---------------------------------------------------------------------------------
def test_zoo_add_missing_wrong_is_explicit_bounded_and_listed(ckpt: Path, tmp_path: Path, aptitude: Aptitude,
                                                              capsys) -> None:
    base = ["zoo", "add", "--checkpoint", str(ckpt), "--name", "m"]
    one_short = results_file(tmp_path, aptitude, drop=1)
    assert cli([*base, "--results", one_short]) == 2                        # refusal stays the default
    line = error_line(capsys)
    assert f"{one_short}: the results of 'm' miss 1 of the 40 aptitude questions" in line and "--missing wrong" in line
    three_short = results_file(tmp_path, aptitude, drop=3, name="three.csv")
    assert cli([*base, "--results", three_short, "--missing", "wrong"]) == 2  # 3 > 2 = 5% of 40
    assert "miss 3 of the 40 aptitude questions, more than the 2 (5% of the test)" in error_line(capsys)
    assert cli([*base, "--results", one_short, "--missing", "wrong", "--params-b", "7"]) == 0
    assert "1 missing answers counted as wrong" in capsys.readouterr().out
    assert cli(["zoo", "list", "--checkpoint", str(ckpt), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert (row["missing"], row["num_missing"], row["aptitude_accuracy"]) == ("wrong", 1, 39 / 40)
    assert cli(["zoo", "list", "--checkpoint", str(ckpt)]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert "cost unit" in header and "missing" in header
    assert line.split()[0] == "m" and "params_b" in line and line.endswith("1 as wrong")


# ---- nothing to do, said as success ---------------------------------------------------------------------------
def test_zoo_remove_deletes_a_renamed_entry_and_refuses_an_unknown_name(ckpt: Path, aptitude: Aptitude,
                                                                        capsys) -> None:
    Zoo(aptitude, ckpt / "zoo").add("Yi-34B", {q: 1.0 for q in aptitude.question_ids})
    renamed = ckpt / "zoo" / "copied by hand.json"
    next((ckpt / "zoo").glob("*.json")).rename(renamed)
    assert cli(["zoo", "remove", "--checkpoint", str(ckpt), "--name", "Yi-34B"]) == 0
    assert f"deleted {renamed}" in capsys.readouterr().out
    assert list((ckpt / "zoo").iterdir()) == []
    assert cli(["zoo", "remove", "--checkpoint", str(ckpt), "--name", "Yi-34B"]) == 2
    assert "unknown model 'Yi-34B'" in error_line(capsys)


def test_two_files_with_one_name_stop_every_zoo_command(ckpt: Path, aptitude: Aptitude, capsys) -> None:
    Zoo(aptitude, ckpt / "zoo").add("m", {q: 1.0 for q in aptitude.question_ids})
    original = next((ckpt / "zoo").glob("*.json"))
    (ckpt / "zoo" / "m-copy.json").write_bytes(original.read_bytes())
    assert cli(["zoo", "remove", "--checkpoint", str(ckpt), "--name", "m"]) == 2
    assert "both hold model 'm'" in error_line(capsys)
    assert len(list((ckpt / "zoo").iterdir())) == 2                            # nothing removed at random


# ---- errors that do not say where ------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [bytes(range(256)) * 8, "{\"version\": 1, \"tasks\": [".encode(), b"[1, 2]"])
def test_a_broken_aptitude_file_is_one_line_naming_it(ckpt: Path, tmp_path: Path, capsys, content: bytes) -> None:
    (ckpt / "aptitude.json").write_bytes(content)
    assert cli(["zoo", "list", "--checkpoint", str(ckpt)]) == 2
    line = error_line(capsys)
    assert f"{ckpt / 'aptitude.json'}: not a valid aptitude file" in line and "modelsat aptitude build" in line
    table = tmp_path / "no-table"
    assert cli(["data", "split", "--table", str(table), "--aptitude", str(ckpt / "aptitude.json"),
                "--out", str(tmp_path / "splits.json")]) == 2
    assert not (tmp_path / "splits.json").exists()


def test_aptitude_run_with_an_unknown_model_says_what_to_pass(tmp_path: Path, aptitude: Aptitude, capsys) -> None:
    aptitude.save(tmp_path / "aptitude.json")
    out = tmp_path / "results.parquet"
    base = ["aptitude", "run", "--aptitude", str(tmp_path / "aptitude.json"), "--out", str(out)]
    assert cli([*base, "--model", "no-such-model"]) == 2
    line = error_line(capsys)
    assert "LLM 'no-such-model' is neither a local folder nor in the Hugging Face cache" in line
    assert "pass DIR instead of the id, or pass smollm2-135m-instruct or tiny-llama" in line
    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    assert cli([*base, "--model", str(not_a_model)]) == 2
    line = error_line(capsys)
    assert f"LLM folder {not_a_model} could not be loaded" in line and "config.json" in line
    assert not out.exists()


def test_errors_reach_the_user_as_one_line_and_debug_shows_the_traceback(tmp_path: Path, aptitude: Aptitude) -> None:
    aptitude.save(tmp_path / "aptitude.json")
    done = run("aptitude", "run", "--model", "no-such-model", "--aptitude", str(tmp_path / "aptitude.json"),
               "--out", str(tmp_path / "r.parquet"))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("modelsat aptitude run: error: LLM 'no-such-model' is neither")
    assert done.stderr.count("\n") == 1
    missing = str(tmp_path / "no-checkpoint")
    done = run("zoo", "list", "--checkpoint", missing)
    assert (done.returncode, done.stderr) == (2, f"modelsat zoo list: error: checkpoint folder {missing} does not "
                                                 "exist\n")
    for debug in (["--debug", "zoo", "list", "--checkpoint", missing], ["zoo", "list", "--checkpoint", missing,
                                                                         "--debug"]):
        done = run(*debug)
        assert done.returncode == 1 and "Traceback" in done.stderr and "CheckpointError" in done.stderr


def test_debug_reraises_in_process(tmp_path: Path) -> None:
    from modelsat.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        cli(["--debug", "zoo", "list", "--checkpoint", str(tmp_path / "none")])


# ---- output cut by a closed pipe ---------------------------------------------------------------------------------
@pytest.mark.parametrize("num_models", [1, 300])  # output within stdout's buffer (fails at exit), and beyond it
def test_a_closed_pipe_ends_quietly(ckpt: Path, aptitude: Aptitude, num_models: int) -> None:
    Zoo(aptitude, ckpt / "zoo").add("m-000", {q: 1.0 for q in aptitude.question_ids})
    first = next((ckpt / "zoo").glob("*.json"))
    for i in range(1, num_models):
        (ckpt / "zoo" / f"m-{i:03d}.json").write_text(first.read_text().replace('"m-000"', f'"m-{i:03d}"'))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for extra in (["--json"], []):
        proc = subprocess.Popen([sys.executable, "-m", "modelsat.cli", "zoo", "list", "--checkpoint", str(ckpt),
                                 *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
        proc.stdout.close()                       # the reader is gone before the first line, as `| head -0`
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) in (0, 141) and err == "", err


def test_broken_pipe_in_process_returns_141_without_a_message(monkeypatch, capsys) -> None:
    import modelsat.commands

    def cut(_args) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(modelsat.commands, "cmd_zoo_list", cut)
    assert cli(["zoo", "list", "--checkpoint", "x"]) == 141
    assert capsys.readouterr().err == ""


def test_a_closed_stdout_ends_quietly(ckpt: Path, aptitude: Aptitude) -> None:
    """`modelsat zoo list >&-`: Python starts with sys.stdout None; no AttributeError traceback (issue 21, case 5)."""
    Zoo(aptitude, ckpt / "zoo").add("m", {q: 1.0 for q in aptitude.question_ids})
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for extra in (["--json"], []):
        proc = subprocess.run(["sh", "-c", f'"{sys.executable}" -m modelsat.cli zoo list --checkpoint "{ckpt}" '
                               f'{" ".join(extra)} >&-'], capture_output=True, text=True, cwd=REPO, env=env,
                              timeout=120)
        assert proc.returncode == 141 and proc.stderr == "", proc.stderr


# ---- where and what: the tester's second round ------------------------------------------------------------------
def test_cost_unit_without_a_cost_is_refused(ckpt: Path, tmp_path: Path, aptitude: Aptitude, capsys) -> None:
    res = results_file(tmp_path, aptitude)
    for extra in ([], ["--params-b", "7"]):
        assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", "m", "--results", res, "--cost-unit", "usd",
                    *extra]) == 2
        assert error_line(capsys) == ("modelsat zoo add: error: --cost-unit 'usd' names the unit of --cost; give "
                                      "--cost or drop it")
    assert list((ckpt / "zoo").iterdir()) == []
    assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", "m", "--results", res, "--params-b=-0.0"]) == 0
    assert json.loads(next((ckpt / "zoo").glob("*.json")).read_text())["params_b"] == 0.0
    assert "-0.0" not in next((ckpt / "zoo").glob("*.json")).read_text()


@pytest.mark.parametrize("column, value, shown, fmt", [("cost", "5", "'5'", "parquet"),
                                                       ("params_b", True, "True", "parquet"),
                                                       ("cost", "5", "'5'", "jsonl"),
                                                       ("params_b", "yes", "'yes'", "csv")])
def test_costs_beside_the_results_must_be_numbers(ckpt: Path, tmp_path: Path, aptitude: Aptitude, capsys,
                                                  column: str, value, shown: str, fmt: str) -> None:
    """A models file with cost '5' (a string) or params_b True is refused naming file and column (case 10)."""
    table = tmp_path / "table"
    table.mkdir()
    res = results_file(table, aptitude, name="results.csv")
    models = pd.DataFrame({"model": ["m"], "cost": [None], "params_b": [None], "cost_unit": [""]}, dtype=object)
    models[column] = [value]
    path = table / f"models.{fmt}"
    {"parquet": lambda: models.to_parquet(path), "csv": lambda: models.to_csv(path, index=False),
     "jsonl": lambda: models.to_json(path, orient="records", lines=True)}[fmt]()
    assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", "m", "--results", res]) == 2
    line = error_line(capsys)
    assert line.startswith(f"modelsat zoo add: error: {path}: ") and f"'{column}'" in line, line
    assert f"{shown} is not a number" in line, line
    assert list((ckpt / "zoo").iterdir()) == []


def test_a_bad_cost_from_the_models_file_names_it_on_stderr(ckpt: Path, tmp_path: Path, aptitude: Aptitude,
                                                           capsys) -> None:
    table = tmp_path / "table"
    table.mkdir()
    res = results_file(table, aptitude, name="results.csv")
    pd.DataFrame({"model": ["m"], "cost": [-2.0], "cost_unit": ["usd"]}).to_parquet(table / "models.parquet")
    assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", "m", "--results", res]) == 2
    line = error_line(capsys)
    assert "cost must be a finite number >= 0, got -2.0" in line and str(table / "models.parquet") in line


def test_paths_of_the_wrong_kind_are_named(ckpt: Path, tmp_path: Path, aptitude: Aptitude, capsys) -> None:
    res = results_file(tmp_path, aptitude)
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain").write_text("x")
    cases = [
        (["zoo", "add", "--checkpoint", str(ckpt), "--name", "m", "--results", str(tmp_path / "folder")],
         f"results {tmp_path / 'folder'} is a folder, not a file"),
        (["zoo", "list", "--checkpoint", str(tmp_path / "plain")], f"checkpoint {tmp_path / 'plain'} is a file, not a "
                                                                   "folder"),
        (["zoo", "list", "--checkpoint", ""], "a checkpoint path is needed"),
        (["zoo", "list", "--checkpoint", " "], "a checkpoint path is needed"),
    ]
    for args, words in cases:
        assert cli(args) == 2
        assert words in error_line(capsys)
    shutil.rmtree(ckpt / "zoo")
    (ckpt / "zoo").write_text("")
    assert cli(["zoo", "add", "--checkpoint", str(ckpt), "--name", "m", "--results", res]) == 2
    assert f"{ckpt / 'zoo'} is a file, not a folder" in error_line(capsys)


def test_data_split_out_that_cannot_be_a_file_is_one_line(tmp_path: Path, aptitude: Aptitude, capsys) -> None:
    """--out an existing folder, or under a file: one line naming it, no temporary file names (case 11)."""
    from conftest import make_synthetic_table

    from modelsat.aptitude import build_aptitude
    from modelsat.data.table import RoutingTable

    table = make_synthetic_table(tmp_path / "table")
    build_aptitude(RoutingTable.load(table), num_tasks=2, per_task=3).save(tmp_path / "apt.json")
    (tmp_path / "out").mkdir()
    (tmp_path / "file").write_text("x")
    for out, words in [(tmp_path / "out", f"{tmp_path / 'out'} is a folder; give the name of a file"),
                       (tmp_path / "file" / "splits.json", f"{tmp_path / 'file'} is a file, not a folder")]:
        assert cli(["data", "split", "--table", str(table), "--aptitude", str(tmp_path / "apt.json"), "--out",
                    str(out)]) == 2
        line = error_line(capsys)
        assert words in line and ".tmp" not in line, line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [] and (tmp_path / "file").read_text() == "x"


def test_zoo_remove_finds_a_name_given_with_spaces(ckpt: Path, aptitude: Aptitude, capsys) -> None:
    Zoo(aptitude, ckpt / "zoo").add("Yi-34B", {q: 1.0 for q in aptitude.question_ids})
    assert cli(["zoo", "remove", "--checkpoint", str(ckpt), "--name", " yi-34b "]) == 2   # names are case-sensitive
    assert "unknown model 'yi-34b'" in error_line(capsys)
    assert cli(["zoo", "remove", "--checkpoint", str(ckpt), "--name", " Yi-34B "]) == 0
    assert list((ckpt / "zoo").iterdir()) == []


# ---- help ---------------------------------------------------------------------------------------------------
def _parsers(parser, path=("modelsat",)):
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_subcommand_names_a_command_that_exists() -> None:
    """The parser names each subcommand's handler by its name in modelsat/commands.py (imported after parsing): a
    name that is not there would fail only when that command runs."""
    import modelsat.commands
    from modelsat.cli import build_parser

    leaves = [(path, parser.get_default("fn")) for path, parser in _parsers(build_parser())
              if parser.get_default("fn") is not None]
    assert len(leaves) == 14, leaves
    assert all(callable(getattr(modelsat.commands, fn, None)) for _, fn in leaves), leaves
    assert {fn for _, fn in leaves} == {n for n in vars(modelsat.commands) if n.startswith("cmd_")}


def test_every_option_has_help_and_shows_its_default() -> None:
    import argparse

    from modelsat.cli import build_parser

    from modelsat.infer import build_parser as rank_parser

    missing, no_default = [], []
    for path, parser in [*_parsers(build_parser()), (("modelsat", "rank"), rank_parser())]:
        if path[1:] in (("train",), ("rank",)) and parser.add_help is False:   # placeholders: their own parsers
            continue
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.help == "==SUPPRESS==":
                continue
            if not action.help:
                missing.append(f"{' '.join(path)} {action.option_strings[0]}")
            elif not (action.default is None or action.default is False or action.default == ""
                      or action.default is argparse.SUPPRESS) and isinstance(action.default, (int, float, str)) \
                    and "default" not in formatter._get_help_string(action):
                no_default.append(f"{' '.join(path)} {action.option_strings[0]}")
    assert not missing and not no_default, (missing, no_default)


def test_train_help_lists_every_config_field_with_its_doc(capsys) -> None:
    from modelsat.config import field_docs

    with pytest.raises(SystemExit):
        cli(["train", "--help"])
    out = capsys.readouterr().out
    fields = field_docs()
    assert len(fields) > 60 and all(doc for _, _, doc in fields)
    for key, default, doc in fields:
        assert f"  {key} [" in out, key
    assert "Converter that reads `input`" in out and "shipped config" in out


def test_version_and_shipped_configs_by_name(capsys) -> None:
    from modelsat import __version__
    from modelsat.config import load_config

    with pytest.raises(SystemExit):
        cli(["--version"])
    assert capsys.readouterr().out.strip() == f"modelsat {__version__}"
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert declared == __version__, "pyproject.toml and modelsat/version.py give two versions"
    assert load_config("tiny") == load_config(REPO / "configs" / "tiny.yaml")
    assert (REPO / "modelsat" / "py.typed").is_file()


def test_options_before_train_and_rank_go_along(tiny_checkpoint: Path, capsys) -> None:
    assert cli(["--log-level", "DEBUG", "--log-json", "rank", "--checkpoint", str(tiny_checkpoint), "--json",
                "What is the capital of France?"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["model"] in err and '"decision"' in err
    assert cli(["--debug", "rank", "--checkpoint", str(tiny_checkpoint), "--top-k", "1", "Solve 2x = 4."]) == 0
    with pytest.raises(SystemExit) as exit_:
        cli(["zoo", "list", "--checkpoint", str(tiny_checkpoint), "--no-such-option"])
    assert exit_.value.code == 2 and "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_python_dash_m_modelsat_is_the_modelsat_command(ckpt: Path) -> None:
    proc = run("zoo", "list", "--checkpoint", str(ckpt), "--json", module="modelsat")
    assert proc.returncode == 0, proc.stderr
    assert run("zoo", "list", "--checkpoint", str(ckpt), "--json").stdout == proc.stdout
    bad = run("zoo", "list", "--checkpoint", str(ckpt / "nowhere"), module="modelsat")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
