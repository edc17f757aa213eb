"""The services' own counters, for the benchmark (load.bench): scrape and sum them from /metrics.

A service whose /metrics does not answer 200 raises MetricsUnavailable: its counters are unknown,
not zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import requests

from shared.config import SERVICE_NAMES, Settings


class MetricsUnavailable(RuntimeError):
    """A service's /metrics did not answer 200: its counters are unknown, not zero."""


Fetch = Callable[[str], tuple[int, str]]  # url -> (HTTP status, 0 when unreachable; body)


def http_get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
    """GET ``url`` (/metrics needs a key with metrics:read, passed in ``headers``)."""
    try:
        response = requests.get(url, headers=dict(headers or {}), timeout=10)
    except requests.RequestException as err:
        return 0, f"{type(err).__name__}: {err}"
    return response.status_code, response.text


def service_urls(settings: Settings) -> dict[str, str]:
    return {name: settings.services[name].url for name in SERVICE_NAMES}


def scrape(urls: Mapping[str, str], names: Iterable[str], fetch: Fetch = http_get) -> dict[str, dict[str, float]]:
    """Sum each named counter over each service's /metrics: {counter: {service: total}}.
    Raise MetricsUnavailable naming the service when one does not answer 200."""
    names = list(names)
    totals = {name: dict.fromkeys(urls, 0.0) for name in names}
    for service, url in urls.items():
        status, text = fetch(url + "/metrics")
        if status != 200:
            raise MetricsUnavailable(f"{service} /metrics answered {status or 'nothing'}: {text[:200]}")
        for line in text.splitlines():
            for name in names:
                if line.startswith(name + "{") or line.startswith(name + " "):
                    totals[name][service] += float(line.rsplit(" ", 1)[-1])
    return totals
