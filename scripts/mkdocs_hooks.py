"""MkDocs hook (mkdocs.yml `hooks:`): the reference pages are generated from the code at every build, so they cannot
drift from it.

    <!-- reference: configuration -->   every config field (`modelsat.config.field_docs()`): key, default, its doc
    <!-- reference: cli -->             every `modelsat` command's --help, from its parser (modelsat/cli.py; `train`
                                        and `rank` parse their own options: modelsat/train.py, modelsat/infer.py)
    <!-- reference: results -->         benchmarks/RESULTS.md as it is in the repository (its links to files
                                        outside the site, and within itself, shown as text: the page's own table
                                        of contents navigates it)

A page holding one of these lines gets it replaced by the generated Markdown. `python scripts/mkdocs_hooks.py cli`
(or `configuration`) prints it.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
from pathlib import Path

MARKERS = ("configuration", "cli", "results")
REPO = Path(__file__).resolve().parents[1]


def configuration_reference() -> str:
    """One table per config section: every field of `modelsat.config` with its default and its one-line doc."""
    from modelsat.config import field_docs

    out, section = [], None
    for key, default, doc in field_docs():
        head = key.split(".")[0]
        if head != section:
            section = head
            out += ["", f"## `{section}`", "", "| key | default | what it does |", "|---|---|---|"]
        shown = repr(default) if isinstance(default, str) else str(default)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        cell = lambda text: text.replace("|", "\\|").replace("\n", " ")  # noqa: E731
        out.append(f"| `{key}` | `{cell(shown)}` | {cell(doc)} |")
    return "\n".join(out).strip() + "\n"


def _help_of(run) -> str:
    """What `run()` prints on stdout before its SystemExit (argparse's --help)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        run()
    return buffer.getvalue()


def _parsers(parser: argparse.ArgumentParser, path: str):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def cli_reference() -> str:
    """Every command's --help as its parser prints it, in the order `modelsat --help` lists them."""
    os.environ["COLUMNS"] = "110"                     # argparse wraps to the terminal: the same width on every build
    from modelsat.cli import build_parser
    from modelsat.infer import build_parser as rank_parser
    from modelsat.train import cli as train_cli

    out = []
    for path, parser in _parsers(build_parser(), "modelsat"):
        if path == "modelsat train":
            text = _help_of(lambda: train_cli(["--help"], prog="modelsat train"))
        elif path == "modelsat rank":
            text = rank_parser("modelsat rank").format_help()
        else:
            text = parser.format_help()
        out += [f"## `{path}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(out)


def results_page() -> str:
    """benchmarks/RESULTS.md, its relative links and images turned into their text (they point outside the site)."""
    text = (REPO / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    text = re.sub(r"!\[([^\]]*)\]\((?!https?://)([^)]+)\)", r"(figure: `benchmarks/\2`)", text)
    return re.sub(r"\[([^\]]+)\]\((?!https?://)[^)]+\)", r"\1", text)


GENERATORS = {"configuration": configuration_reference, "cli": cli_reference, "results": results_page}


def on_page_markdown(markdown: str, page, config, files) -> str:   # noqa: ARG001 (MkDocs' hook signature)
    for name, generate in GENERATORS.items():
        marker = f"<!-- reference: {name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in MARKERS:
        sys.exit(f"usage: python scripts/mkdocs_hooks.py {{{'|'.join(MARKERS)}}}")
    print(GENERATORS[sys.argv[1]]())
