"""The orchestrator's use cases: drive sagas with events and deadlines, and show their flows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.orchestrator import saga, transitions
from services.orchestrator.domain import InvalidEventData, SagaError, SagaNotFound
from services.orchestrator.ports import SagaRepository
from services.orchestrator.saga import ACTIVE_STATES, Context, SagaState, Transition
from services.orchestrator.writer import Decide, Decided, SagaEnded, SagaWriter
from shared.events import Envelope

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class SagaService:
    """Decide how events and deadlines move sagas, hand the outcomes to the writer; read flows for the API."""

    def __init__(
        self,
        sagas: SagaRepository,
        timeouts: saga.Timeouts,
        clock: Clock,
        is_transient: Callable[[BaseException], bool] = lambda _err: False,
        saga_ended: SagaEnded | None = None,
        *,
        timer_batch: int,
        max_write_attempts: int,
    ) -> None:
        self._sagas = sagas
        self._timeouts = timeouts
        self._clock = clock
        self._is_transient = is_transient
        self._timer_batch = timer_batch  # the most due deadlines one pass fires
        self._writer = SagaWriter(sagas, timeouts, self._context, saga_ended, max_attempts=max_write_attempts)

    def start(self, event: Envelope) -> Transition | None:
        """Start the saga of a new order; for an existing saga OrderCreated is just a late event."""
        # A new order has no saga yet: try the insert without reading first. When there is one
        # after all (a redelivery, or a cancel that came first) the insert fails on the duplicate
        # _id and the next attempt reads it.
        return self._writer.write(event.order_id, _starting(event), assume_new=True)

    def advance(self, event: Envelope) -> Transition | None:
        """Apply a reply or a cancel to its saga; events for unknown orders are logged and dropped."""
        return self._writer.write(event.order_id, _advancing(event))

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
        ctx = self._context()
        plans = [self._plan(order_id, its_events, ctx, refused) for order_id, its_events in by_order.items()]
        landed = self._writer.write_many([plan.decided for plan in plans])
        for plan, ok in zip(plans, landed, strict=True):
            if not ok:
                self._decide_again(plan.events, refused)
        return refused

    def _plan(self, order_id: str, events: list[Envelope], ctx: Context, refused: dict[str, InvalidEventData]) -> _Plan:
        """Decide one saga on its events in order, in memory."""
        # As in start(): a saga whose first event is OrderCreated is assumed new, without a read.
        stored = None if events[0].event_type == "OrderCreated" else self._sagas.get(order_id)
        decided = Decided(stored)
        for event in events:
            try:
                outcome = _deciding(event)(decided.states[-1] if decided.states else stored, ctx)
            except InvalidEventData as err:
                refused[event.event_id] = err
                continue
            if outcome is None:
                continue
            if not outcome.changed:
                decided.redelivered = True
                continue
            decided.states.append(outcome.saga)
            decided.emitted += outcome.events
        return _Plan(events, decided)

    def _decide_again(self, events: list[Envelope], refused: dict[str, InvalidEventData]) -> None:
        """Apply a saga's events one by one, reading it first.

        Events refused on the assumed state are decided again too: on the stored saga they may be
        late events that change nothing (an invalid reply to a saga that has moved on).
        """
        for event in events:
            refused.pop(event.event_id, None)
            try:
                self._writer.write(event.order_id, _deciding(event))
            except InvalidEventData as err:
                refused[event.event_id] = err

    def fire_due_timers(self) -> int:
        """Apply every deadline that has passed; return how many sagas it changed."""
        changed = 0
        for timer in self._sagas.due_timers(self._now(), self._timer_batch):
            try:
                # A stale timer (its saga moved on meanwhile) is pointed at the real deadline by
                # the writer, as for any outcome that changes nothing.
                result = self._writer.write(timer.order_id, _timeout)
                if result is None:
                    self._writer.drop_timer(timer.order_id)
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
                self._writer.restore_timer(current)
                repaired += 1
        return repaired

    def scrub_card_numbers(self) -> int:
        """Remove the card numbers sagas written by earlier versions still hold (once, at start)."""
        scrubbed = self._sagas.scrub_card_numbers()
        logger.info("scrubbed the card numbers of %d saga(s) written by earlier versions", scrubbed)
        return scrubbed

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

    def _context(self) -> Context:
        return Context(self._now(), self._timeouts)

    def _now(self) -> datetime:
        # Millisecond precision: what Mongo stores, so a saga reads back exactly as written.
        now = self._clock()
        return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass
class _Plan:
    """A saga's events in a batch and what they decided."""

    events: list[Envelope]
    decided: Decided


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
