"""The inventory worker: saga commands from Kafka, the outbox relay and the reservation expiry job."""

from __future__ import annotations

from services.inventory.app import bootstrap
from services.inventory.handlers import HANDLERS, handle_batch
from shared.config import Settings, load_settings
from shared.kafka_utils import bind_handlers
from shared.runtime import connect, run_worker


def main(settings: Settings | None = None) -> None:
    """Consume inventory.commands as group inventory-service until SIGTERM."""
    settings = settings or load_settings("inventory")
    clients = connect(settings)
    service, relay = bootstrap(settings, clients=clients)
    run_worker(
        clients,
        bind_handlers(HANDLERS, service),
        relay=relay,
        periodic=[(settings.inventory.expiry_interval_s, service.expire_due)],
        # Every fetched command at once: holds and settles share one write per product.
        batch_handler=lambda events: handle_batch(service, events),
    )
