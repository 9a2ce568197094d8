"""One JSON line per request on stderr, and the server's own messages.

A line carries time, request id, method, route template, status, duration, and the key's id
and owner — never the key itself, nor anything from the Authorization header.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

access = logging.getLogger("cbstop.access")
log = logging.getLogger("cbstop")


class _Raw(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def configure(level: int = logging.INFO) -> None:
    """Send access lines (already JSON) and other messages (as JSON) to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Raw())
    access.handlers[:] = [handler]
    access.propagate = False
    access.setLevel(logging.INFO)
    other = logging.StreamHandler(sys.stderr)
    other.setFormatter(_Json())
    log.handlers[:] = [other]
    log.propagate = False
    log.setLevel(level)


def access_line(
    *,
    request_id: str,
    method: str,
    route: str,
    status: int,
    duration: float,
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
                "key_id": key_id,
                "owner": owner,
            }
        ).decode()
    )
