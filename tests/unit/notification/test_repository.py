"""The in-memory notification repository keeps the same contract as the Mongo one."""

from __future__ import annotations

from tests.unit.notification.contract import NotificationRepositoryContract
from tests.unit.notification.fakes import InMemoryNotificationRepository


class TestInMemoryNotificationRepository(NotificationRepositoryContract):
    def make_repo(self) -> InMemoryNotificationRepository:
        return InMemoryNotificationRepository()

    def queued_event_types(self, repo: InMemoryNotificationRepository, notification_id: str) -> list[str]:
        return [event.event_type for event in repo.outbox.get(notification_id, [])]
