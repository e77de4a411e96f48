"""Checkpoints follow the Hugging Face conventions: save_pretrained / from_pretrained, a model card, the base model
by a portable name, a format version checked on load (an older one: a one-line error and `modelsat checkpoint
upgrade`)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from modelsat.checkpoint import FORMAT_FILE, FORMAT_VERSION, CheckpointError, checkpoint_format
from modelsat.checkpoint_writer import upgrade_checkpoint
from modelsat.cli import main as cli
from modelsat.router import Router

INSTRUCTIONS = ["What is the capital of France?", "Solve for x: 2x + 3 = 7.", "Explain the history of law."]


def _scores(router: Router) -> torch.Tensor:
    return torch.as_tensor(router.predict_matrix(INSTRUCTIONS, router.models))


def test_save_pretrained_then_from_pretrained_ranks_identically(tiny_checkpoint: Path, tmp_path: Path) -> None:
    router = Router.from_pretrained(tiny_checkpoint)
    router.add_model("joined-in-memory", {q: float(i % 2) for i, q in enumerate(router.aptitude.question_ids)},
                     cost=1.5, cost_unit="USD/query")
    saved = router.save_pretrained(tmp_path / "copy")
    again = Router.from_pretrained(saved)
    assert again.models == router.models and "joined-in-memory" in again.models
    torch.testing.assert_close(_scores(again), _scores(router), atol=1e-6, rtol=0)
    assert [r.model for r in again.rank(INSTRUCTIONS[1])] == [r.model for r in router.rank(INSTRUCTIONS[1])]
    assert json.loads((saved / "metrics.json").read_text()) == json.loads((tiny_checkpoint / "metrics.json").read_text())
    assert checkpoint_format(saved) == FORMAT_VERSION


def test_a_checkpoint_records_its_format_its_base_model_portably_and_has_a_card(tiny_checkpoint: Path) -> None:
    meta = json.loads((tiny_checkpoint / FORMAT_FILE).read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["modelsat_version"]
    base = json.loads((tiny_checkpoint / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == "tiny-llama"                                  # the config's name, not a path on this machine
    card = (tiny_checkpoint / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: modelsat" in card
    assert "base_model:" not in card                            # tiny-llama is no hub id: left out of the metadata
    for section in ("## Backbones", "## Aptitude test", "## Training data", "## Zoo (when", "## Measured at the end"):
        assert section in card
    router = Router.from_checkpoint(tiny_checkpoint)
    assert all(f"| {name} |" in card for name in router.models)
    assert f"{router.aptitude.num_tasks} tasks × {router.aptitude.per_task} questions" in card


def test_the_built_in_backbones_are_recorded_by_their_hub_ids() -> None:
    from modelsat.pretrained import portable_name

    assert portable_name("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert portable_name("all-minilm-l6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert portable_name("org/some-model") == "org/some-model"


def _format_1(tiny_checkpoint: Path, folder: Path) -> Path:
    """A copy of the checkpoint as modelsat 0.1 wrote it: no format file, no card, the base model a local path."""
    shutil.copytree(tiny_checkpoint, folder)
    (folder / FORMAT_FILE).unlink()
    (folder / "README.md").unlink()
    adapter = json.loads((folder / "adapter_config.json").read_text())
    adapter["base_model_name_or_path"] = "/root/.cache/modelsat/tiny-llama"
    (folder / "adapter_config.json").write_text(json.dumps(adapter))
    return folder


def test_an_older_format_is_a_one_line_error_naming_the_version(tiny_checkpoint: Path, tmp_path: Path,
                                                                  capsys) -> None:
    old = _format_1(tiny_checkpoint, tmp_path / "old")
    with pytest.raises(CheckpointError, match=f"in format 1 .*reads format {FORMAT_VERSION}.*modelsat checkpoint upgrade"):
        Router.from_checkpoint(old)
    assert cli(["zoo", "list", "--checkpoint", str(old)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "format 1" in err and "Traceback" not in err


def test_upgrade_brings_an_older_checkpoint_to_the_current_format(tiny_checkpoint: Path, tmp_path: Path,
                                                                   capsys) -> None:
    old = _format_1(tiny_checkpoint, tmp_path / "old")
    assert cli(["checkpoint", "upgrade", str(old)]) == 0
    assert f"upgraded to format {FORMAT_VERSION}" in capsys.readouterr().out
    assert checkpoint_format(old) == FORMAT_VERSION and (old / "README.md").is_file()
    assert json.loads((old / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama"
    torch.testing.assert_close(_scores(Router.from_checkpoint(old)), _scores(Router.from_checkpoint(tiny_checkpoint)),
                               atol=1e-6, rtol=0)
    assert upgrade_checkpoint(old) is False                      # already current: nothing to do


def test_a_newer_or_broken_format_file_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    new = shutil.copytree(tiny_checkpoint, tmp_path / "new")
    (new / FORMAT_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(CheckpointError, match=f"format {FORMAT_VERSION + 1}, newer .*upgrade modelsat"):
        Router.from_checkpoint(new)
    with pytest.raises(CheckpointError, match="newer"):
        upgrade_checkpoint(new)
    (new / FORMAT_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not a readable format file"):
        Router.from_checkpoint(new)
    (new / FORMAT_FILE).write_text(json.dumps({"format_version": "2"}))
    with pytest.raises(CheckpointError, match="not a positive integer"):
        Router.from_checkpoint(new)


def test_from_pretrained_of_an_unknown_id_offline_is_one_clear_line(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="neither a checkpoint folder, nor a router shipped with modelsat .*, "
                                              "nor a hub repository") as err:
        Router.from_pretrained("no-such-org/no-such-router-xyz")
    assert "\n" not in str(err.value)


def test_save_pretrained_refuses_a_folder_that_is_not_a_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    router = Router.from_checkpoint(tiny_checkpoint)
    other = tmp_path / "my-files"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="holds other files, not a router checkpoint"):
        router.save_pretrained(other)
    assert (other / "notes.txt").read_text() == "keep me" and len(list(other.iterdir())) == 1
    router.save_pretrained(tmp_path / "ckpt")
    router.save_pretrained(tmp_path / "ckpt")                   # over an earlier checkpoint: replaced, as train.py does
    assert checkpoint_format(tmp_path / "ckpt") == FORMAT_VERSION


@pytest.mark.parametrize("bad, message", [("", "a checkpoint path is needed"), (None, "a checkpoint path is needed")])
def test_from_pretrained_of_no_path_is_a_clear_error(bad, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        Router.from_pretrained(bad)


def test_from_pretrained_of_a_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        Router.from_pretrained(tmp_path / "file")


def test_push_to_hub_uploads_a_complete_checkpoint(tiny_checkpoint: Path, monkeypatch) -> None:
    """No hub is reachable here: HfApi's two calls are replaced by recorders; what they get is checked."""
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, private=None, exist_ok=False):
        calls["create"] = (repo_id, private, exist_ok)

    def upload_folder(self, repo_id, folder_path, commit_message, revision=None, create_pr=False):
        folder = Path(folder_path)
        calls["upload"] = (repo_id, commit_message, sorted(p.name for p in folder.iterdir()))
        assert checkpoint_format(folder) == FORMAT_VERSION                 # loadable as it is uploaded
        assert Router.from_pretrained(folder).models == Router.from_checkpoint(tiny_checkpoint).models
        return "https://huggingface.co/me/router/commit/abc"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = Router.from_checkpoint(tiny_checkpoint).push_to_hub("me/router", private=True)
    assert url.endswith("/commit/abc") and calls["create"] == ("me/router", True, True)
    assert calls["upload"][0] == "me/router" and {"README.md", FORMAT_FILE, "adapter_model.safetensors", "zoo",
                                                    "config.yaml", "aptitude.json"} <= set(calls["upload"][2])


def test_a_modelsat_0_2_checkpoint_reading_the_aptitude_evidence_upgrades_and_ranks(tiny_checkpoint: Path,
                                                                                    tmp_path: Path) -> None:
    """Format 2 (modelsat 0.2) had no results bank and no model.evidence_source: its evidence read the aptitude
    answers alone (9 values). `modelsat checkpoint upgrade` marks it evidence_source=aptitude, and it ranks as before."""
    import yaml

    from modelsat.aptitude import Aptitude
    from modelsat.category import CategoryClassifier
    from modelsat.checkpoint_writer import write_checkpoint
    from modelsat.config import load_config
    from modelsat.evidence import APTITUDE_DIM
    from modelsat.model import build_router_model
    from modelsat.zoo import Zoo

    cfg = load_config(tiny_checkpoint / "config.yaml")
    cfg.model.evidence, cfg.model.evidence_source = True, "aptitude"
    aptitude = Aptitude.load(tiny_checkpoint / "aptitude.json")
    model = build_router_model(cfg.model, per_task=aptitude.per_task)
    keys = torch.nn.functional.normalize(
        model.sentence_encoder.encode([aptitude.texts[q] for q in aptitude.question_ids]).float(), dim=-1)
    cats = ["a" if i % 2 else "b" for i in range(len(keys))]
    old = tmp_path / "old"
    write_checkpoint(old, model, cfg, aptitude, Zoo.load(tiny_checkpoint / "zoo", aptitude), aptitude_embeddings=keys,
                     category_classifier=CategoryClassifier.fit(keys, cats, cats))
    saved = yaml.safe_load((old / "config.yaml").read_text())
    del saved["model"]["evidence_source"]                        # as 0.2 wrote it
    (old / "config.yaml").write_text(yaml.safe_dump(saved))
    (old / FORMAT_FILE).write_text(json.dumps({"format": "modelsat-router", "format_version": 2}))
    with pytest.raises(CheckpointError, match="in format 2 .*modelsat checkpoint upgrade"):
        Router.from_pretrained(old)
    assert upgrade_checkpoint(old) is True
    router = Router.from_pretrained(old)
    assert router.config.model.evidence_source == "aptitude"
    assert router.evidence(["What is 2+2?"], router.models).shape == (1, len(router.models), APTITUDE_DIM)
    assert router.rank("What is 2+2?")[0].model in router.models
