"""Logging: readable lines for people, one JSON object per line for machines."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print every Engine.IO poll; keep it for warnings only.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Condense(logging.Filter):
    """At most one line per kind of message per interval, and no traceback.

    For python-engineio's and python-socketio's own loggers: a client can make them log
    an exception at will (a malformed packet), so each record becomes one short line,
    repeated at most every `interval` seconds with the count of those held back.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._seen: dict[tuple[str, ...], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key: tuple[str, ...] = (record.name, str(record.msg))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            key += (type(exc).__name__,)
            record.msg, record.args = "%s: %s: %s", (record.getMessage(), type(exc).__name__, exc)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        now = time.monotonic()
        last, held = self._seen.get(key, (-self.interval, 0))
        if now - last < self.interval:
            self._seen[key] = (last, held + 1)
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            record.msg, record.args = f"{record.getMessage()} ({held} similar held back)", ()
        return True


def library_loggers() -> tuple[logging.Logger, logging.Logger]:
    """python-socketio's and python-engineio's loggers, through our handlers only.

    Given as objects, the libraries add no stderr handler of their own; warnings and
    errors pass (condensed), their per-connection info lines do not.
    """
    found = []
    for name in ("socketio.server", "engineio.server"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.WARNING)
        if not any(isinstance(f, Condense) for f in logger.filters):
            logger.addFilter(Condense())
        found.append(logger)
    return found[0], found[1]
