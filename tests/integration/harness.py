"""What the race, rebalance and outbox-crash tests share.

- ``isolated``: topics (a prefix of the test's own, deleted afterwards) and databases (dropped
  afterwards) that no other run touches, so a consumer group can read its topics from the start.
- ``Worker``: one consumer worker of a service in a thread, built as the service's worker
  builds it (the same handlers, batch handler, outbox relay and consumer settings), with hooks
  where a test holds it.
- ``Hold``: stops a worker's thread at one point until the test lets it go.
- ``TrackedConsumer``: which partitions a worker's consumer owns, as its rebalance callbacks saw.
- ``read_messages`` / ``read_events``: everything some topics hold, read from the start to the end.

Every wait is on a condition, bounded by a timeout.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient

from services.inventory.app import bootstrap as inventory_bootstrap
from services.inventory.app import seed as inventory_seed
from services.inventory.handlers import HANDLERS as INVENTORY_HANDLERS
from services.inventory.handlers import handle_batch as inventory_batch
from services.orchestrator.app import bootstrap as orchestrator_bootstrap
from services.orchestrator.app import mongo_sagas
from services.orchestrator.handlers import HANDLERS as ORCHESTRATOR_HANDLERS
from services.orchestrator.handlers import handle_batch as orchestrator_batch
from shared.config import Settings, load_settings
from shared.consuming import ConsumerOptions, ConsumerRunner
from shared.events import ALL_TOPICS, DEAD_LETTER_TOPIC, Envelope
from shared.kafka_utils import (
    BatchHandler,
    Handler,
    bind_handlers,
    client_config,
    delete_topics,
    ensure_topics,
    make_consumer,
    make_producer,
    topic_name,
)
from shared.mongo import is_transient, make_mongo_client
from shared.outbox import OutboxRelay
from shared.ports import Inbox
from shared.runtime import Clients, connect

HOLD_LIMIT_S = 60.0  # a hold nobody releases lets its worker go after this, so a failed test still ends


def wait_until(check: Callable[[], Any], timeout: float = 20.0, what: str = "the condition") -> Any:
    """Poll ``check`` every 50 ms until it returns something truthy and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


# --- topics and databases of a test's own ----------------------------------------------------------


@dataclass
class Isolated:
    """A test's own topic prefix and database names (one database per service, as deployed)."""

    run_id: str
    prefix: str
    mongo: MongoClient
    databases: set[str] = field(default_factory=set)

    def database(self, service: str) -> str:
        name = f"test_{self.run_id}_{service}"
        self.databases.add(name)
        return name

    def settings(self, service: str, **overrides: Any) -> Settings:
        """The test settings of ``service`` on this test's topics and database."""
        merged: dict[str, Any] = {
            **overrides,
            "kafka": {**overrides.get("kafka", {}), "topic_prefix": self.prefix},
            "services": {service: {"database": self.database(service)}},
        }
        return load_settings(service, environment="test", overrides=merged)

    def env(self, service: str) -> dict[str, str]:
        """Environment variables that give a service process started by the test the same settings."""
        return {
            "ENVIRONMENT": "test",
            "APP__KAFKA__TOPIC_PREFIX": self.prefix,
            f"{service.upper()}_DATABASE": self.database(service),
            "LOG_FORMAT": "text",
        }

    def db(self, service: str) -> Any:
        return self.mongo[self.database(service)]


@contextlib.contextmanager
def isolated(tag: str) -> Iterator[Isolated]:
    """Create every contract topic under a fresh prefix; delete them and drop the databases at the end."""
    run_id = f"{tag}_{uuid.uuid4().hex[:10]}"
    base = load_settings(environment="test", overrides={"kafka": {"topic_prefix": f"itest-{run_id}."}})
    ensure_topics(base.kafka)
    wait_until(lambda: _topics_ready(base), what="the broker to lead every partition of the new topics")
    mongo = make_mongo_client(base.mongo)
    env = Isolated(run_id, base.kafka.topic_prefix, mongo)
    try:
        yield env
    finally:
        try:
            for name in env.databases:
                mongo.drop_database(name)
            mongo.close()
        finally:
            delete_topics(base.kafka)


def _topics_ready(settings: Settings) -> bool:
    """Whether the broker's metadata has a leader for every partition of every contract topic."""
    metadata = AdminClient(client_config(settings.kafka)).list_topics(timeout=10)
    for topic in ALL_TOPICS:
        found = metadata.topics.get(topic_name(settings.kafka, topic))
        if found is None or found.error is not None or len(found.partitions) != settings.kafka.topic_partitions:
            return False
        if any(partition.leader < 0 for partition in found.partitions.values()):
            return False
    return True


# --- reading what the topics hold ----------------------------------------------------------------


class Record(NamedTuple):
    topic: str  # the contract name, without the prefix
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_messages(settings: Settings, topics: Iterable[str], timeout: float = 15.0) -> list[Record]:
    """Every message the (contract-named) topics hold now, read from the start to the end each
    partition had when the read began."""
    kafka = settings.kafka
    reader = Consumer(
        {
            **client_config(kafka),
            "group.id": f"reader-{uuid.uuid4().hex[:10]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        ends: dict[tuple[str, int], int] = {}
        starts = []
        for topic in topics:
            name = topic_name(kafka, topic)
            partitions = reader.list_topics(name, timeout=10).topics[name].partitions
            for partition in partitions:
                low, high = reader.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
                if high > low:
                    ends[(name, partition)] = high
                    starts.append(TopicPartition(name, partition, low))
        found: list[Record] = []
        if not starts:
            return found
        reader.assign(starts)
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() >= deadline:
                raise AssertionError(f"could not read {sorted(ends)} to their end within {timeout:.0f}s")
            msg = reader.poll(0.5)
            if msg is None or msg.error():
                continue
            where = (msg.topic(), msg.partition())
            if where not in ends or msg.offset() >= ends[where]:
                continue
            topic = msg.topic().removeprefix(kafka.topic_prefix)
            found.append(Record(topic, msg.partition(), msg.offset(), msg.key(), msg.value()))
            if msg.offset() >= ends[where] - 1:
                del ends[where]
        return found
    finally:
        reader.close()


def read_events(settings: Settings, topics: Iterable[str]) -> list[Envelope]:
    """The events the topics hold now (see read_messages)."""
    return [Envelope.from_json(record.value) for record in read_messages(settings, topics)]


def dead_letters(settings: Settings) -> list[Record]:
    return read_messages(settings, [DEAD_LETTER_TOPIC])


def count_types(events: Iterable[Envelope], order_id: str | None = None) -> Counter[str]:
    """How many distinct events (by id) of each type there are (of one order, if given).

    A relay publishes at least once: an event published again (a recovery scan that ran before the
    relay cleared it, a retry) keeps its id, and consumers drop it as handled.
    """
    unique = {e.event_id: e for e in events if order_id is None or e.order_id == order_id}
    return Counter(e.event_type for e in unique.values())


def produce_into(producer: Producer, settings: Settings, event: Envelope, partition: int | None = None) -> int:
    """Write ``event`` (keyed by its order) to its topic, into ``partition`` if given; wait for the
    acknowledgement and return the partition it went to."""
    outcome: list[Any] = []
    producer.produce(
        topic_name(settings.kafka, event.topic),
        key=event.key,
        value=event.to_json(),
        on_delivery=lambda err, msg: outcome.append((err, msg)),
        **({} if partition is None else {"partition": partition}),
    )
    producer.flush(10)
    assert outcome, f"no acknowledgement for {event.event_type}"
    err, msg = outcome[0]
    assert err is None, f"Kafka refused {event.event_type}: {err}"
    return msg.partition()


def new_producer(settings: Settings) -> Producer:
    """A producer with the services' settings (acks=all, idempotent)."""
    return make_producer(settings.kafka, client_id=f"itest-{uuid.uuid4().hex[:6]}")


# --- holding a worker ------------------------------------------------------------------------------


class Hold:
    """Stop a worker's thread the first time ``when(events)`` is true, until ``release()``."""

    def __init__(self, when: Callable[[Sequence[Envelope]], bool] = lambda _events: True) -> None:
        self.when = when
        self.reached = threading.Event()
        self.held: list[Envelope] = []
        self._go = threading.Event()
        self._used = False
        self._lock = threading.Lock()

    def __call__(self, events: Sequence[Envelope]) -> None:
        with self._lock:
            if self._used or not self.when(events):
                return
            self._used = True
        self.held = list(events)
        self.reached.set()
        self._go.wait(HOLD_LIMIT_S)

    def release(self) -> None:
        self._go.set()


# --- workers -------------------------------------------------------------------------------------


def impatient_consumer(settings: Settings, group: str, client_id: str, max_poll_ms: int) -> Consumer:
    """The services' consumer (make_consumer's settings) that leaves its group when its handler
    keeps it from polling for ``max_poll_ms`` instead of the deployed 15 minutes."""
    impatient = settings.kafka.model_copy(
        update={"max_poll_interval_ms": max_poll_ms, "session_timeout_ms": min(max_poll_ms, 10_000)}
    )
    return make_consumer(impatient, group, client_id)


class TrackedConsumer:
    """A consumer that remembers which partitions its rebalance callbacks gave it (the consumer's
    own ``assignment()`` can block while another thread polls it)."""

    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._owned: set[tuple[str, int]] = set()
        self._lock = threading.Lock()

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None) -> None:
        def assigned(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            if on_assign:
                on_assign(consumer, partitions)
            with self._lock:
                self._owned |= {(p.topic, p.partition) for p in partitions}

        def revoked(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            with self._lock:
                self._owned -= {(p.topic, p.partition) for p in partitions}
            if on_revoke:
                on_revoke(consumer, partitions)

        # No on_lost: as for the services' consumers, a lost assignment calls on_revoke.
        self._consumer.subscribe(topics, on_assign=assigned, on_revoke=revoked)

    def owned(self) -> set[tuple[str, int]]:
        with self._lock:
            return set(self._owned)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._consumer, attr)


class Worker:
    """One consumer worker of a service in a thread, with its outbox relay.

    Without a batch handler it handles one event at a time (and may use an ``inbox``).
    Every batch its runner hands to the batch handler is recorded in ``batches`` (and in ``done``
    once the handler returned); ``before`` and
    ``after`` are called with the batch before and after the service's batch handler (holds go there).
    """

    def __init__(
        self,
        name: str,
        clients: Clients,
        handlers: Mapping[str, Handler],
        batch_handler: BatchHandler | None,
        relay: OutboxRelay | None,
        *,
        group: str,
        consumer: Consumer | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self.name = name
        self.clients = clients
        self.relay = relay
        self.group = group
        self.batches: list[list[Envelope]] = []
        self.done: list[list[Envelope]] = []
        self.before: list[Callable[[Sequence[Envelope]], None]] = []
        self.after: list[Callable[[Sequence[Envelope]], None]] = []
        self._batch_handler = batch_handler
        settings = clients.settings
        self.consumer = TrackedConsumer(consumer or make_consumer(settings.kafka, group, client_id=f"{group}-{name}"))
        self.runner = ConsumerRunner(
            self.consumer,  # type: ignore[arg-type]
            clients.publisher,
            handlers,
            ConsumerOptions(
                service=settings.service or "unknown",
                group_id=group,
                retry=settings.consumer,
                linger_s=settings.consumer.linger_s(settings.service),
                is_transient=is_transient,
            ),
            batch_handler=self._handle if batch_handler else None,
            inbox=inbox,
        )
        self._thread = threading.Thread(
            target=self.runner.run, kwargs={"install_signal_handlers": False}, name=f"worker-{name}", daemon=True
        )

    def _handle(self, events: Sequence[Envelope]) -> Mapping[str, BaseException]:
        self.batches.append(list(events))
        for hook in self.before:
            hook(events)
        assert self._batch_handler is not None
        refused = self._batch_handler(events)
        for hook in self.after:
            hook(events)
        self.done.append(list(events))
        return refused

    @property
    def seen(self) -> list[str]:
        """The ids of every event handed to the batch handler, in order, repeats included."""
        return [event.event_id for batch in self.batches for event in batch]

    @property
    def handled(self) -> list[str]:
        """The ids of every event the batch handler has returned from, in order, repeats included."""
        return [event.event_id for batch in self.done for event in batch]

    def start(self) -> Worker:
        if self.relay:
            self.relay.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the worker (it finishes the batch it is in) and its relay; close its clients."""
        self.runner.stop()
        if self._thread.is_alive():
            self._thread.join(15)
        elif self._thread.ident is None:  # never started: the runner did not close its consumer
            self.consumer.close()
        if self.relay:
            self.relay.stop(timeout=5)
        self.clients.publisher.flush(5)
        self.clients.mongo.close()

    def assignment(self) -> set[tuple[str, int]]:
        """The partitions this worker's consumer owns now (broker-side topic names)."""
        return self.consumer.owned()

    def owns(self, settings: Settings, topic: str) -> list[int]:
        """The partitions of contract topic ``topic`` this worker owns now."""
        name = topic_name(settings.kafka, topic)
        return sorted(p for t, p in self.assignment() if t == name)


@contextlib.contextmanager
def running(*workers: Worker) -> Iterator[None]:
    """Start the workers; stop them all at the end, whatever happened."""
    started: list[Worker] = []
    try:
        for worker in workers:
            started.append(worker.start())
        yield
    finally:
        for worker in reversed(started):
            worker.stop()


def orchestrator_worker(
    settings: Settings,
    name: str,
    *,
    group: str,
    consumer: Consumer | None = None,
    wrap_sagas: Callable[[Any], Any] | None = None,
) -> Worker:
    """An orchestrator worker as ``services.orchestrator.worker.main`` builds it: the sagas cached,
    every fetched event in one batch, the outbox relay. (Not the deadline jobs and the admission
    gate: no deadline comes due in these tests, and admission never closes for a few sagas.)
    ``wrap_sagas`` may wrap the saga repository, to hold a write."""
    clients = connect(settings)
    sagas = mongo_sagas(clients, cache_size=settings.saga.cache_size)
    (relay,) = clients.relays
    service = orchestrator_bootstrap(settings, clients=clients, sagas=wrap_sagas(sagas) if wrap_sagas else sagas)
    handlers = bind_handlers(ORCHESTRATOR_HANDLERS, service)
    return Worker(
        name,
        clients,
        handlers,
        lambda events: orchestrator_batch(service, events),
        relay,
        group=group,
        consumer=consumer,
    )


def inventory_worker(settings: Settings, name: str, *, group: str, consumer: Consumer | None = None) -> Worker:
    """An inventory worker as ``run_service_worker`` builds it (the catalogue seeded, as `make run` does)."""
    clients = connect(settings)
    service = inventory_bootstrap(settings, clients=clients)
    (relay,) = clients.relays
    inventory_seed(settings)
    handlers = bind_handlers(INVENTORY_HANDLERS, service)
    return Worker(
        name,
        clients,
        handlers,
        lambda events: inventory_batch(service, events),
        relay,
        group=group,
        consumer=consumer,
    )


def group_split(settings: Settings, workers: Sequence[Worker]) -> bool:
    """Whether the workers (of one group) each own some partitions and together all of their topics'."""
    owned = [w.assignment() for w in workers]
    if not all(owned):
        return False
    union = set().union(*owned)
    if sum(len(o) for o in owned) != len(union):
        return False  # an old assignment not yet revoked
    wanted = {(t, p) for t in workers[0].runner.topics for p in range(settings.kafka.topic_partitions)}
    return union == wanted


def group_owns_all(settings: Settings, worker: Worker) -> bool:
    """Whether ``worker`` alone owns every partition of its topics."""
    wanted = {(t, p) for t in worker.runner.topics for p in range(settings.kafka.topic_partitions)}
    return worker.assignment() == wanted
