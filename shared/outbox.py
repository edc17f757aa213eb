"""Transactional outbox without transactions.

A state change and the events it causes are written in one document write: the events sit
in the document's ``outbox`` map (event id -> envelope). The relay publishes them and then
removes each entry it saw acknowledged. If the process dies between the write and the
publish, the entries are still in the document, and the relay's recovery scan (at start
and periodically) finds and publishes them. Delivery is therefore at least once; consumers
drop duplicates by event id.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from shared.events import Envelope
from shared.ports import EventPublisher

logger = logging.getLogger(__name__)

PENDING_FILTER = {"outbox": {"$exists": True, "$ne": {}}}


def outbox_document(events: Iterable[Envelope]) -> dict[str, dict[str, Any]]:
    """Return the ``outbox`` value for a document that is inserted together with ``events``."""
    return {event.event_id: event.to_dict() for event in events}


def outbox_fields(events: Iterable[Envelope]) -> dict[str, dict[str, Any]]:
    """Return ``$set`` fields that add ``events`` to an existing document's outbox."""
    return {f"outbox.{event.event_id}": event.to_dict() for event in events}


class OutboxRelay:
    """Publish the events that state changes left in their documents' outboxes."""

    def __init__(
        self,
        publisher: EventPublisher,
        collections: Iterable[Collection],
        *,
        retry_interval_s: float = 1.0,
        recover_interval_s: float = 300.0,
    ) -> None:
        self._publisher = publisher
        self._collections = {c.full_name: c for c in collections}
        self._retry_interval = retry_interval_s
        self._recover_interval = recover_interval_s
        self._pending: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._acked: queue.Queue[tuple[str, Any, str, Exception | None]] = queue.Queue()
        self._in_flight: set[str] = set()
        self._retries: dict[tuple[str, Any], float] = {}  # document -> when to try it again
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_recovery = 0.0

    def notify(self, collection: Collection, doc_id: Any) -> None:
        """Tell the relay that ``doc_id`` has new outbox entries."""
        self._pending.put((collection.full_name, doc_id))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is queued (for up to ``timeout``) and stop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (not self._pending.empty() or self._in_flight):
            time.sleep(0.05)
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()))

    def recover(self) -> int:
        """Queue every document that still has unpublished events; return how many."""
        found = 0
        for name, collection in self._collections.items():
            for doc in collection.find(PENDING_FILTER, {"_id": 1}):
                self._pending.put((name, doc["_id"]))
                found += 1
        if found:
            logger.info("outbox recovery queued %d documents", found)
        return found

    def run_once(self, wait: float = 0.05) -> None:
        """Publish queued entries, serve delivery reports and clear acknowledged entries."""
        if time.monotonic() >= self._next_recovery:
            self.recover()
            self._next_recovery = time.monotonic() + self._recover_interval
        self._requeue_due_retries()
        batch: dict[tuple[str, Any], None] = {}
        while len(batch) < 500:
            try:
                batch[self._pending.get_nowait()] = None
            except queue.Empty:
                break
        queued = list(batch)
        for index, (name, doc_id) in enumerate(queued):
            try:
                self._publish_document(name, doc_id)
            except Exception:
                for item in queued[index + 1 :]:  # the rest of the batch waits for the next round
                    self._pending.put(item)
                raise
        self._publisher.poll(wait)
        self._clear_acknowledged()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except PyMongoError as err:
                logger.warning("outbox relay cannot reach the database, retrying: %s", err)
                self._next_recovery = 0.0  # re-scan once the database is back
                self._stop.wait(self._retry_interval)
            except Exception:
                logger.exception("outbox relay failed; retrying")
                self._next_recovery = 0.0  # whatever was dropped on the way is found by a scan
                self._stop.wait(self._retry_interval)

    def _publish_document(self, name: str, doc_id: Any) -> None:
        doc = self._collections[name].find_one({"_id": doc_id}, {"outbox": 1})
        for event_id, raw in ((doc or {}).get("outbox") or {}).items():
            if event_id in self._in_flight:
                continue
            self._in_flight.add(event_id)
            try:
                self._publisher.publish(
                    Envelope.from_dict(raw),
                    on_delivery=lambda err, n=name, d=doc_id, e=event_id: self._acked.put((n, d, e, err)),
                )
            except Exception:
                # E.g. the producer's queue is full during a long broker outage: try again later.
                self._in_flight.discard(event_id)
                self._retry_later(name, doc_id)
                raise

    def _clear_acknowledged(self) -> None:
        done: dict[tuple[str, Any], list[str]] = {}
        while True:
            try:
                name, doc_id, event_id, err = self._acked.get_nowait()
            except queue.Empty:
                break
            if err is None:
                done.setdefault((name, doc_id), []).append(event_id)
            else:
                self._in_flight.discard(event_id)
                self._retry_later(name, doc_id)
        failed: Exception | None = None
        for (name, doc_id), event_ids in done.items():
            try:
                self._collections[name].update_one(
                    {"_id": doc_id}, {"$unset": {f"outbox.{event_id}": "" for event_id in event_ids}}
                )
            except Exception as err:
                # The entries stay in the document and are published again later: at least once.
                failed = err
                self._retry_later(name, doc_id)
            finally:
                self._in_flight.difference_update(event_ids)
        if failed:
            raise failed

    def _retry_later(self, name: str, doc_id: Any) -> None:
        # One list, drained by the relay's own loop: a long broker outage fails thousands of
        # deliveries, and a timer thread each would exhaust the process's threads.
        self._retries[(name, doc_id)] = min(
            self._retries.get((name, doc_id), float("inf")), time.monotonic() + self._retry_interval
        )

    def _requeue_due_retries(self) -> None:
        now = time.monotonic()
        for key, due in list(self._retries.items()):
            if due <= now:
                del self._retries[key]
                self._pending.put(key)
