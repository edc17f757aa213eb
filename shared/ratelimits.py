"""Rate limits on writes, per principal and per client address, with the ``limits`` library
(Flask-Limiter's core) and counters in the store, so every gunicorn worker, replica and service
shares them.

Every write (POST, PUT, PATCH, DELETE) counts against its principal (``customer_writes`` or
``key_writes``) and, for customers, its client address (``address_writes``); a view marked ``@limited(name)``
also counts against that named limit (order creation, REST reservations, REST charges). Over a
limit: 429 with a JSON error and Retry-After, and nothing is done. Reads are not counted: they
cost one indexed lookup and counting them would double it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, g, request
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, Storage
from limits.strategies import FixedWindowRateLimiter
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from shared.auth import Principal
from shared.config import RateLimitSettings

logger = logging.getLogger(__name__)

View = TypeVar("View", bound=Callable[..., Any])
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Named limits a view may add; "customers" limits apply to customer tokens only.
NAMED = {"order_creation": "customers", "reservations": "everyone", "card_charges": "everyone"}


def limited(name: str, cost: Callable[[], int] | None = None) -> Callable[[View], View]:
    """Count calls of a view against the named limit of ``rate_limits`` (``cost`` hits a call)."""
    if name not in NAMED:
        raise ValueError(f"unknown limit {name!r}; expected one of {', '.join(NAMED)}")

    def mark(view: View) -> View:
        view.rate_limit = (name, cost)  # type: ignore[attr-defined]
        return view

    return mark


class MongoCounters(Storage):
    """Fixed-window counters in a collection: one document per key and window, bumped with one
    atomic ``$inc`` upsert (no TTL index or pipeline update, which FerretDB lacks); finished
    windows are deleted now and then."""

    STORAGE_SCHEME = ["ecommerce-mongo"]
    SWEEP_INTERVAL_S = 60.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any) -> None:
        super().__init__(uri, wrap_exceptions)
        self._counters: Collection = options["collection"]
        self._clock: Callable[[], float] = options.get("clock", time.time)
        self._expiry: dict[str, int] = {}
        self._lock = threading.Lock()
        self._swept = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return PyMongoError

    def _window(self, key: str, expiry: int) -> tuple[str, float]:
        start = math.floor(self._clock() / expiry) * expiry
        return f"{key}@{int(start)}", float(start + expiry)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        window_id, ends = self._window(key, expiry)
        with self._lock:
            if len(self._expiry) > 10_000:
                self._expiry.clear()
            self._expiry[key] = expiry
        doc = self._counters.find_one_and_update(
            {"_id": window_id},
            {"$inc": {"count": amount}, "$setOnInsert": {"key": key, "ends": ends}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        self._sweep()
        return int(doc["count"])

    def get(self, key: str) -> int:
        expiry = self._expiry.get(key)
        if expiry is None:
            return 0
        doc = self._counters.find_one({"_id": self._window(key, expiry)[0]})
        return int(doc["count"]) if doc else 0

    def get_expiry(self, key: str) -> float:
        expiry = self._expiry.get(key)
        return self._window(key, expiry)[1] if expiry else self._clock()

    def check(self) -> bool:
        return self._counters.database.command("ping").get("ok") == 1

    def reset(self) -> int | None:
        return self._counters.delete_many({}).deleted_count

    def clear(self, key: str) -> None:
        self._counters.delete_many({"key": key})

    def _sweep(self) -> None:
        now = self._clock()
        if now - self._swept < self.SWEEP_INTERVAL_S:
            return
        self._swept = now
        self._counters.delete_many({"ends": {"$lt": now}})


class RateLimits:
    """The limits of one app: which apply to a request, counted in ``storage``."""

    def __init__(self, settings: RateLimitSettings, storage: Storage) -> None:
        self._settings = settings
        self._limiter = FixedWindowRateLimiter(storage)
        self._storage = storage
        self._items: dict[str, RateLimitItem] = {
            name: parse(getattr(settings, name)) for name in ("customer_writes", "key_writes", "address_writes", *NAMED)
        }

    def check(self, principal: Principal | None, address: str, view: Callable[..., Any] | None) -> float | None:
        """Count this write; None when it may go on, else the seconds until it may be retried.

        An API key (a back end, an operator) is bounded by its own limit alone; customers and
        anonymous callers also by their address, which many tokens may share."""
        hits: list[tuple[RateLimitItem, str, int]] = []
        if principal is None or principal.kind == "customer":
            hits.append((self._items["address_writes"], f"address:{address}", 1))
        if principal is not None:
            who = f"{principal.kind}:{principal.id}"
            writes = "customer_writes" if principal.kind == "customer" else "key_writes"
            hits.append((self._items[writes], who, 1))
            named = getattr(view, "rate_limit", None)
            if named and (NAMED[named[0]] == "everyone" or principal.kind == "customer"):
                cost = named[1]() if named[1] else 1
                hits.append((self._items[named[0]], who, max(1, cost)))
        for item, who, cost in hits:
            if not self._limiter.hit(item, who, cost=cost):
                reset = self._storage.get_expiry(item.key_for(who))
                return max(1.0, reset - time.time())
        return None


def install(app: Flask, settings: RateLimitSettings, counters: Collection | None) -> None:
    """Count every write of ``app`` (after the credentials check, which names the principal)."""
    if not settings.enabled:
        return
    # Without the store (unit tests over fakes) the counters are this process's own.
    storage: Storage = MongoCounters(collection=counters) if counters is not None else MemoryStorage()
    limits = RateLimits(settings, storage)
    app.extensions["rate_limits"] = limits

    @app.before_request
    def limit_writes() -> tuple[Response, int] | None:
        if request.method not in WRITE_METHODS or request.endpoint is None:
            return None
        principal: Principal | None = g.get("principal")
        wait = limits.check(principal, request.remote_addr or "unknown", app.view_functions.get(request.endpoint))
        if wait is None:
            return None
        from shared.web import error_body  # shared.web installs this module's hook

        logger.warning(
            "rate limit: %s %s refused for %s", request.method, request.path, principal or request.remote_addr
        )
        response, status = error_body(429, "rate_limited", "too many requests; retry after the time in Retry-After")
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response, status
