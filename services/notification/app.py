"""Wiring of the notification service: bootstrap() builds the service, create_app() the HTTP API."""

from __future__ import annotations

from flask import Flask

from services.notification import api
from services.notification.domain import NotificationError
from services.notification.mongo import MongoNotificationRepository
from services.notification.ports import NotificationRepository, NotificationSender
from services.notification.senders import make_sender
from services.notification.service import NotificationService
from shared.config import Settings, load_settings
from shared.outbox import OutboxRelay
from shared.runtime import Clients, connect
from shared.web import create_service_app


def bootstrap(
    settings: Settings,
    *,
    clients: Clients | None = None,
    notifications: NotificationRepository | None = None,
    sender: NotificationSender | None = None,
) -> tuple[NotificationService, OutboxRelay | None]:
    """Build the notification service; the relay (None with an injected repository) must be started."""
    relay = None
    if notifications is None:
        clients = clients or connect(settings)
        relay = clients.relay("notifications")
        mongo_notifications = MongoNotificationRepository(clients.db["notifications"], relay)
        mongo_notifications.ensure_indexes()
        notifications = mongo_notifications
    if sender is None:
        sender = make_sender(settings.notification)
    return NotificationService(notifications, sender), relay


def create_app(settings: Settings | None = None, service: NotificationService | None = None) -> Flask:
    """Create the notification API; without ``service`` it connects to Kafka and MongoDB."""
    settings = settings or load_settings("notification")
    checks = {}
    if service is None:
        clients = connect(settings)
        # Direct sends queue no events, so this process runs no relay; the worker's publishes.
        service, _relay = bootstrap(settings, clients=clients)
        checks = clients.health_checks()
    app = create_service_app(settings, "notification", checks, import_name=__name__)
    app.extensions["notification"] = service
    app.register_blueprint(api.bp)
    app.register_error_handler(NotificationError, api.error_response)
    return app
