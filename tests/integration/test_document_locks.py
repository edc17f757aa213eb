"""Document locks on the real server: mutual exclusion, expiry of a dead holder's lock, giving up."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from pymongo.database import Database

from shared.locks import DocumentLocks, LockBusy, LockingCollection, NoLocks


def test_a_read_modify_write_under_the_lock_loses_no_update(mongo_db: Database) -> None:
    locks = DocumentLocks(mongo_db["locks"])
    counters = mongo_db["counters"]
    counters.insert_one({"_id": "c", "n": 0})
    barrier = threading.Barrier(8)

    def bump() -> None:
        barrier.wait()
        for _ in range(10):
            with locks.hold("counter:c"):
                current = counters.find_one({"_id": "c"})["n"]
                counters.update_one({"_id": "c"}, {"$set": {"n": current + 1}})

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert counters.find_one({"_id": "c"})["n"] == 80
    assert mongo_db["locks"].count_documents({}) == 0


def test_the_lock_of_a_holder_that_died_is_taken_over_after_its_lease(mongo_db: Database) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    mongo_db["locks"].insert_one({"_id": "stock:x", "token": "dead", "expires_at": past})
    with DocumentLocks(mongo_db["locks"], wait_s=5).hold("stock:x"):
        assert mongo_db["locks"].find_one({"_id": "stock:x"})["token"] != "dead"


def test_a_lock_held_too_long_makes_the_waiter_give_up_with_a_transient_error(mongo_db: Database) -> None:
    locks = DocumentLocks(mongo_db["locks"], lease_s=60, wait_s=0.3)
    with locks.hold("stock:y"), pytest.raises(LockBusy), locks.hold("stock:y"):
        pytest.fail("the lock was taken twice")


def test_a_locking_collection_updates_under_the_documents_lock(mongo_db: Database) -> None:
    locks = DocumentLocks(mongo_db["locks"], lease_s=60, wait_s=0.3)
    wrapped = LockingCollection(mongo_db["docs"], locks, "docs")
    wrapped.insert_one({"_id": "d", "n": 1})
    assert wrapped.update_one({"_id": "d"}, {"$inc": {"n": 1}}).modified_count == 1
    assert wrapped.find_one({"_id": "d"})["n"] == 2
    assert wrapped.full_name == mongo_db["docs"].full_name
    with locks.hold("docs:d"), pytest.raises(LockBusy):
        wrapped.update_one({"_id": "d"}, {"$inc": {"n": 1}})


def test_concurrent_conditional_updates_through_guarded_collections_never_oversell(mongo_db: Database) -> None:
    # Without the lock, FerretDB 1.x lets several of these read 1 unit left and all "win".
    stock = LockingCollection(mongo_db["stock"], DocumentLocks(mongo_db["locks"]), "stock")
    stock.insert_one({"_id": "last-units", "available": 5})
    wins: list[int] = []

    def buy() -> None:
        result = stock.update_one({"_id": "last-units", "available": {"$gte": 1}}, {"$inc": {"available": -1}})
        wins.append(result.modified_count)

    buyers = [threading.Thread(target=buy) for _ in range(10)]
    for buyer in buyers:
        buyer.start()
    for buyer in buyers:
        buyer.join()
    assert sum(wins) == 5
    assert stock.find_one({"_id": "last-units"})["available"] == 0


def test_clients_guard_collections_only_when_the_server_needs_it(service_settings) -> None:
    from shared.runtime import connect

    assert isinstance(connect(service_settings("order")).locks, NoLocks)
    stock_ferretdb = service_settings("order", mongo={"document_locks": True})
    assert isinstance(connect(stock_ferretdb).locks, DocumentLocks)
