"""Sample requests for the order service's tests."""

from __future__ import annotations

from typing import Any

from services.order.domain import Item, NewOrder

CARD = "4111111111111111"


def order_body(**changes: Any) -> dict[str, Any]:
    """Return a valid order request body, with ``changes`` applied."""
    body: dict[str, Any] = {
        "customer_id": "cust-1",
        "customer_email": "ann@example.com",
        "items": [
            {"product_id": "p-1", "quantity": 2, "price": 19.99},
            {"product_id": "p-2", "quantity": 1, "price": 5},
        ],
        "total_amount": 44.98,
        "payment_method": "credit_card",
        "card_details": {"number": CARD},
    }
    body.update(changes)
    return body


def new_order(customer_id: str = "cust-1", card_number: str | None = CARD) -> NewOrder:
    """Return a valid NewOrder as the API would build it."""
    return NewOrder(
        customer_id=customer_id,
        items=(Item("p-1", 2, 19.99), Item("p-2", 1, 5.0)),
        total_amount=44.98,
        customer_email="ann@example.com",
        card_number=card_number,
    )
