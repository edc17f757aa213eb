"""WriteBehind on the real server: the latest wanted state per document, one bulk write per flush."""

from __future__ import annotations

import threading
import time

from prometheus_client import REGISTRY
from pymongo.database import Database

from shared.write_behind import Flusher, WriteBehind


def _bulk_updates() -> float:
    return REGISTRY.get_sample_value("mongo_commands_total", {"command": "update", "collection": "timers"}) or 0.0


def test_the_latest_state_of_each_document_is_written_in_one_round_trip(mongo_db: Database) -> None:
    mongo_db["timers"].insert_one({"_id": "gone", "due": 1})
    writes = WriteBehind(mongo_db["timers"])
    for n in range(20):
        writes.set(f"t{n}", {"due": n})
    writes.set("t0", {"due": 100})  # replaces the waiting write of t0
    writes.set("t1", {"due": 5})
    writes.delete("t1")  # set then deleted before the flush: one delete
    writes.delete("gone")
    before = _bulk_updates()
    assert writes.flush() == 21
    assert _bulk_updates() == before + 1  # one update command for the 19 sets (and one delete command)
    docs = {d["_id"]: d["due"] for d in mongo_db["timers"].find()}
    assert docs == {"t0": 100, **{f"t{n}": n for n in range(2, 20)}}
    assert writes.flush() == 0


def test_the_flusher_writes_on_its_interval(mongo_db: Database) -> None:
    writes = WriteBehind(mongo_db["timers"])
    flusher = Flusher([writes], interval_s=0.05)
    thread = threading.Thread(target=flusher.run)
    thread.start()
    try:
        writes.set("a", {"due": 1})
        deadline = time.monotonic() + 5
        while not mongo_db["timers"].find_one({"_id": "a"}) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        flusher.stop()
        thread.join(5)
    assert mongo_db["timers"].find_one({"_id": "a"})["due"] == 1


def test_stopping_the_flusher_writes_what_waits(mongo_db: Database) -> None:
    writes = WriteBehind(mongo_db["timers"])
    flusher = Flusher([writes], interval_s=3600)
    thread = threading.Thread(target=flusher.run)
    thread.start()
    writes.set("a", {"due": 1})
    flusher.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert mongo_db["timers"].find_one({"_id": "a"})["due"] == 1
