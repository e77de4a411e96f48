"""The log: stdlib logging under "modelsat", routing decisions at DEBUG, JSON lines on request, a level that
silences it."""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from modelsat.logs import setup_logging
from modelsat.router import Router


def test_routing_decisions_are_logged_at_debug_as_json_lines(tiny_checkpoint: Path) -> None:
    router = Router.from_checkpoint(tiny_checkpoint)
    stream = io.StringIO()
    setup_logging("DEBUG", json_lines=True, stream=stream)
    ranked = router.rank("What is the capital of France?", cost_weight=0.5)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    decisions = [r for r in records if "decision" in r]
    assert len(decisions) == 1 and decisions[0]["level"] == "DEBUG" and decisions[0]["logger"] == "modelsat.router"
    decision = decisions[0]["decision"]
    assert decision["chosen"] == ranked[0].model and decision["cost_weight"] == 0.5
    assert [t["model"] for t in decision["top"]] == [r.model for r in ranked[:3]]
    assert "What is the capital" in decisions[0]["message"]


def test_info_leaves_decisions_out_and_plain_lines_mark_warnings(tiny_checkpoint: Path) -> None:
    router = Router.from_checkpoint(tiny_checkpoint)
    stream = io.StringIO()
    setup_logging("INFO", stream=stream)
    router.rank("What is the capital of France?")
    assert "routed" not in stream.getvalue()
    logging.getLogger("modelsat.evaluate").warning("could not cache %s", "x")
    logging.getLogger("modelsat.evaluate").info("wrote %s", "y")
    assert stream.getvalue().splitlines()[-2:] == ["warning: could not cache x", "wrote y"]
    setup_logging("ERROR", stream=stream)                      # replaces the handler: one line per record, not two
    logging.getLogger("modelsat.evaluate").warning("hidden")
    assert "hidden" not in stream.getvalue()
    with pytest.raises(ValueError, match="not one of DEBUG"):
        setup_logging("LOUD")


def test_the_commands_take_log_level_and_json(tiny_checkpoint: Path, capsys) -> None:
    import modelsat.infer as infer

    args = ["--checkpoint", str(tiny_checkpoint), "--instruction", "Solve for x: 2x + 3 = 7.", "--json"]
    assert infer.main(args + ["--log-level", "debug", "--log-json"]) == 0
    out, err = capsys.readouterr()
    chosen = json.loads(out)[0]["model"]
    assert [json.loads(line)["decision"]["chosen"] for line in err.splitlines() if '"decision"' in line] == [chosen]
    assert infer.main(args) == 0
    assert "routed" not in capsys.readouterr().err                # INFO by default: no decisions
    from modelsat.cli import main as cli

    assert cli(["zoo", "list", "--checkpoint", str(tiny_checkpoint), "--log-level", "WARNING"]) == 0
    with pytest.raises(SystemExit) as exit_:
        cli(["--log-level", "LOUD", "zoo", "list", "--checkpoint", str(tiny_checkpoint)])
    assert exit_.value.code == 2
