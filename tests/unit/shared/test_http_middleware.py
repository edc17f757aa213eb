"""Proxies, trusted hosts, HTTPS redirect, CORS and compression, each off unless configured."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, jsonify

from shared.auth import public
from shared.config import Settings
from shared.web import create_service_app

ORIGIN = "https://shop.example"


def app_with(make_settings: Callable[..., Settings], **http: Any) -> Flask:
    bp = Blueprint("things", __name__)

    @bp.get("/things")
    @public
    def things() -> Any:
        return jsonify(items=["x" * 50] * 100)

    app = create_service_app(make_settings("order", http=http), "order", {})
    app.register_blueprint(bp)
    return app


def test_everything_is_off_by_default(make_settings: Callable[..., Settings]) -> None:
    client = app_with(make_settings).test_client()
    plain = client.get("/things", headers={"Origin": ORIGIN, "Accept-Encoding": "gzip", "Host": "anything.example"})
    assert plain.status_code == 200
    assert "Access-Control-Allow-Origin" not in plain.headers
    assert "Content-Encoding" not in plain.headers


def test_only_allowed_origins_get_cors_headers_and_preflights_need_no_credentials(
    make_settings: Callable[..., Settings],
) -> None:
    client = app_with(make_settings, cors_origins=[ORIGIN]).test_client()
    allowed = client.get("/things", headers={"Origin": ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    assert (
        "Access-Control-Allow-Origin" not in client.get("/things", headers={"Origin": "https://evil.example"}).headers
    )
    preflight = client.options(
        "/health/detailed",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()


def test_a_host_not_trusted_gets_400(make_settings: Callable[..., Settings]) -> None:
    client = app_with(make_settings, trusted_hosts=["orders.example", "localhost"]).test_client()
    assert client.get("/things", headers={"Host": "orders.example"}).status_code == 200
    refused = client.get("/things", headers={"Host": "evil.example"})
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "bad_request"


def test_behind_a_proxy_plain_http_is_redirected_but_liveness_is_not(make_settings: Callable[..., Settings]) -> None:
    client = app_with(make_settings, proxies=1, https_redirect=True).test_client()
    forwarded = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "orders.example"}
    moved = client.get("/things?page=2", headers=forwarded)
    assert moved.status_code == 308 and moved.headers["Location"] == "https://orders.example/things?page=2"
    assert client.get("/things", headers={**forwarded, "X-Forwarded-Proto": "https"}).status_code == 200
    assert client.get("/health", headers=forwarded).status_code == 200


def test_large_answers_are_gzipped_for_clients_that_accept_it(make_settings: Callable[..., Settings]) -> None:
    client = app_with(make_settings, compress_min_bytes=1024).test_client()
    packed = client.get("/things", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(packed.data))["items"]) == 100
    assert "Content-Encoding" not in client.get("/health", headers={"Accept-Encoding": "gzip"}).headers
