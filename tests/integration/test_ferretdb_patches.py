"""The local FerretDB finds documents by _id through its index, also under extra filter conditions.

Unpatched FerretDB 1.24 scans the whole table for every update by _id, and its updates are not
atomic (see devstack/patches/ferretdb/). On MongoDB these tests hold trivially.
"""

from __future__ import annotations

import threading

import pymongo
import pytest
from pymongo import UpdateOne

from shared.mongo import make_mongo_client


def test_lookups_by_id_with_extra_conditions_use_the_id_index(mongo_db):
    if "ferretdbVersion" not in mongo_db.client.admin.command("buildInfo"):
        pytest.skip("the server is MongoDB, whose _id lookups always use the index")
    mongo_db["docs"].insert_many([{"_id": f"doc-{n}", "version": 1} for n in range(50)])
    for query in ({"_id": "doc-7"}, {"_id": "doc-7", "version": {"$gte": 1}}):
        plan = mongo_db.command("explain", {"find": "docs", "filter": query})["queryPlanner"]["Plan"]
        assert any("USING INDEX" in step for step in plan), plan


def _race(threads: int, work) -> None:
    barrier = threading.Barrier(threads)

    def run(index: int) -> None:
        barrier.wait()
        work(index)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)


def test_concurrent_conditional_updates_of_one_document_never_oversell(mongo_db, service_settings):
    # Unpatched FerretDB 1.24 let 8 of these 10 buyers "win" 5 units. Each buyer has its own
    # connection, as the services' processes do.
    clients = [make_mongo_client(service_settings("inventory").mongo) for _ in range(10)]
    mongo_db["stock"].insert_one({"_id": "last-units", "available": 5})
    wins: list[int] = []

    def buy(index: int) -> None:
        stock = clients[index][mongo_db.name]["stock"]
        result = stock.update_one({"_id": "last-units", "available": {"$gte": 1}}, {"$inc": {"available": -1}})
        wins.append(result.modified_count)

    _race(10, buy)
    assert sum(wins) == 5
    assert mongo_db["stock"].find_one({"_id": "last-units"})["available"] == 0


def test_concurrent_increments_and_find_and_modify_lose_nothing(mongo_db, service_settings):
    clients = [make_mongo_client(service_settings("monitoring").mongo) for _ in range(6)]
    mongo_db["counters"].insert_one({"_id": "c", "n": 0, "m": 0})

    def bump(index: int) -> None:
        counters = clients[index][mongo_db.name]["counters"]
        for _ in range(20):
            counters.update_one({"_id": "c"}, {"$inc": {"n": 1}})
            counters.find_one_and_update({"_id": "c"}, {"$inc": {"m": 1}})

    _race(6, bump)
    doc = mongo_db["counters"].find_one({"_id": "c"})
    assert (doc["n"], doc["m"]) == (120, 120)


def test_conditional_deletes_and_updates_of_one_document_never_both_win(mongo_db, service_settings):
    # Like a reservation released by one process while another expires it: exactly one may apply.
    clients = [make_mongo_client(service_settings("inventory").mongo) for _ in range(8)]
    mongo_db["holds"].insert_many([{"_id": n, "state": "held"} for n in range(100)])
    wins = [[0] * 100 for _ in range(8)]

    def contend(index: int) -> None:
        holds = clients[index][mongo_db.name]["holds"]
        for n in range(100):
            if index % 2:
                wins[index][n] = holds.delete_one({"_id": n, "state": "held"}).deleted_count
            else:
                change = {"$set": {"state": "released"}}
                wins[index][n] = holds.update_one({"_id": n, "state": "held"}, change).modified_count

    _race(8, contend)
    per_document = [sum(wins[index][n] for index in range(8)) for n in range(100)]
    assert per_document == [1] * 100


def test_a_bulk_write_of_many_updates_completes(mongo_db):
    # Unpatched, a multi-statement update holds a connection per statement until it ends: with more
    # statements than the pool's 100 connections, the database stopped answering anyone.
    mongo_db["docs"].insert_many([{"_id": n, "outbox": {"e": 1}} for n in range(300)])
    with pymongo.timeout(30):
        result = mongo_db["docs"].bulk_write(
            [UpdateOne({"_id": n}, {"$unset": {"outbox.e": ""}}) for n in range(300)], ordered=False
        )
        assert result.modified_count == 300
        assert mongo_db["docs"].count_documents({"outbox.e": {"$exists": True}}) == 0


def _bulk_with_duplicates(collection, ordered: bool) -> dict:
    collection.insert_one({"_id": "a", "n": 0})
    writes = [
        UpdateOne({"_id": "a", "n": 5}, {"$inc": {"n": 1}}, upsert=True),  # no match, then a duplicate _id
        UpdateOne({"_id": "b"}, {"$inc": {"n": 1}}, upsert=True),
        UpdateOne({"_id": "a", "n": 7}, {"$inc": {"n": 1}}, upsert=True),  # the same again
        UpdateOne({"_id": "a"}, {"$inc": {"n": 1}}),
    ]
    with pytest.raises(pymongo.errors.BulkWriteError) as raised:
        collection.bulk_write(writes, ordered=ordered)
    return raised.value.details


def test_a_duplicate_key_fails_only_its_own_statement_of_an_unordered_bulk_update(mongo_db):
    # Unpatched FerretDB 1.24 failed the whole update at the first duplicate (the later statements
    # never ran), said it was at index 0, and sent no nModified, which pymongo cannot read.
    details = _bulk_with_duplicates(mongo_db["docs"], ordered=False)
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(0, 11000), (2, 11000)]
    assert [(u["index"], u["_id"]) for u in details["upserted"]] == [(1, "b")]
    assert details["nModified"] == 1
    assert {d["_id"]: d["n"] for d in mongo_db["docs"].find()} == {"a": 1, "b": 1}


def test_an_ordered_bulk_update_stops_at_its_first_duplicate_key(mongo_db):
    details = _bulk_with_duplicates(mongo_db["docs"], ordered=True)
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(0, 11000)]
    assert {d["_id"]: d["n"] for d in mongo_db["docs"].find()} == {"a": 0}
