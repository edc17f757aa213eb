"""Which limits a write counts against, and the 429 a client gets over one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify
from limits.storage import MemoryStorage

from shared.auth import DEVELOPMENT, Principal
from shared.config import RateLimitSettings, Settings
from shared.ratelimits import RateLimits, install, limited

ALICE = Principal("customer", "alice", "alice", frozenset({"orders:write"}))
BOB = Principal("customer", "bob", "bob", frozenset({"orders:write"}))
BACKEND = Principal("key", "k1", "checkout", frozenset({"orders:write:any"}))


def limits(make_settings: Callable[..., Settings], **values: str) -> RateLimits:
    base = {"customer_writes": "5/minute", "key_writes": "8/minute", "address_writes": "100/minute"}
    settings = make_settings(rate_limits={**base, **values}).rate_limits
    return RateLimits(settings, MemoryStorage())


@limited("order_creation")
def place() -> None: ...


@limited("card_charges", cost=lambda: 3)
def charge() -> None: ...


def test_a_customer_is_limited_alone_and_others_are_still_served(make_settings: Callable[..., Settings]) -> None:
    rate = limits(make_settings, order_creation="3/minute")
    assert [rate.check(ALICE, "10.0.0.1", place) for _ in range(3)] == [None, None, None]
    wait = rate.check(ALICE, "10.0.0.1", place)
    assert wait is not None and 1 <= wait <= 60
    assert rate.check(BOB, "10.0.0.2", place) is None


def test_customers_share_their_address_limit(make_settings: Callable[..., Settings]) -> None:
    rate = limits(make_settings, address_writes="4/minute")
    assert [rate.check(ALICE, "10.0.0.1", None) for _ in range(2)] == [None, None]
    assert [rate.check(BOB, "10.0.0.1", None) for _ in range(2)] == [None, None]
    assert rate.check(BOB, "10.0.0.1", None) is not None
    assert rate.check(BOB, "10.0.0.9", None) is None  # another address


def test_a_key_is_bounded_by_its_own_limit_not_by_order_creation_or_address(
    make_settings: Callable[..., Settings],
) -> None:
    rate = limits(make_settings, order_creation="1/minute", address_writes="1/minute")
    assert [rate.check(BACKEND, "10.0.0.1", place) for _ in range(8)] == [None] * 8
    assert rate.check(BACKEND, "10.0.0.1", place) is not None


def test_a_named_limit_counts_the_views_cost(make_settings: Callable[..., Settings]) -> None:
    rate = limits(make_settings, card_charges="7/minute")
    assert rate.check(BACKEND, "a", charge) is None  # 3
    assert rate.check(BACKEND, "a", charge) is None  # 6
    assert rate.check(BACKEND, "a", charge) is not None  # 9 > 7


def test_over_a_limit_a_write_gets_429_json_with_retry_after_and_reads_are_not_counted(
    make_settings: Callable[..., Settings],
) -> None:
    app = Flask(__name__)
    settings: Any = make_settings(rate_limits={"key_writes": "2/minute"})
    install(app, settings.rate_limits, None)
    served: list[str] = []

    @app.before_request
    def as_development() -> None:
        from flask import g

        g.principal = DEVELOPMENT

    @app.route("/things", methods=["GET", "POST"])
    def things() -> Any:
        served.append("x")
        return jsonify(ok=True)

    # Hooks run in order of registration: move the principal ahead of the limit, as auth.install does.
    app.before_request_funcs[None].reverse()
    client = app.test_client()
    assert [client.post("/things").status_code for _ in range(2)] == [200, 200]
    refused = client.post("/things")
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert [client.get("/things").status_code for _ in range(5)] == [200] * 5
    assert len(served) == 7


def test_limits_can_be_switched_off(make_settings: Callable[..., Settings]) -> None:
    app = Flask(__name__)
    settings: RateLimitSettings = make_settings(rate_limits={"enabled": False}).rate_limits
    install(app, settings, None)
    assert "rate_limits" not in app.extensions
