"""Wiring of the order service: bootstrap() builds it, create_app() serves it over HTTP, WORKER
is what its worker runs (see shared.runtime)."""

from __future__ import annotations

from flask import Flask

from services.order import api
from services.order.handlers import HANDLERS, apply_batch
from services.order.mongo import MongoOrderRepository
from services.order.ports import CardVault, OrderRepository
from services.order.service import OrderService
from services.order.vault import HttpCardVault
from shared.config import Settings, load_settings
from shared.runtime import Clients, ServiceWorker, connect, publish_from_api
from shared.web import create_service_app

# How long placing an order waits for the payment service's vault to take its card.
VAULT_TIMEOUT_S = 5.0


def bootstrap(
    settings: Settings,
    *,
    clients: Clients | None = None,
    orders: OrderRepository | None = None,
    vault: CardVault | None = None,
) -> OrderService:
    """Build the service; a Mongo repository's outbox relay is registered on the clients for the runtime."""
    if orders is None:
        clients = clients or connect(settings)
        repository = MongoOrderRepository(clients.db["orders"], clients.db["idempotency_keys"], clients.relay("orders"))
        repository.ensure_indexes()
        orders = repository
    if vault is None:
        key = settings.auth.service_key
        vault = HttpCardVault(
            settings.services["payment"].url, key.get_secret_value() if key else None, timeout_s=VAULT_TIMEOUT_S
        )
    return OrderService(orders, vault)


def create_app(settings: Settings | None = None, service: OrderService | None = None) -> Flask:
    """Create the order API; without a service, connect to Kafka and MongoDB and bootstrap one."""
    settings = settings or load_settings("order")
    clients = None
    if service is None:
        clients = connect(settings)
        service = bootstrap(settings, clients=clients)
    app = create_service_app(
        settings,
        "order",
        clients.health_checks() if clients else {},
        import_name=__name__,
        keys=clients.keys() if clients else None,
    )
    publish_from_api(app, clients)  # new orders queue OrderCreated
    app.extensions["order"] = service
    app.register_blueprint(api.bp)
    return app


WORKER = ServiceWorker(
    HANDLERS,
    # Every fetched report at once, in one bulk write.
    apply_batch,
    # Idempotency keys live 24 hours; sweeping now and then keeps the collection small.
    jobs=lambda service, settings: [(settings.order.idempotency_key_purge_interval_s, service.purge_idempotency_keys)],
)
