"""Notification use cases and the saga handler, on in-memory fakes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from services.notification.app import bootstrap
from services.notification.domain import DeliveryFailed, Notification, Undeliverable, now_ms
from services.notification.handlers import HANDLERS
from services.notification.service import NotificationRequest, NotificationService
from shared.config import Settings
from shared.events import Envelope
from shared.kafka_utils import PermanentError
from shared.mongo import is_transient
from tests.unit.notification.fakes import InMemoryNotificationRepository, RecordingSender


@pytest.fixture
def repo() -> InMemoryNotificationRepository:
    return InMemoryNotificationRepository()


def build(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository, sender: RecordingSender
) -> NotificationService:
    return bootstrap(make_settings("notification"), notifications=repo, sender=sender)


def requested(order_id: str = "o-1", kind: str = "order_confirmation", **extra: object) -> Envelope:
    data = {
        "customer_id": "cust-1",
        "customer_email": "ann@example.com",
        "type": kind,
        "subject": "Order confirmed",
        "message": "Your order o-1 is confirmed.",
        **extra,
    }
    return Envelope("NotificationRequested", order_id, "orchestrator", data, customer_id="cust-1")


def handle(service: NotificationService, event: Envelope) -> None:
    HANDLERS[event.event_type](service, event)


def test_a_notification_request_is_sent_and_queues_notification_sent(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository
) -> None:
    sender = RecordingSender()
    event = requested()
    handle(build(make_settings, repo, sender), event)
    stored = repo.get("ntf_o-1_order_confirmation")
    assert (stored.status, stored.attempts, stored.channel, stored.order_id) == ("sent", 1, "email", "o-1")
    assert stored.sent_at is not None
    assert [n.notification_id for n in sender.sent] == ["ntf_o-1_order_confirmation"]
    [sent] = repo.events
    assert (sent.event_type, sent.order_id, sent.causation_id) == ("NotificationSent", "o-1", event.event_id)
    assert sent.data == {
        "notification_id": "ntf_o-1_order_confirmation",
        "type": "order_confirmation",
        "channel": "email",
    }


def test_a_redelivered_notification_request_sends_exactly_once(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository
) -> None:
    sender = RecordingSender()
    service = build(make_settings, repo, sender)
    event = requested()
    handle(service, event)
    handle(service, event)
    handle(service, requested())  # the same request under a new event id
    assert len(sender.sent) == 1
    assert [e.event_type for e in repo.events] == ["NotificationSent"]


def test_each_type_of_an_order_gets_its_own_notification(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository
) -> None:
    sender = RecordingSender()
    service = build(make_settings, repo, sender)
    handle(service, requested(kind="order_confirmation"))
    handle(service, requested(kind="order_failed"))
    assert sorted(repo.notifications) == ["ntf_o-1_order_confirmation", "ntf_o-1_order_failed"]


def test_a_notification_left_pending_by_a_crash_is_sent_on_redelivery(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository
) -> None:
    repo.add(
        Notification(
            "ntf_o-1_order_confirmation", "cust-1", "order_confirmation", "email", "Order confirmed", "Hi", now_ms()
        )
    )
    sender = RecordingSender()
    handle(build(make_settings, repo, sender), requested())
    assert repo.get("ntf_o-1_order_confirmation").status == "sent"
    assert [n.message for n in sender.sent] == ["Hi"]  # the stored notification, as first requested
    assert [e.event_type for e in repo.events] == ["NotificationSent"]


def test_a_failed_send_is_stored_failed_and_raised_so_the_runner_retries(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository
) -> None:
    sender = RecordingSender(ConnectionError("smtp down"))
    service = build(make_settings, repo, sender)
    event = requested()
    with pytest.raises(DeliveryFailed) as err:
        handle(service, event)
    assert not isinstance(err.value, PermanentError)
    failed = repo.get("ntf_o-1_order_confirmation")
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert "smtp down" in failed.error
    assert repo.events == []
    handle(service, event)
    sent = repo.get("ntf_o-1_order_confirmation")
    assert (sent.status, sent.attempts, sent.error) == ("sent", 2, None)
    assert len(sender.sent) == 1
    assert [e.event_type for e in repo.events] == ["NotificationSent"]


def test_an_undeliverable_notification_is_dead_lettered_at_once(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository
) -> None:
    sender = RecordingSender(Undeliverable("no address"))
    with pytest.raises(PermanentError):
        handle(build(make_settings, repo, sender), requested())
    assert repo.get("ntf_o-1_order_confirmation").status == "failed"


@pytest.mark.parametrize(
    "data",
    [
        {"customer_id": "c", "message": "m"},
        {"customer_id": "c", "type": "", "message": "m"},
        {"customer_id": "", "type": "t", "message": "m"},
        {"customer_id": None, "type": "t", "message": "m"},
        {"customer_id": "c", "type": "x" * 51, "message": "m"},
        {"customer_id": "c", "type": "t"},
    ],
)
def test_invalid_notification_request_data_is_rejected_permanently(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository, data: dict[str, object]
) -> None:
    with pytest.raises(PermanentError):
        handle(build(make_settings, repo, RecordingSender()), Envelope("NotificationRequested", "o-1", "x", data))
    assert repo.notifications == {}


def test_the_envelope_customer_is_used_when_the_data_names_none(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository
) -> None:
    data = {**requested().data, "customer_id": None}
    event = Envelope("NotificationRequested", "o-1", "x", data, customer_id="cust-7")
    handle(build(make_settings, repo, RecordingSender()), event)
    assert repo.get("ntf_o-1_order_confirmation").customer_id == "cust-7"


def test_a_missing_subject_is_made_from_the_type(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository
) -> None:
    data = {key: value for key, value in requested().data.items() if key != "subject"}
    handle(build(make_settings, repo, RecordingSender()), Envelope("NotificationRequested", "o-1", "x", data))
    assert repo.get("ntf_o-1_order_confirmation").subject == "Order confirmation"


def test_direct_sends_get_fresh_ids_and_queue_no_events(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository
) -> None:
    sender = RecordingSender()
    service = build(make_settings, repo, sender)
    request = NotificationRequest("cust-1", "promo", "Sale!", "Sale", channel="sms")
    first, second = service.send(request), service.send(request)
    assert first.notification_id != second.notification_id
    assert len(sender.sent) == 2
    assert repo.events == []


def test_sent_metrics_count_free_text_types_as_other(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository
) -> None:
    labels = {"type": "other", "channel": "push"}
    before = REGISTRY.get_sample_value("notifications_sent_total", labels) or 0.0
    build(make_settings, repo, RecordingSender()).send(NotificationRequest("cust-1", "promo-42", "Hi", "Hi", "push"))
    assert REGISTRY.get_sample_value("notifications_sent_total", labels) == before + 1


@pytest.mark.parametrize(
    ("failure", "waited_out"),
    [
        (ConnectionRefusedError("mail server down"), True),
        (TimeoutError("mail server too slow"), True),
        (RuntimeError("a bug in a sender"), False),
    ],
)
def test_an_unreachable_mail_server_is_waited_out_and_a_bug_is_not(
    make_settings: Callable[..., Settings], repo: InMemoryNotificationRepository, failure, waited_out
) -> None:
    service = build(make_settings, repo, RecordingSender(failure))
    with pytest.raises(DeliveryFailed) as err:
        handle(service, requested())
    assert is_transient(err.value) is waited_out


def test_a_refused_recipient_is_undeliverable_not_retried(monkeypatch) -> None:
    import smtplib

    from services.notification.senders import SmtpSender

    class RefusingServer:
        """A stand-in mail server of our own that refuses every recipient, without any network."""

        def __init__(self, *_args: object, **_kwargs: object) -> None:
            pass

        def __enter__(self) -> RefusingServer:
            return self

        def __exit__(self, *_exc: object) -> None:
            return None

        def send_message(self, _message: object) -> None:
            raise smtplib.SMTPRecipientsRefused({"ann@example.com": (550, b"no such user")})

    monkeypatch.setattr(smtplib, "SMTP", RefusingServer)
    notification = Notification(
        notification_id="n-1",
        customer_id="cust-1",
        type="order_confirmation",
        channel="email",
        subject="Hi",
        message="Body",
        created_at=now_ms(),
        customer_email="ann@example.com",
    )
    with pytest.raises(Undeliverable):
        SmtpSender("127.0.0.1", 25, "shop@example.com").send(notification)
