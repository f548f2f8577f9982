"""How Courier logs: text lines for people (the default), or one JSON object per line for a
log shipper (``--log-format json`` on the long-running commands).

A JSON line has ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``event``, ``channel``,
``destination``, ``control_id`` and the ``message`` the text format shows. The context comes
from :func:`context_log` (a logger that adds a channel and destination to each line) and from
``extra={"control_id": ..., "event": ...}`` at the call; a line without an event name is named
after the function that logged it. Nothing is added that the text line does not already hold:
no message body and no patient data in either format, and of an exception only its type.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

from engine.errors import StoreError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT = ("channel", "destination", "control_id")
"""The context fields of a JSON line (null when the line has none)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--log-format`` for a long-running command (:func:`configure` reads it)."""
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text lines (default) or one JSON object per line with timestamp, level, logger, "
        "event, channel, destination and control id, for log shippers",
    )


def configure(verbosity: int, log_format: str = "text", stream: TextIO | None = None) -> None:
    """The root logger at WARNING, INFO (``-v``) or DEBUG (``-vv``), in ``log_format``, on
    ``stream`` (stderr as it is at the call)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    level = logging.DEBUG if verbosity > 1 else logging.INFO if verbosity else logging.WARNING
    logging.basicConfig(level=level, handlers=[handler])
    # urllib3 logs each request's URL at DEBUG, and some vendors take the API key in the query.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None) or record.funcName.strip("_"),
            **{name: getattr(record, name, None) for name in CONTEXT},
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__  # a traceback's text can quote a message
        return json.dumps(entry, ensure_ascii=False, default=str)


class ContextLog(logging.LoggerAdapter):
    """A logger whose lines carry fixed context (a channel, a destination), merged with the
    call's own ``extra`` (a control id, an event name)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def context_log(logger: logging.Logger, **context: str) -> ContextLog:
    """``logger`` with ``context`` (``channel=``, ``destination=``) on each of its lines."""
    return ContextLog(logger, context)


def loggable_error(exc: BaseException) -> str:
    """What a log line may say of an exception caught broadly: its type, and the text only of a
    :class:`StoreError` (the store's own words, a driver's DETAIL left out). Any other text can
    quote what the code was handling: a message's fields, a vendor's answer, a report."""
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, StoreError) else type(exc).__name__
