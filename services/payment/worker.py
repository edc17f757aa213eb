"""The payment worker: consume the saga's payment commands until SIGTERM."""

from __future__ import annotations

from services.payment.app import bootstrap
from services.payment.handlers import HANDLERS, handle_batch
from shared.config import Settings, load_settings
from shared.kafka_utils import bind_handlers
from shared.runtime import connect, run_worker

GROUP_ID = "payment-service"


def main(settings: Settings | None = None) -> None:
    """Run the consumer loop (group payment-service) with the outbox relay beside it."""
    settings = settings or load_settings("payment")
    clients = connect(settings)
    service, relay = bootstrap(settings, clients=clients)
    run_worker(
        clients,
        bind_handlers(HANDLERS, service),
        group_id=GROUP_ID,
        relay=relay,
        # Every fetched command at once: new payments, claims and replies each go out in one write.
        batch_handler=lambda events: handle_batch(service, events),
    )
