"""The cross-service contract: the event envelope, event types and the topic each one travels on."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 1

# Event type -> topic. Every event type travels on exactly one topic, so a consumer
# subscribes by naming the event types it handles. Topics keep the seed's names;
# the `*.commands`-style topics are the saga's requests to one service.
TOPIC_BY_EVENT: dict[str, str] = {
    # order service -> orchestrator, monitoring
    "OrderCreated": "orders.created",
    "OrderCancelRequested": "orders.cancel_requested",
    # orchestrator -> order service, monitoring, notification
    "OrderValidated": "orders.validated",
    "OrderCompleted": "orders.completed",
    "OrderFailed": "orders.failed",
    # orchestrator -> inventory (commands, one topic so each order's commands stay in order)
    "ReserveInventory": "inventory.commands",
    "ReleaseInventory": "inventory.commands",
    "CommitInventory": "inventory.commands",
    # inventory -> orchestrator
    "InventoryReserved": "inventory.reserved",
    "InventoryReservationFailed": "inventory.reservation_failed",
    "InventoryReleased": "inventory.released",
    "InventoryCommitted": "inventory.committed",
    # orchestrator -> payment (commands)
    "PaymentRequested": "payments.requested",
    "RefundRequested": "payments.refund_requested",
    # payment -> orchestrator
    "PaymentCompleted": "payments.completed",
    "PaymentFailed": "payments.failed",
    "PaymentRefunded": "payments.refunded",
    # orchestrator -> notification (command), notification -> monitoring
    "NotificationRequested": "notifications.email",
    "NotificationSent": "notifications.sent",
}
DEAD_LETTER_TOPIC = "dead.letter.queue"
ALL_TOPICS: tuple[str, ...] = (*dict.fromkeys(TOPIC_BY_EVENT.values()), DEAD_LETTER_TOPIC)

# Order statuses and failure reasons, shared by the order service, the saga and monitoring.
ORDER_STATUSES = ("pending", "validated", "inventory_reserved", "payment_processing", "completed", "failed")
TERMINAL_STATUSES = frozenset({"completed", "failed"})
FAILURE_REASONS = (
    "out_of_stock",
    "payment_declined",
    "payment_timeout",
    "order_timeout",
    "cancelled",
    "invalid_order",
)

_REQUIRED = ("event_id", "event_type", "occurred_at", "order_id", "source", "data")


class InvalidEvent(ValueError):
    """A message is not a well-formed event envelope; retrying cannot fix it."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_now() -> str:
    return utc_now().isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Envelope:
    """One event on the wire: JSON, keyed by ``order_id``."""

    event_type: str
    order_id: str
    source: str
    data: dict[str, Any] = field(default_factory=dict)
    customer_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=new_id)
    schema_version: int = SCHEMA_VERSION
    occurred_at: str = field(default_factory=iso_now)

    def __post_init__(self) -> None:
        if self.event_type not in TOPIC_BY_EVENT:
            raise InvalidEvent(f"unknown event type {self.event_type!r}")
        if self.correlation_id is None:
            object.__setattr__(self, "correlation_id", self.order_id)

    @property
    def topic(self) -> str:
        return TOPIC_BY_EVENT[self.event_type]

    @property
    def key(self) -> bytes:
        return self.order_id.encode()

    def follow(self, event_type: str, source: str, data: dict[str, Any] | None = None) -> Envelope:
        """Return the next event in the same flow, caused by this one."""
        return Envelope(
            event_type=event_type,
            order_id=self.order_id,
            source=source,
            data=data or {},
            customer_id=self.customer_id,
            correlation_id=self.correlation_id,
            causation_id=self.event_id,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str).encode()

    @classmethod
    def from_dict(cls, raw: Any) -> Envelope:
        """Build an envelope from decoded JSON, rejecting anything that breaks the schema."""
        if not isinstance(raw, dict):
            raise InvalidEvent("event must be a JSON object")
        missing = [name for name in _REQUIRED if name not in raw]
        if missing:
            raise InvalidEvent(f"event is missing {', '.join(missing)}")
        known = {name: raw[name] for name in cls.__dataclass_fields__ if name in raw}
        for name in ("event_id", "event_type", "order_id", "source", "occurred_at"):
            if not isinstance(known[name], str) or not known[name]:
                raise InvalidEvent(f"event field {name} must be a non-empty string")
        for name in ("data", "metadata"):
            if name in known and not isinstance(known[name], dict):
                raise InvalidEvent(f"event field {name} must be an object")
        if not isinstance(known.get("schema_version", SCHEMA_VERSION), int):
            raise InvalidEvent("event field schema_version must be an integer")
        return cls(**known)

    @classmethod
    def from_json(cls, payload: bytes | str | None) -> Envelope:
        if payload is None:
            raise InvalidEvent("message has no value")
        try:
            raw = json.loads(payload)
        except (ValueError, RecursionError) as err:  # RecursionError: absurdly nested JSON
            raise InvalidEvent(f"message is not valid JSON: {type(err).__name__}: {str(err)[:200]}") from err
        return cls.from_dict(raw)


_CARD_NUMBER = re.compile(r"(?<![0-9])[0-9][0-9 -]{10,22}[0-9](?![0-9])")


def scrub_card_numbers(text: str) -> str:
    """Mask anything in free text that looks like a card number (12-19 digits, spaces or dashes)."""

    def mask(match: re.Match[str]) -> str:
        digits = re.sub(r"[^0-9]", "", match.group())
        return f"****{digits[-4:]}" if 12 <= len(digits) <= 19 else match.group()

    return _CARD_NUMBER.sub(mask, text)


def redact_payload(value: bytes | None) -> bytes | None:
    """Return a message value fit to keep for inspection: card numbers masked, whatever its shape."""
    if value is None:
        return None
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        return scrub_card_numbers(value.decode("utf-8", "replace")).encode()
    _mask_cards(doc)
    return json.dumps(doc, separators=(",", ":")).encode()


def _mask_cards(node: Any) -> None:
    if isinstance(node, dict):
        for key, child in node.items():
            if key == "card_details" and isinstance(child, dict) and isinstance(child.get("number"), str):
                child["number"] = f"****{child['number'][-4:]}"
            else:
                _mask_cards(child)
    elif isinstance(node, list):
        for child in node:
            _mask_cards(child)
