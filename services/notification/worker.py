"""The notification worker: consume the saga's notification requests until SIGTERM."""

from __future__ import annotations

from services.notification.app import bootstrap
from services.notification.handlers import HANDLERS, handle_batch
from shared.config import Settings, load_settings
from shared.kafka_utils import bind_handlers
from shared.runtime import connect, run_worker

GROUP_ID = "notification-service"


def main(settings: Settings | None = None) -> None:
    """Run the consumer loop (group notification-service) with the outbox relay beside it."""
    settings = settings or load_settings("notification")
    clients = connect(settings)
    service, relay = bootstrap(settings, clients=clients)
    run_worker(
        clients,
        bind_handlers(HANDLERS, service),
        group_id=GROUP_ID,
        relay=relay,
        # Every fetched request at once: the new notifications and the sent ones each in one write.
        batch_handler=lambda events: handle_batch(service, events),
    )
