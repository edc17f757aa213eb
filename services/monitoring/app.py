"""Wiring of monitoring: bootstrap() builds the service, create_app() the Flask app."""

from __future__ import annotations

from flask import Flask

from services.monitoring import api
from services.monitoring.domain import MonitoringError
from services.monitoring.health import HttpHealthProbe
from services.monitoring.mongo import (
    MongoDeadLetterRepository,
    MongoHealthRepository,
    MongoRecentEventRepository,
    MongoStatsRepository,
    MongoTimelineRepository,
)
from services.monitoring.ports import (
    Clock,
    DeadLetterRepository,
    HealthProbe,
    HealthRepository,
    LagProbe,
    RawPublisher,
    RecentEventRepository,
    StatsRepository,
    TimelineRepository,
)
from services.monitoring.prometheus import CONSUMER_GROUPS, ConsumerLagReader
from services.monitoring.service import MonitoringService
from shared.config import Settings, load_settings
from shared.events import utc_now
from shared.kafka_utils import consumer_lag
from shared.runtime import Clients, connect
from shared.web import create_service_app


def bootstrap(
    settings: Settings,
    *,
    clients: Clients | None = None,
    timelines: TimelineRepository | None = None,
    recent: RecentEventRepository | None = None,
    figures: StatsRepository | None = None,
    letters: DeadLetterRepository | None = None,
    health: HealthRepository | None = None,
    probe: HealthProbe | None = None,
    publisher: RawPublisher | None = None,
    lag: LagProbe | None = None,
    clock: Clock = utc_now,
) -> MonitoringService:
    """Build the service; whatever is not passed in is made from the settings."""

    def live() -> Clients:
        nonlocal clients
        clients = clients or connect(settings)
        return clients

    if timelines is None:
        timelines = MongoTimelineRepository(
            live().db["timelines"], live().db["open_orders"], limit=settings.monitoring.timeline_limit
        )
        timelines.ensure_indexes()
    if recent is None:
        recent = MongoRecentEventRepository(live().db["recent_events"])
        recent.ensure_indexes()
    if figures is None:
        figures = MongoStatsRepository(live().db["stats"], live().db["minutes"])
    if letters is None:
        letters = MongoDeadLetterRepository(live().db["dlq"])
        letters.ensure_indexes()
    if health is None:
        health = MongoHealthRepository(live().db["service_health"])
    if publisher is None:
        publisher = live().publisher
    if lag is None:
        lag = ConsumerLagReader(lambda: consumer_lag(settings.kafka, CONSUMER_GROUPS, timeout=2.0))
    return MonitoringService(
        timelines=timelines,
        recent=recent,
        figures=figures,
        letters=letters,
        health=health,
        probe=probe
        or HttpHealthProbe(
            settings.monitoring.health_timeout_s,
            api_key=settings.auth.service_key.get_secret_value() if settings.auth.service_key else None,
            clock=clock,
        ),
        publisher=publisher,
        services=[(name, endpoint.url) for name, endpoint in settings.services.items()],
        settings=settings.monitoring,
        topic_prefix=settings.kafka.topic_prefix,
        lag=lag,
        clock=clock,
    )


def create_app(settings: Settings | None = None, service: MonitoringService | None = None) -> Flask:
    """Build the monitoring API: dashboards, timelines, figures, alerts and the DLQ."""
    settings = settings or load_settings("monitoring")
    checks, keys = {}, None
    if service is None:
        clients = connect(settings)
        keys = clients.keys()
        service = bootstrap(settings, clients=clients)
        checks = clients.health_checks()
    app = create_service_app(settings, "monitoring", checks, import_name=__name__, keys=keys)
    app.extensions["monitoring"] = service
    app.register_blueprint(api.bp)
    app.register_error_handler(MonitoringError, api.error_response)
    return app
