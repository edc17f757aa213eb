"""Wiring of the orchestrator: bootstrap() builds the service, create_app() the HTTP API."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from services.orchestrator import api
from services.orchestrator.domain import SagaError
from services.orchestrator.mongo import MongoSagaRepository
from services.orchestrator.ports import SagaRepository
from services.orchestrator.saga import Timeouts
from services.orchestrator.service import Clock, SagaEnded, SagaService
from shared.config import Settings, load_settings
from shared.events import utc_now
from shared.mongo import is_transient
from shared.outbox import OutboxRelay
from shared.runtime import Clients, connect
from shared.web import create_service_app
from shared.write_behind import WriteBehind

SERVICE = "orchestrator"


def mongo_sagas(
    clients: Clients, cache_size: int = 0, timer_writes: WriteBehind | None = None
) -> tuple[MongoSagaRepository, OutboxRelay]:
    """Build the Mongo saga repository and the relay that publishes its outbox (not started)."""
    relay = clients.relay("sagas")
    sagas = MongoSagaRepository(
        clients.db["sagas"], clients.db["saga_timers"], relay, cache_size=cache_size, timer_writes=timer_writes
    )
    sagas.ensure_indexes()
    return sagas, relay


def bootstrap(
    settings: Settings,
    *,
    clients: Clients | None = None,
    sagas: SagaRepository | None = None,
    clock: Clock | None = None,
    saga_ended: SagaEnded | None = None,
) -> SagaService:
    """Build the saga service; without ``sagas`` it connects to Mongo and starts the outbox relay."""
    if sagas is None:
        sagas, relay = mongo_sagas(clients or connect(settings))
        relay.start(scan=False)  # the worker scans for leftovers
    timeouts = Timeouts(
        payment=timedelta(seconds=settings.saga.payment_timeout_s),
        order=timedelta(seconds=settings.saga.order_timeout_s),
    )
    return SagaService(sagas, timeouts, clock or utc_now, is_transient, saga_ended)


def create_app(settings: Settings | None = None, service: SagaService | None = None) -> Flask:
    """Build the orchestrator's Flask app."""
    settings = settings or load_settings(SERVICE)
    checks = {}
    if service is None:
        clients = connect(settings)
        # The API only reads sagas, so it needs no outbox relay; the worker runs that.
        db = clients.db
        sagas = MongoSagaRepository(db["sagas"], db["saga_timers"])
        service = bootstrap(settings, clients=clients, sagas=sagas)
        checks = clients.health_checks()
    app = create_service_app(settings, SERVICE, checks)
    app.extensions[SERVICE] = service
    app.register_blueprint(api.bp)
    app.register_error_handler(SagaError, api.error_response)
    return app
