"""Logging: JSON lines in production, readable lines in development, with order context."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

from shared.config import LoggingSettings
from shared.events import scrub_card_numbers

_context: ContextVar[dict[str, str]] = ContextVar("log_context", default={})  # noqa: B039
_service: list[str] = ["-"]


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Attach fields such as order_id and correlation_id to every log line inside the block."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


# Both formatters mask card numbers in every line, tracebacks included: an exception message
# may quote a request or an event that carried one.
class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": _service[0],
            "logger": record.name,
            "message": record.getMessage(),
            **_context.get(),
        }
        audit = getattr(record, "audit", None)
        if audit is not None:  # an audit entry (shared/audit.py) keeps its fields in the JSON line
            line["audit"] = audit
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return scrub_card_numbers(json.dumps(line, default=str))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = f"[{_service[0]}] " + super().format(record)
        context = _context.get()
        if context:
            text += " " + " ".join(f"{k}={v}" for k, v in context.items())
        return scrub_card_numbers(text)


def configure_logging(settings: LoggingSettings, service: str) -> None:
    """Send this process's logs to stderr in the configured format."""
    _service[0] = service
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    # librdkafka and pymongo are chatty at DEBUG; their warnings still come through.
    for noisy in ("pymongo", "werkzeug", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
