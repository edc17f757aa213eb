"""The saga's payment commands through the handlers, on in-memory fakes."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from services.payment.domain import ChargeRequest
from shared.config import Settings
from shared.events import Envelope
from shared.kafka_utils import PermanentError
from tests.unit.payment.fakes import InMemoryPaymentRepository, ScriptedGateway
from tests.unit.payment.support import DECLINED_CARD, GOOD_CARD, build, handle, refund_requested, requested


def test_a_payment_request_charges_and_queues_payment_completed(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    event = requested()
    handle(build(settings, repo), event)
    payment = repo.get("pay_o-1")
    assert (payment.status, payment.amount, payment.card_last4, payment.order_id) == ("completed", 40.0, "4242", "o-1")
    [reply] = repo.events
    assert (reply.event_type, reply.order_id, reply.causation_id) == ("PaymentCompleted", "o-1", event.event_id)
    assert reply.data == {"payment_id": "pay_o-1", "amount": 40.0}
    assert repo.order_holder("o-1") == "pay_o-1"


def test_a_declined_card_queues_payment_failed_with_the_reason(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    handle(build(settings, repo), requested(card=DECLINED_CARD))
    assert repo.get("pay_o-1").status == "failed"
    [reply] = repo.events
    assert reply.event_type == "PaymentFailed"
    assert reply.data == {"payment_id": "pay_o-1", "amount": 40.0, "reason": "card_declined"}
    assert repo.order_holder("o-1") is None


def test_an_amount_over_the_limit_fails_instead_of_being_dead_lettered(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    handle(build(settings, repo), requested(amount=2e9, card=None))
    assert repo.events[0].data["reason"] == "amount_over_limit"


def test_a_redelivered_payment_request_charges_once_and_replies_once(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    gateway = ScriptedGateway()
    service = build(settings, repo, gateway)
    event = requested()
    for _ in range(3):
        handle(service, event)
    handle(service, requested())  # the same command again under a new event id
    assert gateway.calls == 1
    assert [e.event_type for e in repo.events] == ["PaymentCompleted"]


def test_a_payment_left_processing_by_a_crash_is_finished_on_redelivery(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    gateway = ScriptedGateway(ConnectionError("gateway vanished"))
    service = build(settings, repo, gateway)
    event = requested()
    with pytest.raises(ConnectionError):
        handle(service, event)
    assert repo.get("pay_o-1").status == "processing"
    assert repo.events == []
    handle(service, event)
    assert repo.get("pay_o-1").status == "completed"
    assert [e.event_type for e in repo.events] == ["PaymentCompleted"]
    assert list(gateway.charged) == ["pay_o-1"]


def test_a_saga_charge_of_an_order_already_paid_over_rest_is_not_made_and_fails(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    gateway = ScriptedGateway()
    service = build(settings, repo, gateway)
    rest = service.charge(ChargeRequest("o-1", 40.0, "credit_card", GOOD_CARD))
    handle(service, requested())
    saga = repo.get("pay_o-1")
    assert (saga.status, saga.reason, saga.refunded_amount) == ("failed", "already_paid", 0.0)
    assert (list(gateway.charged), gateway.refunded) == ([rest.payment_id], {})
    assert [(e.event_type, e.data["reason"]) for e in repo.events] == [("PaymentFailed", "already_paid")]
    assert repo.order_holder("o-1") == rest.payment_id


def test_invalid_payment_request_data_is_rejected_permanently(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    service = build(settings, repo)
    for bad in (
        requested(amount="40"),
        requested(amount=-1),
        requested(amount=True),
        requested(card="12ab"),
        Envelope("PaymentRequested", "o-2", "orchestrator", {"amount": 5.0, "payment_method": "card"}),
    ):
        with pytest.raises(PermanentError):
            handle(service, bad)
    assert repo.payments == {}


def test_a_payment_id_reused_for_another_order_is_rejected_permanently(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    service = build(settings, repo)
    handle(service, requested("o-1"))
    with pytest.raises(PermanentError):
        handle(service, requested("o-2", payment_id="pay_o-1"))


def test_a_refund_request_refunds_a_completed_payment_once(settings: Settings, repo: InMemoryPaymentRepository) -> None:
    gateway = ScriptedGateway()
    service = build(settings, repo, gateway)
    handle(service, requested())
    event = refund_requested()
    handle(service, event)
    handle(service, event)
    handle(service, refund_requested())
    payment = repo.get("pay_o-1")
    assert (payment.status, payment.refunded_amount, payment.refund_reason) == ("refunded", 40.0, "out_of_stock")
    assert [e.event_type for e in repo.events] == ["PaymentCompleted", "PaymentRefunded"]
    assert repo.events[1].data == {"payment_id": "pay_o-1", "amount": 40.0}
    assert repo.events[1].causation_id == event.event_id
    assert gateway.refunded == {"refund_pay_o-1": 40.0}
    assert repo.order_holder("o-1") is None


def test_refund_requests_for_failed_or_unknown_payments_change_nothing(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    service = build(settings, repo)
    handle(service, requested(card=DECLINED_CARD))
    handle(service, refund_requested())
    handle(service, refund_requested("pay_unknown", "o-9"))
    assert repo.get("pay_o-1").status == "failed"
    assert [e.event_type for e in repo.events] == ["PaymentFailed"]


def test_a_refund_request_without_a_payment_id_is_rejected_permanently(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    with pytest.raises(PermanentError):
        handle(build(settings, repo), Envelope("RefundRequested", "o-1", "orchestrator", {"reason": "x"}))


def test_the_full_card_number_is_never_stored(settings: Settings, repo: InMemoryPaymentRepository) -> None:
    service = build(settings, repo)
    service.charge(ChargeRequest("o-1", 10.0, "credit_card", GOOD_CARD))
    handle(service, requested("o-2"))
    for payment in repo.payments.values():
        assert GOOD_CARD not in repr(payment)
        assert payment.card_last4 == "4242"


def test_metrics_count_settled_charges_and_refunds(settings: Settings, repo: InMemoryPaymentRepository) -> None:
    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    before = (
        sample("payments_total", {"outcome": "completed"}),
        sample("payments_total", {"outcome": "failed"}),
        sample("payment_amount_total"),
        sample("refunds_total"),
    )
    service = build(settings, repo)
    handle(service, requested("o-1", amount=10.5))
    handle(service, requested("o-1", amount=10.5))
    handle(service, requested("o-2", card=DECLINED_CARD))
    handle(service, refund_requested())
    after = (
        sample("payments_total", {"outcome": "completed"}),
        sample("payments_total", {"outcome": "failed"}),
        sample("payment_amount_total"),
        sample("refunds_total"),
    )
    assert [round(a - b, 2) for a, b in zip(after, before, strict=True)] == [1, 1, 10.5, 1]
