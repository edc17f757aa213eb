"""In-memory fakes of the orchestrator's ports, a settable clock and event builders for tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.orchestrator.ports import SagaWrite, Timer
from services.orchestrator.saga import SagaState
from shared.events import Envelope

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class InMemorySagaRepository:
    """Sagas in a dict with the same version check as the Mongo adapter; every written event is kept."""

    def __init__(self) -> None:
        self.sagas: dict[str, SagaState] = {}
        self.written: list[Envelope] = []
        self.timers: dict[str, Timer] = {}
        self.bulk_writes = 0
        self.legacy_cards: set[str] = set()

    def get(self, order_id: str, *, fresh: bool = False) -> SagaState | None:
        return self.sagas.get(order_id)

    def create(self, saga: SagaState, events: Iterable[Envelope]) -> bool:
        if saga.order_id in self.sagas:
            return False
        self.sagas[saga.order_id] = replace(saga, version=1)
        self.written.extend(events)
        return True

    def update(self, saga: SagaState, events: Iterable[Envelope]) -> bool:
        stored = self.sagas.get(saga.order_id)
        if stored is None or stored.version != saga.version:
            return False
        self.sagas[saga.order_id] = replace(saga, version=saga.version + 1)
        self.written.extend(events)
        return True

    def write_many(self, writes: Sequence[SagaWrite]) -> list[bool]:
        self.bulk_writes += 1
        return [
            self.create(write.saga, write.events) if write.new else self.update(write.saga, write.events)
            for write in writes
        ]

    def recent(self, state: str | None, limit: int) -> list[SagaState]:
        found = [s for s in self.sagas.values() if state is None or s.state == state]
        return sorted(found, key=lambda s: (s.created_at, s.order_id), reverse=True)[:limit]

    def set_timer(self, timer: Timer) -> None:
        self.timers[timer.order_id] = timer

    def clear_timer(self, order_id: str) -> None:
        self.timers.pop(order_id, None)

    def due_timers(self, now: datetime, limit: int) -> list[Timer]:
        return sorted((t for t in self.timers.values() if t.due_at <= now), key=lambda t: t.due_at)[:limit]

    def timed_count(self) -> int:
        return len(self.timers)

    def untimed_active(self, states: Iterable[str]) -> list[SagaState]:
        wanted = set(states)
        return [s for s in self.sagas.values() if s.state in wanted and s.order_id not in self.timers]

    def scrub_card_numbers(self) -> int:
        # SagaStates hold no card numbers; ``legacy_cards`` stands for documents an earlier version wrote.
        scrubbed, self.legacy_cards = len(self.legacy_cards), set()
        return scrubbed

    def events_for(self, order_id: str) -> list[Envelope]:
        """Return the events written for ``order_id``, in order."""
        return [e for e in self.written if e.order_id == order_id]

    def types_for(self, order_id: str) -> list[str]:
        return [e.event_type for e in self.events_for(order_id)]


class ConflictingSagaRepository(InMemorySagaRepository):
    """Loses the next ``conflicts`` conditional updates to a simulated concurrent writer."""

    def __init__(self, conflicts: int = 1) -> None:
        super().__init__()
        self.conflicts_left = conflicts
        self.conflicts_seen = 0

    def update(self, saga: SagaState, events: Iterable[Envelope]) -> bool:
        if self.conflicts_left > 0 and saga.order_id in self.sagas:
            self.conflicts_left -= 1
            self.conflicts_seen += 1
            stored = self.sagas[saga.order_id]
            self.sagas[saga.order_id] = replace(stored, version=stored.version + 1)
            return False
        return super().update(saga, events)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def order_created(order_id: str, **data: Any) -> Envelope:
    """Return a valid OrderCreated (two items, 2 x 10.00 + 1 x 5.50 = 25.50) with ``data`` overrides."""
    payload = {
        "customer_id": "cust-1",
        "customer_email": "ann@example.com",
        "items": [
            {"product_id": "p-1", "quantity": 2, "price": 10.0},
            {"product_id": "p-2", "quantity": 1, "price": 5.5},
        ],
        "total_amount": 25.5,
        "payment_method": "credit_card",
        "payment_method_token": "pm_card1",
        "card_brand": "visa",
        "card_last4": "1111",
        "created_at": "2025-01-01T12:00:00.000Z",
        **data,
    }
    return Envelope("OrderCreated", order_id, "order", payload, customer_id=payload.get("customer_id"))


def reply(event_type: str, order_id: str, **data: Any) -> Envelope:
    """Return a reply for ``order_id`` carrying the saga's deterministic ids unless overridden."""
    defaults: dict[str, Any] = {
        "InventoryReserved": {"reservation_id": f"res_{order_id}", "items": []},
        "InventoryReservationFailed": {
            "reservation_id": f"res_{order_id}",
            "reason": "out_of_stock",
            "detail": "p-1: 1 available, 2 requested",
            "items": [{"product_id": "p-1", "requested": 2, "available": 1}],
        },
        "InventoryReleased": {"reservation_id": f"res_{order_id}", "released": True},
        "InventoryCommitted": {"reservation_id": f"res_{order_id}"},
        "PaymentCompleted": {"payment_id": f"pay_{order_id}", "amount": 25.5},
        "PaymentFailed": {"payment_id": f"pay_{order_id}", "amount": 25.5, "reason": "card_declined"},
        "PaymentRefunded": {"payment_id": f"pay_{order_id}", "amount": 25.5},
        "OrderCancelRequested": {"reason": "cancelled"},
    }
    source = "order" if event_type == "OrderCancelRequested" else "inventory"
    if event_type.startswith("Payment"):
        source = "payment"
    return Envelope(event_type, order_id, source, {**defaults.get(event_type, {}), **data})
