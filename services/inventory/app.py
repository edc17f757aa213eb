"""Wiring of the inventory service: bootstrap() builds it, create_app() serves it over HTTP, WORKER
is what its worker runs (see shared.runtime), seed() loads the catalogue into an empty database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flask import Flask

from services.inventory import api
from services.inventory.catalogue import seed_stock
from services.inventory.domain import InventoryError
from services.inventory.handlers import HANDLERS, handle_batch
from services.inventory.mongo import MongoReservationRepository, MongoStockRepository
from services.inventory.ports import ReservationRepository, StockRepository
from services.inventory.service import InventoryService
from shared.config import Settings, load_settings
from shared.events import utc_now
from shared.mongo import make_mongo_client, service_database
from shared.runtime import Clients, ServiceWorker, connect, publish_from_api
from shared.web import create_service_app


def bootstrap(
    settings: Settings,
    *,
    clients: Clients | None = None,
    stock: StockRepository | None = None,
    reservations: ReservationRepository | None = None,
    clock: Callable[[], datetime] | None = None,
) -> InventoryService:
    """Build the service (writing nothing: seeding is ``seed``); a Mongo reservation repository's
    outbox relay is registered on the clients for the runtime."""
    if stock is None or reservations is None:
        clients = clients or connect(settings)
        if stock is None:
            stock = MongoStockRepository(clients.db["stock"])
        if reservations is None:
            mongo_reservations = MongoReservationRepository(
                clients.db["reservations"], clients.db["reservation_timers"], clients.relay("reservations")
            )
            mongo_reservations.ensure_indexes()
            reservations = mongo_reservations
    return InventoryService(stock, reservations, ttl_s=settings.inventory.reservation_ttl_s, clock=clock or utc_now)


def seed(settings: Settings) -> int:
    """Load the catalogue into the inventory database if it holds no product (so it never resets
    stock); return how many products were added. An explicit step: `python main.py inventory seed`."""
    mongo = make_mongo_client(settings.mongo, app_name="inventory-seed")
    try:
        return seed_stock(MongoStockRepository(service_database(mongo, settings)["stock"]), utc_now())
    finally:
        mongo.close()


def create_app(settings: Settings | None = None, service: InventoryService | None = None) -> Flask:
    """Create the inventory API; without a ``service``, connect to Mongo and Kafka and build one."""
    settings = settings or load_settings("inventory")
    clients = None
    if service is None:
        clients = connect(settings)
        service = bootstrap(settings, clients=clients)
    app = create_service_app(
        settings,
        "inventory",
        clients.health_checks() if clients else {},
        import_name=__name__,
        keys=clients.keys() if clients else None,
    )
    publish_from_api(app, clients)  # REST reservations and releases queue their events
    app.extensions["inventory"] = service
    app.register_blueprint(api.bp)
    app.register_error_handler(InventoryError, api.error_response)
    return app


WORKER = ServiceWorker(
    HANDLERS,
    # Every fetched command at once: holds and settles share one write per product.
    handle_batch,
    # Reservations whose hold ran out are released.
    jobs=lambda service, settings: [(settings.inventory.expiry_interval_s, service.expire_due)],
)
