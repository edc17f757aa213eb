"""The orchestrator's API wired to the real servers by create_app()."""

from __future__ import annotations

from collections.abc import Callable

from pymongo.database import Database

from services.orchestrator.app import create_app
from services.orchestrator.mongo import MongoSagaRepository
from shared.apikeys import MongoKeyStore, new_key
from shared.auth import SCOPES
from shared.config import Settings
from tests.integration.test_orchestrator_mongo import make_repo
from tests.unit.orchestrator.contract import new_saga


def test_the_api_reads_flows_and_order_events_from_mongo_and_reports_healthy_dependencies(
    service_settings: Callable[..., Settings], mongo_db: Database
) -> None:
    repo: MongoSagaRepository = make_repo(mongo_db)
    saga, events = new_saga("o-1")
    repo.create(saga, events)
    # Credentials on, checked against a key in the real store (this test's database as the key database).
    whole, stored = new_key("operator", ["sagas:read", "monitoring:read"], SCOPES)
    MongoKeyStore(mongo_db["api_keys"]).add(stored)
    settings = service_settings("orchestrator", auth={"mode": "on", "database": mongo_db.name})
    app = create_app(settings)
    anonymous = app.test_client()
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {whole}"

    assert anonymous.get("/flows").status_code == 401
    listing = client.get("/flows").get_json()
    detail = client.get("/flows/o-1").get_json()
    events = client.get("/orders/o-1/events").get_json()
    health = client.get("/health/detailed")

    assert [f["order_id"] for f in listing["flows"]] == ["o-1"]
    assert detail["state"] == "reserving"
    assert detail["deadlines"]["next"]["kind"] == "order"
    assert client.get("/flows/o-2").status_code == 404
    assert [(e["step"], e["status"]) for e in events["events"]] == [
        ("validate_order", "completed"),
        ("reserve_inventory", "started"),
    ]
    assert events["events"] == detail["steps"]
    assert client.get("/orders/o-2/events").status_code == 404
    assert health.status_code == 200, health.get_json()
