"""The price rule, and the range form of it that a hold's filter uses."""

from __future__ import annotations

import math
import random

import pytest

from services.inventory.domain import Line, ordered_prices, price_bounds, price_matches


def test_prices_match_to_the_cent() -> None:
    assert price_matches(None, 29.99)
    assert price_matches(29.990000001, 29.99)
    assert price_matches(30, 30.0)
    assert not price_matches(29.98, 29.99)
    assert not price_matches(30.0, 29.99)


@pytest.mark.parametrize("seed", range(5))
def test_the_bounds_are_exactly_the_prices_that_match(seed: int) -> None:
    rng = random.Random(seed)
    prices = [0.01, 0.005, 0.015, 29.985, 29.995, 1e-9, 999.99, 1_000_000.0, 123456789.125, 1e17]
    prices += [round(rng.uniform(0.01, 2000), rng.choice([2, 3, 4, 9])) for _ in range(400)]
    for price in prices:
        low, high = price_bounds(price)
        assert low <= price <= high, price
        assert price_matches(price, low) and price_matches(price, high), price
        # The next float outside either end no longer matches.
        assert not price_matches(price, math.nextafter(low, -math.inf)), price
        assert not price_matches(price, math.nextafter(high, math.inf)), price


def test_ordered_prices_give_one_price_per_product() -> None:
    lines = [Line("a", 1), Line("b", 1, 5.0), Line("a", 2, 3.0), Line("b", 1, 5.000001), Line("c", 1)]
    assert ordered_prices(lines) == {"a": 3.0, "b": 5.0, "c": None}


def test_a_product_ordered_at_two_different_prices_has_no_price() -> None:
    assert ordered_prices([Line("a", 1, 3.0), Line("b", 1), Line("a", 1, 3.01)]) is None
