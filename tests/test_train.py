"""train.py end to end on a tiny random model: the files it writes, a falling loss, exact resume."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, tiny_overrides, train_tiny
from modelsat.checkpoint import CheckpointError
from modelsat.evidence import DIM as EVIDENCE_DIM

import modelsat.train as train  # noqa: E402 (the code of train.py)

TINY = str(REPO / "configs" / "tiny.yaml")
CHECKPOINT_FILES = {"adapter_model.safetensors", "adapter_config.json", "connector.safetensors", "config.yaml",
                    "aptitude.json", "splits.json", "metrics.json", "zoo", "modelsat.json", "README.md"}


def test_tiny_run_writes_the_checkpoint_and_loss_falls(tmp_path: Path) -> None:
    metrics = train.main(["--config", TINY, *tiny_overrides(tmp_path, **{"train.max_steps": 24, "train.save_every": 12,
                                                                         "train.batch_size": 4,
                                                                         "model.evidence": "true"})])
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir() if not p.name.startswith(".")} >= {"step-000012", "step-000024", "final"}
    # the aptitude evidence reads the nearest aptitude questions and a category guess: what it needs is stored
    # with every checkpoint, so that a step folder loads as a router too
    evidence_files = {"aptitude_embeddings.safetensors", "category_classifier.safetensors"}
    assert {p.name for p in (run / "final").iterdir()} == CHECKPOINT_FILES | evidence_files
    assert {p.name for p in (run / "step-000012").iterdir()} == CHECKPOINT_FILES | evidence_files | {"training_state.pt"}
    zoo = sorted(json.loads(p.read_text())["name"] for p in (run / "final" / "zoo").glob("*.json"))
    assert zoo == ["m-bio", "m-law", "m-math", "m-weak"]          # the unseen model is not trained on
    losses = [h["loss"] for h in metrics["history"]]
    assert len(losses) == 24
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6
    assert 0.0 <= metrics["val"]["accuracy"] <= 1.0
    assert 0.0 <= metrics["val"]["auc"] <= 1.0 and 0.0 <= metrics["val"]["brier"] <= 1.0
    assert 0.0 <= metrics["val"]["interaction_auc"] <= 1.0
    saved = json.loads((run / "final" / "metrics.json").read_text())
    assert saved["step"] == 24 and saved["val"] == metrics["val"]


def test_resume_continues_at_the_saved_step_with_the_same_data(tmp_path: Path) -> None:
    full = train.main(["--config", TINY, *tiny_overrides(tmp_path / "a", **{"train.max_steps": 6})])
    part = tiny_overrides(tmp_path / "b", **{"train.max_steps": 6, "train.save_every": 4})
    train.main(["--config", TINY, *part])                   # as if it had stopped after the step-4 checkpoint
    state_file = tmp_path / "b" / "run" / "step-000004" / "training_state.pt"
    state = torch.load(state_file, weights_only=True)            # plain tensors and values: nothing to run
    assert 0.0 < state["train_time_s"] < 600.0
    state["train_time_s"] = 1000.0                         # as if the first four steps had taken 1000 s
    torch.save(state, state_file)
    resumed = train.main(["--config", TINY, *part, "train.resume=true"])
    assert [h["step"] for h in resumed["history"]] == list(range(1, 7))
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in full["history"]], abs=1e-5)
    assert 1000.0 <= resumed["train_time_s"] < 1600.0      # the time counts the whole run across the resume
    # The max_minutes budget counts the whole run too: 1000 s already spent is over a 10-minute cap.
    capped = train.main(["--config", TINY, *part, "train.resume=true", "train.max_minutes=10"])
    assert capped["step"] == 5
    # Resumed at the run's last step (as if stopped before final/ was written): no step beyond it is trained.
    ended = train.main(["--config", TINY, *part, "train.resume=true", "train.max_steps=4"])
    assert ended["step"] == 4 and [h["step"] for h in ended["history"]] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "b" / "run" / "final" / "metrics.json").read_text())["step"] == 4
    # A step folder written with another model config is refused in one message saying what to do.
    with pytest.raises(CheckpointError, match=r"cannot resume from \S*step-000004: .*4.*8.*train.resume=false to "
                                              r"start over"):
        train.main(["--config", TINY, *part, "train.resume=true", "model.lora_r=8"])


def test_bad_override_is_a_clear_error(tmp_path: Path) -> None:
    from modelsat.config import ConfigError

    with pytest.raises(ConfigError, match="train.group_size"):
        train.main(["--config", TINY, *tiny_overrides(tmp_path), "train.group_size=0"])


def _planted(root: Path, content: bytes | dict) -> Path:
    """A step folder holding only `training_state.pt` (`content`: raw bytes, or a dict saved with torch.save)."""
    folder = root / "run" / "step-000002"
    folder.mkdir(parents=True)
    if isinstance(content, dict):
        torch.save(content, folder / "training_state.pt")
    else:
        (folder / "training_state.pt").write_bytes(content)
    return folder / "training_state.pt"


@pytest.mark.parametrize("content, message", [
    (b"PK\x03\x04 cut off", r"cannot be read, it is truncated or damaged"),
    (b"not a torch file", r"is not a training state written by train.py \(not a torch file\)"),
    ({"step": 2}, r"is not a training state written by train.py \(it needs optimizer, scheduler, step, history\)"),
    ({"optimizer": {}, "scheduler": {}, "step": -3, "history": []}, r"holds step -3"),
], ids=["truncated", "garbage", "missing-keys", "bad-step"])
def test_a_broken_training_state_is_a_clear_resume_error(tmp_path: Path, content: bytes | dict, message: str) -> None:
    """Every broken training_state.pt names the file and what to do (before: a torch traceback, or a KeyError)."""
    file = _planted(tmp_path, content)
    with pytest.raises(CheckpointError, match=message) as err:
        train.main(["--config", TINY, *tiny_overrides(tmp_path), "train.resume=true"])
    assert str(file) in str(err.value) and "set train.resume=false to start over" in str(err.value)


def test_command_line_errors_are_one_line_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A config, data or resume error reaches the user as one line on stderr and exit code 2 (the `__main__`
    path, cli); --debug shows the traceback instead."""
    assert train.cli(["--config", TINY, *tiny_overrides(tmp_path), "data.input=" + str(tmp_path / "nowhere"),
                      "data.table_dir=" + str(tmp_path / "no-table")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: data.input ") and "does not exist" in err and err.count("\n") == 1
    _planted(tmp_path, b"not a torch file")
    assert train.cli(["--config", TINY, *tiny_overrides(tmp_path), "train.resume=true"]) == 2
    err = capsys.readouterr().err        # the log's progress lines on stderr, then the error as its one last line
    assert "training_state.pt is not a training state" in err.splitlines()[-1] and err.count("error:") == 1
    assert "Traceback" not in err
    with pytest.raises(CheckpointError):
        train.cli(["--config", TINY, *tiny_overrides(tmp_path), "train.resume=true", "--debug"])
    capsys.readouterr()                                                    # its log lines
    assert train.cli(["--config", TINY, *tiny_overrides(tmp_path), "train.lr=1e-3x"]) == 2
    assert capsys.readouterr().err == ("train.py: error: train.lr: expected a number, got '1e-3x' (set on the command "
                                       "line by 'train.lr=1e-3x')\n")
    (tmp_path / "splits.json").write_text("{not json")                      # a data file: one line too
    assert train.cli(["--config", TINY, *tiny_overrides(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"train.py: error: {tmp_path / 'splits.json'}: not valid JSON")
    assert sum("error:" in line for line in err) == 1
    assert train.cli(["--config", TINY, *tiny_overrides(tmp_path), f"data.aptitude={tmp_path}"]) == 2
    assert capsys.readouterr().err == (f"train.py: error: data.aptitude {tmp_path} is a folder; point data.aptitude "
                                       "at a JSON file (built there on first use)\n")
    assert train.cli(["--config", TINY, *tiny_overrides(tmp_path), "train.log_with=tensorbaord"]) == 2
    assert "train.log_with='tensorbaord'" in capsys.readouterr().err     # accelerate's ValueError, named
    (tmp_path / "file").write_text("")
    assert train.cli(["--config", TINY, *tiny_overrides(tmp_path), f"train.out_dir={tmp_path / 'file'}"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_train_script_refuses_a_bad_config_in_one_line(tmp_path: Path) -> None:
    """Issue 21: `train.py train.max_steps=-1` trained one step, wrote final/ and exited 0 (one process start:
    the other kinds of error go through the same `cli` above)."""
    run = subprocess.run([sys.executable, str(REPO / "train.py"), "--config", TINY, f"train.out_dir={tmp_path / 'run'}",
                          "train.max_steps=-1"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert run.stderr == ("train.py: error: train.max_steps must be an integer >= 0, got -1 (set on the command line "
                          "by 'train.max_steps=-1')\n")
    assert not (tmp_path / "run").exists()


def test_resume_with_nothing_to_resume_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """train.resume=true over an out_dir without a step folder starts at step 0 and says it (was silent)."""
    caplog.set_level("INFO", logger="modelsat")
    metrics = train.main(["--config", TINY, *tiny_overrides(tmp_path, **{"train.max_steps": 1, "train.save_every": 0}),
                          "train.resume=true"])
    assert metrics["step"] == 1
    assert "holds no step folder with a training_state.pt: starting at step 0" in caplog.text


@pytest.mark.parametrize("under", ["file.parquet/run", "file.parquet/a/b/run"])
def test_an_out_dir_under_a_file_is_found_before_training(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch, under: str) -> None:
    """`train.out_dir=/x/file.parquet/run` (a parent is a file): one line before any data or training (case 3)."""
    (tmp_path / "file.parquet").write_text("")
    monkeypatch.setattr(train, "prepare", lambda *a, **k: pytest.fail("reached data preparation"))
    assert train.cli(["--config", TINY, *tiny_overrides(tmp_path), f"train.out_dir={tmp_path / under}"]) == 2
    assert capsys.readouterr().err == (f"train.py: error: train.out_dir {tmp_path / under} cannot be made: "
                                       f"{tmp_path / 'file.parquet'} is a file, not a folder; choose another "
                                       "train.out_dir\n")


def test_the_pairwise_loss_acts_only_within_an_instruction_on_misordered_pairs() -> None:
    from modelsat.config import ConfigError, load_config

    cfg = load_config(TINY, ["train.pointwise_weight=0", "train.listwise_weight=0", "train.pairwise_weight=1"])
    y = [torch.tensor([1.0, 0.0, 0.0])]
    w = torch.ones(1)
    ordered = train.loss_fn([torch.tensor([5.0, -5.0, -5.0])], y, w, cfg)
    misordered = train.loss_fn([torch.tensor([-5.0, 5.0, -5.0])], y, w, cfg)
    shifted = train.loss_fn([torch.tensor([5.0, -5.0, -5.0]) + 3.0], y, w, cfg)   # one shift for all: same order
    # softplus(z_wrong - z_right) averaged over the 2 (right, wrong) pairs, by hand
    by_hand = (torch.nn.functional.softplus(torch.tensor(10.0)) + torch.nn.functional.softplus(torch.tensor(0.0))) / 2
    assert ordered < 1e-4 and torch.isclose(misordered, by_hand) and torch.isclose(shifted, ordered)
    assert train.loss_fn([torch.tensor([1.0, 2.0])], [torch.tensor([1.0, 1.0])], w, cfg) == 0   # no wrong model
    assert train.loss_fn([torch.tensor([1.0, 2.0])], [torch.tensor([0.3, 0.4])], w, cfg) == 0   # partial scores
    with pytest.raises(ConfigError, match="grouping=instruction"):
        load_config(TINY, ["train.pairwise_weight=1", "train.grouping=model"])


def _launch(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `accelerate launch`. Past `timeout` (the run takes ~15 s on 2 cores) its worker processes get SIGABRT,
    one at a time, which Python's faulthandler (PYTHONFAULTHANDLER=1) answers with every thread's stack on the
    shared stderr; then everything is killed and the test fails with that output: where a hung rank waits, not only
    that it did. (torchrun starts its workers in sessions of their own: they are found as the launcher's children.)"""
    import contextlib
    import os
    import resource
    import signal

    import psutil    # accelerate's own dependency

    def no_core_files() -> None:                 # SIGABRT must not leave core dumps in the repository
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=no_core_files)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        launcher = psutil.Process(proc.pid)
        launcher.suspend()                       # so that it does not stop the others when the first one aborts
        workers = launcher.children(recursive=True)
        for p in workers:                        # one at a time: their stacks do not interleave
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGABRT)
            psutil.wait_procs([p], timeout=10)
        for p in [*workers, launcher]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:        # something outside the snapshot still holds the pipes
            out, err = "", "(the pipes stayed open after the kill)"
        err = "\n".join(line for line in err.splitlines() if not line.startswith("Extension modules:"))
        pytest.fail(f"accelerate launch still ran after {timeout} s; its workers' stacks on SIGABRT:\n"
                    f"--- stdout ---\n{out[-3000:]}\n--- stderr ---\n{err[-12000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_two_processes_on_gloo_train_as_one_at_the_same_global_batch(tmp_path: Path) -> None:
    """`accelerate launch` with configs/accelerate/cpu-2proc.yaml (2 processes, gloo, no GPU): 2 processes x batch 2
    give the weights and losses of 1 process x batch 4 (DDP averages gradients; the loss is normalised by the global
    batch's weight; the LR schedule counts optimizer steps), with the lower layer frozen and its states read from
    the cache the first run filled, and the aptitude evidence's offset fitted in stage 0 by every process."""
    import safetensors.torch
    import socket

    pytest.importorskip("accelerate")
    common = {"model.lora_dropout": 0, "train.max_steps": 4, "train.save_every": 0, "model.num_layers": 2,
              "model.frozen_layers": 1, "model.evidence": "true", "model.evidence_offset": "linear",
              "train.evidence_fit_epochs": 10}
    train.main(["--config", TINY, *tiny_overrides(tmp_path, **common, **{"train.batch_size": 4})])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two = tmp_path / "run2"
    proc = _launch([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                    str(REPO / "configs" / "accelerate" / "cpu-2proc.yaml"), "--main_process_port", str(port),
                    str(REPO / "train.py"), "--config", TINY,
                    *tiny_overrides(tmp_path, **common, **{"train.batch_size": 2, "train.out_dir": two})])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "0 computed" in proc.stdout + proc.stderr                     # the states came from the first run's cache
    one_metrics = json.loads((tmp_path / "run" / "final" / "metrics.json").read_text())
    two_metrics = json.loads((two / "final" / "metrics.json").read_text())
    assert len(two_metrics["history"]) == len(one_metrics["history"]) == 4
    for a, b in zip(one_metrics["history"], two_metrics["history"]):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (one_metrics["history"], two_metrics["history"])
    for name in ("adapter_model.safetensors", "connector.safetensors"):
        one = safetensors.torch.load_file(tmp_path / "run" / "final" / name)
        other = safetensors.torch.load_file(two / "final" / name)
        assert one.keys() == other.keys()
        assert max((one[k] - other[k]).abs().max().item() for k in one) < 1e-4, name


def test_the_loss_of_a_batch_is_the_weighted_mean_of_each_groups_loss_by_hand() -> None:
    """Groups of different sizes are padded into one tensor: padding must not leak into any term."""
    from modelsat.config import load_config

    cfg = load_config(TINY, ["train.pointwise_weight=0.5", "train.listwise_weight=1", "train.pairwise_weight=2",
                             "train.grouping=instruction"])
    sp, bce = torch.nn.functional.softplus, torch.nn.functional.binary_cross_entropy_with_logits
    z = [torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, 0.7]), torch.tensor([-1.0, 2.0, 0.0, 1.5])]
    y = [torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 0.0])]
    w = torch.tensor([1.0, 0.25, 2.0])

    def by_hand(zi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        loss = 0.5 * bce(zi, yi)
        if yi.sum() > 0:
            loss = loss - (yi / yi.sum() * torch.log_softmax(zi, 0)).sum()
        right, wrong = zi[yi >= 0.5], zi[yi < 0.5]
        if len(right) and len(wrong):
            loss = loss + 2 * sp(wrong[None, :] - right[:, None]).mean()
        return loss

    expected = sum(wi * by_hand(zi, yi) for zi, yi, wi in zip(z, y, w)) / w.sum()
    torch.testing.assert_close(train.loss_fn(z, y, w, cfg), expected)
    torch.testing.assert_close(train.loss_fn(z[1:2], y[1:2], w[1:2], cfg), 0.5 * bce(z[1], y[1]))  # all wrong


def test_stage0_fits_the_evidence_offset_then_keeps_it_frozen(tmp_path: Path) -> None:
    """train.evidence_fit_epochs fits the offset alone before the LLM trains; afterwards only the rest moves."""
    from safetensors.torch import load_file

    from modelsat.config import ConfigError, load_config

    run = train_tiny(tmp_path, **{"train.max_steps": 4, "train.save_every": 2, "model.evidence": "true",
                                  "model.evidence_offset": "linear", "train.evidence_fit_epochs": 30})
    stage0 = json.loads((run / "final" / "metrics.json").read_text())["stage0"]
    assert stage0["epochs"] == 30 and stage0["loss_last"] < stage0["loss_first"]
    early, last = load_file(run / "step-000002" / "connector.safetensors"), load_file(run / "final" / "connector.safetensors")
    offset = [k for k in last if k.startswith("evidence.offset.")]
    assert sorted(offset) == ["evidence.offset.0.bias", "evidence.offset.0.weight"]          # linear: E → 1
    assert last["evidence.offset.0.weight"].shape == (1, EVIDENCE_DIM) and last["evidence.offset.0.weight"].abs().sum() > 0
    for k in offset:                                                                         # fitted, then frozen
        torch.testing.assert_close(early[k], last[k], rtol=0, atol=0)
    assert any(not torch.equal(early[k], last[k]) for k in last if k not in offset)          # the rest trains
    with pytest.raises(ConfigError, match="needs model.evidence=true"):
        load_config(TINY, ["train.evidence_fit_epochs=5"])
