"""The order service's consumer: the saga's status reports, plus the relay and key expiry."""

from __future__ import annotations

from services.order.app import bootstrap
from services.order.handlers import HANDLERS, apply_batch
from shared.config import Settings, load_settings
from shared.kafka_utils import bind_handlers
from shared.runtime import connect, run_worker

# Idempotency keys live 24 hours; sweeping hourly keeps the collection small.
KEY_PURGE_INTERVAL_S = 3600.0


def main(settings: Settings | None = None) -> None:
    """Apply order status events until SIGTERM."""
    settings = settings or load_settings("order")
    clients = connect(settings)
    service, relay = bootstrap(settings, clients=clients)
    run_worker(
        clients,
        bind_handlers(HANDLERS, service),
        relay=relay,
        periodic=[(KEY_PURGE_INTERVAL_S, service.purge_idempotency_keys)],
        # Every fetched report at once, in one bulk write.
        batch_handler=lambda events: apply_batch(service, events),
    )
