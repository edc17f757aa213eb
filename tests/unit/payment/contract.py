"""The behaviour every PaymentRepository and StoredCardRepository must have; subclasses provide make_repo()
and make_cards()."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.payment.domain import (
    COMPLETED,
    PROCESSING,
    ChargeRequest,
    ChargeResult,
    DuplicatePayment,
    Payment,
    StoredCard,
    now_ms,
)
from services.payment.ports import PaymentRepository, PaymentUpdate, StoredCardRepository
from shared.events import Envelope


def a_payment(payment_id: str = "pay_1", order_id: str = "order-1", minutes_ago: int = 0) -> Payment:
    request = ChargeRequest(order_id, 25.5, "credit_card", "4242424242424242", customer_id="cust-1")
    return Payment.start(payment_id, request, now_ms() - timedelta(minutes=minutes_ago))


class PaymentRepositoryContract:
    def make_repo(self) -> PaymentRepository:
        raise AssertionError("subclasses provide make_repo()")

    def queued_event_types(self, repo: PaymentRepository, payment_id: str) -> list[str]:
        raise AssertionError("subclasses provide queued_event_types()")

    def test_an_added_payment_reads_back_equal(self) -> None:
        repo = self.make_repo()
        payment = a_payment()
        repo.add(payment)
        assert repo.get("pay_1") == payment
        assert repo.get("pay_1").card_last4 == "4242"

    def test_an_unknown_payment_is_none(self) -> None:
        assert self.make_repo().get("pay_missing") is None

    def test_adding_the_same_id_twice_raises_duplicate_payment(self) -> None:
        repo = self.make_repo()
        repo.add(a_payment())
        with pytest.raises(DuplicatePayment):
            repo.add(a_payment())

    def test_update_stores_the_new_state_and_queues_events_when_the_status_matches(self) -> None:
        repo = self.make_repo()
        payment = a_payment()
        repo.add(payment)
        payment.settle(ChargeResult(True, gateway_ref="ref-1"), now_ms())
        event = Envelope("PaymentCompleted", "order-1", "payment", {"payment_id": "pay_1", "amount": 25.5})
        assert repo.update(payment, expected_status=PROCESSING, events=[event]) is True
        assert repo.get("pay_1") == payment
        assert repo.get("pay_1").status == COMPLETED
        assert self.queued_event_types(repo, "pay_1") == ["PaymentCompleted"]

    def test_update_does_nothing_when_the_status_has_moved_on(self) -> None:
        repo = self.make_repo()
        payment = a_payment()
        repo.add(payment)
        payment.settle(ChargeResult(True), now_ms())
        repo.update(payment, expected_status=PROCESSING)
        event = Envelope("PaymentCompleted", "order-1", "payment", {"payment_id": "pay_1", "amount": 25.5})
        assert repo.update(payment, expected_status=PROCESSING, events=[event]) is False
        assert self.queued_event_types(repo, "pay_1") == []

    def test_list_by_order_returns_only_that_order_newest_first_within_the_limit(self) -> None:
        repo = self.make_repo()
        repo.add(a_payment("pay_old", minutes_ago=10))
        repo.add(a_payment("pay_new", minutes_ago=1))
        repo.add(a_payment("pay_mid", minutes_ago=5))
        repo.add(a_payment("pay_other", order_id="order-2"))
        assert [p.payment_id for p in repo.list_by_order("order-1", 10)] == ["pay_new", "pay_mid", "pay_old"]
        assert [p.payment_id for p in repo.list_by_order("order-1", 2)] == ["pay_new", "pay_mid"]
        assert repo.list_by_order("order-none", 10) == []

    def test_the_first_claim_of_an_order_wins_and_repeating_it_is_harmless(self) -> None:
        repo = self.make_repo()
        assert repo.order_holder("order-1") is None
        assert repo.claim_order("order-1", "pay_a") == "pay_a"
        assert repo.claim_order("order-1", "pay_a") == "pay_a"
        assert repo.claim_order("order-1", "pay_b") == "pay_a"
        assert repo.order_holder("order-1") == "pay_a"

    def test_release_only_removes_the_claim_of_its_holder(self) -> None:
        repo = self.make_repo()
        repo.claim_order("order-1", "pay_a")
        repo.release_order("order-1", "pay_b")
        assert repo.order_holder("order-1") == "pay_a"
        repo.release_order("order-1", "pay_a")
        assert repo.order_holder("order-1") is None
        assert repo.claim_order("order-1", "pay_b") == "pay_b"

    def test_add_all_adds_the_new_payments_and_reports_the_taken_ids(self) -> None:
        repo = self.make_repo()
        repo.add(a_payment("pay_taken"))

        added = repo.add_all([a_payment("pay_a"), a_payment("pay_taken", order_id="order-9"), a_payment("pay_b")])

        assert added == [True, False, True]
        assert repo.get("pay_a").status == PROCESSING
        assert repo.get("pay_taken").order_id == "order-1"
        assert repo.get("pay_b") is not None
        assert repo.add_all([]) == []

    def test_update_all_stores_the_updates_whose_status_matches_and_reports_the_others(self) -> None:
        repo = self.make_repo()
        payments = [a_payment(f"pay_{n}", order_id=f"order-{n}") for n in range(3)]
        repo.add_all(payments)
        moved = repo.get("pay_1")
        moved.settle(ChargeResult(False, reason="card_declined"), now_ms())
        repo.update(moved, expected_status=PROCESSING)  # someone else settled pay_1 first
        updates = []
        for payment in payments:
            payment.settle(ChargeResult(True, gateway_ref="ref"), now_ms())
            data = {"payment_id": payment.payment_id, "amount": 25.5}
            event = Envelope("PaymentCompleted", payment.order_id, "payment", data)
            updates.append(PaymentUpdate(payment, PROCESSING, (event,)))

        stored = repo.update_all(updates)

        assert stored == [True, False, True]
        assert [repo.get(f"pay_{n}").status for n in range(3)] == [COMPLETED, "failed", COMPLETED]
        assert self.queued_event_types(repo, "pay_0") == ["PaymentCompleted"]
        assert self.queued_event_types(repo, "pay_1") == []
        assert repo.update_all([]) == []

    def test_claim_all_records_the_unclaimed_orders_only(self) -> None:
        repo = self.make_repo()
        repo.claim_order("order-1", "pay_a")

        recorded = repo.claim_all([("order-1", "pay_b"), ("order-2", "pay_c"), ("order-1", "pay_a")])

        assert recorded == [False, True, False]
        assert repo.order_holder("order-1") == "pay_a"
        assert repo.order_holder("order-2") == "pay_c"
        assert repo.claim_all([]) == []


def a_card(token: str = "pm_1", *, expires_in_s: float = 3600) -> StoredCard:
    now = now_ms()
    return StoredCard(token, "gAAAA-encrypted", "visa", "4242", now, now + timedelta(seconds=expires_in_s))


class StoredCardRepositoryContract:
    def make_cards(self) -> StoredCardRepository:
        raise AssertionError("subclasses provide make_cards()")

    def test_an_added_card_reads_back_equal_and_unknown_tokens_are_left_out(self) -> None:
        cards = self.make_cards()
        card = a_card()
        cards.add(card)
        assert cards.get_all(["pm_1", "pm_missing"]) == [card]
        assert cards.get_all(["pm_missing"]) == []

    def test_delete_removes_the_named_cards_and_counts_those_that_were_there(self) -> None:
        cards = self.make_cards()
        cards.add(a_card("pm_1"))
        cards.add(a_card("pm_2"))
        assert cards.delete(["pm_1", "pm_missing"]) == 1
        assert cards.delete(["pm_1"]) == 0
        assert [card.token for card in cards.get_all(["pm_1", "pm_2"])] == ["pm_2"]

    def test_delete_expired_removes_only_cards_past_their_expiry(self) -> None:
        cards = self.make_cards()
        cards.add(a_card("pm_old", expires_in_s=-1))
        cards.add(a_card("pm_new"))
        assert cards.delete_expired(now_ms()) == 1
        assert [card.token for card in cards.get_all(["pm_old", "pm_new"])] == ["pm_new"]
