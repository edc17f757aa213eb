"""Per-saga write locks: the shared document locks, named like the relay's (``sagas:<order_id>``).

On a stock FerretDB 1.x two concurrent updates of one saga can both report success while one is
lost (see shared/locks.py), so with ``mongo.document_locks`` on, every writer of a saga, the
outbox relay included, holds its lock. Otherwise the locks hold nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from services.orchestrator.domain import SagaBusy
from shared.locks import LockBusy, Locks

SAGA_LOCK = "sagas"  # the collection's name: the relay's LockingCollection uses it as the prefix


class MongoSagaLocks:
    """Leased, non-reentrant locks, one per order id."""

    def __init__(self, locks: Locks) -> None:
        self._locks = locks

    @contextlib.contextmanager
    def locked(self, order_id: str) -> Iterator[None]:
        """Hold the lock of ``order_id`` for the block; raise SagaBusy after waiting too long."""
        try:
            with self._locks.hold(f"{SAGA_LOCK}:{order_id}"):
                yield
        except LockBusy as err:
            raise SagaBusy(str(err)) from err
