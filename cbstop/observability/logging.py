"""Every line on stderr is one JSON object: one per request (the access line), and the
server's own messages, uvicorn's among them.

An access line carries time, request id, method, route template, status, duration, the
client's address (the forwarded one when proxy headers are trusted), its User-Agent, the bytes
of the answer's body, and the key's id and owner — never the key itself, nor anything from
the Authorization header. A message carries time, level, logger, the process id and the
message, and, for some, fields of their own (the startup line: address, workers, database).

`configure` sets this up in each process of a server: the supervisor and every worker.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

access = logging.getLogger("cbstop.access")
log = logging.getLogger("cbstop")
# uvicorn's loggers are "uvicorn.error" (startup, shutdown, workers, parser errors) and
# "uvicorn.access" (off: the access line is ours); both are below this one.
UVICORN = "uvicorn"

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _Raw(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def configure(level: str = "info") -> None:
    """Send access lines (already JSON) and every other message (as JSON) to stderr.

    `level` (CBSTOP_LOG_LEVEL) is the least severe of our and uvicorn's messages written;
    other libraries' messages are written from warnings up (from `level` if that is higher).
    """
    threshold = LEVELS[level]
    raw = logging.StreamHandler(sys.stderr)
    raw.setFormatter(_Raw())
    access.handlers[:] = [raw]
    access.propagate = False
    access.setLevel(logging.INFO)
    for name in ("cbstop", UVICORN):
        logger = logging.getLogger(name)
        logger.handlers[:] = [_json_handler()]
        logger.propagate = False
        logger.setLevel(threshold)
    for child in ("uvicorn.error", "uvicorn.asgi"):
        logging.getLogger(child).setLevel(logging.NOTSET)  # the level of "uvicorn"
    root = logging.getLogger()
    root.handlers[:] = [_json_handler()]
    root.setLevel(max(threshold, logging.WARNING))
    logging.captureWarnings(True)


def _json_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json())
    return handler


def access_line(
    *,
    request_id: str,
    method: str,
    route: str,
    status: int,
    duration: float,
    client: str | None,
    user_agent: str | None,
    size: int,
    key_id: str | None,
    owner: str | None,
) -> None:
    """Write one request's line."""
    access.info(
        orjson.dumps(
            {
                "time": _iso(time.time()),
                "request_id": request_id,
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(duration * 1000, 3),
                "client": client,
                "user_agent": user_agent,
                "bytes": size,
                "key_id": key_id,
                "owner": owner,
            }
        ).decode()
    )


class Throttle:
    """At most one line every `interval` seconds for a trouble that recurs per request: `due`
    says whether to write one now and how many occurrences since the last went unwritten."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = -1.0e9  # so the first trouble is written at once
        self._unwritten = 0

    def due(self) -> int | None:
        """None while a line was written less than `interval` ago (this one is counted);
        else the number of occurrences skipped since that line."""
        now = time.monotonic()
        if now - self._last < self.interval:
            self._unwritten += 1
            return None
        self._last = now
        skipped, self._unwritten = self._unwritten, 0
        return skipped

    def warn(self, doing: str, exc: Exception) -> None:
        """A background task met the database failing while `doing`: one warning line with
        the cause, unless one was written less than `interval` ago."""
        more = self.due()
        if more is None:
            return
        cause = exc.__cause__ or exc
        log.warning(
            "database unavailable while %s: %s: %s%s",
            doing,
            type(cause).__name__,
            cause,
            f" (and {more} more times since the last such line)" if more else "",
        )
