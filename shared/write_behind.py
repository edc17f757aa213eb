"""Writes that may wait a moment, gathered per document and sent as one bulk write."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pymongo import DeleteOne, UpdateOne
from pymongo.collection import Collection

logger = logging.getLogger(__name__)

# The wanted state of one document: the fields to set (creating it if need be), or None to delete it.
Wanted = Mapping[str, Any] | None


class WriteBehind:
    """The latest wanted state of each document, written in one bulk write by each ``flush()``
    (a Flusher calls it every so often).

    Only for data that something rebuilds after a crash (the orchestrator's saga timers, which
    ``reconcile_timers`` restores): a crash loses at most the writes of the last interval. A
    later write of a document replaces an earlier one still waiting, so a timer set, moved and
    cleared within one interval costs one delete, and a busy second costs a few round trips
    instead of one per write.
    """

    def __init__(self, collection: Collection) -> None:
        self._collection = collection
        self._lock = threading.Lock()
        # One flush at a time: two overlapping bulk writes could land an older state last.
        self._flushing = threading.Lock()
        self._pending: dict[Any, Wanted] = {}

    def set(self, doc_id: Any, fields: Mapping[str, Any]) -> None:
        """Have the document hold ``fields`` (created if missing) at the next flush."""
        with self._lock:
            self._pending[doc_id] = dict(fields)

    def delete(self, doc_id: Any) -> None:
        """Have the document deleted at the next flush."""
        with self._lock:
            self._pending[doc_id] = None

    def pending(self) -> dict[Any, Wanted]:
        """What waits for the next flush, by document id (None: delete)."""
        with self._lock:
            return dict(self._pending)

    def flush(self) -> int:
        """Write everything waiting in one bulk write; return how many writes. On failure the
        writes stay waiting (unless a newer one replaced them) and the error is raised."""
        with self._flushing:
            return self._flush()

    def _flush(self) -> int:
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        requests = [
            DeleteOne({"_id": doc_id}) if wanted is None else UpdateOne({"_id": doc_id}, {"$set": wanted}, upsert=True)
            for doc_id, wanted in batch.items()
        ]
        try:
            self._collection.bulk_write(requests, ordered=False)
        except Exception:
            with self._lock:
                # Every write is idempotent, so repeating the ones that did land is harmless.
                self._pending = {**batch, **self._pending}
            raise
        return len(requests)


class Flushable(Protocol):
    def flush(self) -> object:
        """Write what was buffered; raise (keeping it) when the store is not reachable."""


class Flusher:
    """Flush some buffers every ``interval_s`` seconds, and once more when stopped (a worker's
    background task: see run_worker)."""

    def __init__(self, buffers: Sequence[Flushable], interval_s: float) -> None:
        self._buffers = buffers
        self._interval = interval_s
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self._interval):
            self._flush()
        self._flush()

    def stop(self) -> None:
        self._stop.set()

    def _flush(self) -> None:
        for buffer in self._buffers:
            try:
                buffer.flush()
            except Exception as err:
                # No traceback: during an outage this repeats every interval until the store is back.
                logger.warning("could not write %s; it is kept for the next flush: %s", type(buffer).__name__, err)
