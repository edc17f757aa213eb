"""The shared Flask pieces: every error is JSON, bad bodies are 4xx, never 500."""

from __future__ import annotations

import base64
import json

import pytest
from flask import Blueprint, jsonify, request
from pydantic import BaseModel

from services.order.domain import Cursor, InvalidCursor
from shared.auth import public
from shared.web import create_service_app, hold_writes_for_relay, parse_body


class Thing(BaseModel):
    name: str


@pytest.fixture
def client(make_settings):
    bp = Blueprint("things", __name__)

    @bp.post("/things")
    @public
    def create():
        return jsonify(parse_body(Thing).model_dump()), 201

    app = create_service_app(make_settings("order", http={"max_content_length": 2048}), "test", {})
    app.register_blueprint(bp)
    return app.test_client()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ('{"name": "a"}', "application/json", 201, None),
        # A bare `curl -d` labels JSON as a form: refused, as any form a web page could make a browser post.
        ('{"name": "a"}', "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("{broken", "application/json", 400, "invalid_json"),
        ("[" * 100_000, "application/json", 413, "request_entity_too_large"),
        ("[" * 2000, "application/json", 400, "invalid_json"),
        ('{"name": 5}', "application/json", 400, "validation_error"),
        ("name=a", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ('{"name": "a"}', "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_bodies_get_the_right_status_and_a_json_error(client, body, content_type, status, code):
    response = client.post("/things", data=body, content_type=content_type)
    assert response.status_code == status
    if code:
        assert response.get_json()["error"]["code"] == code


def test_unknown_paths_and_methods_answer_json(client):
    assert client.get("/nope").get_json()["error"]["code"] == "not_found"
    assert client.delete("/things").get_json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "payload",
    [json.dumps(["2026-01-01T00:00:00+00:00", "\ud800"]), "[" * 1500, json.dumps([1, 2]), "not json"],
)
def test_a_forged_cursor_is_refused_not_crashed_on(payload):
    token = base64.urlsafe_b64encode(payload.encode("utf-8", "surrogatepass")).decode()
    with pytest.raises(InvalidCursor):
        Cursor.decode(token)


class BehindRelay:
    """The relay's side of the write guard: how far behind it is, and waiting for room."""

    def __init__(self, backlog: int) -> None:
        self.behind = backlog
        self.waits: list[tuple[int, float]] = []

    def backlog(self) -> int:
        return self.behind

    def wait_for_room(self, limit: int, timeout: float) -> bool:
        self.waits.append((limit, timeout))
        return self.behind < limit


@pytest.mark.parametrize(("backlog", "status"), [(99, 201), (100, 503)])
def test_writes_wait_for_the_outbox_relay_and_are_refused_when_it_stays_behind(make_settings, backlog, status):
    bp = Blueprint("things", __name__)
    created: list[str] = []

    @bp.route("/things", methods=["GET", "POST"])
    @public
    def things():
        if request.method == "POST":
            created.append(parse_body(Thing).name)
            return jsonify({"created": True}), 201
        return jsonify(created)

    settings = make_settings("order", outbox={"api_backlog_limit": 100, "api_backlog_wait_s": 2.5})
    relay = BehindRelay(backlog)
    app = create_service_app(settings, "test", {})
    hold_writes_for_relay(app, relay, settings.outbox)  # type: ignore[arg-type]
    app.register_blueprint(bp)
    client = app.test_client()

    response = client.post("/things", json={"name": "a"})
    assert response.status_code == status
    assert relay.waits == [(100, 2.5)]
    if status == 503:
        assert response.get_json()["error"]["code"] == "overloaded"
        assert response.headers["Retry-After"] == "2"
        assert created == []  # refused before anything was written: a retry is safe
    assert client.get("/things").status_code == 200  # reads never wait
    assert relay.waits == [(100, 2.5)]
