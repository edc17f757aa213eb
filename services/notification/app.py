"""Wiring of the notification service: bootstrap() builds the service, create_app() the HTTP API,
WORKER is what its worker runs (see shared.runtime)."""

from __future__ import annotations

from flask import Flask

from services.notification import api
from services.notification.domain import NotificationError
from services.notification.handlers import HANDLERS, handle_batch
from services.notification.mongo import MongoNotificationRepository
from services.notification.ports import NotificationRepository, NotificationSender
from services.notification.senders import make_sender
from services.notification.service import NotificationService
from shared.config import Settings, load_settings
from shared.runtime import Clients, ServiceWorker, connect
from shared.web import create_service_app


def bootstrap(
    settings: Settings,
    *,
    clients: Clients | None = None,
    notifications: NotificationRepository | None = None,
    sender: NotificationSender | None = None,
) -> NotificationService:
    """Build the notification service; a Mongo repository's outbox relay is registered on the clients
    for the runtime."""
    if notifications is None:
        clients = clients or connect(settings)
        mongo_notifications = MongoNotificationRepository(clients.db["notifications"], clients.relay("notifications"))
        mongo_notifications.ensure_indexes()
        notifications = mongo_notifications
    if sender is None:
        sender = make_sender(settings.notification)
    return NotificationService(notifications, sender, sends_per_write=settings.notification.sends_per_write)


def create_app(settings: Settings | None = None, service: NotificationService | None = None) -> Flask:
    """Create the notification API; without ``service`` it connects to Kafka and MongoDB."""
    settings = settings or load_settings("notification")
    checks, keys = {}, None
    if service is None:
        clients = connect(settings)
        keys = clients.keys()
        service = bootstrap(settings, clients=clients)
        checks = clients.health_checks()
        # Direct sends queue no events, so this process runs no relay (no publish_from_api): the worker's publishes.
    app = create_service_app(settings, "notification", checks, import_name=__name__, keys=keys)
    app.extensions["notification"] = service
    app.register_blueprint(api.bp)
    app.register_error_handler(NotificationError, api.error_response)
    return app


# Every fetched request at once: the new notifications and the sent ones each in one write.
WORKER = ServiceWorker(HANDLERS, handle_batch)
