"""Integration fixtures: the real local Kafka broker and MongoDB-protocol server.

They never skip: when a server does not answer, the test fails and says how to start it.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from pymongo import MongoClient
from pymongo.database import Database

from shared.config import Settings, load_settings
from shared.consuming import ConsumerOptions, ConsumerRunner
from shared.events import Envelope, InvalidEvent
from shared.kafka_utils import BatchHandler, Handler, client_config, ensure_topics, make_consumer
from shared.mongo import is_transient, make_mongo_client, ping
from shared.outbox import OutboxRelay
from shared.runtime import Clients

HOW_TO_START = "start the local servers with `make infra-up` (or set KAFKA_BOOTSTRAP_SERVERS / MONGO_URI)"


@pytest.fixture(scope="session")
def live_settings() -> Settings:
    """Test settings, after proving both servers answer."""
    settings = load_settings(environment="test")
    try:
        metadata = AdminClient(client_config(settings.kafka)).list_topics(timeout=10)
        if not metadata.brokers:
            raise RuntimeError("no broker in metadata")
    except Exception as err:
        pytest.fail(f"Kafka at {settings.kafka.bootstrap_servers} does not answer ({err}); {HOW_TO_START}")
    # Tests use topics of their own (the `test.` prefix), created here once.
    ensure_topics(settings.kafka)
    try:
        ping(make_mongo_client(settings.mongo))
    except Exception as err:
        pytest.fail(f"MongoDB at {settings.mongo.uri} does not answer ({err}); {HOW_TO_START}")
    return settings


@pytest.fixture(scope="session")
def mongo_client(live_settings: Settings) -> Iterator[MongoClient]:
    client = make_mongo_client(live_settings.mongo)
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client: MongoClient) -> Iterator[Database]:
    """A fresh database of its own for one test, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


@pytest.fixture
def service_settings(live_settings: Settings, mongo_db: Database) -> Callable[..., Settings]:
    """Settings for one service whose database is this test's fresh database. Credentials are off
    unless a test asks (test_orchestrator_api.py checks keys in the real store through create_app)."""

    def make(service: str, **overrides: Any) -> Settings:
        services = {service: {"database": mongo_db.name}}
        overrides["auth"] = {"mode": "off", **overrides.get("auth", {})}
        return load_settings(service, environment="test", overrides={"services": services, **overrides})

    return make


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique names for consumer groups, order ids and the like."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


def next_event_of(consumer: Consumer, order_id: str) -> Envelope | None:
    """Read what the consumer has until an event of ``order_id`` shows up; None when it runs dry.

    The shared test topics hold every earlier run's events, including malformed ones: skip them
    quickly instead of one per polling round.
    """
    while (msg := consumer.poll(0.5)) is not None:
        if msg.error():
            continue
        try:
            event = Envelope.from_json(msg.value())
        except InvalidEvent:
            continue
        if event.order_id == order_id:
            return event
    return None


@contextlib.contextmanager
def running_worker(
    clients: Clients,
    handlers: Mapping[str, Handler],
    *,
    service: str,
    group: str,
    relay: OutboxRelay | None = None,
    batch_handler: BatchHandler | None = None,
) -> Iterator[ConsumerRunner]:
    """Run a service's handlers in a thread as a fresh consumer group, with its relay and no inbox (as deployed)."""
    runner = ConsumerRunner(
        make_consumer(clients.settings.kafka, group, client_id=group),
        clients.publisher,
        handlers,
        ConsumerOptions(service, group, clients.settings.consumer, is_transient=is_transient),
        batch_handler=batch_handler,
    )
    thread = threading.Thread(target=runner.run, kwargs={"install_signal_handlers": False}, daemon=True)
    if relay:
        relay.start()
    thread.start()
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(15)
        if relay:
            relay.stop(timeout=5)
