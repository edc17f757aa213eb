"""OrderService use cases over the in-memory repository."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.order.domain import (
    IdempotencyConflict,
    OrderNotFound,
    OrderTerminal,
    PaymentVaultUnavailable,
    Transition,
    now,
)
from services.order.ports import IdempotencyRecord
from services.order.service import OrderService
from tests.unit.order.fakes import FakeCardVault, InMemoryOrderRepository
from tests.unit.order.samples import CARD, new_order


def test_writes_the_order_created_event_with_the_saga_payload(
    service: OrderService, repo: InMemoryOrderRepository, vault: FakeCardVault
) -> None:
    order, created = service.place_order(new_order())
    assert created
    [event] = repo.events
    assert event.customer_id == "cust-1"
    assert event.correlation_id == order.order_id
    assert event.data == {
        "customer_id": "cust-1",
        "customer_email": "ann@example.com",
        "items": [
            {"product_id": "p-1", "quantity": 2, "price": 19.99},
            {"product_id": "p-2", "quantity": 1, "price": 5.0},
        ],
        "total_amount": 44.98,
        "payment_method": "credit_card",
        "payment_method_token": "pm_test1",
        "card_brand": "visa",
        "card_last4": "1111",
        "created_at": event.data["created_at"],
    }
    assert vault.cards == {"pm_test1": CARD}
    assert (order.payment_method_token, order.card_brand, order.card_last4) == ("pm_test1", "visa", "1111")
    assert CARD not in repr(order) and CARD not in repr(event)


def test_sends_no_card_when_none_was_given(
    service: OrderService, repo: InMemoryOrderRepository, vault: FakeCardVault
) -> None:
    order, _ = service.place_order(new_order(card_number=None))
    data = repo.events[0].data
    assert (data["payment_method_token"], data["card_brand"], data["card_last4"]) == (None, None, None)
    assert order.card_last4 is None
    assert vault.cards == {}


def test_writes_nothing_when_the_vault_does_not_take_the_card(
    service: OrderService, repo: InMemoryOrderRepository, vault: FakeCardVault
) -> None:
    vault.available = False
    for key in (None, "key-down"):
        with pytest.raises(PaymentVaultUnavailable):
            service.place_order(new_order(), key)
    with pytest.raises(PaymentVaultUnavailable):
        service.place_orders([new_order()])
    assert (repo.orders, repo.keys, repo.events) == ({}, {}, [])
    vault.available = True
    order, created = service.place_order(new_order(), "key-down")  # the retry goes through
    assert created and order.payment_method_token == "pm_test1"


def test_a_retry_with_the_same_key_returns_the_first_order_and_its_token(
    service: OrderService, repo: InMemoryOrderRepository, vault: FakeCardVault
) -> None:
    first, _ = service.place_order(new_order(), "key-retry")
    again, created = service.place_order(new_order(), "key-retry")
    assert (again, created) == (first, False)
    assert first.payment_method_token == "pm_test1"
    assert len(vault.cards) == 2  # the retry's entry is never used; the vault lets it expire
    assert len(repo.events) == 1


def test_recreates_the_order_of_a_key_whose_order_was_never_written(
    service: OrderService, repo: InMemoryOrderRepository
) -> None:
    # A crash between storing the key and storing the order leaves only the key behind.
    request = new_order()
    repo.claim_key(IdempotencyRecord("key-crash", request.fingerprint(), "order-from-key", now()))
    order, created = service.place_order(request, "key-crash")
    assert (order.order_id, created) == ("order-from-key", True)
    again, created_again = service.place_order(request, "key-crash")
    assert (again, created_again) == (order, False)
    assert len(repo.events) == 1


def test_refuses_a_key_reused_for_a_different_request(service: OrderService) -> None:
    service.place_order(new_order(), "key-a")
    with pytest.raises(IdempotencyConflict):
        service.place_order(new_order(customer_id="other"), "key-a")


def test_places_each_bulk_order_with_its_own_event(service: OrderService, repo: InMemoryOrderRepository) -> None:
    orders = service.place_orders([new_order(), new_order(customer_id="c-2")])
    assert [o.customer_id for o in orders] == ["cust-1", "c-2"]
    assert sorted(e.order_id for e in repo.events) == sorted(o.order_id for o in orders)


def test_raises_not_found_for_an_unknown_order(service: OrderService) -> None:
    with pytest.raises(OrderNotFound):
        service.get_order("missing")
    with pytest.raises(OrderNotFound):
        service.cancel_order("missing")


def test_refuses_to_cancel_a_failed_order(service: OrderService) -> None:
    order, _ = service.place_order(new_order())
    service.apply(order.order_id, Transition("failed", now(), failure_reason="out_of_stock"))
    with pytest.raises(OrderTerminal):
        service.cancel_order(order.order_id)


def test_keeps_cancel_accepted_after_the_saga_fails_the_order_as_cancelled(
    service: OrderService, repo: InMemoryOrderRepository
) -> None:
    order, _ = service.place_order(new_order())
    service.cancel_order(order.order_id)
    assert service.apply(order.order_id, Transition("failed", now(), failure_reason="cancelled", failure_detail="x"))
    failed = service.get_order(order.order_id)
    assert (failed.status, failed.failure_reason) == ("failed", "cancelled")


def test_reports_whether_a_transition_applied(service: OrderService) -> None:
    order, _ = service.place_order(new_order())
    assert service.apply(order.order_id, Transition("validated", now()))
    assert not service.apply(order.order_id, Transition("validated", now()))
    assert not service.apply("someone-elses-order", Transition("validated", now()))


def test_purges_idempotency_keys_after_a_day(service: OrderService, repo: InMemoryOrderRepository) -> None:
    repo.claim_key(IdempotencyRecord("old", "h", "o-1", now() - timedelta(hours=25)))
    service.place_order(new_order(), "fresh")
    assert service.purge_idempotency_keys() == 1
    assert set(repo.keys) == {"fresh"}


def test_treats_another_card_under_the_same_key_as_a_different_request(service: OrderService) -> None:
    service.place_order(new_order(), "key-card")
    with pytest.raises(IdempotencyConflict):
        service.place_order(new_order(card_number="5555555555554444"), "key-card")


def test_fingerprints_only_the_last_four_card_digits() -> None:
    assert new_order().fingerprint() != new_order(card_number="5555555555554444").fingerprint()
    assert new_order().fingerprint() == new_order(card_number="4000000000001111").fingerprint()
