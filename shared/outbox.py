"""Transactional outbox without transactions.

A state change and the events it causes are written in one document write: the events sit
in the document's ``outbox`` map (event id -> envelope). The writer then hands the same events
to the relay, which publishes them from memory and removes the acknowledged entries, one bulk
write per collection and round. If the process dies between the write and the publish, the
entries are still in the document, and the relay's recovery scan (at start and periodically)
finds and publishes them; so does a retry after a failed publish. Delivery is therefore at least
once; consumers drop duplicates by their natural keys.

Only a service's worker scans (at start, then now and then); its API processes hand their
events to their own relays and leave a crashed one's leftovers to the worker's scans. Three
processes scanning at start read every leftover three times: after a restart in a 100,000-order
run, that was ~47,000 documents each.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pymongo
from prometheus_client import Gauge
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from shared.events import Envelope, InvalidEvent
from shared.pacing import rest_after
from shared.ports import EventPublisher

logger = logging.getLogger(__name__)

# Statements per bulk write. A stock FerretDB 1.24 holds one connection per statement until the
# command ends, and a database has 100: a bigger bulk write deadlocks it (our build is patched).
BULK_CHUNK = 50
CLEAR_BATCH = BULK_CHUNK
PENDING_FILTER = {"outbox": {"$exists": True, "$ne": {}}}
# The recovery rescans take at most this share of the time (see _scan_periodically).
RECOVERY_SHARE = 0.02
# A recovery scan waits while this many documents are queued: it reads their events with it, and
# tens of thousands of leftovers must not all sit in memory at once.
RECOVERY_QUEUE_LIMIT = 2000
ROOM_POLL_S = 0.02  # how often a write waiting for room in the backlog looks again


# A relay that falls behind shows here first: its documents keep their entries, and a recovery
# scan meanwhile would publish them a second time.
OUTBOX_BACKLOG = Gauge(
    "outbox_backlog",
    "Documents queued for the relay plus events published and not yet cleared from their documents",
    multiprocess_mode="livesum",
)


def outbox_document(events: Iterable[Envelope]) -> dict[str, dict[str, Any]]:
    """Return the ``outbox`` value for a document that is inserted together with ``events``."""
    return {event.event_id: event.to_dict() for event in events}


def outbox_fields(events: Iterable[Envelope]) -> dict[str, dict[str, Any]]:
    """Return ``$set`` fields that add ``events`` to an existing document's outbox."""
    return {f"outbox.{event.event_id}": event.to_dict() for event in events}


def outbox_holds(collection: Collection, doc_id: Any, events: Iterable[Envelope]) -> bool:
    """Whether the document's outbox still holds ``events``: how a conditional write in a bulk write,
    which does not say which of its statements matched, is known to have landed. Only the relay,
    told after the write, clears them; with no events there is nothing to tell, and the answer is no.
    """
    wanted = [event.event_id for event in events]
    if not wanted:
        return False
    # One read per document: FerretDB reads the whole collection for an $in on _id.
    doc = collection.find_one({"_id": doc_id}, {"outbox": 1})
    outbox = (doc or {}).get("outbox") or {}
    return all(event_id in outbox for event_id in wanted)


@dataclass(frozen=True)
class ConditionalUpdate:
    """Apply ``update`` to document ``doc_id`` if it still matches ``filter``, queuing ``events``."""

    doc_id: Any
    filter: dict[str, Any]
    update: dict[str, Any]
    events: tuple[Envelope, ...] = ()


def bulk_update(collection: Collection, updates: Sequence[ConditionalUpdate], relay: OutboxRelay | None) -> list[bool]:
    """Apply the updates, BULK_CHUNK per round trip, and hand the events of those that landed to
    ``relay``; return, in order, whether each landed (one that cannot be confirmed did not)."""
    landed: list[bool] = []
    for start in range(0, len(updates), BULK_CHUNK):
        chunk = updates[start : start + BULK_CHUNK]
        try:
            result = collection.bulk_write([UpdateOne(u.filter, u.update) for u in chunk], ordered=False)
        except Exception:
            # It may have written some: the relay reads their outboxes (a retry finds those no longer
            # matching their filter, e.g. the payment settled or the notification sent).
            if relay:
                for update in chunk:
                    relay.notify(collection, update.doc_id)
            raise
        if result.matched_count == len(chunk):
            done = [True] * len(chunk)
        else:
            # Some found their document moved on, and a bulk write does not say which; an update
            # that was stored left its events in the document's outbox (only the relay clears them).
            done = [outbox_holds(collection, u.doc_id, u.events) for u in chunk]
        if relay:
            for update, ok in zip(chunk, done, strict=True):
                if ok and update.events:
                    relay.notify(collection, update.doc_id, list(update.events))
        landed += done
    return landed


class OutboxRelay:
    """Publish the events that state changes left in their documents' outboxes."""

    def __init__(
        self,
        publisher: EventPublisher,
        collections: Iterable[Collection],
        *,
        retry_interval_s: float,
        clear_interval_s: float,
        recover_interval_s: float,
        scan_timeout_s: float,
    ) -> None:
        self._publisher = publisher
        self._collections = {c.full_name: c for c in collections}
        self._retry_interval = retry_interval_s
        self._clear_interval = clear_interval_s
        self._recover_interval = recover_interval_s
        # A scan filters on the outbox field, which a FerretDB store answers by reading the whole
        # collection (~0.3 ms per document here): far longer than one round trip may take.
        self._scan_timeout = scan_timeout_s
        # (collection, document, its new events); None means "read the outbox from the document".
        self._pending: queue.Queue[tuple[str, Any, tuple[Envelope, ...] | None]] = queue.Queue()
        self._acked: queue.Queue[tuple[str, Any, str, Exception | None]] = queue.Queue()
        self._in_flight: set[str] = set()
        self._retries: dict[tuple[str, Any], float] = {}  # document -> when to try it again
        self._stop = threading.Event()
        self._draining = threading.Event()  # set by stop: clear what is acknowledged without waiting
        self._wakeup = threading.Event()  # set by notify: a new event goes out now, not after a nap
        self._last_clear = 0.0
        self._thread: threading.Thread | None = None
        self._scanner: threading.Thread | None = None

    def notify(self, collection: Collection, doc_id: Any, events: Iterable[Envelope] | None = None) -> None:
        """Tell the relay that ``doc_id`` has new outbox entries: ``events`` if given (saves reading
        them back), else whatever its outbox holds."""
        self._pending.put((collection.full_name, doc_id, tuple(events) if events is not None else None))
        self._wakeup.set()

    def backlog(self) -> int:
        """Documents queued to publish plus events published and not yet cleared from their documents."""
        return self._pending.qsize() + len(self._in_flight)

    def wait_for_room(self, limit: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the backlog to fall under ``limit``; return whether it did.
        An API calls this before a write that queues events: in a flood of writes the store clears
        published entries slower than they come, and without a bound the queue (and the process's
        memory) would grow with the length of the flood."""
        deadline = time.monotonic() + timeout
        while self.backlog() >= limit:
            if time.monotonic() >= deadline:
                return False
            self._stop.wait(ROOM_POLL_S)
        return True

    def start(self, scan: bool = True) -> None:
        """Start publishing; with ``scan`` (a service's worker) look for leftovers of a crashed
        process at once and again every ``recover_interval_s``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
            self._thread.start()
        if scan and self._scanner is None:
            self._scanner = threading.Thread(target=self._scan_periodically, name="outbox-scan", daemon=True)
            self._scanner.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is queued (for up to ``timeout``) and stop."""
        deadline = time.monotonic() + timeout
        self._draining.set()
        while time.monotonic() < deadline and (not self._pending.empty() or self._in_flight):
            time.sleep(0.05)
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=max(0.1, deadline - time.monotonic()))

    def recover(self) -> int:
        """Queue every document that still has unpublished events, with them; return how many."""
        found = 0
        for name, collection in self._collections.items():
            cursor = iter(collection.find(PENDING_FILTER, {"outbox": 1}))
            while True:
                # The time limit is per batch: the scan may wait below for the relay to catch up.
                with pymongo.timeout(self._scan_timeout):
                    doc = next(cursor, None)
                if doc is None:
                    break
                self._pending.put((name, doc["_id"], _events_of(doc)))
                found += 1
                while self._relaying() and self._pending.qsize() >= RECOVERY_QUEUE_LIMIT:
                    self._stop.wait(0.05)
        if found:
            logger.info("outbox recovery queued %d documents", found)
        return found

    def _relaying(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def _scan_periodically(self) -> None:
        # Its own thread: a slow scan must not hold up the events that are being written now.
        # The scan reads every document of the collections (a store without a usable index on
        # the outbox, like FerretDB, reads them all), so it grows with the history: rescans are
        # paced to a small share of the time.
        failures = 0
        while not self._stop.is_set():
            try:
                started = time.monotonic()
                self.recover()
                took = time.monotonic() - started
                failures, wait = 0, max(self._recover_interval, rest_after(took, RECOVERY_SHARE))
            except Exception as err:
                failures += 1
                wait = min(self._recover_interval, self._retry_interval * 2**failures)
                logger.warning("outbox recovery scan failed, next try in %.0fs: %s", wait, err)
            self._stop.wait(wait)

    def run_once(self, wait: float = 0.05) -> None:
        """Publish queued entries, serve delivery reports and clear acknowledged entries."""
        self._requeue_due_retries()
        batch: dict[tuple[str, Any], list[Envelope] | None] = {}
        while len(batch) < 500:
            try:
                name, doc_id, events = self._pending.get_nowait()
            except queue.Empty:
                break
            known = batch.get((name, doc_id), [])
            batch[(name, doc_id)] = None if events is None or known is None else [*known, *events]
        queued = list(batch.items())
        for index, ((name, doc_id), events) in enumerate(queued):
            try:
                self._publish_document(name, doc_id, events)
            except Exception:
                self._retry_later(name, doc_id)  # read back from its document then
                for (n, d), e in queued[index + 1 :]:  # the rest of the batch waits for the next round
                    self._pending.put((n, d, tuple(e) if e is not None else None))
                raise
        self._publisher.poll(0)
        OUTBOX_BACKLOG.set(self._pending.qsize() + len(self._in_flight))
        # Publishing happens at once; clearing waits to gather acknowledgements, so that one bulk
        # write clears many documents (at most every clear_interval_s, or CLEAR_BATCH of them).
        now = time.monotonic()
        due = now - self._last_clear >= self._clear_interval or self._draining.is_set()
        if due or self._acked.qsize() >= CLEAR_BATCH:
            self._last_clear = now
            self._clear_acknowledged()
        if self._pending.empty() and self._wakeup.wait(wait):
            self._wakeup.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except PyMongoError as err:
                # Documents that could not be read or cleared are retried from _retries.
                logger.warning("outbox relay cannot reach the database, retrying: %s", err)
                self._stop.wait(self._retry_interval)
            except Exception:
                logger.exception("outbox relay failed; retrying")
                self._stop.wait(self._retry_interval)

    def _publish_document(self, name: str, doc_id: Any, events: list[Envelope] | None) -> None:
        if events is None:
            doc = self._collections[name].find_one({"_id": doc_id}, {"outbox": 1})
            events = [Envelope.from_dict(raw) for raw in ((doc or {}).get("outbox") or {}).values()]
        for event in events:
            event_id = event.event_id
            if event_id in self._in_flight:
                continue
            self._in_flight.add(event_id)
            try:
                self._publisher.publish(
                    event,
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
        by_collection: dict[str, dict[Any, list[str]]] = {}
        for (name, doc_id), event_ids in done.items():
            by_collection.setdefault(name, {})[doc_id] = event_ids
        failed: Exception | None = None
        for name, published in by_collection.items():
            try:
                self._unset(self._collections[name], published)
            except Exception as err:
                # The entries stay in the documents and are published again later: at least once.
                failed = err
                for doc_id in published:
                    self._retry_later(name, doc_id)
            finally:
                for event_ids in published.values():
                    self._in_flight.difference_update(event_ids)
        if failed:
            raise failed

    @staticmethod
    def _unset(collection: Collection, published: dict[Any, list[str]]) -> None:
        """Remove the published entries: one round trip for all documents of the collection."""
        updates = {
            doc_id: {"$unset": {f"outbox.{e}": "" for e in event_ids}} for doc_id, event_ids in published.items()
        }
        requests = [UpdateOne({"_id": d}, u) for d, u in updates.items()]
        for start in range(0, len(requests), BULK_CHUNK):
            collection.bulk_write(requests[start : start + BULK_CHUNK], ordered=False)

    def _retry_later(self, name: str, doc_id: Any) -> None:
        # One list, drained by the relay's own loop: a long broker outage fails thousands of
        # deliveries, and a timer thread each would exhaust the process's threads.
        self._retries[(name, doc_id)] = min(
            self._retries.get((name, doc_id), float("inf")), time.monotonic() + self._retry_interval
        )

    def _requeue_due_retries(self) -> None:
        now = time.monotonic()
        for (name, doc_id), due in list(self._retries.items()):
            if due <= now:
                del self._retries[(name, doc_id)]
                self._pending.put((name, doc_id, None))


def _events_of(doc: dict[str, Any]) -> tuple[Envelope, ...] | None:
    """The document's outbox as events; None (read it again when publishing) if one is unreadable."""
    try:
        return tuple(Envelope.from_dict(raw) for raw in (doc.get("outbox") or {}).values())
    except InvalidEvent:
        return None
