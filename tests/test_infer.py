"""infer.py over a tiny trained checkpoint: its output, and bad input ending in one line on stderr, exit code 2 and
no traceback (unless --debug). Most runs call main() in this process (a subprocess costs seconds of imports)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from modelsat.checkpoint import CheckpointError
from modelsat.router import read_instructions

INSTRUCTION = "A math question about algebra number 3: which option is right?\nA. first\nB. second"
LONG = "Explain the history of law and economics. " * 40 + "Solve for x: 2x + 3 = 7."

import modelsat.infer as infer_script  # noqa: E402 (the code of infer.py)


def infer(capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `infer.py args`, run in this process."""
    code = infer_script.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("infer.py: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, (word, err)


def test_json_and_table(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    code, out, _ = infer(capsys, "--checkpoint", tiny_checkpoint, "--instruction", INSTRUCTION, "--json", "--top-k", 3)
    ranked = json.loads(out)
    assert code == 0 and len(ranked) == 3
    assert set(ranked[0]) == {"model", "p_correct", "cost", "utility", "shortened"} and not ranked[0]["shortened"]
    file = tmp_path / "in.jsonl"
    file.write_text(json.dumps({"instruction": INSTRUCTION}) + "\n\n" + json.dumps({"instruction": LONG}) + "\n")
    code, out, _ = infer(capsys, "--checkpoint", tiny_checkpoint, "--file", file, "--json")
    short, long = json.loads(out)
    assert code == 0 and not any(r["shortened"] for r in short) and all(r["shortened"] for r in long)
    code, out, _ = infer(capsys, "--checkpoint", tiny_checkpoint, "--file", file)
    assert code == 0 and out.count("p_correct") == 2 and out.count("(shortened: longer than the router reads") == 1
    assert out.index("(shortened") > out.index("Explain the history")            # under the long one


def test_names_with_surrounding_spaces_select_the_same_models(tiny_checkpoint: Path, capsys) -> None:
    code, out, _ = infer(capsys, "--checkpoint", tiny_checkpoint, "--instruction", INSTRUCTION, "--json",
                         "--models", " m-math, m-bio ")
    assert code == 0 and {r["model"] for r in json.loads(out)} == {"m-math", "m-bio"}
    assert_one_line_error(*infer(capsys, "--checkpoint", tiny_checkpoint, "--instruction", INSTRUCTION,
                                 "--models", "m-math,nope")[::2], "unknown model", "nope")


@pytest.mark.parametrize("models", ["", " , ", "m-math,,m-bio", "m-math,"])
def test_an_empty_model_list_or_name_is_refused(tiny_checkpoint: Path, capsys, models: str) -> None:
    code, out, err = infer(capsys, "--checkpoint", tiny_checkpoint, "--instruction", INSTRUCTION, "--models", models)
    assert_one_line_error(code, err, "--models", "empty")
    assert out == ""


@pytest.mark.parametrize("name, content", [("empty.txt", b""), ("blank.txt", b"\n  \n\t\n"),
                                           ("blank.jsonl", b"\r\n\r\n")])
def test_a_file_without_instructions_is_refused(tiny_checkpoint: Path, tmp_path: Path, capsys, name: str,
                                                content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    code, _, err = infer(capsys, "--checkpoint", tiny_checkpoint, "--file", tmp_path / name)
    assert_one_line_error(code, err, name, "holds no instructions")


@pytest.mark.parametrize("name, content, words", [
    ("in.jsonl", b'{"instruction": "ok"}\n\n{"instruction": "bad \\ud83c here"}\n',       # the line counts blank lines
     ['line 3, field "instruction"', "lone surrogate U+D83C at character 5"]),
    ("in.jsonl", b'{"instruction": "ok"}\n{"instruction": "\\udf89"}\n', ["line 2", "U+DF89"]),
    ("in.jsonl", b'{"instruction": "   "}\n', ['line 1, field "instruction" is empty']),
    ("in.jsonl", b"[" * 100_000 + b"\n", ["line 1 is not JSON"]),
    ("in.txt", b"fine\ncaf\xc3 au lait\n", ["line 2 is not UTF-8", "0xC3", "save the file as UTF-8"]),
    ("in.txt", "caf\u00e9\n".encode("utf-16"), ["line 1 is not UTF-8"]),
])
def test_text_that_is_not_text_in_a_file_names_the_line(tiny_checkpoint: Path, tmp_path: Path, capsys, name: str,
                                                        content: bytes, words: list[str]) -> None:
    (tmp_path / name).write_bytes(content)
    code, _, err = infer(capsys, "--checkpoint", tiny_checkpoint, "--file", tmp_path / name)
    assert_one_line_error(code, err, f"{tmp_path / name}: line", *words)


def test_a_file_keeps_its_lines_whole(tmp_path: Path) -> None:
    file = tmp_path / "in.txt"
    file.write_bytes(b"\xef\xbb\xbffirst\r\nsecond \xe2\x80\xa8 still second\n")   # a BOM, CRLF, U+2028 in a line
    assert read_instructions(file) == ["first", "second \u2028 still second"]


def test_invalid_utf8_bytes_on_the_command_line(tiny_checkpoint: Path, capsys) -> None:
    """The real thing: argv bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape)."""
    out = subprocess.run([sys.executable, str(REPO / "infer.py"), "--checkpoint", str(tiny_checkpoint),
                          "--instruction", b"caf\xe9 or tea?"], capture_output=True, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
    assert_one_line_error(out.returncode, out.stderr.decode(), "--instruction holds an invalid character",
                          "U+DCE9 at character 4, the byte 0xE9")
    code, _, err = infer(capsys, "--checkpoint", tiny_checkpoint, "--instruction", "\ud83c")   # a lone surrogate
    assert_one_line_error(code, err, "--instruction", "U+D83C at character 1")


@pytest.mark.parametrize("name, break_it, words", [
    ("connector.safetensors", lambda f: f.write_bytes(f.read_bytes()[:-64]), ["cut short", "re-copy"]),
    ("adapter_config.json", lambda f: f.write_text("garbage"), ["not a readable adapter config"]),
])
def test_a_broken_checkpoint_is_one_line_and_debug_shows_the_traceback(tiny_checkpoint: Path, tmp_path: Path,
                                                                       capsys, name: str, break_it, words) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    break_it(ckpt / name)
    code, _, err = infer(capsys, "--checkpoint", ckpt, "--instruction", INSTRUCTION)
    assert_one_line_error(code, err, str(ckpt / name), *words)
    with pytest.raises(CheckpointError, match=name):
        infer(capsys, "--checkpoint", ckpt, "--instruction", INSTRUCTION, "--debug")
    assert_one_line_error(*infer(capsys, "--checkpoint", tmp_path / "missing", "--instruction", INSTRUCTION)[::2],
                          "does not exist")


def test_an_unexpected_error_is_one_line_with_exit_code_1(tiny_checkpoint: Path, capsys, monkeypatch) -> None:
    from modelsat.router import Router

    def broken(*args, **kwargs):
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(Router, "from_pretrained", broken)
    code, _, err = infer(capsys, "--checkpoint", tiny_checkpoint, "--instruction", INSTRUCTION)
    assert code == 1 and err == "infer.py: error: something unforeseen (RuntimeError; rerun with --debug for the " \
                                "traceback)\n"


def test_a_closed_stdout_pipe_ends_quietly(tiny_checkpoint: Path, capsys, monkeypatch) -> None:
    """`infer.py ... --json | head -1`: the reader is gone before the output is written."""
    read, write = os.pipe()
    os.close(read)
    pipe = os.fdopen(write, "w")
    monkeypatch.setattr(sys, "stdout", pipe)
    code = infer_script.main(["--checkpoint", str(tiny_checkpoint), "--instruction", INSTRUCTION, "--json"])
    monkeypatch.undo()
    pipe.close()                                          # what is left in its buffer goes to /dev/null: no error
    assert code == 141 and capsys.readouterr().err == ""


@pytest.mark.parametrize("args, words", [(["--cost-weight", "nan"], "--cost-weight must be a finite number >= 0, got nan"),
                                         (["--cost-weight", "1e309"], "--cost-weight must be a finite number"),
                                         (["--cost-weight", "-1"], "--cost-weight must be a finite number"),
                                         (["--top-k", "0"], "--top-k must be a positive integer, got 0")])
def test_cost_weight_and_top_k_are_checked_before_the_router_loads(tmp_path: Path, capsys, args: list[str],
                                                                   words: str) -> None:
    """The checkpoint does not exist: the error is the number's, found before any loading (issue 21, case 4)."""
    code, out, err = infer(capsys, "--checkpoint", tmp_path / "none", "--instruction", INSTRUCTION, *args)
    assert_one_line_error(code, err, words)
    assert "checkpoint" not in err and out == ""


def test_an_error_after_loading_is_the_only_line_on_stderr(tiny_checkpoint: Path) -> None:
    """No "Loading weights" bar or FutureWarning before the error line, in a fresh process (issue 21, case 4)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    env.pop("TRANSFORMERS_VERBOSITY", None)
    proc = subprocess.run([sys.executable, str(REPO / "infer.py"), "--checkpoint", str(tiny_checkpoint),
                           "--instruction", INSTRUCTION, "--models", "m-math,no-such-model"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("infer.py: error: unknown model(s) ['no-such-model']"), proc.stderr


def test_a_closed_stdout_ends_quietly(tiny_checkpoint: Path) -> None:
    """`infer.py ... >&-`: sys.stdout is None; no AttributeError traceback (issue 21, case 5)."""
    proc = subprocess.run(["sh", "-c", f'"{sys.executable}" "{REPO / "infer.py"}" --checkpoint "{tiny_checkpoint}" '
                           f'--instruction "What is 2+2?" --json >&-'], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize("content", ["\u200b\n".encode(), b"\x00\x00\n", "\ufeff\ufeff\n".encode()])
def test_a_file_line_of_invisible_characters_is_empty(tmp_path: Path, capsys, content: bytes) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"What is 2+2?\n" + content)
    code, _, err = infer(capsys, "--checkpoint", tmp_path / "none", "--file", path)
    assert_one_line_error(code, err, f"{path}: line 2 is empty (only invisible characters")
