"""Process wiring shared by the services: clients, the consumer worker and the HTTP server.

Every service has one shape: ``bootstrap(settings, *, clients=None, <ports>=None)`` in its
``app.py`` returns the service, and ``create_app`` serves that same bootstrap over HTTP. The
outbox relays are the runtime's: ``Clients.relay`` creates and registers them while a bootstrap
builds its repositories; ``serve`` starts an API's (no scan) and ``run_worker`` a worker's (with
the recovery scan), and each stops them when its process shuts down. A service whose worker is
only its handlers runs through ``run_service_worker``; one with more (jobs, other consumers) has
a ``worker.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from flask import Flask
from gunicorn.app.base import BaseApplication
from prometheus_client import start_http_server
from pymongo import MongoClient
from pymongo.database import Database

from shared.apikeys import MongoKeyStore
from shared.config import Settings
from shared.consuming import ConsumerOptions, ConsumerRunner
from shared.events import DEAD_LETTER_TOPIC, Envelope
from shared.kafka_utils import (
    BatchHandler,
    Gate,
    Handler,
    KafkaPublisher,
    bind_handlers,
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
from shared.web import hold_writes_for_relay

logger = logging.getLogger(__name__)


@dataclass
class Clients:
    """The clients one process uses, created once after any fork."""

    settings: Settings
    mongo: MongoClient
    db: Database
    publisher: KafkaPublisher
    producer: Any = field(repr=False)
    # The outbox relays of this process's repositories, started and stopped by the runtime.
    relays: list[OutboxRelay] = field(default_factory=list, repr=False)

    def health_checks(self) -> dict[str, Callable[[], None]]:
        return {"kafka": self.kafka_ping, "mongo": lambda: ping(self.mongo)}

    def keys(self) -> MongoKeyStore:
        """The API keys every service checks callers against (the shared auth database)."""
        return MongoKeyStore(self.mongo[self.settings.auth.database]["api_keys"])

    def kafka_ping(self) -> None:
        """Ask the broker for metadata; raise when it does not answer."""
        metadata = self.producer.list_topics(topic=topic_name(self.settings.kafka, DEAD_LETTER_TOPIC), timeout=2)
        if not metadata.brokers:
            raise ConnectionError("no Kafka broker answered")

    def relay(self, *collection_names: str) -> OutboxRelay:
        """A new outbox relay of these collections of this service's database, registered here (not
        started): the runtime starts and stops it with the process (see ``serve`` and ``run_worker``)."""
        relay = OutboxRelay(
            self.publisher,
            [self.db[name] for name in collection_names],
            retry_interval_s=self.settings.outbox.retry_interval_s,
            clear_interval_s=self.settings.outbox.clear_interval_s,
            recover_interval_s=self.settings.outbox.recover_interval_s,
            scan_timeout_s=self.settings.outbox.scan_timeout_s,
        )
        self.relays.append(relay)
        return relay

    def start_relays(self, *, scan: bool) -> None:
        """Start this process's relays; ``scan`` (a worker) also looks for a crashed process's leftovers."""
        for relay in self.relays:
            relay.start(scan=scan)

    def stop_relays(self, timeout: float = 3.0) -> None:
        """Publish what the relays hold, for up to ``timeout`` each; what is left stays in the outbox."""
        for relay in self.relays:
            relay.stop(timeout=timeout)


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
    periodic: list[Periodic] | None = None,
    background: list[Background] | None = None,
    inbox: bool = False,
    batch_handler: BatchHandler | None = None,
    gate: Gate | None = None,
) -> None:
    """Consume this service's events until SIGTERM, running the clients' outbox relays (with the
    recovery scan) and other jobs beside it.

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
        ConsumerOptions(
            service=settings.service or "unknown",
            group_id=group_id,
            retry=settings.consumer,
            linger_s=settings.consumer.linger_s(settings.service),
            is_transient=is_transient,
        ),
        inbox=mongo_inbox,
        batch_handler=batch_handler,
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
    clients.start_relays(scan=True)
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
        clients.stop_relays(timeout=3)  # what is not published by then stays in the outbox for next time
        clients.publisher.flush(2)


@dataclass(frozen=True)
class ServiceWorker:
    """A worker that is its service's handlers: what ``run_service_worker`` needs of the service."""

    # event type -> handler(service, event): the service's handlers.HANDLERS
    handlers: Mapping[str, Callable[[Any, Envelope], None]]
    # batch(service, events) -> refused event ids: every fetched event at once (see ConsumerRunner)
    batch: Callable[[Any, Sequence[Envelope]], Mapping[str, BaseException]]
    # jobs(service, settings): periodic jobs beside the consumer
    jobs: Callable[[Any, Settings], list[Periodic]] = lambda _service, _settings: []


def run_service_worker(settings: Settings, bootstrap: Callable[..., Any], worker: ServiceWorker) -> None:
    """The worker of a service that needs nothing but its handlers and jobs: build the service with
    its ``bootstrap`` and consume its events (group ``<service>-service``) until SIGTERM."""
    clients = connect(settings)
    service = bootstrap(settings, clients=clients)
    run_worker(
        clients,
        bind_handlers(worker.handlers, service),
        periodic=worker.jobs(service, settings),
        batch_handler=lambda events: worker.batch(service, events),
    )


def _every(interval: float, job: Callable[[], object], stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            job()
        except Exception:
            logger.exception("periodic job %s failed; will run again", getattr(job, "__name__", job))


API_CLIENTS = "runtime.clients"  # app.extensions key: the clients whose relays the API process runs


def publish_from_api(app: Flask, clients: Clients | None) -> None:
    """Have this API process publish the events its writes queue: ``serve`` starts the clients'
    relays (without the recovery scan: the worker's relay scans) and stops them at shutdown, and
    every write waits while a relay is too far behind (see hold_writes_for_relay). Without clients
    (a service passed in) there is nothing to run."""
    if clients is None:
        return
    app.extensions[API_CLIENTS] = clients
    for relay in clients.relays:
        hold_writes_for_relay(app, relay, clients.settings.outbox)


class _Gunicorn(BaseApplication):
    def __init__(self, app_factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._factory = app_factory
        self._options = options
        self.clients: Clients | None = None  # the loaded app's, in a worker process
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Called in each worker after the fork, so every worker gets its own clients.
        app = self._factory()
        self.clients = app.extensions.get(API_CLIENTS)
        if self.clients is not None:
            self.clients.start_relays(scan=False)  # the worker scans for leftovers
        return app


def serve(app_factory: Callable[[], Flask], settings: Settings) -> None:
    """Serve the service's API with gunicorn on its configured host and port."""

    def child_exit(_server: object, worker: Any) -> None:
        if settings.prometheus_multiproc_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, settings.prometheus_multiproc_dir)

    def worker_exit(_server: object, _worker: object) -> None:
        # In the exiting worker process: publish what its relays hold; the rest stays in the outbox.
        if server.clients is not None:
            server.clients.stop_relays(timeout=3)

    server = _Gunicorn(
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
            "worker_exit": worker_exit,
        },
    )
    server.run()
