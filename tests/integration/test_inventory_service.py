"""The inventory service over the real MongoDB-protocol server: concurrency, rollback and wiring."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from pymongo import MongoClient, monitoring
from pymongo.database import Database

from services.inventory.app import bootstrap, seed
from services.inventory.catalogue import seed_stock
from services.inventory.domain import FAILED, RESERVED, Line, StockItem
from services.inventory.mongo import MongoReservationRepository, MongoStockRepository
from services.inventory.service import InventoryService
from shared.config import Settings
from shared.events import Envelope, utc_now
from shared.runtime import connect


@pytest.fixture
def stock(mongo_db: Database) -> MongoStockRepository:
    return MongoStockRepository(mongo_db["stock"])


@pytest.fixture
def service(
    service_settings: Callable[..., Settings], mongo_db: Database, stock: MongoStockRepository
) -> InventoryService:
    reservations = MongoReservationRepository(mongo_db["reservations"], mongo_db["reservation_timers"])
    reservations.ensure_indexes()
    built = bootstrap(service_settings("inventory"), stock=stock, reservations=reservations)
    seed_stock(stock, utc_now())
    return built


def test_ten_concurrent_buyers_of_the_last_five_units_get_exactly_five(
    service: InventoryService, stock: MongoStockRepository
) -> None:
    stock.add(StockItem("last_five", "Last five", 10.0, available=5))
    outcomes: list[str] = []
    barrier = threading.Barrier(10)

    def buy(n: int) -> None:
        barrier.wait()
        reservation = service.reserve(str(uuid.uuid4()), f"order-{n}", [Line("last_five", 1)])
        outcomes.append(reservation.status)

    threads = [threading.Thread(target=buy, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    item = stock.get("last_five")
    assert sorted(outcomes) == [FAILED] * 5 + [RESERVED] * 5
    assert (item.available, item.reserved, item.sold, len(item.holds)) == (0, 5, 0, 5)


def test_a_short_item_rolls_back_the_holds_already_taken(
    service: InventoryService, stock: MongoStockRepository
) -> None:
    reservation = service.reserve("res_x", "x", [Line("mouse", 3), Line("rare_item", 6)])
    assert (reservation.status, reservation.reason) == (FAILED, "out_of_stock")
    mouse = stock.get("mouse")
    assert (mouse.available, mouse.reserved, mouse.holds) == (1000, 0, {})


def test_reserve_commit_and_release_keep_stock_conserved(
    service: InventoryService, stock: MongoStockRepository
) -> None:
    service.reserve("r1", "o1", [Line("laptop", 2)])
    service.reserve("r2", "o2", [Line("laptop", 3)])
    service.commit("r1")
    service.release("r2")
    _reservation, released_again = service.release("r2")
    laptop = stock.get("laptop")
    assert not released_again
    assert (laptop.available, laptop.reserved, laptop.sold, laptop.holds) == (48, 0, 2, {})


def test_seed_fills_a_fresh_database_once_and_bootstrap_writes_nothing(
    service_settings: Callable[..., Settings], mongo_db: Database
) -> None:
    settings = service_settings("inventory")
    clients = connect(settings)
    try:
        service = bootstrap(settings, clients=clients)
        assert len(clients.relays) == 1  # registered for the runtime to start
        assert service.list_products() == []
        assert seed(settings) == 9
        service.put_product("rare_item", name=None, price=None, quantity=1)
        assert seed(settings) == 0
        assert service.get_product("rare_item").available == 6
        assert len(service.list_products()) == 9
    finally:
        clients.mongo.close()


def test_concurrent_reserves_releases_and_commits_conserve_stock(
    service: InventoryService, stock: MongoStockRepository
) -> None:
    stock.add(StockItem("hot", "Hot item", 10.0, available=20))
    barrier = threading.Barrier(6)

    def shop(worker: int) -> None:
        barrier.wait()
        for n in range(6):
            rid = f"w{worker}-{n}"
            reservation = service.reserve(rid, rid, [Line("hot", 1 + n % 3)])
            if reservation.status != RESERVED:
                continue
            if n % 2:
                service.commit(rid)
            else:
                service.release(rid)
            service.release(rid)  # a duplicate that must change nothing

    threads = [threading.Thread(target=shop, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    item = stock.get("hot")
    assert item.available + item.reserved + item.sold == 20
    assert min(item.available, item.reserved, item.sold) >= 0
    assert (item.reserved, item.holds) == (0, {})


class CommandLog(monitoring.CommandListener):
    """The commands a client sends to one database: each is one round trip."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.commands: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database:
            self.commands.append(f"{event.command_name} {event.command.get(event.command_name)}")

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


def test_a_saga_order_costs_nine_round_trips_and_each_reservation_returned_is_the_one_stored(
    live_settings: Settings, service: InventoryService, mongo_db: Database
) -> None:
    log = CommandLog(mongo_db.name)
    mongo = live_settings.mongo
    credentials = {}
    if mongo.username:  # as make_mongo_client passes them; that client takes no listener of ours
        credentials = {
            "username": mongo.username,
            "password": mongo.password.get_secret_value() if mongo.password else "",
        }
    client: MongoClient = MongoClient(mongo.uri, tz_aware=True, event_listeners=[log], **credentials)
    try:
        db = client[mongo_db.name]
        counted = InventoryService(
            MongoStockRepository(db["stock"]),
            MongoReservationRepository(db["reservations"], db["reservation_timers"]),
            ttl_s=900,
        )
        items = [{"product_id": "mouse", "quantity": 2, "price": 29.99}, {"product_id": "keyboard", "quantity": 1}]
        reserve = Envelope("ReserveInventory", "o1", "orchestrator", {"reservation_id": "res_o1", "items": items})
        reserved = counted.reserve("res_o1", "o1", [Line("mouse", 2, 29.99), Line("keyboard", 1)], command=reserve)
        assert log.commands == [
            "insert reservations",
            "update reservation_timers",
            "update stock",
            "update stock",
            "findAndModify reservations",
        ]
        assert reserved == service.get_reservation("res_o1")
        log.commands.clear()
        commit = Envelope("CommitInventory", "o1", "orchestrator", {"reservation_id": "res_o1"})
        committed, done = counted.commit("res_o1", command=commit)
        assert log.commands == [
            "findAndModify reservations",
            "update stock",
            "update stock",
            "delete reservation_timers",
        ]
        assert done and committed == service.get_reservation("res_o1")
        assert (service.get_product("mouse").sold, service.get_product("keyboard").sold) == (2, 1)
    finally:
        client.close()
