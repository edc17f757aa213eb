"""OrderService: the order use cases."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter

from services.order.domain import (
    Cursor,
    IdempotencyConflict,
    NewOrder,
    Order,
    OrderExists,
    OrderNotFound,
    OrderTerminal,
    Transition,
    VaultedCard,
    iso,
    now,
)
from services.order.ports import CardVault, IdempotencyRecord, OrderRepository
from shared.events import Envelope, new_id

logger = logging.getLogger(__name__)

SOURCE = "order"

ORDERS_CREATED = Counter("orders_created_total", "Orders placed")
STATUS_TRANSITIONS = Counter("order_status_transitions_total", "Order status changes", ["status"])
ORDERS_FAILED = Counter("orders_failed_total", "Orders that failed, by reason", ["reason"])


@dataclass(frozen=True)
class Page:
    orders: list[Order]
    next_cursor: str | None


class OrderService:
    """Place, read and cancel orders; follow the saga's status reports."""

    def __init__(self, orders: OrderRepository, vault: CardVault, *, key_ttl: timedelta = timedelta(hours=24)) -> None:
        self._orders = orders
        self._vault = vault
        self._key_ttl = key_ttl

    def place_order(self, request: NewOrder, idempotency_key: str | None = None) -> tuple[Order, bool]:
        """Create a pending order and its OrderCreated event; return it and whether it is new.

        A card number goes to the payment service's vault first, before anything is written: when
        the vault does not take it (PaymentVaultUnavailable) there is nothing to undo. A retry with
        the same key vaults the card again and returns the first order; the unused entry expires.
        """
        card = self._vault_card(request)
        if idempotency_key is None:
            return self._create(new_id(), request, card), True
        fingerprint = request.fingerprint()
        # The key row names the order id before the order exists, so a retry after a crash
        # between the two writes creates the same order instead of a second one.
        claim, fresh = self._orders.claim_key(IdempotencyRecord(idempotency_key, fingerprint, new_id(), now()))
        if claim.fingerprint != fingerprint:
            raise IdempotencyConflict("this Idempotency-Key was used with a different request")
        if not fresh:
            existing = self._orders.get(claim.order_id)
            if existing is not None:
                return existing, False
        try:
            return self._create(claim.order_id, request, card), True
        except OrderExists:
            # A concurrent request with the same key won the insert.
            return self.get_order(claim.order_id), False

    def place_orders(self, requests: list[NewOrder]) -> list[Order]:
        """Create several independent orders, each with its own event (and its card vaulted first)."""
        return [self._create(new_id(), request, self._vault_card(request)) for request in requests]

    def get_order(self, order_id: str) -> Order:
        """Return the order or raise OrderNotFound."""
        order = self._orders.get(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        return order

    def list_orders(
        self,
        *,
        customer_id: str | None = None,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> Page:
        """Return one page of orders, newest first, and the cursor of the next page if any."""
        after = Cursor.decode(cursor) if cursor else None
        orders = self._orders.list(customer_id=customer_id, status=status, limit=limit + 1, after=after)
        if len(orders) <= limit:
            return Page(orders, None)
        return Page(orders[:limit], Cursor.after(orders[limit - 1]).encode())

    def cancel_order(self, order_id: str) -> Order:
        """Ask the saga to cancel a live order (once); raise OrderTerminal when it is finished."""
        order = self.get_order(order_id)
        if order.terminal:
            raise OrderTerminal(order_id)
        if order.cancel_requested_at is None:
            event = Envelope(
                event_type="OrderCancelRequested",
                order_id=order_id,
                source=SOURCE,
                data={"reason": "cancelled"},
                customer_id=order.customer_id,
            )
            if self._orders.request_cancel(order_id, now(), [event]):
                logger.info("cancellation of order %s requested", order_id)
        order = self.get_order(order_id)
        if order.terminal and order.cancel_requested_at is None:
            raise OrderTerminal(order_id)
        return order

    def apply(self, order_id: str, transition: Transition) -> bool:
        """Move the order's status forward as the saga reports; ignore stale or foreign reports."""
        if self._orders.advance(order_id, transition):
            _moved(order_id, transition)
            return True
        order = self._orders.get(order_id)
        _ignored(order_id, transition, order.status if order else None)
        return False

    def apply_many(self, moves: Sequence[tuple[str, Transition]]) -> int:
        """Apply many status moves in one round trip, with the outcome of ``apply`` on each in
        turn; return how many moved an order."""
        applied = self._orders.advance_many(moves)
        for (order_id, transition), moved in zip(moves, applied, strict=True):
            if moved:
                _moved(order_id, transition)
            else:
                logger.debug("ignoring %s for order %s: stale, or an unknown order", transition.status, order_id)
        return sum(applied)

    def purge_idempotency_keys(self) -> int:
        """Forget idempotency keys older than their time to live."""
        purged = self._orders.purge_keys(now() - self._key_ttl)
        if purged:
            logger.info("purged %d expired idempotency keys", purged)
        return purged

    def _vault_card(self, request: NewOrder) -> VaultedCard | None:
        return self._vault.store(request.card_number) if request.card_number else None

    def _create(self, order_id: str, request: NewOrder, card: VaultedCard | None) -> Order:
        order = Order.place(order_id, request, now(), card)
        self._orders.add(order, [created_event(order)])
        ORDERS_CREATED.inc()
        STATUS_TRANSITIONS.labels("pending").inc()
        logger.info("order %s placed by %s for %.2f", order_id, order.customer_id, order.total_amount)
        return order


def _moved(order_id: str, transition: Transition) -> None:
    STATUS_TRANSITIONS.labels(transition.status).inc()
    if transition.status == "failed":
        ORDERS_FAILED.labels(transition.failure_reason or "unknown").inc()
    logger.info("order %s is now %s", order_id, transition.status)


def _ignored(order_id: str, transition: Transition, status: str | None) -> None:
    if status is None:
        logger.info("ignoring %s for unknown order %s", transition.status, order_id)
    else:
        logger.debug("ignoring %s for order %s, which is %s", transition.status, order_id, status)


def created_event(order: Order) -> Envelope:
    """Build the OrderCreated event: the card travels as the vault's token, with brand and last 4."""
    return Envelope(
        event_type="OrderCreated",
        order_id=order.order_id,
        source=SOURCE,
        customer_id=order.customer_id,
        data={
            "customer_id": order.customer_id,
            "customer_email": order.customer_email,
            "items": [{"product_id": i.product_id, "quantity": i.quantity, "price": i.price} for i in order.items],
            "total_amount": order.total_amount,
            "payment_method": order.payment_method,
            "payment_method_token": order.payment_method_token,
            "card_brand": order.card_brand,
            "card_last4": order.card_last4,
            "created_at": iso(order.created_at),
        },
    )
