"""In-memory fakes of the notification service's ports."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

from services.notification.domain import SENT, DuplicateNotification, Notification
from shared.events import Envelope


class InMemoryNotificationRepository:
    """Notifications in a dict; each one's queued events stay in ``outbox``."""

    def __init__(self) -> None:
        self.notifications: dict[str, Notification] = {}
        self.outbox: dict[str, list[Envelope]] = {}
        self.bulk_writes = 0

    @property
    def events(self) -> list[Envelope]:
        return [event for events in self.outbox.values() for event in events]

    def add(self, notification: Notification) -> None:
        if notification.notification_id in self.notifications:
            raise DuplicateNotification(f"notification {notification.notification_id} already exists")
        self.notifications[notification.notification_id] = copy.deepcopy(notification)
        self.outbox[notification.notification_id] = []

    def add_all(self, notifications: Sequence[Notification]) -> list[bool]:
        self.bulk_writes += 1
        added = []
        for notification in notifications:
            try:
                self.add(notification)
                added.append(True)
            except DuplicateNotification:
                added.append(False)
        return added

    def update_all(self, updates: Sequence[tuple[Notification, tuple[Envelope, ...]]]) -> list[bool]:
        self.bulk_writes += 1
        return [self.update(notification, events=events) for notification, events in updates]

    def get(self, notification_id: str) -> Notification | None:
        found = self.notifications.get(notification_id)
        return copy.deepcopy(found) if found else None

    def update(self, notification: Notification, *, events: Iterable[Envelope] = ()) -> bool:
        stored = self.notifications.get(notification.notification_id)
        if stored is None or stored.status == SENT:
            return False
        self.notifications[notification.notification_id] = copy.deepcopy(notification)
        self.outbox[notification.notification_id].extend(events)
        return True

    def list_by_customer(self, customer_id: str, limit: int) -> list[Notification]:
        found = [n for n in self.notifications.values() if n.customer_id == customer_id]
        found.sort(key=lambda n: (n.created_at, n.notification_id), reverse=True)
        return [copy.deepcopy(n) for n in found[:limit]]


class RecordingSender:
    """Remember what was sent; raise the scripted errors first, one per send."""

    def __init__(self, *failures: Exception) -> None:
        self.sent: list[Notification] = []
        self._failures = list(failures)

    def send(self, notification: Notification) -> None:
        if self._failures:
            raise self._failures.pop(0)
        self.sent.append(copy.deepcopy(notification))
