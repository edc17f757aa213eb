"""Contract tests of monitoring's repositories.

Each subclass provides ``make_repo()`` (the timeline one takes ``limit``) building a fresh repository.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.monitoring.deadletters import RawMessage, dead_letter
from services.monitoring.domain import ServiceHealth, TimelineEvent
from services.monitoring.stats import Totals

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def item(event_id: str, event_type: str = "OrderValidated", seconds: float = 0, detail: str | None = None):
    return TimelineEvent(event_id, "orders.validated", event_type, at(seconds), "orchestrator", at(seconds), detail)


class TimelineRepositoryContract:
    def test_appending_a_new_event_returns_the_timeline_with_it(self):
        repo = self.make_repo()
        timeline = repo.append("o1", "c1", item("e1", "OrderCreated"))
        assert timeline is not None
        assert [e.event_id for e in timeline.events] == ["e1"]
        assert timeline.customer_id == "c1"
        assert timeline.created_at == at(0)

    def test_appending_an_event_twice_returns_none_and_keeps_one_copy(self):
        repo = self.make_repo()
        repo.append("o1", "c1", item("e1"))
        assert repo.append("o1", "c1", item("e1")) is None
        assert [e.event_id for e in repo.get("o1").events] == ["e1"]

    def test_a_redelivered_event_is_dropped_however_long_the_timeline_already_is(self):
        repo = self.make_repo()
        for n, event_id in enumerate(("e1", "e2", "e3")):
            repo.append("o1", "c1", item(event_id, seconds=n))
        for event_id in ("e1", "e2", "e3"):
            assert repo.append("o1", "c1", item(event_id)) is None
        assert [e.event_id for e in repo.get("o1").events] == ["e1", "e2", "e3"]

    def test_odd_event_ids_are_kept_apart(self):
        repo = self.make_repo()
        for n, event_id in enumerate(("a.b", "$x", "a")):
            assert repo.append("o1", "c1", item(event_id, seconds=n)) is not None
        assert [e.event_id for e in repo.get("o1").events] == ["a.b", "$x", "a"]

    def test_events_come_back_in_time_order_whatever_the_arrival_order(self):
        repo = self.make_repo()
        repo.append("o1", None, item("late", "OrderCompleted", seconds=5))
        repo.append("o1", "c1", item("early", "OrderCreated", seconds=0))
        timeline = repo.append("o1", None, item("middle", seconds=2))
        assert [e.event_id for e in timeline.events] == ["early", "middle", "late"]
        assert timeline.status == "completed"
        assert timeline.elapsed_s() == 5.0
        assert timeline.customer_id == "c1"

    def test_a_full_timeline_takes_no_more_events(self):
        repo = self.make_repo(limit=2)
        repo.append("o1", None, item("e1"))
        repo.append("o1", None, item("e2", seconds=1))
        assert repo.append("o1", None, item("e3", seconds=2)) is None
        assert len(repo.get("o1").events) == 2

    def test_unknown_order_has_no_timeline(self):
        assert self.make_repo().get("nope") is None

    def test_failure_detail_is_kept(self):
        repo = self.make_repo()
        timeline = repo.append("o1", None, item("e1", "OrderFailed", detail="out_of_stock"))
        assert (timeline.status, timeline.failure_reason) == ("failed", "out_of_stock")

    def test_append_many_adds_new_events_and_says_which_were_new(self):
        repo = self.make_repo()
        repo.append("o1", "c1", item("e1", "OrderCreated"))
        added = repo.append_many(
            [
                ("o1", None, item("e1", "OrderCreated")),  # redelivered
                ("o1", None, item("e2", seconds=1)),
                ("o2", "c2", item("e3", seconds=2)),  # a new order
                ("o2", None, item("e4", seconds=3)),  # ... and a second event of it in the same batch
                ("o2", None, item("e3", seconds=2)),  # the same event twice in one batch
            ]
        )
        assert added == [False, True, True, True, False]
        assert [e.event_id for e in repo.get("o1").events] == ["e1", "e2"]
        assert [e.event_id for e in repo.get("o2").events] == ["e3", "e4"]
        assert repo.get("o2").customer_id == "c2"
        assert repo.append_many([]) == []

    def test_append_many_respects_the_limit(self):
        repo = self.make_repo(limit=2)
        assert repo.append_many([("o1", None, item(f"e{n}", seconds=n)) for n in range(3)]) == [True, True, False]
        assert len(repo.get("o1").events) == 2

    def test_open_orders_are_listed_oldest_first_until_closed(self):
        repo = self.make_repo()
        repo.track({"b": at(10), "a": at(0)}, [])
        repo.track({"c": at(100)}, [])
        assert [o.order_id for o in repo.open_before(at(50), 10)] == ["a", "b"]
        repo.track({}, ["a"])
        repo.track({}, ["a", "never-opened"])
        assert [(o.order_id, o.created_at) for o in repo.open_before(at(50), 10)] == [("b", at(10))]

    def test_closing_wins_over_opening_in_the_same_call(self):
        repo = self.make_repo()
        repo.track({"a": at(0), "b": at(1)}, ["a"])
        assert [o.order_id for o in repo.open_before(at(50), 10)] == ["b"]

    def test_orders_checked_later_are_left_out_of_the_check_until_then(self):
        repo = self.make_repo()
        repo.track({"a": at(0), "b": at(1), "c": at(2)}, [])
        repo.check_later(["a", "gone"], at(500))
        assert [o.order_id for o in repo.due_for_check(at(50), at(100), 10)] == ["b", "c"]
        assert [o.order_id for o in repo.due_for_check(at(50), at(100), 1)] == ["b"]
        assert [o.order_id for o in repo.due_for_check(at(50), at(500), 10)] == ["a", "b", "c"]
        assert [o.order_id for o in repo.open_before(at(50), 10)] == ["a", "b", "c"]  # alerts still see them
        repo.track({}, ["a"])
        assert [o.order_id for o in repo.due_for_check(at(50), at(600), 10)] == ["b", "c"]
        repo.check_later(["a"], at(700))  # closed meanwhile: stays closed
        assert [o.order_id for o in repo.open_before(at(50), 10)] == ["b", "c"]


class RecentEventRepositoryContract:
    def test_newest_events_come_first_and_can_be_filtered_by_type(self):
        repo = self.make_repo()
        repo.add("o1", item("e1", "OrderCreated", 0))
        repo.add("o2", item("e2", "OrderFailed", 2))
        repo.add("o1", item("e3", "OrderCompleted", 1))
        repo.add("o1", item("e3", "OrderCompleted", 1))
        assert [(oid, e.event_id) for oid, e in repo.newest(10)] == [("o2", "e2"), ("o1", "e3"), ("o1", "e1")]
        assert [e.event_id for _oid, e in repo.newest(10, "OrderFailed")] == ["e2"]
        assert repo.newest(10)[0][1].timestamp == at(2)

    def test_add_many_stores_new_events_once_and_skips_known_ones(self):
        repo = self.make_repo()
        repo.add("o1", item("e1", "OrderCreated", 0))
        repo.add_many(
            [("o1", item("e1", "OrderCreated", 0)), ("o2", item("e2", seconds=1)), ("o2", item("e2", seconds=1))]
        )
        repo.add_many([])
        assert [(oid, e.event_id) for oid, e in repo.newest(10)] == [("o2", "e2"), ("o1", "e1")]

    def test_trim_keeps_the_newest(self):
        repo = self.make_repo()
        for i in range(5):
            repo.add("o", item(f"e{i}", seconds=i))
        assert repo.trim(3) == 2
        assert [e.event_id for _oid, e in repo.newest(10)] == ["e4", "e3", "e2"]
        assert repo.trim(3) == 0


class StatsRepositoryContract:
    def test_totals_start_at_zero(self):
        assert self.make_repo().totals() == Totals()

    def test_increments_add_up_in_nested_counters(self):
        repo = self.make_repo()
        repo.increment({"orders_created": 1, "orders_failed.out_of_stock": 1, "duration_sum": 1.5})
        repo.increment({"orders_created": 1, "orders_failed.cancelled": 1, "duration_sum": 1.0})
        totals = repo.totals()
        assert totals.orders_created == 2
        assert totals.orders_failed == {"out_of_stock": 1, "cancelled": 1}
        assert totals.duration_sum == 2.5

    def test_set_overwrites_a_field(self):
        repo = self.make_repo()
        repo.set({"dlq_checkpoints.prev": 1, "dlq_checkpoints.last": 4})
        repo.set({"dlq_checkpoints.prev": 4})
        assert repo.totals().dlq_checkpoints == {"prev": 4, "last": 4}

    def test_minute_buckets_are_read_from_a_minute_on_and_trimmed_before_one(self):
        repo = self.make_repo()
        for minute in ("2025-03-01T11:58", "2025-03-01T11:59", "2025-03-01T12:00"):
            repo.increment_minute(minute, {"created": 1})
        repo.increment_minute("2025-03-01T12:00", {"created": 1, "failed": 1})
        assert repo.minutes("2025-03-01T11:59") == {
            "2025-03-01T11:59": {"created": 1},
            "2025-03-01T12:00": {"created": 2, "failed": 1},
        }
        assert repo.trim_minutes("2025-03-01T12:00") == 2
        assert list(repo.minutes("2000-01-01T00:00")) == ["2025-03-01T12:00"]


class DeadLetterRepositoryContract:
    def letter(self, offset: int, seconds: float = 0, value: bytes | None = b"\xff\xfe{"):
        raw = RawMessage(0, offset, b"key", value, [("original_topic", b"orders.created")])
        return dead_letter(raw, at(seconds))

    def test_a_letter_is_stored_once(self):
        repo = self.make_repo()
        assert repo.add(self.letter(7)) is True
        assert repo.add(self.letter(7)) is False
        assert len(repo.newest(10)) == 1
        stored = repo.get("0-7")
        assert stored == self.letter(7)
        assert stored.raw_value() == b"\xff\xfe{"

    def test_newest_come_first(self):
        repo = self.make_repo()
        repo.add(self.letter(1, seconds=0))
        repo.add(self.letter(2, seconds=5, value=None))
        assert [x.id for x in repo.newest(10)] == ["0-2", "0-1"]
        assert repo.newest(10)[0].raw_value() is None

    def test_replays_are_counted(self):
        repo = self.make_repo()
        repo.add(self.letter(1))
        repo.mark_replayed("0-1", at(10))
        updated = repo.mark_replayed("0-1", at(20))
        assert (updated.replayed_count, updated.last_replayed_at) == (2, at(20))
        assert repo.mark_replayed("0-99", at(20)) is None
        assert repo.get("0-99") is None


class HealthRepositoryContract:
    def test_the_latest_outcome_per_service_replaces_the_previous(self):
        repo = self.make_repo()
        repo.save(ServiceHealth("payment", "up", at(0), http_status=200, latency_ms=3.5))
        down = ServiceHealth(
            "payment",
            "degraded",
            at(5),
            http_status=503,
            dependencies={"mongo": {"status": "down", "latency_ms": 1.0}},
            error="dependencies down: mongo",
            consecutive_failures=2,
            down_since=at(1),
        )
        repo.save(down)
        repo.save(ServiceHealth("order", "down", at(5), error="ConnectionError"))
        assert [h.service for h in repo.all()] == ["order", "payment"]
        assert repo.all()[1] == down
