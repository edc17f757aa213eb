"""The audit trail in the real store: batches inserted, read back newest first, filtered."""

from __future__ import annotations

from pymongo.database import Database

from shared.audit import AuditTrail


def entry(principal: str, outcome: int) -> dict:
    return {
        "principal": {"kind": "customer", "id": principal, "name": principal},
        "scope": "orders:write",
        "action": "POST /orders",
        "target": None,
        "outcome": outcome,
        "correlation_id": f"c-{principal}-{outcome}",
        "client": "127.0.0.1",
    }


def test_entries_are_inserted_in_a_batch_and_read_back_newest_first(mongo_db: Database) -> None:
    orders = AuditTrail("order", mongo_db["audit"])
    payments = AuditTrail("payment", mongo_db["audit"])
    orders.record(entry("alice", 201))
    orders.record(entry("bob", 429))
    payments.record(entry("alice", 403))
    assert orders.flush() == 2 and payments.flush() == 1
    assert orders.flush() == 0

    newest = orders.recent(10)
    assert [(e["service"], e["principal"]["id"], e["outcome"]) for e in newest] == [
        ("payment", "alice", 403),
        ("order", "bob", 429),
        ("order", "alice", 201),
    ]
    assert newest[0]["at"].tzinfo is not None
    assert [e["outcome"] for e in orders.recent(10, principal_id="alice")] == [403, 201]
    assert [e["outcome"] for e in orders.recent(10, service="order")] == [429, 201]
