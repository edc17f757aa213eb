"""The orchestrator's data path: versioned saga writes with retry, the timers, and what follows a write."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Counter, Histogram

from services.orchestrator import saga
from services.orchestrator.domain import SagaConflict
from services.orchestrator.ports import SagaRepository, SagaWrite, Timer
from services.orchestrator.saga import COMPENSATING, COMPLETED, FAILED, Context, SagaState, Transition
from shared.events import Envelope

logger = logging.getLogger(__name__)

SAGAS_STARTED = Counter("sagas_started_total", "Order sagas started")
SAGAS_COMPLETED = Counter("sagas_completed_total", "Order sagas that completed")
SAGAS_FAILED = Counter("sagas_failed_total", "Order sagas that failed, by reason", ["reason"])
SAGA_DURATION = Histogram(
    "saga_duration_seconds",
    "Time from saga creation to its terminal state",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
SAGA_COMPENSATIONS = Counter("saga_compensations_total", "Compensations started, by reason", ["reason"])
SAGA_REFUNDS = Counter("saga_refunds_total", "Refunds requested for payments that arrived too late")

# Told the start and end of every saga that ends here (the admission's latency window listens).
SagaEnded = Callable[[datetime, datetime], None]
# A pure decision: how an event or a deadline moves the saga (None when there is none), given the clock.
Decide = Callable[[SagaState | None, Context], Transition | None]


@dataclass
class Decided:
    """What a batch's events did to one saga, decided in memory: the stored saga it started from, the
    states the events led it through and the events they emit."""

    stored: SagaState | None
    states: list[SagaState] = field(default_factory=list)
    emitted: list[Envelope] = field(default_factory=list)
    redelivered: bool = False  # some event was already handled: the timer is checked, as in write()

    def write(self) -> SagaWrite | None:
        if not self.states:
            return None
        return SagaWrite(self.states[-1], tuple(self.emitted), new=self.stored is None)


class SagaWriter:
    """Store decided sagas with optimistic concurrency, keep their timers right, count what they did."""

    def __init__(
        self,
        sagas: SagaRepository,
        timeouts: saga.Timeouts,
        context: Callable[[], Context],
        saga_ended: SagaEnded | None = None,
        *,
        max_attempts: int,
    ) -> None:
        self._sagas = sagas
        self._timeouts = timeouts
        self._context = context
        self._saga_ended = saga_ended
        self._max_attempts = max_attempts  # of a write that keeps finding the saga changed

    def write(self, order_id: str, decide: Decide, *, assume_new: bool = False) -> Transition | None:
        """Decide on the freshest saga and write the outcome if nobody changed the saga meanwhile.

        The versioned write decides between concurrent writers (the store applies it atomically:
        shared.mongo.check_atomic_updates refuses one that does not). ``assume_new`` tries the
        insert without reading first; when the saga exists after all, the next attempt reads it.
        """
        for attempt in range(1, self._max_attempts + 1):
            current = None if assume_new and attempt == 1 else self._sagas.get(order_id)
            outcome = decide(current, self._context())
            if outcome is None or not outcome.changed:
                if current is not None and outcome is not None:
                    self.resync_timer(current)
                return outcome
            if current is None:
                written = self._sagas.create(outcome.saga, outcome.events)
            else:
                written = self._sagas.update(outcome.saga, outcome.events)
            if written:
                self._sync_timer(outcome.saga, before=current)
                self._wrote(current, [outcome.saga])
                return outcome
            logger.info("saga %s changed concurrently (attempt %d); applying again", order_id, attempt)
            # A random pause breaks the lockstep of two writers that keep reading the same version.
            time.sleep(random.uniform(0, 0.002 * attempt))
        raise SagaConflict(f"saga {order_id} kept changing; gave up after {self._max_attempts} attempts")

    def write_many(self, decided: Sequence[Decided]) -> list[bool]:
        """Write the changed sagas in one bulk write, then check the timers of those found redelivered.

        Return, for each saga in order, False when its write did not land (it existed after all, or
        another writer changed it): the caller decides it again with ``write`` on a fresh read.
        """
        writes = [d.write() for d in decided]
        results = iter(self._sagas.write_many([write for write in writes if write is not None]))
        landed = [write is None or next(results) for write in writes]
        for d, write, ok in zip(decided, writes, landed, strict=True):
            if write is not None and ok:
                self._sync_timer(write.saga, before=d.stored, force=d.redelivered)
                self._wrote(d.stored, d.states)
        for d, write in zip(decided, writes, strict=True):
            if write is None and d.redelivered and d.stored is not None:
                self.resync_timer(d.stored)
        return landed

    def resync_timer(self, decided_on: SagaState) -> None:
        """After a redelivered event: if its first delivery died between the saga write and the timer
        write, this is the moment to put the right deadline in place. From a fresh read: the copy the
        event was decided on may be an outdated cached one (another worker moved the saga since), and
        a finished saga must not get back the deadline of a state it left."""
        self._sync_timer(self._sagas.get(decided_on.order_id, fresh=True) or decided_on, force=True)

    def restore_timer(self, current: SagaState) -> None:
        """Set the timer of a saga that lost it (or clear it, if the saga waits on no deadline)."""
        self._sync_timer(current, force=True)

    def drop_timer(self, order_id: str) -> None:
        """Remove the timer of a saga that no deadline applies to (it is gone)."""
        self._sagas.clear_timer(order_id)

    def _sync_timer(self, current: SagaState, *, before: SagaState | None = None, force: bool = False) -> None:
        due = saga.next_deadline(current, self._timeouts)
        if not force and before is not None and due == saga.next_deadline(before, self._timeouts):
            return
        if due is None:
            if force or before is not None:
                self._sagas.clear_timer(current.order_id)
        else:
            self._sagas.set_timer(Timer(current.order_id, due.at, due.kind))

    def _wrote(self, before: SagaState | None, states: Sequence[SagaState]) -> None:
        """What follows a landed write, for each state the saga went through: the metrics and the
        admission's window."""
        for after in states:
            _observe(before, after)
            if self._saga_ended and _ends(before, after):
                self._saga_ended(after.created_at, after.updated_at)
            before = after


def _ends(before: SagaState | None, after: SagaState) -> bool:
    return after.state in (COMPLETED, FAILED) and (before is None or before.state != after.state)


def _observe(before: SagaState | None, after: SagaState) -> None:
    if after.order is not None and (before is None or before.order is None):
        SAGAS_STARTED.inc()
    if before is None or before.state != after.state:
        if _ends(before, after):
            SAGA_DURATION.observe(max(0.0, (after.updated_at - after.created_at).total_seconds()))
        if after.state == COMPLETED:
            SAGAS_COMPLETED.inc()
        elif after.state == FAILED:
            SAGAS_FAILED.labels(after.failure_reason or "unknown").inc()
        elif after.state == COMPENSATING:
            SAGA_COMPENSATIONS.labels(after.failure_reason or "unknown").inc()
    if after.refund_requested and not (before and before.refund_requested):
        SAGA_REFUNDS.inc()
