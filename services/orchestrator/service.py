"""The orchestrator's use cases: drive sagas with events and deadlines, and show their flows."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import Counter, Histogram

from services.orchestrator import saga, transitions
from services.orchestrator.domain import InvalidEventData, SagaConflict, SagaError, SagaNotFound
from services.orchestrator.ports import SagaRepository, SagaWrite, Timer
from services.orchestrator.saga import ACTIVE_STATES, COMPENSATING, COMPLETED, FAILED, Context, SagaState, Transition
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

MAX_WRITE_ATTEMPTS = 10
TIMER_BATCH = 100

Clock = Callable[[], datetime]
# Told the start and end of every saga that ends here (the admission's latency window listens).
SagaEnded = Callable[[datetime, datetime], None]
Decide = Callable[[SagaState | None, Context], Transition | None]


class SagaService:
    """Apply events and deadlines to sagas with optimistic concurrency; read flows for the API."""

    def __init__(
        self,
        sagas: SagaRepository,
        timeouts: saga.Timeouts,
        clock: Clock,
        is_transient: Callable[[BaseException], bool] = lambda _err: False,
        saga_ended: SagaEnded | None = None,
    ) -> None:
        self._sagas = sagas
        self._timeouts = timeouts
        self._clock = clock
        self._is_transient = is_transient
        self._saga_ended = saga_ended

    def start(self, event: Envelope) -> Transition | None:
        """Start the saga of a new order; for an existing saga OrderCreated is just a late event."""
        # A new order has no saga yet: try the insert without reading first. When there is one
        # after all (a redelivery, or a cancel that came first) the insert fails on the duplicate
        # _id and the next attempt reads it.
        return self._write(event.order_id, _starting(event), assume_new=True)

    def advance(self, event: Envelope) -> Transition | None:
        """Apply a reply or a cancel to its saga; events for unknown orders are logged and dropped."""
        return self._write(event.order_id, _advancing(event))

    def apply_many(self, events: Sequence[Envelope]) -> dict[str, InvalidEventData]:
        """Apply fetched events as ``start`` and ``advance`` would one by one, writing all sagas at once.

        Each saga is decided in memory on its events in order and written once, with the other
        sagas in one bulk write. A saga whose write does not land (it existed after all, or
        another writer changed it) is decided again, one event at a time, on a fresh read.
        Return the events whose data breaks the contract, by event id; the others are applied.
        """
        refused: dict[str, InvalidEventData] = {}
        by_order: dict[str, list[Envelope]] = {}
        for event in events:
            by_order.setdefault(event.order_id, []).append(event)
        ctx = Context(self._now(), self._timeouts)
        plans = [self._plan(order_id, its_events, ctx, refused) for order_id, its_events in by_order.items()]
        writing = [(plan, plan.write) for plan in plans if plan.write is not None]
        landed = self._sagas.write_many([write for _plan, write in writing])
        for (plan, write), ok in zip(writing, landed, strict=True):
            if ok:
                self._wrote(plan, write.saga)
            else:
                self._decide_again(plan.events, refused)
        for plan in plans:
            if plan.write is None and plan.redelivered and plan.stored is not None:
                self._resync_timer(plan.stored)
        return refused

    def _plan(self, order_id: str, events: list[Envelope], ctx: Context, refused: dict[str, InvalidEventData]) -> _Plan:
        """Decide one saga on its events in order, in memory."""
        # As in start(): a saga whose first event is OrderCreated is assumed new, without a read.
        stored = None if events[0].event_type == "OrderCreated" else self._sagas.get(order_id)
        plan = _Plan(events, stored)
        emitted: list[Envelope] = []
        for event in events:
            try:
                outcome = _deciding(event)(plan.states[-1] if plan.states else stored, ctx)
            except InvalidEventData as err:
                refused[event.event_id] = err
                continue
            if outcome is None:
                continue
            if not outcome.changed:
                plan.redelivered = True
                continue
            plan.states.append(outcome.saga)
            emitted += outcome.events
        if plan.states:
            plan.write = SagaWrite(plan.states[-1], tuple(emitted), new=stored is None)
        return plan

    def _wrote(self, plan: _Plan, written: SagaState) -> None:
        """What follows a landed write: the timer, the metrics, the admission's window."""
        self._sync_timer(written, before=plan.stored, force=plan.redelivered)
        before = plan.stored
        for after in plan.states:
            _observe(before, after)
            if self._saga_ended and _ends(before, after):
                self._saga_ended(after.created_at, after.updated_at)
            before = after

    def _decide_again(self, events: list[Envelope], refused: dict[str, InvalidEventData]) -> None:
        """Apply a saga's events one by one, reading it first.

        Events refused on the assumed state are decided again too: on the stored saga they may be
        late events that change nothing (an invalid reply to a saga that has moved on).
        """
        for event in events:
            refused.pop(event.event_id, None)
            try:
                self._write(event.order_id, _deciding(event))
            except InvalidEventData as err:
                refused[event.event_id] = err

    def fire_due_timers(self) -> int:
        """Apply every deadline that has passed; return how many sagas it changed."""
        changed = 0
        for timer in self._sagas.due_timers(self._now(), TIMER_BATCH):
            try:
                # A stale timer (its saga moved on meanwhile) is pointed at the real deadline by
                # _write, as for any outcome that changes nothing.
                result = self._write(timer.order_id, _timeout)
                if result is None:
                    self._sagas.clear_timer(timer.order_id)
            except SagaError as err:
                logger.warning("timer of saga %s not applied, it runs again next time: %s", timer.order_id, err)
                continue
            except Exception as err:
                if self._is_transient(err):
                    raise  # the store is away: the whole pass waits for the next one
                # One saga that cannot be read or decided must not stop every deadline behind
                # it (the admission of new orders waits on sagas ending).
                logger.exception("timer of saga %s failed; the other timers go on", timer.order_id)
                continue
            changed += bool(result and result.changed)
        return changed

    def reconcile_timers(self) -> int:
        """Give a timer to every active saga that lost it (a crash between the two writes)."""
        repaired = 0
        for lost in self._sagas.untimed_active(ACTIVE_STATES):
            current = self._sagas.get(lost.order_id)
            if current is not None and current.state in ACTIVE_STATES:
                logger.warning("saga %s in %s had no timer; restoring it", current.order_id, current.state)
                self._sync_timer(current, force=True)
                repaired += 1
        return repaired

    def flows(self, state: str | None, limit: int) -> list[SagaState]:
        """Return recent sagas, newest first."""
        return self._sagas.recent(state, limit)

    def flow(self, order_id: str) -> SagaState:
        """Return the saga of ``order_id``."""
        found = self._sagas.get(order_id)
        if found is None:
            raise SagaNotFound(f"no saga for order {order_id}")
        return found

    def deadlines(self, flow: SagaState) -> dict[str, datetime | saga.Deadline | None]:
        """Return the saga's deadlines and the next one it waits on."""
        return {
            "payment": flow.payment_deadline,
            "order": flow.order_deadline,
            "next": saga.next_deadline(flow, self._timeouts),
        }

    def _write(self, order_id: str, decide: Decide, *, assume_new: bool = False) -> Transition | None:
        """Decide on the freshest saga and write the outcome if nobody changed the saga meanwhile.

        The versioned write decides between concurrent writers (the store applies it atomically:
        shared.mongo.check_atomic_updates refuses one that does not).
        """
        for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
            current = None if assume_new and attempt == 1 else self._sagas.get(order_id)
            outcome = decide(current, Context(self._now(), self._timeouts))
            if outcome is None or not outcome.changed:
                if current is not None and outcome is not None:
                    self._resync_timer(current)
                return outcome
            if current is None:
                written = self._sagas.create(outcome.saga, outcome.events)
            else:
                written = self._sagas.update(outcome.saga, outcome.events)
            if written:
                self._sync_timer(outcome.saga, before=current)
                _observe(current, outcome.saga)
                if self._saga_ended and _ends(current, outcome.saga):
                    self._saga_ended(outcome.saga.created_at, outcome.saga.updated_at)
                return outcome
            logger.info("saga %s changed concurrently (attempt %d); applying again", order_id, attempt)
            # A random pause breaks the lockstep of two writers that keep reading the same version.
            time.sleep(random.uniform(0, 0.002 * attempt))
        raise SagaConflict(f"saga {order_id} kept changing; gave up after {MAX_WRITE_ATTEMPTS} attempts")

    def _resync_timer(self, decided_on: SagaState) -> None:
        """After a redelivered event: if its first delivery died between the saga write and the timer
        write, this is the moment to put the right deadline in place. From a fresh read: the copy the
        event was decided on may be an outdated cached one (another worker moved the saga since), and
        a finished saga must not get back the deadline of a state it left."""
        self._sync_timer(self._sagas.get(decided_on.order_id, fresh=True) or decided_on, force=True)

    def _sync_timer(self, current: SagaState, *, before: SagaState | None = None, force: bool = False) -> None:
        due = saga.next_deadline(current, self._timeouts)
        if not force and before is not None and due == saga.next_deadline(before, self._timeouts):
            return
        if due is None:
            if force or before is not None:
                self._sagas.clear_timer(current.order_id)
        else:
            self._sagas.set_timer(Timer(current.order_id, due.at, due.kind))

    def _now(self) -> datetime:
        # Millisecond precision: what Mongo stores, so a saga reads back exactly as written.
        now = self._clock()
        return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class _Plan:
    """A saga's events in a batch, the stored saga, the states the events lead it through and the write."""

    events: list[Envelope]
    stored: SagaState | None
    states: list[SagaState] = field(default_factory=list)
    write: SagaWrite | None = None
    redelivered: bool = False  # some event was already handled: the timer is checked, as in _write


def _deciding(event: Envelope) -> Decide:
    """How ``event`` moves its saga: as ``start`` for OrderCreated, as ``advance`` otherwise."""
    return _starting(event) if event.event_type == "OrderCreated" else _advancing(event)


def _starting(event: Envelope) -> Decide:
    def decide(current: SagaState | None, ctx: Context) -> Transition:
        return saga.start(event, ctx) if current is None else transitions.apply(current, event, ctx)

    return decide


def _advancing(event: Envelope) -> Decide:
    def decide(current: SagaState | None, ctx: Context) -> Transition | None:
        if current is not None:
            return transitions.apply(current, event, ctx)
        if event.event_type == "OrderCancelRequested":
            return saga.cancel_before_start(event, ctx)
        logger.warning("ignoring %s for order %s: there is no saga for it", event.event_type, event.order_id)
        return None

    return decide


def _timeout(current: SagaState | None, ctx: Context) -> Transition | None:
    return saga.on_timeout(current, ctx) if current is not None else None


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
