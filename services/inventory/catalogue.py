"""Catalogue admin: the products and their stock, prices and restocking; and the products a fresh
inventory database starts with."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from services.inventory.domain import InvalidInput, ProductNotFound, StockItem
from services.inventory.ports import StockRepository
from shared.events import utc_now

logger = logging.getLogger(__name__)

# (product_id, name, price, units)
CATALOGUE: tuple[tuple[str, str, float, int], ...] = (
    ("laptop", "Laptop", 999.99, 50),
    ("laptop_001", "Laptop (model 001)", 999.99, 50),
    ("mouse", "Wireless Mouse", 29.99, 1000),
    ("keyboard", "Mechanical Keyboard", 89.99, 1000),
    ("monitor", "27-inch Monitor", 299.99, 1000),
    ("headphones", "Noise-cancelling Headphones", 199.99, 1000),
    ("usb_cable", "USB-C Cable", 9.99, 5000),
    # The example product id of the original project's sample order.
    ("product456", "Sample Product", 29.99, 1000),
    # Scarce on purpose, so out-of-stock flows can be exercised.
    ("rare_item", "Rare Item", 99.99, 5),
)


def seed_stock(
    stock: StockRepository, now: datetime, catalogue: tuple[tuple[str, str, float, int], ...] = CATALOGUE
) -> int:
    """Load the catalogue into an empty store only, so a restart never resets stock; return products added."""
    if not stock.is_empty():
        return 0
    # Two processes may start at once: each insert either creates the product or leaves the other's.
    added = sum(
        stock.add(StockItem(pid, name, price, available=units, updated_at=now)) for pid, name, price, units in catalogue
    )
    logger.info("seeded %d catalogue products", added)
    return added


class Catalogue:
    """List, show, create, rename, reprice and restock products."""

    def __init__(self, stock: StockRepository, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._stock = stock
        self._clock = clock

    def list_products(self) -> list[StockItem]:
        """Return every product's stock, sorted by product id."""
        return self._stock.list()

    def get_product(self, product_id: str) -> StockItem:
        """Return one product's stock or raise ProductNotFound."""
        item = self._stock.get(product_id)
        if item is None:
            raise ProductNotFound(f"product {product_id} not found")
        return item

    def put_product(
        self, product_id: str, *, name: str | None, price: float | None, quantity: int | None
    ) -> tuple[StockItem, bool]:
        """Create the product, or rename/reprice it and add ``quantity`` units; return it and whether created."""
        now = self._clock()
        price = None if price is None else round(price, 2)
        if self._stock.get(product_id) is None:
            if name is None or price is None or quantity is None:
                raise InvalidInput("a new product needs name, price and quantity")
            item = StockItem(product_id, name, price, available=quantity, updated_at=now)
            if self._stock.add(item):
                logger.info("created product %s with %d units", product_id, quantity)
                return item, True
        if name is None and price is None and quantity is None:
            raise InvalidInput("give at least one of name, price and quantity")
        updated = self._stock.update(product_id, name=name, price=price, restock=quantity or 0, now=now)
        if updated is None:
            raise ProductNotFound(f"product {product_id} not found")
        if quantity:
            logger.info("restocked %s with %d units", product_id, quantity)
        return updated, False
