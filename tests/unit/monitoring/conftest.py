"""A monitoring service over in-memory fakes, and helpers to make events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from services.monitoring.app import bootstrap
from services.monitoring.domain import iso
from services.monitoring.service import MonitoringService
from shared.config import Settings
from shared.events import Envelope
from tests.unit.monitoring.fakes import (
    FakeClock,
    FakeHealthProbe,
    FakeRawPublisher,
    InMemoryDeadLetterRepository,
    InMemoryHealthRepository,
    InMemoryRecentEventRepository,
    InMemoryStatsRepository,
    InMemoryTimelineRepository,
)


@dataclass
class World:
    settings: Settings
    clock: FakeClock
    service: MonitoringService
    timelines: InMemoryTimelineRepository = field(default_factory=InMemoryTimelineRepository)
    recent: InMemoryRecentEventRepository = field(default_factory=InMemoryRecentEventRepository)
    figures: InMemoryStatsRepository = field(default_factory=InMemoryStatsRepository)
    letters: InMemoryDeadLetterRepository = field(default_factory=InMemoryDeadLetterRepository)
    health: InMemoryHealthRepository = field(default_factory=InMemoryHealthRepository)
    probe: FakeHealthProbe | None = None
    publisher: FakeRawPublisher = field(default_factory=FakeRawPublisher)
    lag: dict[str, int] | None = None


@pytest.fixture
def world(make_settings: Callable[..., Settings]) -> World:
    # Unit tests see the contract topic names; the prefix has a test of its own.
    return build_world(make_settings("monitoring", kafka={"topic_prefix": ""}), FakeClock())


def build_world(settings: Settings, clock: FakeClock) -> World:
    """A monitoring service over fresh in-memory fakes."""
    w = World(settings=settings, clock=clock, service=None)  # type: ignore[arg-type]
    w.probe = FakeHealthProbe(clock)
    w.lag = {"order-service": 3}
    w.service = bootstrap(
        settings,
        timelines=w.timelines,
        recent=w.recent,
        figures=w.figures,
        letters=w.letters,
        health=w.health,
        probe=w.probe,
        publisher=w.publisher,
        lag=lambda: w.lag,
        clock=clock,
    )
    return w


def envelope(
    event_type: str, order_id: str, at: datetime, data: dict[str, Any] | None = None, **fields: Any
) -> Envelope:
    """Make an event of ``order_id`` that happened at ``at``."""
    return Envelope(
        event_type=event_type,
        order_id=order_id,
        source=fields.pop("source", "test"),
        data=data or {},
        customer_id=fields.pop("customer_id", "cust-1"),
        occurred_at=iso(at),
        **fields,
    )
