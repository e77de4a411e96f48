"""Config: every YAML in configs/ loads, overrides apply, bad values are rejected with the key named."""
from __future__ import annotations

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
    (["route.aptitude_prior=-0.1"], "route.aptitude_prior"),
    (["route.aptitude_neighbours=-1"], "route.aptitude_neighbours"),
    (["route.aptitude_neighbours=1.5"], "route.aptitude_neighbours"),
    (["route.category_prior=-1"], "route.category_prior"),
    (["route.category_prior=inf"], "route.category_prior"),
    (["data.source_tasks=-1"], "data.source_tasks"),
    (["train.zoo_groups=1.5"], "train.zoo_groups"),
    (["data.top_up=-1"], "data.top_up"),
    (["train.zoo_groups=0.5", "train.grouping=model"], "train.zoo_groups needs train.grouping=instruction"),
    (["lr"], "key.sub=value"),
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
