"""The audit trail: which requests it records and what an entry says."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask import Blueprint, jsonify

from shared.apikeys import InMemoryKeyStore, new_key
from shared.auth import SCOPES, requires
from shared.config import Settings
from shared.logs import JsonFormatter
from shared.web import create_service_app


@pytest.fixture
def app_and_keys(make_settings: Callable[..., Settings]) -> tuple[Any, dict[str, str]]:
    keys = InMemoryKeyStore()
    made = {}
    for name, scopes in {"refunder": ["payments:refund"], "reader": ["payments:read"]}.items():
        whole, stored = new_key(name, scopes, SCOPES)
        keys.add(stored)
        made[name] = whole
    bp = Blueprint("payments", __name__)

    @bp.post("/payments/<payment_id>/refund")
    @requires("payments:refund")
    def refund(payment_id: str) -> Any:
        return jsonify(refunded=payment_id)

    @bp.get("/payments/<payment_id>")
    @requires("payments:read", "payments:refund")
    def read(payment_id: str) -> Any:
        return jsonify(id=payment_id)

    app = create_service_app(make_settings("payment", auth={"mode": "on"}), "payment", {}, keys=keys)
    app.register_blueprint(bp)
    return app, made


def test_an_authenticated_write_is_recorded_with_who_what_and_how_it_ended(app_and_keys) -> None:
    app, keys = app_and_keys
    client = app.test_client()
    answer = client.post(
        "/payments/pay_o-1/refund", headers={"Authorization": f"Bearer {keys['refunder']}", "X-Request-ID": "req-42"}
    )
    assert answer.headers["X-Request-ID"] == "req-42"
    [entry] = app.extensions["audit"].recent(10)
    assert entry["service"] == "payment"
    assert entry["principal"]["kind"] == "key" and entry["principal"]["name"] == "refunder"
    assert entry["scope"] == "payments:refund"
    assert entry["action"] == "POST /payments/<payment_id>/refund"
    assert entry["target"] == {"payment_id": "pay_o-1"}
    assert entry["outcome"] == 200
    assert entry["correlation_id"] == "req-42"
    assert entry["client"] == "127.0.0.1"


def test_refused_writes_are_recorded_and_reads_and_anonymous_calls_are_not(app_and_keys) -> None:
    app, keys = app_and_keys
    client = app.test_client()
    client.post("/payments/pay_o-1/refund", headers={"X-API-Key": keys["reader"], "X-Request-ID": "<bad id>"})
    client.get("/payments/pay_o-1", headers={"X-API-Key": keys["reader"]})
    client.post("/payments/pay_o-1/refund")  # anonymous: 401, in the request log only
    [entry] = app.extensions["audit"].recent(10)
    assert (entry["principal"]["name"], entry["outcome"], entry["scope"]) == ("reader", 403, None)
    assert entry["correlation_id"] != "<bad id>" and len(entry["correlation_id"]) == 32


def test_an_entry_goes_to_the_json_log_with_its_fields(app_and_keys, caplog: pytest.LogCaptureFixture) -> None:
    app, keys = app_and_keys
    with caplog.at_level(logging.INFO, logger="audit"):
        app.test_client().post("/payments/pay_o-1/refund", headers={"X-API-Key": keys["refunder"]})
    [record] = [r for r in caplog.records if r.name == "audit"]
    line = json.loads(JsonFormatter().format(record))
    assert line["audit"]["action"] == "POST /payments/<payment_id>/refund"
    assert line["audit"]["principal"]["name"] == "refunder"
