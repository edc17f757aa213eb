"""Orders: the model, its status rules, the list cursor and the domain errors."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.events import FAILURE_REASONS, ORDER_STATUSES, TERMINAL_STATUSES, utc_now

# completed and failed share the last rank: neither can follow the other.
STATUS_RANK = {status: min(rank, len(ORDER_STATUSES) - 2) for rank, status in enumerate(ORDER_STATUSES)}


class OrderError(Exception):
    """Base of the order service's domain errors."""


class OrderNotFound(OrderError):
    """No order has this id."""


class OrderTerminal(OrderError):
    """The order is completed or failed; it cannot change any more."""


class IdempotencyConflict(OrderError):
    """An idempotency key was reused with a different request body."""


class OrderExists(OrderError):
    """An order with this id was already stored."""


class InvalidCursor(OrderError):
    """A list cursor is not one this service issued."""


class PaymentVaultUnavailable(OrderError):
    """The payment service's vault did not take the card, so nothing was written; retry later."""


@dataclass(frozen=True)
class Item:
    product_id: str
    quantity: int
    price: float


@dataclass(frozen=True)
class NewOrder:
    """A validated request to place an order."""

    customer_id: str
    items: tuple[Item, ...]
    total_amount: float
    customer_email: str | None = None
    payment_method: str = "credit_card"
    card_number: str | None = field(default=None, repr=False)

    def fingerprint(self) -> str:
        """Return a stable hash of the request, to recognise a retried request."""
        # An unsalted hash of a card number can be brute-forced: fingerprint only its last digits.
        fields = {**asdict(self), "card_number": self.card_number[-4:] if self.card_number else None}
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class VaultedCard:
    """A card in the payment service's vault: all the order service keeps of it."""

    token: str
    brand: str
    last4: str


@dataclass(frozen=True)
class StatusChange:
    status: str
    at: datetime


@dataclass(frozen=True)
class Transition:
    """A status move reported by the saga, with the fields that come with it."""

    status: str
    at: datetime
    reservation_id: str | None = None
    payment_id: str | None = None
    failure_reason: str | None = None
    failure_detail: str | None = None

    def fields(self) -> dict[str, Any]:
        """Return the order fields this transition sets (besides status and history)."""
        names = ("reservation_id", "payment_id", "failure_reason", "failure_detail")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    items: tuple[Item, ...]
    total_amount: float
    created_at: datetime
    updated_at: datetime
    customer_email: str | None = None
    payment_method: str = "credit_card"
    # The card is in the payment service's vault: the order keeps its token, brand and last 4 only.
    payment_method_token: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    status: str = "pending"
    failure_reason: str | None = None
    failure_detail: str | None = None
    payment_id: str | None = None
    reservation_id: str | None = None
    cancel_requested_at: datetime | None = None
    status_history: tuple[StatusChange, ...] = ()

    @classmethod
    def place(cls, order_id: str, request: NewOrder, at: datetime, card: VaultedCard | None = None) -> Order:
        """Create a pending order paid with ``card`` (vaulted from the request's card number), if any."""
        return cls(
            order_id=order_id,
            customer_id=request.customer_id,
            items=request.items,
            total_amount=request.total_amount,
            created_at=at,
            updated_at=at,
            customer_email=request.customer_email,
            payment_method=request.payment_method,
            payment_method_token=card.token if card else None,
            card_brand=card.brand if card else None,
            card_last4=card.last4 if card else None,
            status_history=(StatusChange("pending", at),),
        )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def advance(self, transition: Transition) -> Order | None:
        """Return the order after ``transition``, or None when it would not move the status forward."""
        if self.status not in predecessors(transition.status):
            return None
        return replace(
            self,
            status=transition.status,
            updated_at=transition.at,
            status_history=(*self.status_history, StatusChange(transition.status, transition.at)),
            **transition.fields(),
        )


def predecessors(status: str) -> tuple[str, ...]:
    """Return the statuses an order may move to ``status`` from: non-terminal ones ranked lower."""
    if status not in STATUS_RANK:
        raise ValueError(f"unknown order status {status!r}")
    rank = STATUS_RANK[status]
    return tuple(s for s in ORDER_STATUSES if s not in TERMINAL_STATUSES and STATUS_RANK[s] < rank)


def is_failure_reason(reason: object) -> bool:
    return isinstance(reason, str) and reason in FAILURE_REASONS


def now() -> datetime:
    """Return the current UTC time at millisecond precision, the precision MongoDB stores."""
    current = utc_now()
    return current.replace(microsecond=current.microsecond // 1000 * 1000)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Cursor:
    """Position after the last order of a page, newest first: (created_at, order_id)."""

    created_at: datetime
    order_id: str

    @classmethod
    def after(cls, order: Order) -> Cursor:
        return cls(order.created_at, order.order_id)

    def encode(self) -> str:
        raw = json.dumps([iso(self.created_at), self.order_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Parse a token made by ``encode``; raise InvalidCursor for anything else."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            created_at, order_id = json.loads(raw)
            moment = datetime.fromisoformat(created_at)
            order_id.encode()  # a lone surrogate would only fail later, in the database driver
        except (binascii.Error, ValueError, TypeError, RecursionError, AttributeError) as err:
            raise InvalidCursor("cursor is not valid") from err
        if not isinstance(order_id, str) or not order_id or moment.tzinfo is None:
            raise InvalidCursor("cursor is not valid")
        return cls(moment.astimezone(UTC), order_id)

    def admits(self, order: Order) -> bool:
        """Tell whether ``order`` belongs to the pages after this cursor (newest first)."""
        return (order.created_at, order.order_id) < (self.created_at, self.order_id)
