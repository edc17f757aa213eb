"""Stock, reservations and the rules on them; no I/O here."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

RESERVING, RESERVED, FAILED, RELEASED, COMMITTED, EXPIRED = (
    "reserving",
    "reserved",
    "failed",
    "released",
    "committed",
    "expired",
)
# Reservations that may hold stock; the others hold nothing once settled (committed ones sold theirs).
ACTIVE = (RESERVING, RESERVED)

MAX_ITEMS = 100
MAX_QUANTITY = 100_000
MAX_ID_LENGTH = 200


class InventoryError(Exception):
    """Base of the inventory service's domain errors."""

    details: Any = None


class ProductNotFound(InventoryError):
    """No stock record exists for the product."""


class ReservationNotFound(InventoryError):
    """No reservation exists with that id."""


class ManagedBySaga(InventoryError):
    """The reservation belongs to an order's saga: only the saga commits or releases it."""


class InvalidInput(InventoryError):
    """A request or command carries unusable data."""


class InvalidOrder(InventoryError):
    """The order names an unknown product or a price that is not the catalogue's."""

    def __init__(self, code: str, message: str, product_id: str) -> None:
        super().__init__(message)
        self.code, self.product_id = code, product_id
        self.details = [{"product_id": product_id}]


class InsufficientStock(InventoryError):
    """Some product has fewer units available than requested."""

    def __init__(self, shortages: list[Shortage]) -> None:
        super().__init__(describe_shortages(shortages))
        self.details = [s.to_dict() for s in shortages]


@dataclass(frozen=True)
class Line:
    """One requested product; ``price`` is what the order was priced at, when known."""

    product_id: str
    quantity: int
    price: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "quantity": self.quantity}


@dataclass(frozen=True)
class Shortage:
    product_id: str
    requested: int
    available: int

    def to_dict(self) -> dict[str, Any]:
        return {"product_id": self.product_id, "requested": self.requested, "available": self.available}


@dataclass
class StockItem:
    """Stock of one product; ``holds`` maps reservation id to the units it holds (sum = reserved)."""

    product_id: str
    name: str
    price: float
    available: int = 0
    reserved: int = 0
    sold: int = 0
    holds: dict[str, int] = field(default_factory=dict)
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "name": self.name,
            "price": round(self.price, 2),
            "available": self.available,
            "reserved": self.reserved,
            "sold": self.sold,
        }


@dataclass
class Reservation:
    """Units held for one order; ``origin`` is "saga" when commands drive it, "api" over REST."""

    reservation_id: str
    order_id: str
    items: list[Line]
    status: str
    created_at: datetime
    expires_at: datetime
    updated_at: datetime
    reason: str | None = None
    detail: str | None = None
    shortages: list[Shortage] = field(default_factory=list)
    origin: str = "api"
    correlation_id: str | None = None
    customer_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "reservation_id": self.reservation_id,
            "order_id": self.order_id,
            "status": self.status,
            "items": [line.to_dict() for line in self.items],
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "updated_at": iso(self.updated_at),
        }
        if self.reason:
            body.update(reason=self.reason, detail=self.detail, details=[s.to_dict() for s in self.shortages])
        return body


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_reservation_id(value: Any) -> str:
    """Accept an id usable as a key of the ``holds`` map (no dots, no leading ``$``)."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"reservation_id must be a string of 1 to {MAX_ID_LENGTH} characters")
    if "." in value or value.startswith("$"):
        raise InvalidInput("reservation_id must not contain '.' or start with '$'")
    return value


def parse_lines(raw: Any) -> list[Line]:
    """Read the ``items`` of a command: [{product_id, quantity, price?}], or raise InvalidInput."""
    if not isinstance(raw, list) or not raw or len(raw) > MAX_ITEMS:
        raise InvalidInput(f"items must be a list of 1 to {MAX_ITEMS} items")
    lines = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidInput(f"items[{index}] must be an object")
        product_id, quantity, price = item.get("product_id"), item.get("quantity"), item.get("price")
        if not isinstance(product_id, str) or not 0 < len(product_id) <= MAX_ID_LENGTH:
            raise InvalidInput(f"items[{index}].product_id must be a non-empty string")
        if type(quantity) is not int or not 0 < quantity <= MAX_QUANTITY:
            raise InvalidInput(f"items[{index}].quantity must be an integer from 1 to {MAX_QUANTITY}")
        if price is not None and (type(price) not in (int, float) or not 0 < price < math.inf):
            raise InvalidInput(f"items[{index}].price must be a positive number")
        lines.append(Line(product_id, quantity, None if price is None else float(price)))
    return lines


def merge_lines(lines: Iterable[Line]) -> list[Line]:
    """Add up the quantities per product, in product order: the stable order holds are taken in."""
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.product_id] = totals.get(line.product_id, 0) + line.quantity
    return [Line(product_id, quantity) for product_id, quantity in sorted(totals.items())]


def find_invalid_line(lines: Iterable[Line], catalogue: Mapping[str, StockItem | None]) -> InvalidOrder | None:
    """Return why the order cannot be reserved at all (unknown product, wrong price), or None."""
    for line in lines:
        item = catalogue.get(line.product_id)
        if item is None:
            return InvalidOrder("unknown_product", f"unknown product {line.product_id}", line.product_id)
        if not price_matches(line.price, item.price):
            message = f"price {line.price:.2f} of {line.product_id} does not match the catalogue price {item.price:.2f}"
            return InvalidOrder("price_mismatch", message, line.product_id)
    return None


def price_matches(ordered: float | None, listed: float) -> bool:
    """Whether an order line's price (None: not given) is the catalogue's, to the cent."""
    return ordered is None or round(ordered, 2) == round(listed, 2)


def price_bounds(price: float) -> tuple[float, float]:
    """Return the lowest and the highest catalogue price that ``price_matches(price, ...)`` accepts,
    so a store can check the price in the filter of a conditional update."""
    cents = round(price, 2)
    # Rounding is monotonic, so the matching floats form one range whose ends lie a few ulps
    # from cents -/+ 0.005: step onto the exact ends.
    low, high = cents - 0.005, cents + 0.005
    while round(low, 2) == cents:
        low = math.nextafter(low, -math.inf)
    while round(low, 2) != cents:
        low = math.nextafter(low, math.inf)
    while round(high, 2) == cents:
        high = math.nextafter(high, math.inf)
    while round(high, 2) != cents:
        high = math.nextafter(high, -math.inf)
    return low, high


def ordered_prices(lines: Iterable[Line]) -> dict[str, float | None] | None:
    """Return the price each product was ordered at (None when no line gave one), or None when
    lines of one product give prices that differ by a cent: such an order is invalid whatever
    the catalogue says."""
    prices: dict[str, float | None] = {}
    for line in lines:
        known = prices.get(line.product_id)
        if known is None:
            prices[line.product_id] = line.price
        elif line.price is not None and not price_matches(known, line.price):
            return None
    return prices


def describe_shortages(shortages: Iterable[Shortage]) -> str:
    parts = [f"{s.product_id} (requested {s.requested}, available {s.available})" for s in shortages]
    return "insufficient stock for " + ", ".join(parts)
