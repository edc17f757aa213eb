"""The payment worker's batches: the same payments, claims, replies and money moved as one command
after another, with the new payments, the claims and the settled payments each in one write."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from services.payment.domain import ChargeRequest, ChargeResult, Payment
from services.payment.gateway import SimulatedGateway
from services.payment.handlers import HANDLERS, handle_batch
from services.payment.service import PaymentService
from shared.config import Settings
from tests.unit.batches import one_by_one
from tests.unit.payment.fakes import InMemoryPaymentRepository, in_memory_vault
from tests.unit.payment.support import DECLINED_CARD, GOOD_CARD, refund_requested, requested

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class LedgerGateway(SimulatedGateway):
    """The simulated gateway's answers, with every charge and refund written down by key."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.payment)
        self.charges: list[str] = []
        self.refunds: list[str] = []

    def charge(
        self,
        amount: float,
        payment_method: str,
        card_number: str | None,
        *,
        idempotency_key: str,
        order_id: str | None = None,
    ) -> ChargeResult:
        self.charges.append(idempotency_key)
        return super().charge(amount, payment_method, card_number, idempotency_key=idempotency_key, order_id=order_id)

    def refund(
        self, amount: float, gateway_ref: str | None, *, idempotency_key: str, order_id: str | None = None
    ) -> None:
        self.refunds.append(idempotency_key)
        super().refund(amount, gateway_ref, idempotency_key=idempotency_key, order_id=order_id)


@dataclass
class World:
    service: PaymentService
    repo: InMemoryPaymentRepository
    gateway: LedgerGateway


def world(settings: Settings) -> World:
    repo = InMemoryPaymentRepository()
    gateway = LedgerGateway(settings)
    return World(
        PaymentService(
            repo,
            gateway,
            vault=in_memory_vault(),
            charges_per_write=settings.payment.charges_per_write,
            clock=lambda: T0,
        ),
        repo,
        gateway,
    )


def outcome(w: World) -> tuple[object, ...]:
    """Everything a command can change, and the money moved (each key's first charge moves it)."""
    replies = {
        pid: [(e.event_type, repr(e.data), e.causation_id) for e in events] for pid, events in w.repo.outbox.items()
    }
    return w.repo.payments, replies, w.repo.claims, set(w.gateway.charges), sorted(w.gateway.refunds)


def leftover(w: World) -> None:
    """A crash after the payment was stored and before the charge: it stays ``processing``."""
    request = ChargeRequest("o-5", 40.0, "credit_card", GOOD_CARD, customer_id="cust-1", payment_id="pay_o-5")
    w.repo.add(Payment.start("pay_o-5", request, T0))


def paid_over_rest(w: World) -> None:
    w.service.charge(ChargeRequest("o-6", 40.0, "credit_card", GOOD_CARD), idempotency_key="rest-o-6")


FIRST = requested("o-1")

# (what happened before, events applied one by one first, then the batch)
SCENARIOS = {
    "approved, declined and over the limit": (
        None,
        [],
        [requested("o-1"), requested("o-2", card=DECLINED_CARD), requested("o-3", amount=2e9, card=None)],
    ),
    "a redelivery and the same command under a new event id": (
        None,
        [FIRST],
        [FIRST, requested("o-1"), requested("o-2")],
    ),
    "the same command twice in one batch": (None, [], [requested("o-1"), requested("o-1"), requested("o-2")]),
    "a payment a crash left processing": (leftover, [], [requested("o-4"), requested("o-5")]),
    "an order already paid over REST": (paid_over_rest, [], [requested("o-6"), requested("o-7")]),
    "a refund between charges, and unusable commands": (
        None,
        [requested("o-0")],
        [
            requested("o-1"),
            requested("o-2", amount="40"),
            refund_requested("pay_o-0", "o-0"),
            requested("o-3", payment_id="pay_o-1"),  # another order's payment id
            requested("o-4"),
        ],
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_batch_ends_as_the_same_commands_one_by_one(settings: Settings, name: str) -> None:
    before, setup, batch = SCENARIOS[name]
    alone, batched = world(settings), world(settings)
    for w in (alone, batched):
        if before:
            before(w)
        one_by_one(HANDLERS, w.service, setup)
    writes_before = batched.repo.bulk_writes

    refused_alone = set(one_by_one(HANDLERS, alone.service, batch))
    refused_batched = set(handle_batch(batched.service, batch))

    assert outcome(batched) == outcome(alone)
    assert refused_batched == refused_alone
    assert batched.repo.bulk_writes - writes_before <= 3 * (1 + sum(e.event_type == "RefundRequested" for e in batch))


def test_a_run_of_new_payments_takes_three_writes(settings: Settings) -> None:
    w = world(settings)
    completed, failed = _settled("completed"), _settled("failed")

    refused = handle_batch(w.service, [requested(f"o-{n}") for n in range(5)] + [requested("o-9", card=DECLINED_CARD)])

    assert refused == {}
    assert w.repo.bulk_writes == 3  # the payments, the claims of the approved ones, the settled payments
    assert [p.status for p in w.repo.payments.values()] == ["completed"] * 5 + ["failed"]
    assert sorted(w.repo.claims) == [f"o-{n}" for n in range(5)]
    assert [e.event_type for e in w.repo.events] == ["PaymentCompleted"] * 5 + ["PaymentFailed"]
    assert (_settled("completed"), _settled("failed")) == (completed + 5, failed + 1)


def _settled(outcome: str) -> float:
    return REGISTRY.get_sample_value("payments_total", {"outcome": outcome}) or 0.0


def test_a_long_run_is_charged_and_written_a_group_at_a_time(settings: Settings) -> None:
    """With a slow gateway, replies must not wait for every charge of a 120-command batch."""
    w = world(settings)
    events = [requested(f"o-{n}") for n in range(120)]
    written_before: list[int] = []
    charge = w.gateway.charge

    def charge_noting_replies(*args: object, **kwargs: object) -> ChargeResult:
        written_before.append(len(w.repo.events))
        return charge(*args, **kwargs)  # type: ignore[arg-type]

    w.gateway.charge = charge_noting_replies  # type: ignore[method-assign]

    handle_batch(w.service, events)

    assert w.repo.bulk_writes == 3 * 3  # groups of 50, 50 and 20
    assert written_before[50] == 50 and written_before[100] == 100  # each group replied before the next
    assert len(w.repo.events) == 120
