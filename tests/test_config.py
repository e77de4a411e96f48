"""Config: every YAML in configs/ loads, overrides apply, bad values are rejected with the key named."""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml

from modelsat.config import Config, ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
ACCELERATE = sorted((Path(__file__).resolve().parents[1] / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert path.read_text().startswith("#"), "each config opens with the command that runs it"


@pytest.mark.parametrize("path", ACCELERATE, ids=[p.name for p in ACCELERATE])
def test_accelerate_configs_parse(path: Path) -> None:
    d = yaml.safe_load(path.read_text())
    assert d["distributed_type"] in {"NO", "MULTI_GPU", "DEEPSPEED"}
    assert path.read_text().startswith("#")


def test_expected_configs_exist() -> None:
    assert {p.name for p in CONFIGS} >= {"tiny.yaml", "default.yaml", "gpu.yaml", "routerbench.yaml", "routerdc.yaml"}
    assert {p.name for p in ACCELERATE} >= {"cpu.yaml", "multi_gpu.yaml", "deepspeed_zero2.yaml"}


def test_overrides_apply_and_types_convert() -> None:
    cfg = load_config(None, ["train.lr=1e-4", "model.connector=linear", "data.unseen_models=a,b", "train.resume=true"])
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.model.connector == "linear"
    assert cfg.data.unseen_models == ["a", "b"]
    assert cfg.train.resume is True


@pytest.mark.parametrize("override, message", [
    (["model.connector=conv"], "model.connector"),
    (["train.nope=1"], "unknown key"),
    (["train.epochs=0"], "train.epochs"),
    (["train.batch_size=two"], "train.batch_size"),
    (["data.val=0.7", "data.test=0.5"], "data.val"),
    (["route.aptitude_prior=2"], r"override 'route.aptitude_prior=2': hand-weighted route priors are no longer"),
    (["route=1"], r"override 'route=1': hand-weighted route priors .*remove the override"),
    (["data.source_tasks=-1"], "data.source_tasks"),
    (["train.zoo_groups=1.5"], "train.zoo_groups"),
    (["data.top_up=-1"], "data.top_up"),
    (["data.keep_per_task=-1"], "data.keep_per_task"),
    (["data.keep_per_task=5", "data.per_task=4"], r"data.keep_per_task=5 is more than the test's 4 questions"),
    (["data.keep_per_task=2", "data.split_by=source"], "data.keep_per_task needs data.split_by=random"),
    (["lr"], "key.sub=value"),
    # issue 21: every field is range-checked at load (max_steps=-1 used to train one step and exit 0)
    (["train.max_steps=-1"], r"train.max_steps must be an integer >= 0, got -1 \(set on the command line by"),
    (["train.max_minutes=-5"], "train.max_minutes must be a finite number >= 0"),
    (["train.lr=inf"], "train.lr: expected a finite number"),
    (["train.weight_decay=nan"], "train.weight_decay: expected a finite number"),
    (["train.seed=4294967296"], r"train.seed must be an integer in \[0, 4294967295\]"),
    (["train.save_every=-1"], "train.save_every"),
    (["train.evidence_fit_tier=1"], "train.evidence_fit_tier must be 0 or an integer >= 2, got 1"),
    (["train.out_dir="], "train.out_dir must not be empty"),
    (["model.lora_dropout=1"], r"model.lora_dropout must be in \[0, 1\)"),
    (["model.lora_alpha=0"], "model.lora_alpha must be an integer >= 1"),
    (["model.lora_targets="], "model.lora_targets must name at least one"),
    (["model.yes_token=A", "model.no_token=A"], "model.yes_token and model.no_token must differ"),
    (["data.seed=-1"], "data.seed"),
    (["data.train_models=a,b,a"], r"data.train_models names \['a'\] more than once"),
    (["data.zoos={small: []}"], "data.zoos.small is an empty list"),
    (["data.zoos.small=''"], "data.zoos.small is an empty list"),
    (["data.zoos={small: 3}"], "data.zoos.small: expected a list"),
    (["data.aptitude=x.json", "data.splits=x.json"], "three different paths"),
    # overrides: a typo names the override and the closest key; a value that is not YAML is one line
    (["trian.lr=1"], r"override 'trian.lr=1': unknown key\(s\) trian \(did you mean train\?\)"),
    (["train.lr.x=1"], "train.lr is not a section"),
    (["train.lr=[1"], r"override 'train.lr=\[1': line 1, column 3: not valid YAML"),
    (["=3"], "is not a key like train.lr"),
    (["train.out_dir=runs/\udcff"], r"character 6: not valid YAML: .*a lone surrogate: bytes that are not UTF-8"),
])
def test_bad_values_name_the_key(override: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, override)


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.num_soft_tokens=4", "data.zoos={a: [x, y]}"])
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


SECTIONS = [(f.name, f.type) for f in dataclasses.fields(Config)]


@pytest.mark.parametrize("key", [f"{name}.{f.name}" for name, _ in SECTIONS
                                 for f in dataclasses.fields(typing.get_type_hints(Config)[name])
                                 if typing.get_type_hints(typing.get_type_hints(Config)[name])[f.name] in (int, float)])
def test_every_number_field_refuses_minus_one(key: str) -> None:
    """Every int and float field of every section is range-checked: no count, rate, seed or weight is negative
    (a field added without a check fails here)."""
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(None, [f"{key}=-1"])


def test_string_field_overrides_keep_the_text_as_typed() -> None:
    """YAML would read `no` as false and `0755` as 493: a string field takes the override's text."""
    cfg = load_config(None, ["model.yes_token=yes", "model.no_token=no", "train.out_dir=0755"])
    assert (cfg.model.yes_token, cfg.model.no_token, cfg.train.out_dir) == ("yes", "no", "0755")
    assert load_config(None, ["data.zoos.small=a,b"]).data.zoos == {"small": ["a", "b"]}


@pytest.mark.parametrize("text, message", [
    ("train:\n  lr: 1.0e-4\ntrain:\n  epochs: 2\n", "line 3, column 1: not valid YAML: key 'train' appears twice"),
    ("train:\n  lr: 1.0e-4\n  lr: 2.0e-4\n", "line 3, column 3: not valid YAML: key 'lr' appears twice"),
    ("train: !!python/object/apply:os.system ['true']\n", "tags that build Python objects are refused"),
    ("train: [\n", "line 2, column 1: not valid YAML"),
    ("- train\n", "the top level must be a mapping"),
    ("train:\n  out_dir: \x07\n", r"character 19: not valid YAML: character '\\x07' is not allowed"),
    ("model:\n  lora_targets: [[" + ",".join(["x" * 50] * 100) + "]]\n", r"expected a string, got \['x.{,700}\]$"),
    ("train:\n  max_steps: -1\n", "train.max_steps must be an integer >= 0, got -1"),
    ("trian:\n  lr: 1.0\n", r"unknown key\(s\) trian \(did you mean train\?\)"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  out_dir: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="cannot be read as UTF-8"):
        load_config(path)
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(tmp_path)


@pytest.mark.parametrize("route, message", [
    ({"aptitude_prior": 0, "aptitude_neighbours": 100, "category_prior": 0.0}, None),      # all 0: dropped
    ({"aptitude_prior": 2.0, "aptitude_neighbours": 100}, r"route.aptitude_prior=2.0: hand-weighted route priors"),
    ({"category_prior": "yes"}, r"route.category_prior='yes': hand-weighted route priors"),
    ({"aptitude_prior": True}, r"route.aptitude_prior=True: hand-weighted route priors"),
    ({"aptitude_prior": float("nan")}, r"route.aptitude_prior=nan: hand-weighted route priors"),
    (None, None),                                                                          # `route:` left empty
    ({"cost_weight": 0.1}, r"unknown key\(s\) route.cost_weight; the route section is gone"),
    ([1, 2], r"route: \[1, 2\]: the route section is gone"),
])
def test_the_route_section_of_older_configs(tmp_path, route, message) -> None:
    """Configs and checkpoints written before the route priors left carry a `route:` section: all 0 it loads as
    today's config; a prior > 0 (or a key it never had) is one line naming the file and the key."""
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 1e-4}, "route": route}))
    if message is None:
        cfg = load_config(path)
        assert cfg.train.lr == 1e-4 and "route" not in cfg.to_dict()
        return
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("value, message", [
    (0.0, None), (0, None),                                       # the old default: it changed nothing, dropped
    (0.5, r"train.zoo_groups=0.5: this option was tried and not adopted, and is gone"),
    (False, r"train.zoo_groups=False: this option"),
])
def test_a_retired_option_of_older_configs(tmp_path, value, message) -> None:
    """Checkpoints written before `train.zoo_groups` left carry it at 0.0: they load as today's config; any other
    value (which shaped the training) is one line naming the file and the key."""
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 1e-4, "zoo_groups": value}}))
    if message is None:
        cfg = load_config(path)
        assert cfg.train.lr == 1e-4 and "zoo_groups" not in cfg.to_dict()["train"]
        return
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("override, bound", [
    ("model.max_instruction_tokens=32769", "model.max_instruction_tokens must be an integer <= 32,768"),
    ("train.max_steps=1000000001", "train.max_steps must be an integer <= 1,000,000,000"),
    ("train.batch_size=" + "9" * 400, "train.batch_size must be an integer <= 1,000,000, got 999"),
    ("data.per_task=10000000", "data.per_task must be an integer <= 1,000,000"),
    ("train.lr=1" + "0" * 400, "train.lr: expected a finite number"),          # an integer beyond float range
])
def test_integer_fields_have_upper_bounds(override: str, bound: str) -> None:
    """A huge value where it is meaningless is a one-line error, not an overflow or a run that never ends."""
    with pytest.raises(ConfigError, match=re.escape(bound)):
        load_config(None, [override])
    if "<= " in bound:   # the bound itself is accepted
        key, high = override.partition("=")[0], int(bound.split("<= ")[1].split(", got")[0].replace(",", ""))
        assert load_config(None, [f"{key}={high}"]) is not None
