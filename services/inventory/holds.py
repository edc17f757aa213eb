"""Applying a reservation to stock, one product at a time, with conditional updates only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from services.inventory.ports import Hold, HoldEnd, StockRepository


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


def take_holds_together(
    stock: StockRepository, drafts: Sequence[Reservation], prices: Sequence[Mapping[str, float | None]], now: datetime
) -> bool:
    """Take the reservations' holds with one write per product, each product's all or none, and
    return True; when a product has not enough for all of them (or a price is wrong), give back
    what this call took and return False, so that the caller can hold one reservation at a time
    and end exactly as one after another would (including how a refusal is explained)."""
    by_product: dict[str, list[Hold]] = {}
    for draft, price in zip(drafts, prices, strict=True):
        for line in draft.items:
            hold = Hold(draft.reservation_id, line.quantity, price.get(line.product_id))
            by_product.setdefault(line.product_id, []).append(hold)
    taken: list[str] = []
    for product_id in sorted(by_product):
        if not stock.hold_all(product_id, by_product[product_id], now):
            for undone in taken:
                ends = [HoldEnd(hold.reservation_id, hold.quantity, committed=False) for hold in by_product[undone]]
                _end_all(stock, undone, ends, now)
            return False
        taken.append(product_id)
    return True


def settle_holds_together(stock: StockRepository, reservations: Sequence[Reservation], now: datetime) -> None:
    """``settle_holds`` for many reservations with one write per product; a product with a hold
    settled before (a redelivered command) has its holds settled one at a time instead."""
    by_product: dict[str, list[HoldEnd]] = {}
    for reservation in reservations:
        committed = reservation.status == COMMITTED
        for line in reservation.items:
            end = HoldEnd(reservation.reservation_id, line.quantity, committed)
            by_product.setdefault(line.product_id, []).append(end)
    for product_id in sorted(by_product):
        _end_all(stock, product_id, by_product[product_id], now)


def _end_all(stock: StockRepository, product_id: str, ends: Sequence[HoldEnd], now: datetime) -> None:
    """Settle the holds in one write; if one of them is gone (settled by a concurrent step), the rest one by one."""
    if not stock.end_all(product_id, ends, now):
        for end in ends:
            apply = stock.commit_hold if end.committed else stock.release_hold
            apply(product_id, end.reservation_id, end.quantity, now)
