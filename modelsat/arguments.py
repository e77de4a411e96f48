"""What modelsat's commands share in their argument parsers: help that shows each option's default, and texts
used by several commands.

    parser = with_defaults(argparse.ArgumentParser(...))       # the parser and its subcommands' parsers
"""
from __future__ import annotations

import argparse

from modelsat.checkpoint import shipped_routers

CHECKPOINT_HELP = (f"a router: the name of one shipped with modelsat ({', '.join(shipped_routers())}), a checkpoint "
                   "folder, or a Hugging Face hub repository id")
DEBUG_HELP = "on an error, show its traceback (without it, bad input is one line on stderr and exit status 2)"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Each option's help followed by its default, where it has one the help does not already give (a flag's
    False, None and "" are no default worth showing; 0 is)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("(default" in text or not action.option_strings or default is None or default is False or default == ""
                or default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def with_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` and every subcommand's parser under it, formatted by `DefaultsHelpFormatter`."""
    parser.formatter_class = DefaultsHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                with_defaults(sub)
    return parser
