"""Direct (REST) charges and refunds through the service, on in-memory fakes."""

from __future__ import annotations

import pytest

from services.payment.domain import (
    AlreadyPaid,
    ChargeRequest,
    IdempotencyConflict,
    NotRefundable,
    Payment,
    PaymentNotFound,
    now_ms,
)
from services.payment.service import PaymentService, rest_payment_id
from shared.config import Settings
from tests.unit.payment.fakes import InMemoryPaymentRepository, ScriptedGateway, in_memory_vault
from tests.unit.payment.support import DECLINED_CARD, GOOD_CARD, build


def test_a_rest_charge_of_an_order_already_paid_is_refused_without_charging(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    gateway = ScriptedGateway()
    service = build(settings, repo, gateway)
    first = service.charge(ChargeRequest("o-1", 10.0, "credit_card", None))
    with pytest.raises(AlreadyPaid) as err:
        service.charge(ChargeRequest("o-1", 10.0, "credit_card", None))
    assert err.value.payment_id == first.payment_id
    assert gateway.calls == 1
    assert repo.events == []  # direct charges are not part of a saga


def test_failed_rest_charges_do_not_count_as_paid(settings: Settings, repo: InMemoryPaymentRepository) -> None:
    service = build(settings, repo)
    declined = ChargeRequest("o-1", 10.0, "credit_card", DECLINED_CARD)
    assert service.charge(declined).status == "failed"
    assert service.charge(declined).status == "failed"
    assert service.charge(ChargeRequest("o-1", 10.0, "credit_card", GOOD_CARD)).status == "completed"


def test_a_rest_charge_that_loses_the_race_for_the_order_is_not_made() -> None:
    class ConcurrentWinner(InMemoryPaymentRepository):
        def add(self, payment: Payment) -> None:
            super().add(payment)
            if payment.payment_id == "pay_loser":  # another charge of the order claims it meanwhile
                super().add(Payment.start("pay_winner", ChargeRequest("o-1", 10.0, "x"), now_ms()))
                self.claim_order("o-1", "pay_winner")

    repo, gateway = ConcurrentWinner(), ScriptedGateway()
    racing = PaymentService(repo, gateway, vault=in_memory_vault(), charges_per_write=50, new_id=lambda: "pay_loser")
    with pytest.raises(AlreadyPaid) as err:
        racing.charge(ChargeRequest("o-1", 10.0, "credit_card", None))
    assert err.value.payment_id == "pay_winner"
    loser = repo.get("pay_loser")
    assert (loser.status, loser.reason, loser.refunded_amount) == ("failed", "already_paid", 0.0)
    assert gateway.calls == 0  # the claim is taken before the gateway is called: no money moved
    assert repo.order_holder("o-1") == "pay_winner"


def test_a_refunded_order_can_be_charged_again_over_rest(settings: Settings, repo: InMemoryPaymentRepository) -> None:
    service = build(settings, repo)
    first = service.charge(ChargeRequest("o-1", 10.0, "credit_card", None))
    service.refund(first.payment_id, "customer asked")
    assert service.charge(ChargeRequest("o-1", 10.0, "credit_card", None)).status == "completed"


def test_a_stale_claim_of_a_refunded_payment_does_not_block_a_new_charge(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    service = build(settings, repo)
    first = service.charge(ChargeRequest("o-1", 10.0, "credit_card", None))
    refunded = repo.get(first.payment_id)
    refunded.refund("crash before the claim was released", now_ms())
    repo.update(refunded, expected_status="completed")
    assert repo.order_holder("o-1") == first.payment_id
    second = service.charge(ChargeRequest("o-1", 10.0, "credit_card", None))
    assert repo.order_holder("o-1") == second.payment_id


def test_rest_refund_queues_payment_refunded_and_refuses_a_second_refund(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    service = build(settings, repo)
    payment = service.charge(ChargeRequest("o-1", 10.0, "credit_card", None, customer_id="cust-9"))
    service.refund(payment.payment_id, "requested")
    [event] = repo.events
    assert (event.event_type, event.order_id, event.customer_id) == ("PaymentRefunded", "o-1", "cust-9")
    with pytest.raises(NotRefundable):
        service.refund(payment.payment_id, "requested")
    with pytest.raises(PaymentNotFound):
        service.refund("pay_missing", "requested")


def test_a_retried_payment_with_the_same_key_charges_once(settings: Settings, repo: InMemoryPaymentRepository) -> None:
    gateway = ScriptedGateway()
    service = build(settings, repo, gateway)
    request = ChargeRequest("key-order", 20.0, "credit_card", None)
    first = service.charge(request, idempotency_key="k-1")
    again = service.charge(request, idempotency_key="k-1")
    assert first.payment_id == again.payment_id == rest_payment_id("k-1")
    assert gateway.calls == 1
    assert len(repo.list_by_order("key-order", 10)) == 1


def test_the_same_key_for_another_payment_is_a_conflict(settings: Settings, repo: InMemoryPaymentRepository) -> None:
    service = build(settings, repo)
    service.charge(ChargeRequest("o-a", 5.0, "card", None), idempotency_key="k-2")
    with pytest.raises(IdempotencyConflict):
        service.charge(ChargeRequest("o-b", 5.0, "card", None), idempotency_key="k-2")


def test_a_retry_after_a_crash_mid_charge_finishes_that_charge(
    settings: Settings, repo: InMemoryPaymentRepository
) -> None:
    service = build(settings, repo)
    request = ChargeRequest("crash-order", 12.5, "card", None)
    # The first attempt stored its payment as processing, then the process died.
    repo.add(Payment.start(rest_payment_id("k-3"), request, now_ms()))
    payment = service.charge(request, idempotency_key="k-3")
    assert (payment.payment_id, payment.status) == (rest_payment_id("k-3"), "completed")
    assert [p.status for p in repo.list_by_order("crash-order", 10)] == ["completed"]
