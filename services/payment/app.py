"""Wiring of the payment service: bootstrap() builds the service, create_app() the HTTP API, WORKER
is what its worker runs (see shared.runtime)."""

from __future__ import annotations

from flask import Flask

from services.payment import api
from services.payment.domain import PaymentError
from services.payment.gateway import SimulatedGateway
from services.payment.handlers import HANDLERS, handle_batch
from services.payment.ledger import GatewayLedger
from services.payment.mongo import MongoPaymentRepository, MongoStoredCardRepository
from services.payment.ports import PaymentGateway, PaymentRepository, StoredCardRepository
from services.payment.service import PaymentService
from services.payment.vault import CardVault
from shared.config import Settings, load_settings
from shared.runtime import Clients, ServiceWorker, connect, publish_from_api
from shared.web import create_service_app


def bootstrap(
    settings: Settings,
    *,
    clients: Clients | None = None,
    payments: PaymentRepository | None = None,
    cards: StoredCardRepository | None = None,
    gateway: PaymentGateway | None = None,
) -> PaymentService:
    """Build the payment service; a Mongo repository's outbox relay is registered on the clients for the runtime."""
    if payments is None or cards is None:
        clients = clients or connect(settings)
        if payments is None:
            relay = clients.relay("payments")
            mongo_payments = MongoPaymentRepository(clients.db["payments"], clients.db["order_charges"], relay)
            mongo_payments.ensure_indexes()
            payments = mongo_payments
        if cards is None:
            mongo_cards = MongoStoredCardRepository(clients.db["payment_methods"])
            mongo_cards.ensure_indexes()
            cards = mongo_cards
    if gateway is None:
        ledger = GatewayLedger(settings.payment.ledger_path) if settings.payment.ledger_path else None
        gateway = SimulatedGateway(settings.payment, ledger=ledger)
    vault = CardVault(cards, settings.payment.vault_key, ttl_s=settings.payment.vault_ttl_s)
    return PaymentService(payments, gateway, vault=vault, charges_per_write=settings.payment.charges_per_write)


def create_app(settings: Settings | None = None, service: PaymentService | None = None) -> Flask:
    """Create the payment API; without ``service`` it connects to Kafka and MongoDB."""
    settings = settings or load_settings("payment")
    clients = None
    if service is None:
        clients = connect(settings)
        service = bootstrap(settings, clients=clients)
    app = create_service_app(
        settings,
        "payment",
        clients.health_checks() if clients else {},
        import_name=__name__,
        keys=clients.keys() if clients else None,
    )
    publish_from_api(app, clients)  # REST refunds queue PaymentRefunded
    app.extensions["payment"] = service
    app.register_blueprint(api.bp)
    app.register_error_handler(PaymentError, api.error_response)
    return app


WORKER = ServiceWorker(
    HANDLERS,
    # Every fetched command at once: new payments, claims and replies each go out in one write.
    handle_batch,
    # Cards nobody forgot (an unused retry's, a crash's) go soon after their expiry: a sweep every
    # tenth of their time to live keeps one at most that much longer.
    jobs=lambda service, settings: [(settings.payment.vault_ttl_s / 10, service.vault.purge_expired)],
)
