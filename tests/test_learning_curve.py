"""benchmarks/learning_curve.py on a tiny run: one row per saved checkpoint (step folders load as routers, also with
the aptitude evidence), cached predictions reused only for the same weights."""
import json
import os
import runpy
import sys
from pathlib import Path

import pytest

from conftest import REPO, train_tiny


def run_script(*args: str) -> None:
    argv = sys.argv
    sys.argv = ["learning_curve.py", *args]
    try:
        runpy.run_path(str(REPO / "benchmarks" / "learning_curve.py"), run_name="__main__")
    finally:
        sys.argv = argv


def test_learning_curve_scores_every_checkpoint_and_reuses_predictions(tmp_path: Path, capsys) -> None:
    run = train_tiny(tmp_path, **{"train.max_steps": 4, "train.save_every": 2, "model.evidence": "true"})
    out = tmp_path / "curve"
    run_script("--run", str(run), "--out", str(out), "--zoos", "all", "--max-instructions", "12")
    curve = json.loads((out / "curve.json").read_text())
    assert [r["step"] for r in curve["curve"]] == [2, 4]
    assert curve["curve"][-1]["checkpoint"].endswith("final")          # final replaces step-000004
    for row in curve["curve"]:
        assert 0.0 <= row["all"]["interaction_auc"] <= 1.0
        assert row["all"]["gain_ci"][0] <= row["all"]["gain"] <= row["all"]["gain_ci"][1]
    assert (out / "learning_curve.png").stat().st_size > 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("predictions-*.npz")}
    assert sorted(stamps) == ["predictions-000002.npz", "predictions-000004.npz"]
    run_script("--run", str(run), "--out", str(out), "--zoos", "all", "--max-instructions", "12")
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("predictions-*.npz")} == stamps
    assert json.loads((out / "curve.json").read_text())["curve"] == curve["curve"]
    os.utime(run / "final" / "connector.safetensors", ns=(1, 1))           # other weights in the same folder
    run_script("--run", str(run), "--out", str(out), "--zoos", "all", "--max-instructions", "12")
    again = {p.name: p.stat().st_mtime_ns for p in out.glob("predictions-*.npz")}
    assert again["predictions-000002.npz"] == stamps["predictions-000002.npz"]
    assert again["predictions-000004.npz"] != stamps["predictions-000004.npz"]                # scored again


def test_learning_curve_refuses_a_folder_without_checkpoints(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_script("--run", str(tmp_path), "--out", str(tmp_path / "o"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"learning_curve.py: error: {tmp_path} holds no step-NNNNNN/ or final/ "
                                       "checkpoint; train with train.save_every > 0\n")
