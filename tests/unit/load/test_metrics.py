"""A service whose /metrics does not answer 200 is an error, not a zero."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from load.metrics import MetricsUnavailable, scrape

METRICS = """# HELP events_published_total Events delivered to Kafka
# TYPE events_published_total counter
events_published_total{outcome="delivered",topic="orders.created"} 3.0
events_published_total{outcome="delivered",topic="orders.completed"} 2.0
events_published_created{outcome="delivered",topic="orders.created"} 1.7e+09
mongo_commands_total{collection="orders",command="insert"} 4.0
"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = (200, METRICS) if self.path == "/up/metrics" else (500, "internal error")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_sums_each_counter_over_its_labels_per_service(server: str):
    totals = scrape({"order": f"{server}/up", "payment": f"{server}/up"}, ["events_published_total"])
    assert totals == {"events_published_total": {"order": 5.0, "payment": 5.0}}


def test_a_service_answering_500_raises_naming_it(server: str):
    with pytest.raises(MetricsUnavailable, match=r"payment /metrics answered 500"):
        scrape({"order": f"{server}/up", "payment": f"{server}/down"}, ["events_published_total"])


def test_a_service_not_answering_at_all_raises_naming_it(server: str):
    httpd_gone = "http://127.0.0.1:9"  # discard port: nothing listens there
    with pytest.raises(MetricsUnavailable, match=r"inventory /metrics answered nothing"):
        scrape({"order": f"{server}/up", "inventory": httpd_gone}, ["mongo_commands_total"])


def test_an_injected_fetch_is_used_for_every_service():
    asked = []

    def fetch(url: str) -> tuple[int, str]:
        asked.append(url)
        return (200, "mongo_commands_total 2.5\n") if "order" in url else (404, "not found")

    with pytest.raises(MetricsUnavailable, match="monitoring /metrics answered 404"):
        scrape({"order": "http://order", "monitoring": "http://monitoring"}, ["mongo_commands_total"], fetch)
    assert asked == ["http://order/metrics", "http://monitoring/metrics"]
