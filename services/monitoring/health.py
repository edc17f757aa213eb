"""HttpHealthProbe: ask a service's GET /health/detailed how it is."""

from __future__ import annotations

import re
import time
from typing import Any

import requests

from services.monitoring.domain import ServiceHealth
from services.monitoring.ports import Clock
from shared.events import utc_now

MAX_DEPENDENCIES = 20


class HttpHealthProbe:
    """Poll over HTTP: 200 is up, 503 with a dependency report is degraded, anything else is down."""

    def __init__(self, timeout_s: float, api_key: str | None = None, clock: Clock = utc_now) -> None:
        self._timeout = timeout_s
        self._clock = clock
        # /health/detailed needs monitoring:read: monitoring asks with its own service key.
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def check(self, service: str, url: str) -> ServiceHealth:
        checked_at = self._clock()
        started = time.perf_counter()
        try:
            # A plain requests.get per call: Session objects are not safe to share across threads.
            response = requests.get(f"{url.rstrip('/')}/health/detailed", headers=self._headers, timeout=self._timeout)
        except requests.RequestException as err:
            return ServiceHealth(
                service, "down", checked_at, latency_ms=_elapsed_ms(started), error=self._describe(err, url)
            )
        dependencies = _dependencies(_json(response))
        if response.status_code == 200:
            status, error = "up", None
        elif response.status_code == 503 and dependencies:
            down = sorted(name for name, dep in dependencies.items() if dep.get("status") != "up")
            status, error = "degraded", f"dependencies down: {', '.join(down)}" if down else "HTTP 503"
        elif response.status_code in (401, 403):
            status, error = "down", f"HTTP {response.status_code}: monitoring's service key was refused"
        else:
            status, error = "down", f"HTTP {response.status_code}"
        return ServiceHealth(
            service,
            status,
            checked_at,
            http_status=response.status_code,
            latency_ms=_elapsed_ms(started),
            dependencies=dependencies,
            error=error,
        )

    def _describe(self, err: requests.RequestException, url: str) -> str:
        # requests' own messages run to several lines of pool internals; say what happened.
        if isinstance(err, requests.Timeout):
            return f"Timeout: no answer from {url} within {self._timeout:g}s"
        if isinstance(err, requests.ConnectionError):
            return f"ConnectionError: cannot connect to {url}"
        return f"{type(err).__name__}: {err}"[:300]


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _dependencies(body: Any) -> dict[str, dict[str, Any]]:
    """Keep a bounded, Mongo-safe copy of the dependency report (names must not hold dots or $)."""
    raw = body.get("dependencies") if isinstance(body, dict) else None
    if not isinstance(raw, dict):
        return {}
    cleaned = {}
    for name, dep in list(raw.items())[:MAX_DEPENDENCIES]:
        if not isinstance(dep, dict):
            continue
        latency = dep.get("latency_ms")
        entry: dict[str, Any] = {
            "status": str(dep.get("status"))[:20],
            "latency_ms": latency if isinstance(latency, int | float) else None,
        }
        if dep.get("error"):
            entry["error"] = str(dep["error"])[:300]
        cleaned[re.sub(r"[.$]", "_", str(name))[:50]] = entry
    return cleaned
