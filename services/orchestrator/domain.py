"""The order a saga carries, its step history, domain errors and the order validation rules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

CENT = Decimal("0.01")


class SagaError(Exception):
    """Base class of the orchestrator's domain errors."""


class SagaNotFound(SagaError):
    """No saga exists for the order id."""


class SagaConflict(SagaError):
    """The saga kept changing under us; the caller should retry the event later."""


class InvalidEventData(SagaError):
    """An event's data breaks the contract, so applying it again cannot succeed."""


@dataclass(frozen=True)
class LineItem:
    product_id: str
    quantity: int
    price: float


@dataclass(frozen=True)
class OrderSnapshot:
    """What the saga keeps of the order to drive reservation, payment and notifications."""

    customer_id: str
    customer_email: str | None
    items: tuple[LineItem, ...]
    total_amount: float
    payment_method: str
    card_details: dict[str, str] | None = None

    def item_dicts(self, *, with_price: bool = True) -> list[dict[str, Any]]:
        """Return the items as event payload dicts."""
        if with_price:
            return [{"product_id": i.product_id, "quantity": i.quantity, "price": i.price} for i in self.items]
        return [{"product_id": i.product_id, "quantity": i.quantity} for i in self.items]


@dataclass(frozen=True)
class Step:
    """One entry of a saga's history: what happened to which step, when and because of which event."""

    step: str
    status: str  # started | completed | failed | compensated | ignored
    at: datetime
    event_id: str | None = None
    detail: str | None = None


def parse_order(data: dict[str, Any]) -> tuple[OrderSnapshot, str | None]:
    """Read an OrderCreated payload; return the snapshot and the reason it is invalid, or None."""
    problem = _order_problem(data)
    items: tuple[LineItem, ...] = ()
    if problem is None:
        items = tuple(
            LineItem(str(i["product_id"]), int(i["quantity"]), round(float(i["price"]), 2)) for i in data["items"]
        )
    card = data.get("card_details")
    snapshot = OrderSnapshot(
        customer_id=_text(data.get("customer_id")) or "",
        customer_email=_text(data.get("customer_email")),
        items=items,
        total_amount=round(float(data["total_amount"]), 2) if _is_money(data.get("total_amount")) else 0.0,
        payment_method=_text(data.get("payment_method")) or "",
        # Only the card number is kept: nothing else of an untrusted map reaches the database.
        card_details={"number": str(card["number"])} if isinstance(card, dict) and "number" in card else None,
    )
    return snapshot, problem


def _order_problem(data: dict[str, Any]) -> str | None:
    if not _text(data.get("customer_id")):
        return "customer_id is missing"
    items = data.get("items")
    if not isinstance(items, list) or not items:
        return "the order has no items"
    expected = Decimal(0)
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not _text(item.get("product_id")):
            return f"item {n} has no product_id"
        quantity, price = item.get("quantity"), item.get("price")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            return f"item {n} quantity must be an integer >= 1"
        if not _is_money(price) or price <= 0:
            return f"item {n} price must be a number > 0"
        expected += Decimal(str(price)) * quantity
    total = data.get("total_amount")
    if not _is_money(total):
        return "total_amount must be a number"
    if Decimal(str(total)).quantize(CENT) != expected.quantize(CENT):
        return f"total_amount {total} does not match the items ({expected.quantize(CENT)})"
    if not _text(data.get("payment_method")):
        return "payment_method is missing"
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _is_money(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
