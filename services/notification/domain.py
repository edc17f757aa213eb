"""Notifications: the notification record, its delivery states and domain errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

PENDING, SENT, FAILED = "pending", "sent", "failed"
# The saga's types; metrics label any other (free-text, REST) type "other" to bound the series.
SAGA_TYPES = frozenset({"order_confirmation", "order_failed"})


class NotificationError(Exception):
    """Base of the notification service's domain errors."""


class NotificationNotFound(NotificationError):
    def __init__(self, notification_id: str) -> None:
        super().__init__(f"notification {notification_id} not found")
        self.notification_id = notification_id


class DuplicateNotification(NotificationError):
    """A notification with this id is already stored."""


class DeliveryFailed(NotificationError):
    """The sender could not deliver; the notification is stored as failed."""

    def __init__(self, notification_id: str, error: str, *, permanent: bool = False, transient: bool = False) -> None:
        super().__init__(f"notification {notification_id} was not delivered: {error}")
        self.notification_id, self.error, self.permanent = notification_id, error, permanent
        # An unreachable mail server is an outage: the consumer waits it out instead of dead-lettering.
        self.transient = transient


class Undeliverable(Exception):
    """Raised by a sender when no retry can deliver this notification (e.g. no address)."""


def now_ms() -> datetime:
    """Return the current UTC time at millisecond precision, the precision MongoDB stores."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def saga_notification_id(order_id: str, notification_type: str) -> str:
    """Return the id that makes an order's notification of one type unique."""
    return f"ntf_{order_id}_{notification_type}"


@dataclass
class Notification:
    notification_id: str
    customer_id: str
    type: str
    channel: str
    subject: str
    message: str
    created_at: datetime
    order_id: str | None = None
    customer_email: str | None = None
    status: str = PENDING
    error: str | None = None
    attempts: int = 0
    sent_at: datetime | None = None

    def begin_attempt(self) -> None:
        """Count one delivery attempt."""
        self.attempts += 1

    def mark_sent(self, now: datetime) -> None:
        self.status = SENT
        self.error = None
        self.sent_at = now

    def mark_failed(self, error: str) -> None:
        self.status = FAILED
        self.error = error[:500]
