"""The catalogue: seeded once into an empty store, then created, renamed and restocked over PUT."""

from __future__ import annotations

import pytest

from services.inventory.app import bootstrap
from services.inventory.catalogue import CATALOGUE, Catalogue, seed_stock
from services.inventory.domain import InvalidInput, ProductNotFound, StockItem
from services.inventory.service import InventoryService
from shared.config import Settings
from tests.unit.inventory.fakes import FakeClock, InMemoryReservationRepository, InMemoryStockRepository
from tests.unit.inventory.helpers import levels, lines


def test_an_empty_store_is_seeded_with_the_whole_catalogue(
    service: InventoryService, stock: InMemoryStockRepository
) -> None:
    assert [item.product_id for item in stock.list()] == sorted(pid for pid, *_ in CATALOGUE)
    laptop = stock.get("laptop")
    assert (laptop.name, laptop.price, laptop.available) == ("Laptop", 999.99, 50)
    assert levels(stock, "rare_item") == (5, 0, 0)
    assert stock.get("product456").name == "Sample Product"


def test_a_store_with_any_product_is_never_seeded() -> None:
    stock = InMemoryStockRepository([StockItem("own", "Own product", 1.0, available=3)])
    assert seed_stock(stock, FakeClock()()) == 0
    assert [item.product_id for item in stock.list()] == ["own"]


def test_bootstrapping_writes_nothing(settings: Settings) -> None:
    # Seeding is its own step (python main.py inventory seed), not a side effect of starting.
    stock = InMemoryStockRepository()
    bootstrap(settings, stock=stock, reservations=InMemoryReservationRepository())
    assert stock.list() == []


def test_a_restart_does_not_reset_stock(
    settings: Settings,
    service: InventoryService,
    stock: InMemoryStockRepository,
    reservations: InMemoryReservationRepository,
) -> None:
    service.reserve("r1", "o1", lines(("laptop", 3)))
    service.commit("r1")
    bootstrap(settings, stock=stock, reservations=reservations)
    assert seed_stock(stock, FakeClock()()) == 0
    assert levels(stock, "laptop") == (47, 0, 3)


def test_put_creates_a_product_with_name_price_and_quantity(service: InventoryService) -> None:
    item, created = service.put_product("webcam", name="Webcam", price=49.999, quantity=7)
    assert created
    assert (item.name, item.price, item.available) == ("Webcam", 50.0, 7)
    assert service.get_product("webcam").available == 7


def test_creating_a_product_needs_every_field(service: InventoryService) -> None:
    with pytest.raises(InvalidInput):
        service.put_product("webcam", name="Webcam", price=None, quantity=1)
    with pytest.raises(ProductNotFound):
        service.get_product("webcam")


def test_put_on_an_existing_product_adds_the_quantity(service: InventoryService) -> None:
    item, created = service.put_product("rare_item", name=None, price=None, quantity=10)
    assert not created
    assert item.available == 15


def test_put_renames_and_reprices_without_touching_stock(service: InventoryService) -> None:
    item, _created = service.put_product("mouse", name="Silent Mouse", price=24.5, quantity=None)
    assert (item.name, item.price, item.available) == ("Silent Mouse", 24.5, 1000)


def test_put_with_nothing_to_change_is_refused(service: InventoryService) -> None:
    with pytest.raises(InvalidInput):
        service.put_product("mouse", name=None, price=None, quantity=None)


def test_the_catalogue_works_on_its_own_over_a_stock_store() -> None:
    # Catalogue admin needs no reservations: the API's product endpoints use only this part.
    catalogue = Catalogue(InMemoryStockRepository(), clock=FakeClock())
    item, created = catalogue.put_product("p1", name="P", price=1.0, quantity=2)
    assert created
    assert catalogue.get_product("p1") == item
    assert catalogue.list_products() == [item]
