"""The behaviour every NotificationRepository must have; subclasses provide make_repo()."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.notification.domain import DuplicateNotification, Notification, now_ms
from services.notification.ports import NotificationRepository
from shared.events import Envelope


def a_notification(notification_id: str = "ntf_1", customer_id: str = "cust-1", minutes_ago: int = 0) -> Notification:
    return Notification(
        notification_id=notification_id,
        customer_id=customer_id,
        type="order_confirmation",
        channel="email",
        subject="Your order",
        message="Thanks!",
        created_at=now_ms() - timedelta(minutes=minutes_ago),
        order_id="order-1",
        customer_email="ann@example.com",
    )


def sent_event() -> Envelope:
    data = {"notification_id": "ntf_1", "type": "order_confirmation", "channel": "email"}
    return Envelope("NotificationSent", "order-1", "notification", data)


class NotificationRepositoryContract:
    def make_repo(self) -> NotificationRepository:
        raise AssertionError("subclasses provide make_repo()")

    def queued_event_types(self, repo: NotificationRepository, notification_id: str) -> list[str]:
        raise AssertionError("subclasses provide queued_event_types()")

    def test_an_added_notification_reads_back_equal(self) -> None:
        repo = self.make_repo()
        notification = a_notification()
        repo.add(notification)
        assert repo.get("ntf_1") == notification
        assert repo.get("ntf_1").status == "pending"

    def test_an_unknown_notification_is_none(self) -> None:
        assert self.make_repo().get("ntf_missing") is None

    def test_adding_the_same_id_twice_raises_duplicate_notification(self) -> None:
        repo = self.make_repo()
        repo.add(a_notification())
        with pytest.raises(DuplicateNotification):
            repo.add(a_notification())

    def test_update_stores_the_new_state_and_queues_events(self) -> None:
        repo = self.make_repo()
        notification = a_notification()
        repo.add(notification)
        notification.begin_attempt()
        notification.mark_sent(now_ms())
        assert repo.update(notification, events=[sent_event()]) is True
        assert repo.get("ntf_1") == notification
        assert self.queued_event_types(repo, "ntf_1") == ["NotificationSent"]

    def test_a_failed_notification_can_be_updated_again(self) -> None:
        repo = self.make_repo()
        notification = a_notification()
        repo.add(notification)
        notification.mark_failed("smtp down")
        assert repo.update(notification) is True
        assert repo.get("ntf_1").error == "smtp down"
        notification.mark_sent(now_ms())
        assert repo.update(notification) is True
        assert (repo.get("ntf_1").status, repo.get("ntf_1").error) == ("sent", None)

    def test_a_sent_notification_is_never_updated_again(self) -> None:
        repo = self.make_repo()
        notification = a_notification()
        repo.add(notification)
        notification.mark_sent(now_ms())
        repo.update(notification)
        assert repo.update(notification, events=[sent_event()]) is False
        assert self.queued_event_types(repo, "ntf_1") == []

    def test_list_by_customer_returns_only_theirs_newest_first_within_the_limit(self) -> None:
        repo = self.make_repo()
        repo.add(a_notification("ntf_old", minutes_ago=10))
        repo.add(a_notification("ntf_new", minutes_ago=1))
        repo.add(a_notification("ntf_mid", minutes_ago=5))
        repo.add(a_notification("ntf_other", customer_id="cust-2"))
        assert [n.notification_id for n in repo.list_by_customer("cust-1", 10)] == ["ntf_new", "ntf_mid", "ntf_old"]
        assert [n.notification_id for n in repo.list_by_customer("cust-1", 1)] == ["ntf_new"]
        assert repo.list_by_customer("cust-none", 10) == []

    def test_add_all_adds_the_new_notifications_and_reports_the_taken_ids(self) -> None:
        repo = self.make_repo()
        repo.add(a_notification("ntf_taken"))

        added = repo.add_all([a_notification("ntf_a"), a_notification("ntf_taken", "cust-9"), a_notification("ntf_b")])

        assert added == [True, False, True]
        assert repo.get("ntf_taken").customer_id == "cust-1"
        assert repo.get("ntf_a") is not None and repo.get("ntf_b") is not None
        assert repo.add_all([]) == []

    def test_update_all_stores_all_but_the_notifications_already_sent(self) -> None:
        repo = self.make_repo()
        notifications = [a_notification(f"ntf_{n}") for n in range(3)]
        repo.add_all(notifications)
        done = repo.get("ntf_1")
        done.begin_attempt()
        done.mark_sent(now_ms())
        repo.update(done)  # another worker sent ntf_1 first
        for notification in notifications:
            notification.begin_attempt()
            notification.mark_sent(now_ms())

        stored = repo.update_all([(n, (sent_event(),)) for n in notifications])

        assert stored == [True, False, True]
        assert [self.queued_event_types(repo, f"ntf_{n}") for n in range(3)] == [
            ["NotificationSent"],
            [],
            ["NotificationSent"],
        ]
        assert repo.update_all([]) == []
