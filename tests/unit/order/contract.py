"""Behaviour every OrderRepository must have; subclasses provide ``make_repo`` and ``outbox_types``."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta

import pytest

from services.order.domain import Cursor, Item, NewOrder, Order, OrderExists, Transition, VaultedCard
from services.order.ports import IdempotencyRecord, OrderRepository
from shared.events import Envelope

T0 = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)


def make_order(customer_id: str = "c-1", at: datetime = T0, order_id: str | None = None) -> Order:
    request = NewOrder(
        customer_id=customer_id,
        items=(Item("p-1", 2, 9.99), Item("p-2", 1, 5.0)),
        total_amount=24.98,
        customer_email="ann@example.com",
        card_number="4111111111111111",
    )
    return Order.place(order_id or str(uuid.uuid4()), request, at, VaultedCard("pm_abc", "visa", "1111"))


def event(order: Order, event_type: str = "OrderCreated") -> Envelope:
    return Envelope(event_type=event_type, order_id=order.order_id, source="order", data={"x": 1})


class OrderRepositoryContract(ABC):
    @abstractmethod
    def make_repo(self) -> OrderRepository:
        """Return an empty repository of the adapter under test."""

    @abstractmethod
    def outbox_types(self, repo: OrderRepository, order_id: str) -> list[str]:
        """Return the types of the events written with the order, oldest first."""

    @pytest.fixture
    def repo(self) -> OrderRepository:
        return self.make_repo()

    def test_stores_an_order_and_reads_it_back_unchanged(self, repo: OrderRepository) -> None:
        order = make_order()
        repo.add(order, [event(order)])
        assert repo.get(order.order_id) == order
        assert self.outbox_types(repo, order.order_id) == ["OrderCreated"]

    def test_keeps_the_vaulted_card_token_brand_and_last_four_digits(self, repo: OrderRepository) -> None:
        order = make_order()
        repo.add(order, [])
        stored = repo.get(order.order_id)
        assert (stored.payment_method_token, stored.card_brand, stored.card_last4) == ("pm_abc", "visa", "1111")

    def test_refuses_a_second_order_with_the_same_id(self, repo: OrderRepository) -> None:
        order = make_order()
        repo.add(order, [event(order)])
        with pytest.raises(OrderExists):
            repo.add(order, [event(order)])
        assert self.outbox_types(repo, order.order_id) == ["OrderCreated"]

    def test_returns_none_for_an_unknown_order(self, repo: OrderRepository) -> None:
        assert repo.get("missing") is None

    def test_lists_newest_first_and_pages_through_equal_timestamps(self, repo: OrderRepository) -> None:
        customer = f"c-{uuid.uuid4().hex[:6]}"
        orders = [make_order(customer, T0 + timedelta(seconds=i // 2), f"o-{i}") for i in range(5)]
        for order in orders:
            repo.add(order, [])
        first = repo.list(customer_id=customer, status=None, limit=2, after=None)
        assert [o.order_id for o in first] == ["o-4", "o-3"]
        second = repo.list(customer_id=customer, status=None, limit=2, after=Cursor.after(first[-1]))
        assert [o.order_id for o in second] == ["o-2", "o-1"]
        third = repo.list(customer_id=customer, status=None, limit=2, after=Cursor.after(second[-1]))
        assert [o.order_id for o in third] == ["o-0"]

    def test_filters_the_list_by_customer_and_status(self, repo: OrderRepository) -> None:
        mine, other = make_order("c-mine"), make_order("c-other")
        repo.add(mine, [])
        repo.add(other, [])
        repo.advance(other.order_id, Transition("validated", T0))
        assert [o.order_id for o in repo.list(customer_id="c-mine", status=None, limit=10, after=None)] == [
            mine.order_id
        ]
        validated = repo.list(customer_id=None, status="validated", limit=10, after=None)
        assert [o.order_id for o in validated] == [other.order_id]
        assert repo.list(customer_id="c-mine", status="validated", limit=10, after=None) == []

    def test_moves_the_status_forward_with_its_fields_and_history(self, repo: OrderRepository) -> None:
        order = make_order()
        repo.add(order, [])
        later = T0 + timedelta(seconds=1)
        assert repo.advance(order.order_id, Transition("inventory_reserved", later, reservation_id="res-1"))
        stored = repo.get(order.order_id)
        assert (stored.status, stored.reservation_id, stored.updated_at) == ("inventory_reserved", "res-1", later)
        assert [(c.status, c.at) for c in stored.status_history] == [("pending", T0), ("inventory_reserved", later)]

    def test_never_moves_the_status_backwards_or_repeats_it(self, repo: OrderRepository) -> None:
        order = make_order()
        repo.add(order, [])
        assert repo.advance(order.order_id, Transition("payment_processing", T0, payment_id="pay-1"))
        assert not repo.advance(order.order_id, Transition("validated", T0))
        assert not repo.advance(order.order_id, Transition("payment_processing", T0, payment_id="pay-2"))
        stored = repo.get(order.order_id)
        assert (stored.status, stored.payment_id, len(stored.status_history)) == ("payment_processing", "pay-1", 2)

    def test_keeps_a_terminal_status_for_good(self, repo: OrderRepository) -> None:
        order = make_order()
        repo.add(order, [])
        assert repo.advance(order.order_id, Transition("failed", T0, failure_reason="out_of_stock", failure_detail="x"))
        assert not repo.advance(order.order_id, Transition("completed", T0, payment_id="pay-1"))
        stored = repo.get(order.order_id)
        assert (stored.status, stored.failure_reason, stored.failure_detail) == ("failed", "out_of_stock", "x")
        assert stored.payment_id is None

    def test_does_not_advance_an_unknown_order(self, repo: OrderRepository) -> None:
        assert not repo.advance("missing", Transition("validated", T0))

    def test_applies_many_moves_in_turn_like_one_by_one(self, repo: OrderRepository) -> None:
        orders = [make_order() for _ in range(2)]
        for order in orders:
            repo.add(order, [])
        t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
        first, second = orders[0].order_id, orders[1].order_id
        moves = [
            (first, Transition("inventory_reserved", t1, reservation_id="res-1")),
            (second, Transition("validated", t1)),
            (first, Transition("validated", t1)),  # late: stale after inventory_reserved
            (first, Transition("payment_processing", t2, payment_id="pay-1")),
            (second, Transition("failed", t2, failure_reason="out_of_stock")),
            (second, Transition("completed", t2)),  # after failed: never
            ("missing", Transition("validated", t1)),
        ]
        assert repo.advance_many(moves) == [True, True, False, True, True, False, False]
        stored = repo.get(first)
        assert (stored.status, stored.reservation_id, stored.payment_id, stored.updated_at) == (
            "payment_processing",
            "res-1",
            "pay-1",
            t2,
        )
        assert [(c.status, c.at) for c in stored.status_history] == [
            ("pending", T0),
            ("inventory_reserved", t1),
            ("payment_processing", t2),
        ]
        assert [c.status for c in repo.get(second).status_history] == ["pending", "validated", "failed"]

    def test_applies_many_moves_that_all_apply(self, repo: OrderRepository) -> None:
        order = make_order()
        repo.add(order, [])
        t1 = T0 + timedelta(seconds=1)
        moves = [(order.order_id, Transition("validated", t1)), (order.order_id, Transition("completed", t1))]
        assert repo.advance_many(moves) == [True, True]
        assert repo.get(order.order_id).status == "completed"

    def test_requests_cancellation_once_with_its_event(self, repo: OrderRepository) -> None:
        order = make_order()
        repo.add(order, [])
        assert repo.request_cancel(order.order_id, T0, [event(order, "OrderCancelRequested")])
        assert not repo.request_cancel(order.order_id, T0, [event(order, "OrderCancelRequested")])
        assert repo.get(order.order_id).cancel_requested_at == T0
        assert self.outbox_types(repo, order.order_id) == ["OrderCancelRequested"]

    def test_does_not_cancel_a_terminal_or_unknown_order(self, repo: OrderRepository) -> None:
        order = make_order()
        repo.add(order, [])
        repo.advance(order.order_id, Transition("completed", T0))
        assert not repo.request_cancel(order.order_id, T0, [event(order, "OrderCancelRequested")])
        assert not repo.request_cancel("missing", T0, [])
        assert repo.get(order.order_id).cancel_requested_at is None
        assert self.outbox_types(repo, order.order_id) == []

    def test_claims_an_idempotency_key_once(self, repo: OrderRepository) -> None:
        first = IdempotencyRecord("key-1", "hash-a", "order-a", T0)
        assert repo.claim_key(first) == (first, True)
        stored, fresh = repo.claim_key(IdempotencyRecord("key-1", "hash-b", "order-b", T0))
        assert (stored, fresh) == (first, False)

    def test_purges_only_expired_idempotency_keys(self, repo: OrderRepository) -> None:
        repo.claim_key(IdempotencyRecord("old", "h", "o-1", T0))
        repo.claim_key(IdempotencyRecord("new", "h", "o-2", T0 + timedelta(hours=2)))
        assert repo.purge_keys(T0 + timedelta(hours=1)) == 1
        assert repo.claim_key(IdempotencyRecord("old", "h2", "o-3", T0))[1] is True
        assert repo.claim_key(IdempotencyRecord("new", "h2", "o-4", T0))[1] is False
