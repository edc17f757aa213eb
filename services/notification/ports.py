"""Ports of the notification service: where notifications are stored and how they go out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from services.notification.domain import Notification
from shared.events import Envelope


class NotificationRepository(Protocol):
    def add(self, notification: Notification) -> None:
        """Insert a new notification; raise ``DuplicateNotification`` when its id is taken."""

    def add_all(self, notifications: Sequence[Notification]) -> list[bool]:
        """Insert the new notifications at once; return, in order, whether each was added (False: id taken)."""

    def get(self, notification_id: str) -> Notification | None:
        """Return the notification or None."""

    def update(self, notification: Notification, *, events: Iterable[Envelope] = ()) -> bool:
        """Store ``notification`` and queue ``events`` in one write unless it was already sent."""

    def update_all(self, updates: Sequence[tuple[Notification, tuple[Envelope, ...]]]) -> list[bool]:
        """Apply each (notification, events) as ``update`` would, at once (at most one per notification);
        return, in order, whether each was stored. One that cannot be confirmed counts as not stored."""

    def list_by_customer(self, customer_id: str, limit: int) -> list[Notification]:
        """Return a customer's notifications, newest first."""


class NotificationSender(Protocol):
    def send(self, notification: Notification) -> None:
        """Deliver ``notification``; raise ``Undeliverable`` when retrying cannot help."""
