"""The storage port of the orchestrator: sagas (with their outbox) and the timers of active sagas."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from services.orchestrator.saga import SagaState
from shared.events import Envelope


@dataclass(frozen=True)
class Timer:
    order_id: str
    due_at: datetime
    kind: str


@dataclass(frozen=True)
class SagaWrite:
    """A decided saga to store with the events it emits: a new saga, or one replacing ``saga.version``."""

    saga: SagaState
    events: tuple[Envelope, ...]
    new: bool


class SagaRepository(Protocol):
    def get(self, order_id: str, *, fresh: bool = False) -> SagaState | None:
        """Return the saga of ``order_id`` or None; ``fresh`` reads the store, past any cache of this process's
        own writes (another worker may have moved the saga since)."""

    def create(self, saga: SagaState, events: Iterable[Envelope]) -> bool:
        """Insert a new saga with ``events`` in its outbox; return False if one already exists."""

    def update(self, saga: SagaState, events: Iterable[Envelope]) -> bool:
        """Replace the saga if its stored version is still ``saga.version``, adding ``events`` to its
        outbox and incrementing the version; return False when another writer got there first."""

    def write_many(self, writes: Sequence[SagaWrite]) -> list[bool]:
        """Store the sagas at once, each as ``create`` or ``update`` would; at most one write per saga.

        Return, in order, whether each write landed. False means it did not (the saga exists after
        all, or another writer changed it) or cannot be confirmed; its events were not handed on,
        and the caller decides that saga again on a fresh read.
        """

    def recent(self, state: str | None, limit: int) -> list[SagaState]:
        """Return up to ``limit`` sagas, newest first, optionally only those in ``state``."""

    def set_timer(self, timer: Timer) -> None:
        """Create or move the timer of ``timer.order_id``."""

    def clear_timer(self, order_id: str) -> None:
        """Remove the timer of ``order_id`` (absent is fine)."""

    def due_timers(self, now: datetime, limit: int) -> list[Timer]:
        """Return up to ``limit`` timers due at or before ``now``, earliest first."""

    def timed_count(self) -> int:
        """How many sagas have a timer, i.e. are in flight (every active saga has one)."""

    def untimed_active(self, states: Iterable[str]) -> list[SagaState]:
        """Return the sagas in ``states`` that have no timer (a crash between two writes)."""

    def scrub_card_numbers(self) -> int:
        """Remove the card numbers that earlier versions kept in saga documents (their sagas then
        carry a withdrawn card, which no vault holds); return how many sagas held one."""
