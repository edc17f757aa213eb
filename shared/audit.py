"""The audit trail: every write an authenticated caller asks for, whatever its outcome.

One entry per request (principal, the scope that let it in, action, target ids, outcome,
correlation id, client address) goes to the JSON log at once and to the append-only ``audit``
collection of the auth database, shared by all services beside the keys, in one insert per
second per process: a crash loses at most that second there, never in the log. Monitoring
serves the recent entries of every service at ``GET /audit``.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request
from pymongo import DESCENDING
from pymongo.collection import Collection

from shared.auth import Principal, rule_of

logger = logging.getLogger("audit")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
KEPT_IN_MEMORY = 1000  # without a store (unit tests), the latest entries only
FLUSH_INTERVAL_S = 1.0


class AuditTrail:
    """Entries of one process, logged at once and inserted in batches."""

    def __init__(self, service: str, collection: Collection | None) -> None:
        self._service = service
        self._collection = collection
        self._pending: list[dict[str, Any]] = []
        self._memory: deque[dict[str, Any]] = deque(maxlen=KEPT_IN_MEMORY)
        self._lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def record(self, entry: dict[str, Any]) -> None:
        entry = {"at": datetime.now(UTC), "service": self._service, **entry}
        logger.info(
            "%s %s by %s:%s -> %s",
            entry["action"],
            entry["target"] or "",
            entry["principal"]["kind"],
            entry["principal"]["id"],
            entry["outcome"],
            extra={"audit": {**entry, "at": entry["at"].isoformat()}},
        )
        with self._lock:
            if self._collection is None:
                self._memory.append(entry)
                return
            self._pending.append(entry)
            if self._flusher is None:  # started here, after any fork of the server
                self._flusher = threading.Thread(target=self._flush_forever, name="audit-flush", daemon=True)
                self._flusher.start()

    def flush(self) -> int:
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch or self._collection is None:
            return 0
        try:
            self._collection.insert_many(batch, ordered=False)
        except Exception:
            with self._lock:
                self._pending = batch + self._pending
            raise
        return len(batch)

    def recent(self, limit: int, service: str | None = None, principal_id: str | None = None) -> list[dict[str, Any]]:
        """The latest entries, newest first (of every service when the trail has a store)."""
        query: dict[str, Any] = {}
        if service:
            query["service"] = service
        if principal_id:
            query["principal.id"] = principal_id
        if self._collection is None:
            with self._lock:
                found = [e for e in self._memory if all(_get(e, k) == v for k, v in query.items())]
            return list(reversed(found))[:limit]
        # Times have milliseconds only: ties go by insertion (ObjectIds grow within a process).
        order = [("at", DESCENDING), ("_id", DESCENDING)]
        found = list(self._collection.find(query).sort(order).limit(limit))
        for entry in found:  # the store hands back naive UTC datetimes
            entry.pop("_id")
            entry["at"] = entry["at"].replace(tzinfo=UTC) if entry["at"].tzinfo is None else entry["at"]
        return found

    def _flush_forever(self) -> None:
        stop = threading.Event()
        while not stop.wait(FLUSH_INTERVAL_S):
            try:
                self.flush()
            except Exception as err:  # the entries are kept (and were logged): try again next round
                logger.warning("could not write %d audit entries yet: %s", len(self._pending), err)


def _get(entry: dict[str, Any], dotted: str) -> Any:
    value: Any = entry
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def install(app: Flask, trail: AuditTrail) -> None:
    """Give every request a correlation id and record every authenticated write."""
    app.extensions["audit"] = trail

    @app.before_request
    def correlate() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

    @app.after_request
    def record(response: Response) -> Response:
        response.headers.setdefault("X-Request-ID", g.get("request_id", ""))
        principal: Principal | None = g.get("principal")
        if request.method in WRITE_METHODS and principal is not None and request.url_rule is not None:
            trail.record(
                {
                    "principal": {"kind": principal.kind, "id": principal.id, "name": principal.name},
                    "scope": _scope_used(principal, rule_of(app.view_functions.get(request.endpoint or ""))),
                    "action": f"{request.method} {request.url_rule.rule}",
                    "target": {k: str(v)[:200] for k, v in (request.view_args or {}).items()} or None,
                    "outcome": response.status_code,
                    "correlation_id": g.get("request_id"),
                    "client": request.remote_addr,
                }
            )
        return response


def _scope_used(principal: Principal, rule: frozenset[str] | None) -> str | None:
    if not rule:
        return None
    held = sorted(scope for scope in rule if scope in principal.scopes)
    return held[0] if held else ("admin" if "admin" in principal.scopes else None)
