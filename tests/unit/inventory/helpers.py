"""Small builders shared by the inventory unit tests."""

from __future__ import annotations

from typing import Any

from services.inventory.domain import Line
from services.inventory.ports import StockRepository
from shared.events import Envelope


def command(event_type: str, order_id: str, **data: Any) -> Envelope:
    """Build a saga command as the orchestrator sends it; reservation_id defaults to res_<order_id>."""
    data.setdefault("reservation_id", f"res_{order_id}")
    return Envelope(event_type, order_id, "orchestrator", data, customer_id="cust-1")


def reserve_command(order_id: str, *items: tuple[str, int, float | None]) -> Envelope:
    lines = [{"product_id": p, "quantity": q, **({"price": price} if price else {})} for p, q, price in items]
    return command("ReserveInventory", order_id, items=lines)


def lines(*items: tuple[str, int]) -> list[Line]:
    return [Line(pid, quantity) for pid, quantity in items]


def levels(stock: StockRepository, product_id: str) -> tuple[int, int, int]:
    """Return (available, reserved, sold) of a product."""
    item = stock.get(product_id)
    assert item is not None
    return item.available, item.reserved, item.sold
