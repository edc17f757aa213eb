"""Process wiring shared by the services: clients, the consumer worker and the HTTP server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from flask import Flask
from gunicorn.app.base import BaseApplication
from prometheus_client import start_http_server
from pymongo import MongoClient
from pymongo.database import Database

from shared.config import Settings
from shared.events import DEAD_LETTER_TOPIC
from shared.kafka_utils import (
    BatchHandler,
    ConsumerRunner,
    Gate,
    Handler,
    KafkaPublisher,
    ensure_topics,
    make_consumer,
    make_producer,
    topic_name,
)
from shared.mongo import (
    ATOMICITY_PROBE,
    MongoInbox,
    check_atomic_updates,
    is_transient,
    make_mongo_client,
    ping,
    service_database,
)
from shared.outbox import OutboxRelay

logger = logging.getLogger(__name__)


@dataclass
class Clients:
    """The clients one process uses, created once after any fork."""

    settings: Settings
    mongo: MongoClient
    db: Database
    publisher: KafkaPublisher
    producer: Any = field(repr=False)

    def health_checks(self) -> dict[str, Callable[[], None]]:
        return {"kafka": self.kafka_ping, "mongo": lambda: ping(self.mongo)}

    def kafka_ping(self) -> None:
        """Ask the broker for metadata; raise when it does not answer."""
        metadata = self.producer.list_topics(topic=topic_name(self.settings.kafka, DEAD_LETTER_TOPIC), timeout=2)
        if not metadata.brokers:
            raise ConnectionError("no Kafka broker answered")

    def relay(self, *collection_names: str) -> OutboxRelay:
        """The outbox relay of these collections of this service's database (not started)."""
        return OutboxRelay(
            self.publisher,
            [self.db[name] for name in collection_names],
            retry_interval_s=self.settings.outbox.retry_interval_s,
            clear_interval_s=self.settings.outbox.clear_interval_s,
        )


# The stores this process has found atomic (by URI): the probe runs once per process and store.
_atomic_stores: set[str] = set()
_probing = threading.Lock()


def connect(settings: Settings) -> Clients:
    """Create the Mongo client and Kafka producer of this process, refusing a store whose updates
    are not atomic (StoreNotAtomic) before anything is written to it."""
    mongo = make_mongo_client(settings.mongo, app_name=settings.service or "kafka-ecommerce")
    db = service_database(mongo, settings)
    try:
        _check_store_once(settings, db)
    except BaseException:
        mongo.close()
        raise
    producer = make_producer(settings.kafka, client_id=settings.service or "kafka-ecommerce")
    publisher = KafkaPublisher(producer, settings.kafka.topic_prefix)
    return Clients(settings, mongo, db, publisher, producer)


def _check_store_once(settings: Settings, db: Database) -> None:
    with _probing:
        if settings.mongo.uri not in _atomic_stores:
            check_atomic_updates(db[ATOMICITY_PROBE])
            _atomic_stores.add(settings.mongo.uri)


Periodic = tuple[float, Callable[[], object]]


class Background(Protocol):
    def run(self) -> None:
        """Work until stopped."""

    def stop(self) -> None:
        """Ask ``run`` to return soon."""


def run_worker(
    clients: Clients,
    handlers: Mapping[str, Handler],
    *,
    group_id: str | None = None,
    relay: OutboxRelay | None = None,
    periodic: list[Periodic] | None = None,
    background: list[Background] | None = None,
    inbox: bool = False,
    batch_handler: BatchHandler | None = None,
    gate: Gate | None = None,
) -> None:
    """Consume this service's events until SIGTERM, running the relay and other jobs beside it.

    Every handler of our services is idempotent by a natural key (a forward-only status, one
    payment or notification per id, one hold per reservation, the saga's handled event ids), so
    a redelivered event changes nothing without an inbox. ``inbox=True`` records each handled
    event id for handlers that cannot say so; it costs two round trips per event.
    ``batch_handler`` takes every fetched event at once (see ConsumerRunner); ``handlers`` then
    serve only to find the culprit in a batch that failed. ``gate`` paces the consumption of
    some event types (see ConsumerRunner).
    """
    settings = clients.settings
    group_id = group_id or f"{settings.service}-service"
    try:
        ensure_topics(settings.kafka)
    except Exception as err:  # the broker may still be starting; the consumer waits for it anyway
        logger.warning("could not ensure topics: %s", err)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port)
    mongo_inbox = MongoInbox(clients.db["processed_events"], group_id) if inbox else None
    runner = ConsumerRunner(
        make_consumer(settings.kafka, group_id, client_id=f"{settings.service}-worker"),
        clients.publisher,
        handlers,
        service=settings.service or "unknown",
        group_id=group_id,
        retry=settings.consumer,
        inbox=mongo_inbox,
        is_transient=is_transient,
        batch_handler=batch_handler,
        linger_s=settings.consumer.linger_s(settings.service),
        gate=gate,
    )
    if mongo_inbox:
        retention = timedelta(seconds=settings.consumer.inbox_retention_s)

        def prune_inbox() -> int:
            return mongo_inbox.prune(datetime.now(UTC) - retention)

        periodic = [*(periodic or []), (settings.consumer.inbox_prune_interval_s, prune_inbox)]
    stop = threading.Event()
    jobs = [
        threading.Thread(target=_every, args=(interval, job, stop), daemon=True) for interval, job in periodic or []
    ]
    others = [threading.Thread(target=task.run, daemon=True) for task in background or []]
    if relay:
        relay.start()
    for thread in [*jobs, *others]:
        thread.start()
    try:
        runner.run()
    finally:
        stop.set()
        for task in background or []:
            task.stop()
        for thread in others:
            thread.join(timeout=15)
        if relay:
            relay.stop(timeout=3)  # what is not published by then stays in the outbox for next time
        clients.publisher.flush(2)


def _every(interval: float, job: Callable[[], object], stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            job()
        except Exception:
            logger.exception("periodic job %s failed; will run again", getattr(job, "__name__", job))


class _Gunicorn(BaseApplication):
    def __init__(self, app_factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = app_factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Called in each worker after the fork, so every worker gets its own clients.
        return self._factory()


def serve(app_factory: Callable[[], Flask], settings: Settings) -> None:
    """Serve the service's API with gunicorn on its configured host and port."""

    def child_exit(_server: object, worker: Any) -> None:
        if settings.prometheus_multiproc_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, settings.prometheus_multiproc_dir)

    _Gunicorn(
        app_factory,
        {
            "bind": f"{settings.this.host}:{settings.this.port}",
            "workers": settings.http.workers if settings.prometheus_multiproc_dir else 1,
            "threads": settings.http.threads,
            "worker_class": "gthread",
            "timeout": 60,
            "graceful_timeout": 15,
            "accesslog": None,
            "child_exit": child_exit,
        },
    ).run()
