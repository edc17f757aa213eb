"""Ports of the notification service: where notifications are stored and how they go out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from services.notification.domain import Notification
from shared.events import Envelope


class NotificationRepository(Protocol):
    def add(self, notification: Notification) -> None:
        """Insert a new notification; raise ``DuplicateNotification`` when its id is taken."""

    def get(self, notification_id: str) -> Notification | None:
        """Return the notification or None."""

    def update(self, notification: Notification, *, events: Iterable[Envelope] = ()) -> bool:
        """Store ``notification`` and queue ``events`` in one write unless it was already sent."""

    def list_by_customer(self, customer_id: str, limit: int) -> list[Notification]:
        """Return a customer's notifications, newest first."""


class NotificationSender(Protocol):
    def send(self, notification: Notification) -> None:
        """Deliver ``notification``; raise ``Undeliverable`` when retrying cannot help."""
