"""The notification worker's batches: the same notifications, replies and sends as one request after
another, with the new notifications and the sent ones each in one write."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from services.notification.domain import DeliveryFailed, Notification, Undeliverable
from services.notification.handlers import HANDLERS, handle_batch
from services.notification.service import NotificationService
from shared.events import Envelope
from tests.unit.batches import one_by_one
from tests.unit.notification.fakes import InMemoryNotificationRepository, RecordingSender
from tests.unit.notification.test_service import requested

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
World = tuple[NotificationService, InMemoryNotificationRepository, RecordingSender]


def world(*failures: Exception) -> World:
    repo, sender = InMemoryNotificationRepository(), RecordingSender(*failures)
    return NotificationService(repo, sender, sends_per_write=50, clock=lambda: T0), repo, sender


def outcome(w: World) -> tuple[object, ...]:
    _service, repo, sender = w
    replies = {
        nid: [(e.event_type, repr(e.data), e.causation_id) for e in events] for nid, events in repo.outbox.items()
    }
    return repo.notifications, replies, sorted(n.notification_id for n in sender.sent)


def pending(w: World) -> None:
    """A crash after the notification was stored and before it was sent."""
    notification = Notification(
        notification_id="ntf_o-5_order_confirmation",
        customer_id="cust-1",
        type="order_confirmation",
        channel="email",
        subject="Order confirmed",
        message="Your order o-1 is confirmed.",
        created_at=T0,
        order_id="o-5",
        customer_email="ann@example.com",
    )
    w[1].add(notification)


FIRST = requested("o-1")

SCENARIOS: dict[str, tuple[Callable[[World], None] | None, list[Envelope], list[Envelope]]] = {
    "new requests of several orders and types": (
        None,
        [],
        [requested("o-1"), requested("o-1", kind="order_completed"), requested("o-2")],
    ),
    "a redelivery, the same request under a new id, and twice in one batch": (
        None,
        [FIRST],
        [FIRST, requested("o-1"), requested("o-2"), requested("o-2")],
    ),
    "one a crash left pending": (pending, [], [requested("o-4"), requested("o-5")]),
    "unusable requests among good ones": (
        None,
        [],
        [requested("o-1", type=""), requested("o-2"), requested("o-3", customer_id=None, message=None)],
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_batch_ends_as_the_same_requests_one_by_one(name: str) -> None:
    before, setup, batch = SCENARIOS[name]
    alone, batched = world(), world()
    for w in (alone, batched):
        if before:
            before(w)
        one_by_one(HANDLERS, w[0], setup)
    writes_before = batched[1].bulk_writes

    refused_alone = set(one_by_one(HANDLERS, alone[0], batch))
    refused_batched = set(handle_batch(batched[0], batch))

    assert outcome(batched) == outcome(alone)
    assert refused_batched == refused_alone
    assert batched[1].bulk_writes - writes_before == 2


def test_a_failed_send_keeps_what_was_sent_before_it_and_raises_like_one_by_one() -> None:
    service, repo, _sender = world(ConnectionRefusedError("smtp down"))  # the first send fails
    events = [requested("o-1"), requested("o-2"), requested("o-3")]

    with pytest.raises(DeliveryFailed) as raised:
        handle_batch(service, events)

    assert raised.value.transient  # the runner waits out an unreachable server, then retries
    assert repo.get("ntf_o-1_order_confirmation").status == "failed"
    assert repo.get("ntf_o-2_order_confirmation").status == "pending"  # not tried yet
    handle_batch(service, events)  # the retry
    assert {n.status for n in repo.notifications.values()} == {"sent"}
    assert sorted(e.order_id for e in repo.events) == ["o-1", "o-2", "o-3"]


def test_the_sends_before_a_failure_are_stored_with_their_replies() -> None:
    service, repo, sender = world()
    handle_batch(service, [requested("o-1")])
    sender._failures.append(Undeliverable("no address"))

    with pytest.raises(DeliveryFailed) as raised:
        handle_batch(service, [requested("o-2"), requested("o-3")])

    assert raised.value.permanent and not raised.value.transient  # one by one, the runner dead-letters it
    assert [repo.get(f"ntf_o-{n}_order_confirmation").status for n in (1, 2, 3)] == ["sent", "failed", "pending"]
    assert [e.order_id for e in repo.events] == ["o-1"]


def test_a_long_batch_is_sent_and_stored_a_group_at_a_time() -> None:
    """Each group is stored as sent before the next is sent: a crash mid-batch resends one group at most."""
    service, repo, sender = world()
    stored_at_each_send: list[int] = []
    send = sender.send

    def send_noting_stored(notification: Notification) -> None:
        stored_at_each_send.append(sum(n.status == "sent" for n in repo.notifications.values()))
        send(notification)

    sender.send = send_noting_stored  # type: ignore[method-assign]

    handle_batch(service, [requested(f"o-{n}") for n in range(120)])

    assert stored_at_each_send[49] == 0 and stored_at_each_send[50] == 50 and stored_at_each_send[100] == 100
    assert repo.bulk_writes == 2 * 3
    assert len(repo.events) == 120
