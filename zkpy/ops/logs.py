"""Logging for `zkpy server`: one line per event, the level from --log-level or ZKPY_LOG_LEVEL,
to stderr or to --log-file.

One line per event, because logs are read with grep, tail and collectors that split on newlines:
a message with line breaks (the startup banner) or a traceback becomes one line, its parts joined
with " | ", so every line starts with a time, a level and the logger's name.
"""

from __future__ import annotations

import logging
import os

LEVELS = ("debug", "info", "warning", "error")
ENV_LEVEL = "ZKPY_LOG_LEVEL"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SEPARATOR = " | "


def one_line(text: str) -> str:
    return SEPARATOR.join(part.strip() for part in text.splitlines() if part.strip())


class OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


def resolve_level(flag: str | None, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """--log-level wins, then ZKPY_LOG_LEVEL, then info. Raises ValueError naming what is wrong."""
    if flag is not None:
        return flag
    raw = environ.get(ENV_LEVEL, "").strip()
    if not raw:
        return "info"
    level = raw.lower()
    if level == "warn":
        level = "warning"
    if level not in LEVELS:
        raise ValueError(f"{ENV_LEVEL}={raw} is not a log level: use one of {', '.join(LEVELS)}")
    return level


def configure(level_flag: str | None, log_file: str | None) -> str | None:
    """Set up the root logger; None when done, else the one-line error to report."""
    try:
        level = resolve_level(level_flag)
    except ValueError as e:
        return str(e)
    handler: logging.Handler
    if log_file:
        try:
            handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")  # a restart appends
        except OSError as e:
            return f"--log-file {log_file}: {e.strerror or e}"
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    return None
