"""Helpers of the payment unit tests: building the service and the saga's commands."""

from __future__ import annotations

from services.payment.app import bootstrap
from services.payment.handlers import HANDLERS
from services.payment.ports import PaymentGateway
from services.payment.service import PaymentService
from shared.config import Settings
from shared.events import Envelope
from tests.unit.payment.fakes import InMemoryPaymentRepository, InMemoryStoredCardRepository

DECLINED_CARD = "4000000000000002"
GOOD_CARD = "4242424242424242"


def build(
    settings: Settings,
    repo: InMemoryPaymentRepository,
    gateway: PaymentGateway | None = None,
    cards: InMemoryStoredCardRepository | None = None,
) -> PaymentService:
    cards = cards if cards is not None else InMemoryStoredCardRepository()
    return bootstrap(settings, payments=repo, cards=cards, gateway=gateway)


def requested(order_id: str = "o-1", amount: object = 40.0, card: str | None = GOOD_CARD, **extra: object) -> Envelope:
    data = {
        "payment_id": f"pay_{order_id}",
        "amount": amount,
        "payment_method": "credit_card",
        "card_details": {"number": card} if card else None,
        "customer_id": "cust-1",
        **extra,
    }
    return Envelope("PaymentRequested", order_id, "orchestrator", data, customer_id="cust-1")


def refund_requested(payment_id: str = "pay_o-1", order_id: str = "o-1") -> Envelope:
    return Envelope("RefundRequested", order_id, "orchestrator", {"payment_id": payment_id, "reason": "out_of_stock"})


def handle(service: PaymentService, event: Envelope) -> None:
    HANDLERS[event.event_type](service, event)
