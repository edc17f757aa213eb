"""Monitoring's worker: every event into timelines and figures, the raw DLQ, and the health poller."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from services.monitoring.app import bootstrap
from services.monitoring.buffered import BufferedRecentEvents, BufferedStats
from services.monitoring.deadletters import RawMessage
from services.monitoring.handlers import HANDLERS
from services.monitoring.mongo import MongoRecentEventRepository, MongoStatsRepository
from shared.config import Settings, load_settings
from shared.events import DEAD_LETTER_TOPIC
from shared.kafka_utils import bind_handlers, make_consumer, topic_name
from shared.mongo import is_transient
from shared.pacing import Paced
from shared.runtime import connect, run_worker
from shared.write_behind import Flusher

logger = logging.getLogger(__name__)

GROUP_ID = "monitoring-service"
DLQ_GROUP_ID = "monitoring-dlq"
# Housekeeping scans the open orders; in a backlog of thousands that takes seconds of the store's
# time, so it runs less often then, taking at most this share of the time.
HOUSEKEEPING_SHARE = 0.05


class DeadLetterConsumer:
    """Store each raw message of the dead-letter topic (any bytes, any headers) at least once."""

    def __init__(
        self,
        consumer: Consumer,
        record: Callable[[RawMessage], object],
        *,
        topic: str = DEAD_LETTER_TOPIC,
        retry_wait_s: float = 1.0,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._record = record
        self._retry_wait = retry_wait_s
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Poll until stopped; always close the consumer."""
        self._consumer.subscribe([self._topic])
        logger.info("consuming %s raw", self._topic)
        try:
            while not self._stop.is_set():
                msg = self._consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        if msg.error().fatal():
                            raise KafkaException(msg.error())
                        logger.warning("dead-letter consumer error (will keep going): %s", msg.error())
                    continue
                if self._save(msg):
                    self._store(msg)
        except Exception:
            logger.exception("dead-letter consumer stopped")
            raise
        finally:
            self._consumer.close()
            logger.info("dead-letter consumer closed")

    def _save(self, msg: Message) -> bool:
        _kind, timestamp_ms = msg.timestamp()
        raw = RawMessage(
            msg.partition(), msg.offset(), msg.key(), msg.value(), list(msg.headers() or []), max(0, timestamp_ms)
        )
        while True:
            try:
                self._record(raw)
                return True
            except Exception as err:
                if not is_transient(err):
                    # Nothing downstream of the DLQ could take it; keep going rather than stall.
                    logger.exception("could not store dead letter %s-%s; skipping it", raw.partition, raw.offset)
                    return True
                logger.warning("database unavailable storing dead letter, retrying: %s", err)
                if self._stop.wait(self._retry_wait):
                    return False

    def _store(self, msg: Message) -> None:
        try:
            self._consumer.store_offsets(message=msg)
        except KafkaException as err:
            logger.warning("could not store dead-letter offset %d-%d: %s", msg.partition(), msg.offset(), err)


def main(settings: Settings | None = None) -> None:
    """Run the event consumer, the dead-letter consumer and the periodic jobs until SIGTERM."""
    settings = settings or load_settings("monitoring")
    clients = connect(settings)
    figures = BufferedStats(MongoStatsRepository(clients.db["stats"], clients.db["minutes"]))
    feed = MongoRecentEventRepository(clients.db["recent_events"])
    feed.ensure_indexes()
    recent = BufferedRecentEvents(feed)
    service = bootstrap(settings, clients=clients, figures=figures, recent=recent)
    dlq = DeadLetterConsumer(
        make_consumer(settings.kafka, DLQ_GROUP_ID, client_id="monitoring-dlq"),
        service.record_dead_letter,
        topic=topic_name(settings.kafka, DEAD_LETTER_TOPIC),
    )
    run_worker(
        clients,
        bind_handlers(HANDLERS, service),
        group_id=GROUP_ID,
        batch_handler=service.record_many,
        background=[dlq, Flusher([figures, recent], settings.monitoring.flush_interval_s)],
        periodic=[
            (settings.monitoring.health_poll_interval_s, service.poll_health),
            (settings.monitoring.housekeeping_interval_s, Paced(service.housekeep, HOUSEKEEPING_SHARE)),
        ],
    )
