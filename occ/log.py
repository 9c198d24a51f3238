"""Structured log lines on stderr: ``key=value`` text or one JSON object per line.

Every line is one event: a short message plus fields. Whatever reaches a line (message, field values,
exception text, records of third-party loggers) passes through :func:`redact` first, so a password in a
Redis or PostgreSQL URL never lands in a log. Lines never span more than one line: newlines inside values
are escaped.

    log = occ.log.get(__name__)
    log.info("configuration reloaded", changed="server.log_level", plans=3)
    -> ts=2025-01-01T12:00:00.000Z level=info logger=occ.daemon msg="configuration reloaded" changed=...
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# scheme://user:password@host -> scheme://user:***@host (several URLs per string, e.g. cluster seeds)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<secret>[^@/\s]*)@")
# password=secret in libpq key/value DSNs and URL query strings
_KV_PASSWORD = re.compile(r"(?P<head>\b(?:password|passwd|pwd)\s*=\s*)(?P<secret>'[^']*'|[^\s&;,]+)", re.I)
_MASK = "***"


def redact(text: str) -> str:
    """``text`` with every URL password and ``password=...`` value replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}:{_MASK}@", text)
    return _KV_PASSWORD.sub(lambda m: f"{m['head']}{_MASK}", text)


def redact_url(url: str) -> str:
    """A URL (or comma list of URLs) safe to print: the password, if any, is masked."""
    return redact(url)


def one_line(exc: BaseException) -> str:
    """An exception as one redacted line: its message, or its type when it has none."""
    text = " ".join(str(exc).split())
    return redact(text) if text else type(exc).__name__


class _Formatter(logging.Formatter):
    def __init__(self, json_lines: bool) -> None:
        super().__init__()
        self._json = json_lines

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "occ_fields", None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                fields.setdefault(key, value)
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = f"{type(record.exc_info[1]).__name__}: {one_line(record.exc_info[1])}"
            fields["traceback"] = self.formatException(record.exc_info)
        clean = {key: _clean(value) for key, value in fields.items()}
        if self._json:
            return json.dumps(clean, ensure_ascii=False, separators=(",", ":"), default=str)
        return " ".join(f"{key}={_text_value(value)}" for key, value in clean.items())


def _timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def _clean(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(redact(str(item)) for item in value)
    return redact(str(value))


_BARE = re.compile(r"[A-Za-z0-9_.:/@+\-,*]+")


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _BARE.fullmatch(text):
        return text
    # quoted like a JSON string: escapes quotes, backslashes and newlines, so the line stays one line
    return json.dumps(text, ensure_ascii=False)


class Logger:
    """A named logger whose calls take a message and keyword fields."""

    __slots__ = ("_logger",)

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def debug(self, msg: str, **fields: Any) -> None:
        self._log(logging.DEBUG, msg, fields)

    def info(self, msg: str, **fields: Any) -> None:
        self._log(logging.INFO, msg, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        self._log(logging.WARNING, msg, fields)

    def error(self, msg: str, **fields: Any) -> None:
        self._log(logging.ERROR, msg, fields)

    def exception(self, msg: str, **fields: Any) -> None:
        """An error line carrying the exception being handled (message and escaped traceback)."""
        if self._logger.isEnabledFor(logging.ERROR):
            self._logger.error(msg, exc_info=True, extra={"occ_fields": fields}, stacklevel=2)

    def _log(self, level: int, msg: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, msg, extra={"occ_fields": fields}, stacklevel=3)


def get(name: str) -> Logger:
    return Logger(name)


_handler: logging.Handler | None = None


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record (ours and third-party) to ``stream`` (stderr) in the given format.

    Calling it again (on reload) swaps level and format in place; records in flight are unaffected.
    """
    global _handler
    root = logging.getLogger()
    if _handler is None:
        _handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(_handler)
    elif stream is not None and isinstance(_handler, logging.StreamHandler):
        _handler.setStream(stream)
    _handler.setFormatter(_Formatter(json_lines=fmt == "json"))
    root.setLevel(LEVELS.get(level, logging.INFO))
