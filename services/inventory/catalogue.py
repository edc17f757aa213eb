"""The products a fresh inventory database starts with, and loading them."""

from __future__ import annotations

import logging
from datetime import datetime

from services.inventory.domain import StockItem
from services.inventory.ports import StockRepository

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
