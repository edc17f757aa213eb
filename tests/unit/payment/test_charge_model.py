"""Model-based test of the payment service's money invariants.

Hypothesis interleaves, for two orders: the saga's PaymentRequested and RefundRequested (new ones,
and redeliveries of any handled before, one by one or as a fetched batch), REST charges with and
without an Idempotency-Key (a key may be retried, or reused for another order), REST refunds, and
crashes: the gateway moves the money and then the process dies before the service hears back.
A saga command caught in a crash is redelivered later, as Kafka does with an uncommitted offset.

After every step: no order keeps two charges at the gateway; what the store says matches the
money (a completed payment's charge is kept, a refunded one's given back; a charge is kept only
by a completed payment, or a processing one that a crash interrupted); an order has at most one
completed payment and its claim names it; a saga payment replies PaymentCompleted or
PaymentFailed at most once, and PaymentRefunded at most once. At the end every saga command
caught in a crash is redelivered, and then no saga payment is left processing.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections import Counter

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from services.payment.domain import (
    COMPLETED,
    PROCESSING,
    REFUNDED,
    AlreadyPaid,
    ChargeRequest,
    ChargeResult,
    PaymentError,
)
from services.payment.handlers import HANDLERS, handle_batch
from services.payment.service import PaymentService
from shared.events import Envelope
from tests.unit.batches import one_by_one
from tests.unit.models import model_settings
from tests.unit.orchestrator.fakes import FakeClock
from tests.unit.payment.fakes import InMemoryPaymentRepository, in_memory_vault

GOOD_CARD, DECLINED_CARD = "4242424242424242", "4000000000000002"
ORDERS = {"o-1": (25.5, GOOD_CARD), "o-2": (40.0, DECLINED_CARD), "o-3": (12.0, None)}
KEYS = (None, None, "key-a", "key-b")  # REST Idempotency-Keys; None: no key

MODEL_SETTINGS = model_settings(200, 30)


class Crash(Exception):
    """The process died during the gateway call, after the gateway had moved the money."""


class LedgerGateway:
    """A payment provider that declines DECLINED_CARD and approves the rest; like a real one, a
    repeated idempotency key gets the first answer and moves no money again. It records the money
    it moved, and can be set to crash the caller once right after moving it."""

    def __init__(self, declined: str = DECLINED_CARD) -> None:
        self.declined = declined
        self.answers: dict[str, ChargeResult] = {}
        self.charged: dict[str, tuple[str | None, float]] = {}  # gateway_ref -> (order_id, amount)
        self.refunded: set[str] = set()  # gateway_refs given back
        self.crash_next = False

    def charge(
        self,
        amount: float,
        payment_method: str,
        card_number: str | None,
        *,
        idempotency_key: str,
        order_id: str | None = None,
    ) -> ChargeResult:
        if idempotency_key not in self.answers:
            if card_number == self.declined:
                self.answers[idempotency_key] = ChargeResult(False, "card_declined")
            else:
                self.answers[idempotency_key] = ChargeResult(True, gateway_ref=f"ref_{idempotency_key}")
                self.charged[f"ref_{idempotency_key}"] = (order_id, amount)
        if self.crash_next:
            self.crash_next = False
            raise Crash(idempotency_key)
        return self.answers[idempotency_key]

    def refund(
        self, amount: float, gateway_ref: str | None, *, idempotency_key: str, order_id: str | None = None
    ) -> None:
        assert gateway_ref in self.charged, f"refund of {gateway_ref}, which was never charged"
        assert amount == self.charged[gateway_ref][1], (gateway_ref, amount)
        self.refunded.add(gateway_ref)

    def kept(self) -> dict[str, float]:
        """Approved charges not given back, by payment id (the idempotency key)."""
        kept = {ref: amount for ref, (_order, amount) in self.charged.items() if ref not in self.refunded}
        return {ref.removeprefix("ref_"): amount for ref, amount in kept.items()}


def payment_requested(order_id: str) -> Envelope:
    amount, card = ORDERS[order_id]
    data = {
        "payment_id": f"pay_{order_id}",
        "amount": amount,
        "payment_method": "credit_card",
        "card_details": {"number": card} if card else None,
        "customer_id": "cust-1",
    }
    return Envelope("PaymentRequested", order_id, "orchestrator", data, customer_id="cust-1")


def refund_requested(order_id: str) -> Envelope:
    data = {"payment_id": f"pay_{order_id}", "reason": "cancelled"}
    return Envelope("RefundRequested", order_id, "orchestrator", data, customer_id="cust-1")


class ChargeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.repo = InMemoryPaymentRepository()
        self.gateway = LedgerGateway()
        ids = itertools.count(1)  # REST payment ids: random ones would make the runs differ
        self.service = PaymentService(
            self.repo,
            self.gateway,
            vault=in_memory_vault(),
            charges_per_write=50,
            clock=FakeClock(),
            new_id=lambda: f"pay_rest_{next(ids)}",
        )
        self.handled: list[Envelope] = []  # saga commands delivered at least once
        self.unacked: list[Envelope] = []  # saga commands whose handling a crash cut short

    # --- the saga's commands ------------------------------------------------------------------

    @rule(data=st.data())
    def saga_commands(self, data: st.DataObject) -> None:
        """The worker fetches 1-4 commands (new ones, or ones handled before) and handles them one
        by one or as a batch."""
        fetched = []
        for _ in range(data.draw(st.integers(1, 4), label="size")):
            older = self.handled + self.unacked
            if older and data.draw(st.booleans(), label="redelivery"):
                fetched.append(data.draw(st.sampled_from(older), label="again"))
            else:
                order_id = data.draw(st.sampled_from(sorted(ORDERS)), label="order")
                make = data.draw(st.sampled_from([payment_requested, payment_requested, refund_requested]))
                fetched.append(make(order_id))
        self.deliver(fetched, batched=data.draw(st.booleans(), label="batched"))

    def deliver(self, fetched: list[Envelope], *, batched: bool) -> None:
        try:
            refused = handle_batch(self.service, fetched) if batched else one_by_one(HANDLERS, self.service, fetched)
        except Crash:
            self.unacked += fetched  # nothing of the fetch was acknowledged: all of it comes again
            return
        assert not refused, refused
        self.handled += [event for event in fetched if event not in self.handled]
        self.unacked = [event for event in self.unacked if event not in fetched]

    # --- REST and crashes ---------------------------------------------------------------------

    @rule(order_id=st.sampled_from(sorted(ORDERS)), key=st.sampled_from(KEYS))
    def rest_charge(self, order_id: str, key: str | None) -> None:
        """POST /payments; the same key for another order is a conflict, a retried key is safe."""
        amount, card = ORDERS[order_id]
        with contextlib.suppress(PaymentError, Crash):
            self.service.charge(ChargeRequest(order_id, amount, "credit_card", card), idempotency_key=key)

    @precondition(lambda self: self.repo.payments)
    @rule(data=st.data())
    def rest_refund(self, data: st.DataObject) -> None:
        """POST /payments/{id}/refund."""
        with contextlib.suppress(PaymentError):
            self.service.refund(data.draw(st.sampled_from(sorted(self.repo.payments))), "requested")

    @rule()
    def crash_during_the_next_charge(self) -> None:
        self.gateway.crash_next = True

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def no_order_keeps_two_charges(self) -> None:
        by_order = Counter(self.gateway.charged[f"ref_{pid}"][0] for pid in self.gateway.kept())
        assert all(count <= 1 for count in by_order.values()), (by_order, self.repo.payments)

    @invariant()
    def the_store_matches_the_money(self) -> None:
        kept = self.gateway.kept()
        completed: Counter[str] = Counter()
        for pid, payment in self.repo.payments.items():
            if payment.status == COMPLETED:
                assert pid in kept, payment
                completed[payment.order_id] += 1
                assert self.repo.claims.get(payment.order_id) == pid, (payment, self.repo.claims)
            if payment.status == REFUNDED:
                assert f"ref_{pid}" in self.gateway.refunded, payment
            if pid in kept:
                assert payment.status in (COMPLETED, PROCESSING), payment
        assert all(count <= 1 for count in completed.values()), completed

    @invariant()
    def a_saga_payment_replies_once(self) -> None:
        for pid, outbox in self.repo.outbox.items():
            kinds = Counter(event.event_type for event in {event.event_id: event for event in outbox}.values())
            assert kinds["PaymentCompleted"] + kinds["PaymentFailed"] <= 1, (pid, kinds)
            assert kinds["PaymentRefunded"] <= 1, (pid, kinds)
            if kinds["PaymentCompleted"]:
                assert self.repo.payments[pid].status in (COMPLETED, REFUNDED), self.repo.payments[pid]

    def teardown(self) -> None:
        if sys.exc_info()[1] is not None:
            return  # a step failed already: let its error be the one reported
        self.gateway.crash_next = False
        while self.unacked:
            self.deliver(list(self.unacked), batched=False)
        self.no_order_keeps_two_charges()
        self.the_store_matches_the_money()
        self.a_saga_payment_replies_once()
        for order_id in ORDERS:
            saga_payment = self.repo.payments.get(f"pay_{order_id}")
            assert saga_payment is None or saga_payment.status != PROCESSING, saga_payment


def test_no_order_keeps_two_charges_whatever_is_redelivered_retried_or_interrupted() -> None:
    run_state_machine_as_test(ChargeMachine, settings=MODEL_SETTINGS)


# --- regressions found by the model ------------------------------------------------------------
# A charge used to claim its order only after the gateway approved it. A process that died during
# the gateway call left its payment processing with the money moved and the order unclaimed, so
# another charge of the order (the saga's, or a REST retry without a key) was made and kept too.


def interrupted_rest_charge(order_id: str) -> tuple[InMemoryPaymentRepository, LedgerGateway, PaymentService]:
    """A service whose REST charge of ``order_id`` (no Idempotency-Key) died after the gateway charged."""
    repo, gateway = InMemoryPaymentRepository(), LedgerGateway()
    service = PaymentService(
        repo, gateway, vault=in_memory_vault(), charges_per_write=50, clock=FakeClock(), new_id=lambda: "pay_rest"
    )
    gateway.crash_next = True
    amount, card = ORDERS[order_id]
    with pytest.raises(Crash):
        service.charge(ChargeRequest(order_id, amount, "credit_card", card))
    assert repo.payments["pay_rest"].status == PROCESSING
    assert gateway.kept() == {"pay_rest": amount}
    return repo, gateway, service


def test_a_rest_charge_cut_short_by_a_crash_keeps_the_saga_from_charging_the_order_again() -> None:
    repo, gateway, service = interrupted_rest_charge("o-1")

    assert one_by_one(HANDLERS, service, [payment_requested("o-1")]) == {}

    assert gateway.kept() == {"pay_rest": 25.5}
    assert (repo.payments["pay_o-1"].status, repo.payments["pay_o-1"].reason) == ("failed", "already_paid")
    assert [(e.event_type, e.data["reason"]) for e in repo.outbox["pay_o-1"]] == [("PaymentFailed", "already_paid")]


def test_a_rest_charge_cut_short_by_a_crash_keeps_the_order_from_being_charged_again_over_rest() -> None:
    _repo, gateway, service = interrupted_rest_charge("o-1")

    with pytest.raises(AlreadyPaid):
        service.charge(ChargeRequest("o-1", 25.5, "credit_card", GOOD_CARD))

    assert gateway.kept() == {"pay_rest": 25.5}
