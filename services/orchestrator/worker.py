"""The orchestrator's worker: consume the saga's events and fire its deadlines."""

from __future__ import annotations

import logging

from pymongo.errors import PyMongoError

from services.orchestrator.admission import SagaAdmission, SagaWindow
from services.orchestrator.app import SERVICE, bootstrap, mongo_sagas
from services.orchestrator.handlers import HANDLERS, handle_batch
from shared.config import Settings, load_settings
from shared.events import utc_now
from shared.kafka_utils import bind_handlers
from shared.runtime import Background, connect, run_worker
from shared.write_behind import Flusher, WriteBehind

logger = logging.getLogger(__name__)


def main(settings: Settings | None = None) -> None:
    """Run the saga consumer and the deadline jobs until SIGTERM (the runtime runs the outbox relay)."""
    settings = settings or load_settings(SERVICE)
    clients = connect(settings)
    # The consumer writes every saga it reads; the API (which only reads) keeps no copies.
    timer_writes = WriteBehind(clients.db["saga_timers"])
    sagas = mongo_sagas(clients, cache_size=settings.saga.cache_size, timer_writes=timer_writes)
    background: list[Background] = [Flusher([timer_writes], settings.saga.timer_flush_interval_s)]
    admission = None
    if settings.saga.max_in_flight:
        window = SagaWindow(settings.saga.max_in_flight, settings.saga.admission_target, since=utc_now())
        admission = SagaAdmission(
            sagas.timed_count, settings.saga.max_in_flight, settings.saga.admission_count_interval_s, window
        )
        try:
            admission.refresh()  # after a restart in a backlog, the sagas already in flight count
        except PyMongoError as err:
            logger.warning("could not count the sagas in flight at start; counting again shortly: %s", err)
        background.append(admission)
    service = bootstrap(settings, clients=clients, sagas=sagas, saga_ended=admission.ended if admission else None)
    try:
        service.scrub_card_numbers()
    except PyMongoError:
        logger.exception("could not scrub card numbers from earlier versions' sagas; the next start tries again")
    try:
        service.reconcile_timers()
    except PyMongoError:
        logger.exception("could not check the saga timers at start; the periodic check will retry")
    run_worker(
        clients,
        bind_handlers(HANDLERS, service),
        background=background,
        periodic=[
            (settings.saga.timer_interval_s, service.fire_due_timers),
            # Timers lost to a crash between the saga write and the timer write are rare.
            (settings.saga.reconcile_interval_s, service.reconcile_timers),
        ],
        gate=admission,
        # Every fetched event at once: the sagas they move are written in one bulk write.
        batch_handler=lambda events: handle_batch(service, events),
    )
