"""Recording events: timelines, dedupe, ordering, figures moved once, open orders."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.monitoring.handlers import HANDLERS
from shared.events import TOPIC_BY_EVENT, Envelope
from shared.kafka_utils import PermanentError, bind_handlers
from tests.unit.monitoring.conftest import World, build_world, envelope
from tests.unit.monitoring.fakes import FakeClock


def flow(world: World, order_id: str = "o1", outcome: str = "OrderCompleted", took_s: float = 2.0) -> list[Envelope]:
    start = world.clock.now - timedelta(seconds=10)
    data = {"reason": "payment_declined"} if outcome == "OrderFailed" else {}
    return [
        envelope("OrderCreated", order_id, start),
        envelope("OrderValidated", order_id, start + timedelta(seconds=0.5), source="orchestrator"),
        envelope("PaymentCompleted", order_id, start + timedelta(seconds=1), source="payment"),
        envelope(outcome, order_id, start + timedelta(seconds=took_s), data, source="orchestrator"),
    ]


def test_every_event_type_has_the_same_handler():
    assert set(HANDLERS) == set(TOPIC_BY_EVENT)


def test_events_build_a_time_ordered_timeline_whatever_the_arrival_order(world: World):
    events = flow(world)
    for event in reversed(events):
        assert world.service.record(event) is True
    timeline = world.service.timeline("o1")
    assert [e.event_id for e in timeline.events] == [e.event_id for e in events]
    assert [e.topic for e in timeline.events] == [e.topic for e in events]
    assert timeline.status == "completed"
    assert timeline.customer_id == "cust-1"


def test_a_redelivered_event_is_recorded_once(world: World):
    event = flow(world)[0]
    assert world.service.record(event) is True
    assert world.service.record(event) is False
    assert len(world.service.timeline("o1").events) == 1
    assert len(world.recent.events) == 1


def test_figures_move_once_per_event_even_when_redelivered(world: World):
    for event in flow(world) * 2:
        world.service.record(event)
    totals = world.figures.totals()
    assert totals.orders_created == 1
    assert totals.orders_completed == 1
    assert totals.payments_completed == 1
    assert totals.events_total == {"OrderCreated": 1, "OrderValidated": 1, "PaymentCompleted": 1, "OrderCompleted": 1}
    assert totals.duration_count == 1
    assert totals.duration_sum == pytest.approx(2.0)
    assert totals.duration_buckets == {"2_5": 1}


def test_duration_is_measured_when_the_created_event_arrives_after_the_final_one(world: World):
    created, *_middle, completed = flow(world, took_s=7)
    world.service.record(completed)
    assert world.figures.totals().duration_count == 0
    world.service.record(created)
    assert world.figures.totals().duration_buckets == {"10": 1}
    assert world.service.timeline("o1").elapsed_s() == pytest.approx(7)


def test_a_second_final_event_does_not_count_the_duration_again(world: World):
    created, *_middle, completed = flow(world, took_s=3)
    world.service.record(created)
    world.service.record(completed)
    world.service.record(envelope("OrderFailed", "o1", world.clock.now, {"reason": "cancelled"}))
    assert world.figures.totals().duration_count == 1


def test_failed_orders_are_counted_by_reason_and_unknown_reasons_as_other(world: World):
    for event in flow(world, "o1", "OrderFailed"):
        world.service.record(event)
    world.service.record(envelope("OrderFailed", "o2", world.clock.now, {"reason": "cosmic.rays"}))
    totals = world.figures.totals()
    assert totals.orders_failed == {"payment_declined": 1, "other": 1}
    timeline = world.service.timeline("o1")
    assert (timeline.status, timeline.failure_reason) == ("failed", "payment_declined")


def test_orders_per_minute_buckets_count_by_event_minute(world: World):
    for event in flow(world):
        world.service.record(event)
    assert world.figures.minute_docs == {"2025-03-01T12:00": {"created": 1, "completed": 1}}


def test_events_older_than_the_minute_window_skip_the_minute_buckets(world: World):
    world.service.record(envelope("OrderCreated", "old", world.clock.now - timedelta(hours=3)))
    assert world.figures.minute_docs == {}
    assert world.figures.totals().orders_created == 1


def test_a_created_order_stays_open_until_its_final_event(world: World):
    created, *_rest, completed = flow(world)
    world.service.record(created)
    assert list(world.timelines.open_orders) == ["o1"]
    world.service.record(completed)
    assert world.timelines.open_orders == {}


def test_an_order_that_ended_before_its_created_event_arrived_is_not_opened(world: World):
    created, *_rest, completed = flow(world)
    world.service.record(completed)
    world.service.record(created)
    assert world.timelines.open_orders == {}


def test_housekeeping_closes_open_orders_whose_timeline_has_ended(world: World):
    created, *_rest, completed = flow(world)
    world.service.record(created)
    world.service.record(completed)
    world.timelines.track({"o1": world.clock.now - timedelta(hours=1)}, [])  # a race left it open
    world.service.housekeep()
    assert world.timelines.open_orders == {}


def test_housekeeping_reads_a_bounded_number_of_running_orders_and_not_again_soon(
    make_settings, monkeypatch: pytest.MonkeyPatch
):
    world = build_world(
        make_settings("monitoring", kafka={"topic_prefix": ""}, monitoring={"open_orders_checked": 2}), FakeClock()
    )
    long_ago = world.clock.now - timedelta(hours=1)
    for order_id in ("o1", "o2", "o3"):
        world.service.record(envelope("OrderCreated", order_id, long_ago))
    reads: list[str] = []
    read = world.timelines.get
    monkeypatch.setattr(world.timelines, "get", lambda order_id: reads.append(order_id) or read(order_id))

    world.service.housekeep()
    world.service.housekeep()
    world.clock.advance(6 * 60)
    world.service.housekeep()

    assert reads == ["o1", "o2", "o3", "o1", "o2"]
    assert sorted(world.timelines.open_orders) == ["o1", "o2", "o3"]


def test_housekeeping_trims_recent_events_and_old_minutes(make_settings):
    world = build_world(
        make_settings("monitoring", kafka={"topic_prefix": ""}, monitoring={"recent_events_kept": 2}), FakeClock()
    )
    for event in flow(world):
        world.service.record(event)
    world.figures.increment_minute("2025-03-01T10:00", {"created": 1})
    world.service.housekeep()
    assert len(world.recent.events) == 2
    assert list(world.figures.minute_docs) == ["2025-03-01T12:00"]


def test_an_unparsable_timestamp_falls_back_to_the_arrival_time(world: World):
    event = Envelope(event_type="OrderValidated", order_id="o1", source="x", occurred_at="yesterday")
    world.service.record(event)
    assert world.service.timeline("o1").events[0].timestamp == world.clock.now


def test_an_absurdly_long_order_id_is_dead_lettered(world: World):
    handlers = bind_handlers(HANDLERS, world.service)
    with pytest.raises(PermanentError):
        handlers["OrderCreated"](envelope("OrderCreated", "x" * 500, world.clock.now))


def test_recent_orders_are_the_newest_distinct_orders_with_their_status(world: World):
    for event in flow(world, "o1", "OrderFailed"):
        world.service.record(event)
    world.clock.advance(60)
    for event in flow(world, "o2"):
        world.service.record(event)
    assert [t.order_id for t in world.service.recent_orders(10)] == ["o2", "o1"]
    assert [t.order_id for t in world.service.recent_orders(1)] == ["o2"]
    assert [t.order_id for t in world.service.recent_orders(10, "failed")] == ["o1"]


def test_a_retry_after_a_failure_part_way_still_counts_the_event_once(world: World, monkeypatch):
    created = envelope("OrderCreated", "o-retry", world.clock())
    real_track = world.timelines.track
    calls = {"n": 0}

    def track_failing_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("database blip")
        return real_track(*args, **kwargs)

    monkeypatch.setattr(world.timelines, "track", track_failing_once)
    with pytest.raises(ConnectionError):
        world.service.record(created)
    assert world.service.record(created) is False  # the redelivery: already in the timeline
    assert world.figures.totals().orders_created == 1
    assert calls["n"] == 2
    assert list(world.timelines.open_orders) == ["o-retry"]  # the bookkeeping was finished by the retry


def test_a_batch_records_like_single_events_in_any_order(world: World):
    one, two = flow(world, "o1"), flow(world, "o2", "OrderFailed", took_s=4)
    batch = [*reversed(one), *two, one[1]]  # out of order, two orders, a redelivery inside
    assert world.service.record_many(batch) == {}
    single = build_world(world.settings, world.clock)
    for event in batch:
        single.service.record(event)
    assert world.figures.totals() == single.figures.totals()
    assert all(world.service.timeline(o) == single.service.timeline(o) for o in ("o1", "o2"))
    assert world.timelines.open_orders == single.timelines.open_orders == {}
    assert world.figures.totals().duration_count == 2


def test_a_batch_refuses_events_it_cannot_store_and_records_the_rest(world: World):
    bad = envelope("OrderCreated", "x" * 500, world.clock.now)
    good = envelope("OrderCreated", "o1", world.clock.now)
    refused = world.service.record_many([bad, good])
    assert list(refused) == [bad.event_id]
    assert list(world.timelines.open_orders) == ["o1"]
