"""An outbox relay killed between publishing an event and clearing it, on the real Kafka and FerretDB.

A process of the order service places an order: the order and its OrderCreated are one document
write, and its relay publishes the event. The process is held right after the broker acknowledged
the event, before the relay removes it from the order's outbox, and is killed there (SIGKILL).
The order service's worker (``python main.py order worker``) then starts, its recovery scan finds
the entry and publishes the event a second time, and the outbox ends empty. The two consumers
apply it once: the orchestrator (its saga remembers the ids of the events it handled) and a
consumer with the inbox of handled event ids (``shared.mongo.MongoInbox``) whose handler has no
key of its own to tell a repeat by.

Run as ``python -m tests.integration.test_outbox_crash <dir>``, this module is the process killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from services.order.app import bootstrap as order_bootstrap
from shared.config import Settings, load_settings
from shared.events import Envelope
from shared.kafka_utils import topic_name
from shared.mongo import MongoInbox
from shared.outbox import OutboxRelay
from shared.runtime import connect
from tests.integration.harness import (
    Isolated,
    Worker,
    count_types,
    dead_letters,
    isolated,
    orchestrator_worker,
    read_messages,
    running,
    wait_until,
)
from tests.unit.order.fakes import FakeCardVault
from tests.unit.order.samples import new_order

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, value: Any) -> None:
    """Write ``value`` as JSON at once (a rename), so the test never reads half of it."""
    part = path.with_suffix(".part")
    part.write_text(json.dumps(value))
    part.replace(path)


def place_an_order_and_die_before_clearing(markers: Path) -> None:
    """The killed process: the order API's wiring (service and relay, no recovery scan), with the
    relay held where it would clear the acknowledged events from their documents."""
    settings = load_settings("order")
    clients = connect(settings)
    service = order_bootstrap(settings, clients=clients, vault=FakeCardVault())
    (relay,) = clients.relays

    def acknowledged(_collection: Any, published: dict[Any, list[str]]) -> None:
        _write(markers / "acknowledged.json", {str(doc): ids for doc, ids in published.items()})
        threading.Event().wait()  # SIGKILL comes here

    OutboxRelay._unset = staticmethod(acknowledged)  # type: ignore[method-assign]
    relay.start(scan=False)
    order, _new = service.place_order(new_order(customer_id="outbox-crash"))
    _write(markers / "order.json", order.order_id)
    threading.Event().wait()


def _inbox_consumer(settings: Settings, group: str) -> Worker:
    """A consumer of OrderCreated with the inbox: its handler counts every time it is applied."""
    clients = connect(settings)
    applied = clients.db["applied"]

    def count(event: Envelope) -> None:
        applied.update_one({"_id": event.event_id}, {"$inc": {"times": 1}}, upsert=True)

    inbox = MongoInbox(clients.db["processed_events"], group)
    return Worker("inbox", clients, {"OrderCreated": count}, None, None, group=group, inbox=inbox)


def _consumed(group: str, settings: Settings, outcome: str) -> float:
    labels = {"group": group, "topic": topic_name(settings.kafka, "orders.created"), "outcome": outcome}
    return REGISTRY.get_sample_value("events_consumed_total", labels) or 0.0


def _service_process(env: Isolated, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    output = log.open("ab")
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, **env.env("order")},
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def test_an_event_published_again_after_the_relay_died_before_clearing_it_is_applied_once(tmp_path: Path) -> None:
    with isolated("outbox") as env:
        order_settings = env.settings("order")
        orchestrator = env.settings("orchestrator")
        orders = env.db("order")["orders"]

        # 1. The order is placed, its event acknowledged by the broker, and the process killed.
        api = _service_process(env, ["-m", "tests.integration.test_outbox_crash", str(tmp_path)], tmp_path / "api.log")
        try:
            published = (tmp_path / "acknowledged.json").exists
            wait_until(published, timeout=30, what="the process to start and its relay to publish the event")
            wait_until((tmp_path / "order.json").exists, what="the order to be placed")
        except AssertionError as err:
            raise AssertionError(f"{err}; the process's log:\n{(tmp_path / 'api.log').read_text()[-3000:]}") from None
        finally:
            os.kill(api.pid, signal.SIGKILL)
            api.wait(10)
        assert api.returncode == -signal.SIGKILL
        order_id = json.loads((tmp_path / "order.json").read_text())
        acknowledged = json.loads((tmp_path / "acknowledged.json").read_text())
        left = orders.find_one({"_id": order_id})["outbox"]
        assert acknowledged == {order_id: list(left)}, "the kill came before the clear, not elsewhere"
        event_id = next(iter(left))
        assert [_id_of(r) for r in read_messages(order_settings, ["orders.created"])] == [event_id]

        # 2. The consumers apply the event; 3. the order worker starts and publishes it again.
        saga_group, inbox_group = f"orchestrator-{env.run_id}", f"inbox-{env.run_id}"
        saga_worker = orchestrator_worker(orchestrator, "orchestrator", group=saga_group)
        inbox_worker = _inbox_consumer(env.settings("orchestrator"), inbox_group)
        sagas = env.db("orchestrator")["sagas"]
        applied = env.db("orchestrator")["applied"]
        with running(saga_worker, inbox_worker):
            wait_until(lambda: sagas.find_one({"_id": order_id, "outbox": {}}), what="the saga to start")
            wait_until(lambda: applied.find_one({"_id": event_id}), what="the inbox consumer to apply the event")

            worker = _service_process(env, ["main.py", "order", "worker"], tmp_path / "worker.log")
            try:
                wait_until(lambda: orders.find_one({"_id": order_id, "outbox": {}}), what="the outbox to empty")
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(20)
            assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-2000:]
            copies = [r for r in read_messages(order_settings, ["orders.created"]) if _id_of(r) == event_id]
            assert len(copies) == 2, "the event was not published again"

            wait_until(lambda: saga_worker.handled.count(event_id) == 2, what="the saga worker to get the copy")
            wait_until(lambda: _consumed(inbox_group, orchestrator, "duplicate") == 1, what="the inbox to drop it")

        saga = sagas.find_one({"_id": order_id})
        assert saga["version"] == 1 and saga["handled_events"] == [event_id], saga
        assert [s["step"] for s in saga["steps"]] == ["validate_order", "reserve_inventory"]
        commands = [e for e in _events(orchestrator, "inventory.commands") if e.order_id == order_id]
        assert count_types(commands) == {"ReserveInventory": 1}
        assert applied.find_one({"_id": event_id})["times"] == 1
        assert _consumed(inbox_group, orchestrator, "handled") == 1
        assert orders.count_documents({}) == 1
        assert orders.find_one({"_id": order_id})["outbox"] == {}
        assert dead_letters(orchestrator) == []


def _id_of(record: Any) -> str:
    return json.loads(record.value)["event_id"]


def _events(settings: Settings, topic: str) -> list[Envelope]:
    return [Envelope.from_json(r.value) for r in read_messages(settings, [topic])]


if __name__ == "__main__":
    place_an_order_and_die_before_clearing(Path(sys.argv[1]))
