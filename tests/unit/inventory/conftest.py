"""Fixtures: the inventory service over in-memory fakes, a hand-moved clock and a test client."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from services.inventory.app import bootstrap, create_app
from services.inventory.catalogue import seed_stock
from services.inventory.service import InventoryService
from shared.config import Settings
from tests.unit.inventory.fakes import FakeClock, InMemoryReservationRepository, InMemoryStockRepository

TTL_S = 900


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stock() -> InMemoryStockRepository:
    return InMemoryStockRepository()


@pytest.fixture
def reservations() -> InMemoryReservationRepository:
    return InMemoryReservationRepository()


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("inventory", inventory={"reservation_ttl_s": TTL_S, "expiry_interval_s": 1})


@pytest.fixture
def service(
    settings: Settings, stock: InMemoryStockRepository, reservations: InMemoryReservationRepository, clock: FakeClock
) -> InventoryService:
    """The service over fakes, with the catalogue seeded."""
    built = bootstrap(settings, stock=stock, reservations=reservations, clock=clock)
    seed_stock(stock, clock())
    return built


@pytest.fixture
def client(settings: Settings, service: InventoryService) -> FlaskClient:
    return create_app(settings, service=service).test_client()
