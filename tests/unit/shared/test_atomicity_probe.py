"""The start-up probe refuses a store that loses concurrent conditional updates, and only such a store."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
from pymongo.results import DeleteResult, InsertOneResult, UpdateResult

from shared import runtime
from shared.config import load_settings
from shared.mongo import ATOMICITY_PROBE, StoreNotAtomic, check_atomic_updates

WRITERS = 4


class ScratchCollection:
    """Just what the probe calls, on documents in a dict. ``atomic=False`` applies an update as stock
    FerretDB 1.x does: read and match, then write back by ``_id``; the first updates of all writers
    wait for each other between the two, so every writer matches the same value."""

    def __init__(self, *, atomic: bool) -> None:
        self.docs: dict[Any, dict[str, Any]] = {}
        self.updates = 0
        self._atomic = atomic
        self._lock = threading.RLock()
        self._first_reads = threading.Barrier(WRITERS, timeout=5)
        self._waited: set[int] = set()

    def insert_one(self, doc: dict[str, Any]) -> InsertOneResult:
        with self._lock:
            self.docs[doc["_id"]] = copy.deepcopy(doc)
        return InsertOneResult(doc["_id"], acknowledged=True)

    def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self.docs.get(query["_id"]))

    def delete_one(self, query: dict[str, Any]) -> DeleteResult:
        with self._lock:
            gone = self.docs.pop(query["_id"], None)
        return DeleteResult({"n": int(gone is not None)}, acknowledged=True)

    def update_one(self, query: dict[str, Any], update: dict[str, Any]) -> UpdateResult:
        if self._atomic:
            with self._lock:
                return self._apply(query, update, self.find_one(query))
        read = self.find_one(query)
        if threading.get_ident() not in self._waited:
            self._waited.add(threading.get_ident())
            self._first_reads.wait()
        return self._apply(query, update, read)

    def _apply(self, query: dict[str, Any], update: dict[str, Any], read: dict[str, Any] | None) -> UpdateResult:
        if read is None or any(read.get(field) != value for field, value in query.items()):
            return UpdateResult({"n": 0, "nModified": 0}, acknowledged=True)
        for field, step in update["$inc"].items():
            read[field] += step
        self.docs[read["_id"]] = read
        self.updates += 1
        return UpdateResult({"n": 1, "nModified": 1}, acknowledged=True)


def test_a_store_that_loses_conditional_updates_is_refused_with_the_reason() -> None:
    scratch = ScratchCollection(atomic=False)

    with pytest.raises(StoreNotAtomic, match=r"does not apply updates atomically.*Stock FerretDB 1\.x"):
        check_atomic_updates(scratch, writers=WRITERS, rounds=3)  # type: ignore[arg-type]

    assert scratch.docs == {}  # the scratch document is removed either way


def test_an_atomic_store_passes_and_keeps_no_scratch_document() -> None:
    scratch = ScratchCollection(atomic=True)

    check_atomic_updates(scratch, writers=WRITERS, rounds=3)  # type: ignore[arg-type]

    assert scratch.updates >= 3 and scratch.docs == {}


class FakeClient:
    """A client whose every database holds the one scratch collection; it records what was asked for."""

    def __init__(self, scratch: ScratchCollection) -> None:
        self.scratch = scratch
        self.closed = False
        self.asked: list[str] = []

    def __getitem__(self, name: str) -> Any:
        return _FakeDatabase(self)

    def close(self) -> None:
        self.closed = True


class _FakeDatabase:
    def __init__(self, client: FakeClient) -> None:
        self._client = client

    def __getitem__(self, name: str) -> ScratchCollection:
        self._client.asked.append(name)
        return self._client.scratch


@pytest.fixture
def fake_store(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Make ``runtime.connect`` talk to a scratch collection and a dummy producer, with nothing probed yet."""
    made: dict[str, Any] = {}

    def client(*_args: Any, **_kwargs: Any) -> FakeClient:
        made.setdefault("clients", []).append(FakeClient(made["scratch"]))
        return made["clients"][-1]

    def producer(*_args: Any, **_kwargs: Any) -> object:
        made["producers"] = made.get("producers", 0) + 1
        return object()

    monkeypatch.setattr(runtime, "make_mongo_client", client)
    monkeypatch.setattr(runtime, "make_producer", producer)
    monkeypatch.setattr(runtime, "_atomic_stores", set())
    return made


def test_a_service_does_not_start_on_a_store_that_loses_updates(fake_store: dict[str, Any]) -> None:
    fake_store["scratch"] = ScratchCollection(atomic=False)

    with pytest.raises(StoreNotAtomic):
        runtime.connect(load_settings("order", environment="test"))

    assert fake_store["clients"][0].closed and "producers" not in fake_store


def test_the_probe_runs_once_per_process_and_store(fake_store: dict[str, Any]) -> None:
    fake_store["scratch"] = ScratchCollection(atomic=True)
    settings = load_settings("order", environment="test")

    runtime.connect(settings)
    probed = fake_store["scratch"].updates
    runtime.connect(settings)

    assert [client.asked for client in fake_store["clients"]] == [[ATOMICITY_PROBE], []]
    assert probed and fake_store["scratch"].updates == probed and fake_store["producers"] == 2
