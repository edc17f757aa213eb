"""The order a saga carries, its step history, domain errors and the order validation rules."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

CENT = Decimal("0.01")
TOKEN = re.compile(r"^pm_[A-Za-z0-9_-]{1,100}$")
LAST4 = re.compile(r"^[0-9]{4}$")
# The token of an order whose card number an earlier version carried in clear (and this one drops):
# no vault holds it, so the payment fails (payment_method_unavailable) instead of going without a card.
WITHDRAWN_CARD = "pm_withdrawn"


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
    # The card is in the payment service's vault: the saga carries its token, brand and last 4 only.
    payment_method_token: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None

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
    token, brand, last4 = _card(data)
    snapshot = OrderSnapshot(
        customer_id=_text(data.get("customer_id")) or "",
        customer_email=_text(data.get("customer_email")),
        items=items,
        total_amount=round(float(data["total_amount"]), 2) if _is_money(data.get("total_amount")) else 0.0,
        payment_method=_text(data.get("payment_method")) or "",
        payment_method_token=token,
        card_brand=brand,
        card_last4=last4,
    )
    return snapshot, problem


def _card(data: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """The vaulted card of an OrderCreated: token, brand and last 4, each kept only in its own shape."""
    last4 = data.get("card_last4")
    last4 = last4 if isinstance(last4, str) and LAST4.fullmatch(last4) else None
    token = data.get("payment_method_token")
    if isinstance(token, str) and TOKEN.fullmatch(token):
        brand = data.get("card_brand")
        return token, brand[:20] if isinstance(brand, str) and brand.isalpha() else None, last4
    legacy = data.get("card_details")
    if token is not None or (isinstance(legacy, dict) and legacy.get("number")):
        # A malformed token, or the number in clear from an earlier version: not kept, not charged.
        return WITHDRAWN_CARD, None, last4
    return None, None, None


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
