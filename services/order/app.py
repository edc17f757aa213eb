"""Wiring of the order service: bootstrap() builds it, create_app() serves it over HTTP."""

from __future__ import annotations

from flask import Flask

from services.order import api
from services.order.mongo import MongoOrderRepository
from services.order.ports import OrderRepository
from services.order.service import OrderService
from shared.config import Settings, load_settings
from shared.outbox import OutboxRelay
from shared.runtime import Clients, connect
from shared.web import create_service_app, hold_writes_for_relay


def bootstrap(
    settings: Settings, *, clients: Clients | None = None, orders: OrderRepository | None = None
) -> tuple[OrderService, OutboxRelay | None]:
    """Build the service; return it with the outbox relay the caller must start (None with a given repo)."""
    relay = None
    if orders is None:
        clients = clients or connect(settings)
        relay = clients.relay("orders")
        repository = MongoOrderRepository(clients.db["orders"], clients.db["idempotency_keys"], relay)
        repository.ensure_indexes()
        orders = repository
    return OrderService(orders), relay


def create_app(settings: Settings | None = None, service: OrderService | None = None) -> Flask:
    """Create the order API; without a service, connect to Kafka and MongoDB and start the relay."""
    settings = settings or load_settings("order")
    checks = {}
    relay = None
    if service is None:
        clients = connect(settings)
        service, relay = bootstrap(settings, clients=clients)
        if relay is not None:
            relay.start(scan=False)  # the worker scans for leftovers
        checks = clients.health_checks()
    app = create_service_app(settings, "order", checks, import_name=__name__)
    if relay is not None:
        hold_writes_for_relay(app, relay, settings.outbox)
    app.extensions["order"] = service
    app.register_blueprint(api.bp)
    return app
