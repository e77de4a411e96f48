"""Nothing modelsat reads from disk runs code: a pickle payload planted as a step folder's training state and a YAML
config with a Python tag are refused with a clear error, and the payload never runs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, tiny_overrides
from modelsat.checkpoint import CheckpointError
from modelsat.config import ConfigError, load_config

import modelsat.train as train  # noqa: E402 (the code of train.py)


class Payload:
    """Unpickling this creates `marker` (as any crafted file could run any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_resume_refuses_a_pickle_payload_and_does_not_run_it(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    state = {"optimizer": Payload(marker), "scheduler": {}, "step": 2, "history": []}
    control = tmp_path / "control.pt"                        # the payload is live: an unsafe load runs it
    torch.save({"x": Payload(tmp_path / "control-ran")}, control)
    torch.load(control, weights_only=False)
    assert (tmp_path / "control-ran").exists()

    planted = tmp_path / "run" / "step-000002" / "training_state.pt"
    planted.parent.mkdir(parents=True)
    torch.save(state, planted)
    with pytest.raises(CheckpointError, match=re.escape(str(planted)) + " holds Python objects.*not loaded "
                       r"\(loading it would call io.open: a crafted file can run any code\).*delete the folder "
                       r".*step-000002"):
        train.main(["--config", str(REPO / "configs" / "tiny.yaml"), *tiny_overrides(tmp_path), "train.resume=true"])
    assert not marker.exists()


def test_a_config_with_a_python_tag_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    text = f"train:\n  out_dir: !!python/object/apply:builtins.open [{str(marker)!r}, w]\n"
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    yaml.unsafe_load(text).clear()                           # the payload is live: an unsafe loader runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ConfigError, match=re.escape(str(path)) + r": line 2, column 12: .*python/object/apply"
                                          r".*tags that build Python objects are refused"):
        load_config(path)
    with pytest.raises(ConfigError, match="tags that build Python objects are refused"):
        load_config(None, [f"train.out_dir=!!python/object/apply:builtins.open [{str(marker)!r}, w]"])
    assert not marker.exists()


UNSAFE = re.compile(r"weights_only\s*=\s*False|allow_pickle\s*=\s*True|\bpickle\.(loads?|Unpickler)\b"
                    r"|yaml\.(unsafe_load|full_load|load)\((?![^)]*Loader=_Loader)|\bjoblib\b|\bdill\b"
                    r"|torch\.load\((?![^)]*weights_only=True)|(?<![.\w])(eval|exec)\(")


def test_no_source_file_loads_anything_unsafely() -> None:
    """Every torch.load is weights_only=True, no np.load allows pickle, YAML goes through a safe loader, and
    nothing evals (tests may build payloads; the code they test may not)."""
    files = [*REPO.glob("modelsat/**/*.py"), *REPO.glob("benchmarks/*.py"), *REPO.glob("scripts/*"),
             REPO / "train.py", REPO / "infer.py"]
    found = [f"{f.relative_to(REPO)}:{n}: {line.strip()}" for f in files if f.is_file()
             for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1)
             if UNSAFE.search(line)]
    assert not found, "\n".join(found)
