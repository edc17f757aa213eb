"""The payment worker's handlers through the real Kafka broker and MongoDB."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer
from cryptography.fernet import Fernet

from services.payment.app import bootstrap
from services.payment.handlers import HANDLERS
from services.payment.service import PaymentService
from shared.config import Settings
from shared.consuming import ConsumerRunner
from shared.events import Envelope
from shared.kafka_utils import bind_handlers, ensure_topics, make_consumer, topic_name
from shared.runtime import Clients, connect
from tests.integration.conftest import next_event_of as read_next_event_of
from tests.integration.conftest import running_worker


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def clients(service_settings: Callable[..., Settings]) -> Iterator[Clients]:
    settings = service_settings("payment", payment={"vault_key": Fernet.generate_key().decode()})
    ensure_topics(settings.kafka)
    clients = connect(settings)
    yield clients
    clients.publisher.flush(10)
    clients.mongo.close()


@pytest.fixture
def service(clients: Clients) -> PaymentService:
    return bootstrap(clients.settings, clients=clients)


@pytest.fixture
def worker(clients: Clients, service: PaymentService, unique: Callable[[str], str]) -> Iterator[ConsumerRunner]:
    """The payment handlers consuming as a fresh group, with the outbox relay running."""
    (relay,) = clients.relays
    group = unique("payment-it")
    handlers = bind_handlers(HANDLERS, service)
    with running_worker(clients, handlers, service="payment", group=group, relay=relay) as runner:
        yield runner


def next_event_of(consumer: Consumer, order_id: str, timeout: float = 20.0) -> Envelope:
    """Read the subscribed topic until an event of ``order_id`` shows up."""

    def poll() -> Envelope | None:
        return read_next_event_of(consumer, order_id)

    return wait_for(poll, timeout, f"an event of order {order_id}")


def test_a_declined_payment_request_is_stored_failed_and_answered_on_payments_failed(
    clients: Clients, worker: ConsumerRunner, unique: Callable[[str], str]
) -> None:
    order_id = unique("order")
    replies = make_consumer(clients.settings.kafka, unique("payment-it-replies"), "payment-it-replies")
    replies.subscribe([topic_name(clients.settings.kafka, "payments.failed")])
    try:
        request = Envelope(
            "PaymentRequested",
            order_id,
            "orchestrator",
            {
                "payment_id": f"pay_{order_id}",
                "amount": 42.5,
                "payment_method": "credit_card",
                "card_details": {"number": "4000000000000002"},
                "customer_id": "cust-it",
            },
        )
        clients.publisher.publish(request)
        clients.publisher.flush(10)
        payments = clients.db["payments"]
        doc = wait_for(
            lambda: payments.find_one({"_id": f"pay_{order_id}", "status": "failed"}), what="the failed payment"
        )
        assert (doc["order_id"], doc["reason"], doc["card_last4"], doc["amount"]) == (
            order_id,
            "card_declined",
            "0002",
            42.5,
        )
        reply = next_event_of(replies, order_id)
        assert reply.event_type == "PaymentFailed"
        assert reply.data == {"payment_id": f"pay_{order_id}", "amount": 42.5, "reason": "card_declined"}
        assert reply.causation_id == request.event_id
        wait_for(lambda: payments.find_one({"_id": f"pay_{order_id}", "outbox": {}}), what="the outbox to empty")
    finally:
        replies.close()


def test_a_repeated_payment_request_makes_one_payment_that_a_refund_request_refunds(
    clients: Clients, worker: ConsumerRunner, unique: Callable[[str], str]
) -> None:
    order_id = unique("order")
    publisher = clients.publisher
    data = {"payment_id": f"pay_{order_id}", "amount": 12.0, "payment_method": "credit_card", "card_details": None}
    request = Envelope("PaymentRequested", order_id, "orchestrator", data)
    again = Envelope("PaymentRequested", order_id, "orchestrator", data)  # a new event id: not an inbox duplicate
    for event in (request, request, again):
        publisher.publish_sync(event)
    payments = clients.db["payments"]
    wait_for(lambda: payments.find_one({"_id": f"pay_{order_id}", "status": "completed"}), what="the payment")
    refund = Envelope("RefundRequested", order_id, "orchestrator", {"payment_id": f"pay_{order_id}", "reason": "x"})
    publisher.publish_sync(refund)
    doc = wait_for(lambda: payments.find_one({"_id": f"pay_{order_id}", "status": "refunded"}), what="the refund")
    assert doc["refunded_amount"] == 12.0
    assert payments.count_documents({"order_id": order_id}) == 1
    assert clients.db["order_charges"].find_one({"_id": order_id}) is None


def test_a_payment_by_token_charges_the_vaulted_card_and_deletes_it_and_a_failed_order_deletes_its_card(
    clients: Clients, service: PaymentService, worker: ConsumerRunner, unique: Callable[[str], str]
) -> None:
    order_id, failed_order = unique("order"), unique("order")
    declined, unused = service.vault.store("4000000000000002"), service.vault.store("4242424242424242")
    cards = clients.db["payment_methods"]
    assert cards.count_documents({}) == 2
    assert "4000000000000002" not in repr(list(cards.find()))
    data = {
        "payment_id": f"pay_{order_id}",
        "amount": 10.0,
        "payment_method": "credit_card",
        "payment_method_token": declined.token,
        "card_brand": declined.brand,
        "card_last4": declined.last4,
    }
    clients.publisher.publish_sync(Envelope("PaymentRequested", order_id, "orchestrator", data))
    failed = {"reason": "out_of_stock", "detail": "x", "payment_method_token": unused.token}
    clients.publisher.publish_sync(Envelope("OrderFailed", failed_order, "orchestrator", failed))
    doc = wait_for(
        lambda: clients.db["payments"].find_one({"_id": f"pay_{order_id}", "status": "failed"}), what="the payment"
    )
    assert (doc["reason"], doc["card_last4"]) == ("card_declined", "0002")
    wait_for(lambda: cards.count_documents({}) == 0, what="both cards to be deleted")
