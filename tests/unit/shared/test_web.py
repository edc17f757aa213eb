"""The shared Flask pieces: every error is JSON, bad bodies are 4xx, never 500."""

from __future__ import annotations

import base64
import json

import pytest
from flask import Blueprint, jsonify
from pydantic import BaseModel

from services.order.domain import Cursor, InvalidCursor
from shared.web import create_service_app, parse_body


class Thing(BaseModel):
    name: str


@pytest.fixture
def client(make_settings):
    bp = Blueprint("things", __name__)

    @bp.post("/things")
    def create():
        return jsonify(parse_body(Thing).model_dump()), 201

    app = create_service_app(make_settings("order", http={"max_content_length": 2048}), "test", {})
    app.register_blueprint(bp)
    return app.test_client()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ('{"name": "a"}', "application/json", 201, None),
        ('{"name": "a"}', "application/x-www-form-urlencoded", 201, None),  # a bare `curl -d`
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
