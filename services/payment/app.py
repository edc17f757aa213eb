"""Wiring of the payment service: bootstrap() builds the service, create_app() the HTTP API."""

from __future__ import annotations

from flask import Flask

from services.payment import api
from services.payment.domain import PaymentError
from services.payment.gateway import SimulatedGateway
from services.payment.ledger import GatewayLedger
from services.payment.mongo import MongoPaymentRepository
from services.payment.ports import PaymentGateway, PaymentRepository
from services.payment.service import PaymentService
from shared.config import Settings, load_settings
from shared.outbox import OutboxRelay
from shared.runtime import Clients, connect
from shared.web import create_service_app, hold_writes_for_relay


def bootstrap(
    settings: Settings,
    *,
    clients: Clients | None = None,
    payments: PaymentRepository | None = None,
    gateway: PaymentGateway | None = None,
) -> tuple[PaymentService, OutboxRelay | None]:
    """Build the payment service; the relay (None with an injected repository) must be started."""
    relay = None
    if payments is None:
        clients = clients or connect(settings)
        relay = clients.relay("payments")
        mongo_payments = MongoPaymentRepository(clients.db["payments"], clients.db["order_charges"], relay)
        mongo_payments.ensure_indexes()
        payments = mongo_payments
    if gateway is None:
        ledger = GatewayLedger(settings.payment.ledger_path) if settings.payment.ledger_path else None
        gateway = SimulatedGateway(settings.payment, ledger=ledger)
    return PaymentService(payments, gateway), relay


def create_app(settings: Settings | None = None, service: PaymentService | None = None) -> Flask:
    """Create the payment API; without ``service`` it connects to Kafka and MongoDB."""
    settings = settings or load_settings("payment")
    checks = {}
    relay = None
    if service is None:
        clients = connect(settings)
        service, relay = bootstrap(settings, clients=clients)
        if relay:
            relay.start(scan=False)  # REST refunds queue PaymentRefunded; the worker scans
        checks = clients.health_checks()
    app = create_service_app(settings, "payment", checks, import_name=__name__)
    if relay is not None:
        hold_writes_for_relay(app, relay, settings.outbox)
    app.extensions["payment"] = service
    app.register_blueprint(api.bp)
    app.register_error_handler(PaymentError, api.error_response)
    return app
