"""What the load tools buy, and how each order must end.

Plentiful products only, so a run measures the flow, not a sell-out. An order paid with
``DECLINED_CARD`` must fail with ``payment_declined``; every other order must complete.
"""

from __future__ import annotations

from collections.abc import Mapping

CATALOGUE = {
    "mouse": 29.99,
    "keyboard": 89.99,
    "monitor": 299.99,
    "headphones": 199.99,
    "usb_cable": 9.99,
}
DECLINED_CARD = "4000000000000002"

COMPLETED = "completed"
DECLINED = "failed/payment_declined"


def expected_outcome(declined_card: bool) -> str:
    """Return how an order must end: declined card -> failed with payment_declined, else completed."""
    return DECLINED if declined_card else COMPLETED


def outcome(status: str, reason: str | None = None) -> str:
    """Name how an order ended, in the form ``expected_outcome`` uses ("failed/<reason>" for a failure)."""
    return COMPLETED if status == COMPLETED else f"{status}/{reason or 'no reason'}"


def outcome_mismatch(expected: str, status: str, reason: str | None = None) -> str | None:
    """Say how an order's end differs from the expected one ("ended X, expected Y"); None when it matches."""
    actual = outcome(status, reason)
    return None if actual == expected else f"ended {actual}, expected {expected}"


def outcome_problem(order_id: str, expected: str, status: str, reason: str | None = None) -> str | None:
    """Describe, naming the order, how its end differs from the expected one; None when it matches."""
    mismatch = outcome_mismatch(expected, status, reason)
    return None if mismatch is None else f"order {order_id} {mismatch}"


def retry_after_s(status: int, headers: Mapping[str, str]) -> float | None:
    """Seconds to wait before posting again when the answer is 503 with Retry-After; else None."""
    if status != 503:
        return None
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return None  # absent, or an HTTP date: the order service sends whole seconds
