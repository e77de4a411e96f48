"""modelsat's log: the standard library's `logging`, under the logger "modelsat", written to stderr.

    from modelsat.logs import setup_logging
    setup_logging("DEBUG")                    # every routing decision too (logger "modelsat.router", "...gateway")
    setup_logging("INFO", json_lines=True)    # one JSON object per line, with a decision's fields

The package itself configures nothing (the "modelsat" logger has a NullHandler): the commands (`modelsat`,
`train.py`, `infer.py`) call `setup_logging` with their `--log-level` and `--log-json`; a program that imports
modelsat routes, silences or redirects the records as it does any library's. Progress bars (tqdm) are not log
records: they stay on stderr, shown on a terminal.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

logging.getLogger("modelsat").addHandler(logging.NullHandler())


class PlainFormatter(logging.Formatter):
    """The message alone at INFO and DEBUG ("wrote runs/x"), "warning: ..." / "error: ..." above."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message and the record's extra fields
    (`logger.debug("routed", extra={"decision": {...}})`)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup_logging(level: str | int = "INFO", json_lines: bool = False, stream=None) -> logging.Logger:
    """Send the "modelsat" logger's records at `level` and above (a name in LEVELS, or a `logging` number) to
    `stream` (stderr by default), as plain lines or JSON lines. Calling it again replaces the handler it added.
    Raises ValueError on an unknown level name."""
    if isinstance(level, str):
        if level.upper() not in LEVELS:
            raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
        level = getattr(logging, level.upper())
    logger = logging.getLogger("modelsat")
    for handler in [h for h in logger.handlers if getattr(h, "_modelsat", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler._modelsat = True
    handler.setFormatter(JsonLinesFormatter() if json_lines else PlainFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False          # the command's own handler: not printed twice through the root logger
    return logger


def add_logging_arguments(parser, suppress_defaults: bool = False) -> None:
    """`--log-level` and `--log-json` on an argparse parser (`suppress_defaults`: on a subcommand's parser, so
    that the options may also come after the command without overriding the ones before it)."""
    parser.add_argument("--log-level", choices=LEVELS, type=str.upper,
                        default=argparse.SUPPRESS if suppress_defaults else "INFO",
                        help="what the log shows on stderr: DEBUG adds every routing decision (default: INFO)")
    parser.add_argument("--log-json", action="store_true", default=argparse.SUPPRESS if suppress_defaults else False,
                        help="write the log as JSON lines, one object per record (default: plain lines)")
