"""Payments: the payment record, the charge outcome, amount and card rules, and domain errors."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

PROCESSING, COMPLETED, FAILED, REFUNDED = "processing", "completed", "failed", "refunded"
# A payment in one of these states holds its order's charge: the order counts as paid.
HOLDS_CHARGE = frozenset({PROCESSING, COMPLETED})

CARD_DECLINED, AMOUNT_OVER_LIMIT, GATEWAY_ERROR = "card_declined", "amount_over_limit", "gateway_error"
# Not a gateway answer: another payment holds the order's charge, so this one was not made.
ALREADY_PAID = "already_paid"
# Not a gateway answer either: the vault no longer holds the card of the token (expired or deleted).
PAYMENT_METHOD_UNAVAILABLE = "payment_method_unavailable"

MAX_AMOUNT = 1_000_000_000.0
_CARD_SEPARATORS = re.compile(r"[\s-]")


class PaymentError(Exception):
    """Base of the payment service's domain errors."""


class InvalidPayment(PaymentError):
    """A payment request cannot be processed as given."""


class PaymentNotFound(PaymentError):
    def __init__(self, payment_id: str) -> None:
        super().__init__(f"payment {payment_id} not found")
        self.payment_id = payment_id


class DuplicatePayment(PaymentError):
    """A payment with this id is already stored."""


class NotRefundable(PaymentError):
    def __init__(self, payment_id: str, status: str) -> None:
        super().__init__(f"payment {payment_id} is {status}; only completed payments can be refunded")
        self.payment_id, self.status = payment_id, status


class IdempotencyConflict(PaymentError):
    def __init__(self, payment_id: str) -> None:
        super().__init__(f"this Idempotency-Key was used for a different payment ({payment_id})")
        self.payment_id = payment_id


class VaultUnavailable(PaymentError):
    """The card vault has no usable key, so it can neither keep nor give back a card number."""


class AlreadyPaid(PaymentError):
    def __init__(self, order_id: str, payment_id: str) -> None:
        super().__init__(f"order {order_id} is already paid by payment {payment_id}")
        self.order_id, self.payment_id = order_id, payment_id


def now_ms() -> datetime:
    """Return the current UTC time at millisecond precision, the precision MongoDB stores."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def to_cents(amount: float, *, cap: float | None = MAX_AMOUNT) -> float:
    """Return ``amount`` rounded to cents; reject non-finite, non-positive and (with ``cap``) huge ones."""
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise ValueError("amount must be a number")
    if not math.isfinite(amount):
        raise ValueError("amount must be a finite number")
    if cap is not None and amount > cap:
        raise ValueError(f"amount must be at most {cap:.0f}")
    cents = round(float(amount), 2)
    if cents <= 0:
        raise ValueError("amount must be greater than 0")
    return cents


_CARD_DIGITS = re.compile(r"[0-9]{12,19}")


def card_digits(number: str) -> str:
    """Return a card number's digits (spaces and dashes allowed); reject anything else."""
    digits = _CARD_SEPARATORS.sub("", number)
    # ASCII only: str.isdigit() also takes other scripts' digits, which would slip past decline_cards.
    if not _CARD_DIGITS.fullmatch(digits):
        raise ValueError("card number must have 12 to 19 digits")
    return digits


def card_brand(number: str) -> str:
    """Name a card's network from its leading digits (visa, mastercard, amex, discover or other)."""
    if number.startswith("4"):
        return "visa"
    if 51 <= int(number[:2]) <= 55 or 2221 <= int(number[:4]) <= 2720:
        return "mastercard"
    if number[:2] in ("34", "37"):
        return "amex"
    if number.startswith(("6011", "65")) or 644 <= int(number[:3]) <= 649:
        return "discover"
    return "other"


@dataclass(frozen=True)
class StoredCard:
    """A card in the vault: its number encrypted, what may be shown of it, and when it goes."""

    token: str
    encrypted_number: str = field(repr=False)
    brand: str
    last4: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class ChargeRequest:
    """What to charge: a card number (REST; only in memory, never in storage or responses) or the
    token of a card in the vault (the saga), whose last four digits come with it."""

    order_id: str
    amount: float
    payment_method: str
    card_number: str | None = field(default=None, repr=False)
    customer_id: str | None = None
    payment_id: str | None = None
    payment_method_token: str | None = None
    card_last4: str | None = None


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    reason: str | None = None
    gateway_ref: str | None = None


@dataclass
class Payment:
    payment_id: str
    order_id: str
    amount: float
    payment_method: str
    card_last4: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    customer_id: str | None = None
    reason: str | None = None
    gateway_ref: str | None = None
    refunded_amount: float = 0.0
    refund_reason: str | None = None

    @classmethod
    def start(cls, payment_id: str, request: ChargeRequest, now: datetime) -> Payment:
        """Open a payment in ``processing`` before the gateway is called."""
        return cls(
            payment_id=payment_id,
            order_id=request.order_id,
            amount=request.amount,
            payment_method=request.payment_method,
            card_last4=request.card_number[-4:] if request.card_number else request.card_last4,
            status=PROCESSING,
            created_at=now,
            updated_at=now,
            customer_id=request.customer_id,
        )

    def settle(self, result: ChargeResult, now: datetime) -> None:
        """Record the gateway's answer to the charge."""
        self._require(PROCESSING)
        self.status = COMPLETED if result.approved else FAILED
        self.reason = None if result.approved else (result.reason or GATEWAY_ERROR)
        self.gateway_ref = result.gateway_ref
        self.updated_at = now

    def refund(self, reason: str, now: datetime) -> None:
        """Mark a completed payment refunded in full."""
        if self.status != COMPLETED:
            raise NotRefundable(self.payment_id, self.status)
        self.status = REFUNDED
        self.refunded_amount = self.amount
        self.refund_reason = reason
        self.updated_at = now

    def _require(self, status: str) -> None:
        if self.status != status:
            raise InvalidPayment(f"payment {self.payment_id} is {self.status}, expected {status}")
