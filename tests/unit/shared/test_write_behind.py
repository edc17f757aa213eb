"""WriteBehind without a server: a failed flush keeps its writes waiting."""

from __future__ import annotations

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from shared.write_behind import WriteBehind


def test_writes_that_fail_stay_waiting_unless_a_newer_one_replaced_them() -> None:
    nobody = MongoClient("mongodb://127.0.0.1:9", serverSelectionTimeoutMS=200, connectTimeoutMS=200)
    writes = WriteBehind(nobody["db"]["timers"])
    writes.set("a", {"due": 1})
    writes.set("b", {"due": 1})
    with pytest.raises(PyMongoError):
        writes.flush()
    writes.set("b", {"due": 2})  # a newer state replaces the one that failed
    assert writes.pending() == {"a": {"due": 1}, "b": {"due": 2}}
