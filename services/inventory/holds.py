"""Applying a reservation to stock, one product at a time, with conditional updates only."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from services.inventory.domain import (
    COMMITTED,
    Line,
    Reservation,
    Shortage,
    describe_shortages,
    find_invalid_line,
    price_matches,
)
from services.inventory.ports import StockRepository


def take_holds(
    stock: StockRepository, reservation: Reservation, prices: Mapping[str, float | None], now: datetime
) -> int | None:
    """Hold each line in product order, each only at the price the order gave for it; return the
    index of the first line that could not be held (none after it are tried), or None when all are."""
    rid = reservation.reservation_id
    for index, line in enumerate(reservation.items):
        price = prices.get(line.product_id)
        if stock.hold(line.product_id, rid, line.quantity, now, price):
            continue
        item = stock.get(line.product_id)
        if item is not None and rid in item.holds and price_matches(price, item.price):
            continue  # an earlier attempt of this reservation took it already
        return index
    return None


def explain_refusal(
    stock: StockRepository, lines: list[Line], items: list[Line], refused: int
) -> tuple[str, str, list[Shortage]]:
    """Return (reason, detail, shortages) for a reservation whose line ``items[refused]`` could not
    be held: "invalid_order" if any requested line names an unknown product or a wrong price (the
    first one, in request order), else "out_of_stock" with that line and every later short one."""
    catalogue = {pid: stock.get(pid) for pid in sorted({line.product_id for line in [*lines, *items]})}
    invalid = find_invalid_line(lines, catalogue)
    if invalid:
        item = catalogue[invalid.product_id]
        requested = sum(line.quantity for line in lines if line.product_id == invalid.product_id)
        return "invalid_order", str(invalid), [Shortage(invalid.product_id, requested, item.available if item else 0)]
    shortages = []
    for index, line in enumerate(items[refused:]):
        item = catalogue[line.product_id]
        available = item.available if item else 0
        if index == 0 or available < line.quantity:
            shortages.append(Shortage(line.product_id, line.quantity, available))
    return "out_of_stock", describe_shortages(shortages), shortages


def settle_holds(stock: StockRepository, reservation: Reservation, now: datetime) -> None:
    """Turn the reservation's remaining holds into sales (committed) or back into available stock."""
    apply = stock.commit_hold if reservation.status == COMMITTED else stock.release_hold
    for line in reservation.items:
        apply(line.product_id, reservation.reservation_id, line.quantity, now)
