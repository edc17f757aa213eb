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
from shared.runtime import Clients, connect
from shared.web import create_service_app
from shared.write_behind import WriteBehind

SERVICE = "orchestrator"


def mongo_sagas(clients: Clients, cache_size: int = 0, timer_writes: WriteBehind | None = None) -> MongoSagaRepository:
    """Build the Mongo saga repository; its outbox relay is registered on the clients for the runtime."""
    sagas = MongoSagaRepository(
        clients.db["sagas"],
        clients.db["saga_timers"],
        clients.relay("sagas"),
        cache_size=cache_size,
        timer_writes=timer_writes,
    )
    sagas.ensure_indexes()
    return sagas


def bootstrap(
    settings: Settings,
    *,
    clients: Clients | None = None,
    sagas: SagaRepository | None = None,
    clock: Clock | None = None,
    saga_ended: SagaEnded | None = None,
) -> SagaService:
    """Build the saga service; without ``sagas``, over Mongo sagas without a cache (see mongo_sagas)."""
    if sagas is None:
        sagas = mongo_sagas(clients or connect(settings))
    timeouts = Timeouts(
        payment=timedelta(seconds=settings.saga.payment_timeout_s),
        order=timedelta(seconds=settings.saga.order_timeout_s),
    )
    return SagaService(
        sagas,
        timeouts,
        clock or utc_now,
        is_transient,
        saga_ended,
        timer_batch=settings.saga.timer_batch,
        max_write_attempts=settings.saga.max_write_attempts,
    )


def create_app(settings: Settings | None = None, service: SagaService | None = None) -> Flask:
    """Build the orchestrator's Flask app."""
    settings = settings or load_settings(SERVICE)
    checks, keys = {}, None
    if service is None:
        clients = connect(settings)
        keys = clients.keys()
        # The same repository as the worker's, less the worker's saga cache and timer write-behind:
        # the worker writes every saga, so a copy kept here would go stale. The API only reads
        # sagas, so it queues no events and runs no relay (no publish_from_api).
        service = bootstrap(settings, clients=clients)
        checks = clients.health_checks()
    app = create_service_app(settings, SERVICE, checks, keys=keys)
    app.extensions[SERVICE] = service
    app.register_blueprint(api.bp)
    app.register_error_handler(SagaError, api.error_response)
    return app
