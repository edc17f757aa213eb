"""Rate-limit counters in the real store: shared by processes, atomic, windows roll over."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from limits import parse
from limits.strategies import FixedWindowRateLimiter
from pymongo.database import Database

from shared.ratelimits import MongoCounters


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_two_processes_share_one_limit_and_concurrent_hits_are_all_counted(mongo_db: Database) -> None:
    clock = Clock(1_000_020.0)
    first = FixedWindowRateLimiter(MongoCounters(collection=mongo_db["rate_limits"], clock=clock))
    second = FixedWindowRateLimiter(MongoCounters(collection=mongo_db["rate_limits"], clock=clock))
    limit = parse("40/minute")
    with ThreadPoolExecutor(8) as pool:
        allowed = list(pool.map(lambda i: (first if i % 2 else second).hit(limit, "customer:alice"), range(50)))
    assert allowed.count(True) == 40 and allowed.count(False) == 10
    assert not first.hit(limit, "customer:alice")
    assert first.hit(limit, "customer:bob")

    clock.now += 60  # the next window
    assert second.hit(limit, "customer:alice")
    assert MongoCounters(collection=mongo_db["rate_limits"], clock=clock).get_expiry("nobody") == clock.now


def test_finished_windows_are_swept(mongo_db: Database) -> None:
    clock = Clock(2_000_000.0)
    counters = MongoCounters(collection=mongo_db["rate_limits"], clock=clock)
    limiter = FixedWindowRateLimiter(counters)
    limiter.hit(parse("5/second"), "key:k1")
    clock.now += MongoCounters.SWEEP_INTERVAL_S + 1
    limiter.hit(parse("5/second"), "key:k2")
    assert [doc["key"] for doc in mongo_db["rate_limits"].find()] == [parse("5/second").key_for("key:k2")]
