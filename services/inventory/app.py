"""Wiring of the inventory service: bootstrap() builds it, create_app() serves it over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flask import Flask

from services.inventory import api
from services.inventory.domain import InventoryError
from services.inventory.mongo import MongoReservationRepository, MongoStockRepository
from services.inventory.ports import ReservationRepository, StockRepository
from services.inventory.service import InventoryService
from shared.config import Settings, load_settings
from shared.events import utc_now
from shared.outbox import OutboxRelay
from shared.runtime import Clients, connect
from shared.web import HealthCheck, create_service_app, hold_writes_for_relay


def bootstrap(
    settings: Settings,
    *,
    clients: Clients | None = None,
    stock: StockRepository | None = None,
    reservations: ReservationRepository | None = None,
    clock: Callable[[], datetime] | None = None,
) -> tuple[InventoryService, OutboxRelay | None]:
    """Build the service (seeding an empty stock store); return it with the outbox relay the caller starts."""
    relay = None
    if stock is None or reservations is None:
        clients = clients or connect(settings)
        if stock is None:
            stock = MongoStockRepository(clients.db["stock"])
        if reservations is None:
            relay = clients.relay("reservations")
            mongo_reservations = MongoReservationRepository(
                clients.db["reservations"], clients.db["reservation_timers"], relay
            )
            mongo_reservations.ensure_indexes()
            reservations = mongo_reservations
    service = InventoryService(stock, reservations, ttl_s=settings.inventory.reservation_ttl_s, clock=clock or utc_now)
    service.seed()
    return service, relay


def create_app(settings: Settings | None = None, service: InventoryService | None = None) -> Flask:
    """Create the inventory API; without a ``service``, connect to Mongo and Kafka and build one."""
    settings = settings or load_settings("inventory")
    checks: dict[str, HealthCheck] = {}
    relay = None
    if service is None:
        clients = connect(settings)
        service, relay = bootstrap(settings, clients=clients)
        if relay:
            relay.start(scan=False)  # the worker scans for leftovers
        checks = clients.health_checks()
    app = create_service_app(settings, "inventory", checks, import_name=__name__)
    if relay is not None:
        hold_writes_for_relay(app, relay, settings.outbox)
    app.extensions["inventory"] = service
    app.register_blueprint(api.bp)
    app.register_error_handler(InventoryError, api.error_response)
    return app
