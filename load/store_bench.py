"""Store-only benchmark: how many round trips per second the MongoDB-protocol server sustains.

    python -m load.store_bench --seconds 10 --clients 1,4,16

Each client repeats the services' typical operation mix on documents of its own, by _id:
insert, find, update (with a condition), delete. It prints round trips per second for each
client count; divided by the round trips one order needs (see `python -m load.bench`), that is
the ceiling the store puts on completed orders per second.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid

from shared.config import load_settings
from shared.mongo import make_mongo_client

OPS_PER_CYCLE = 4


def run_clients(clients: int, seconds: float) -> float:
    """Run ``clients`` threads for ``seconds``; return round trips per second."""
    settings = load_settings()
    client = make_mongo_client(settings.mongo)
    database = f"store_bench_{uuid.uuid4().hex[:8]}"
    collection = client[database]["docs"]
    collection.insert_many([{"_id": f"seed-{n}", "state": "x", "n": n} for n in range(5000)])
    counts = [0] * clients
    stop = threading.Event()

    def work(index: int) -> None:
        while not stop.is_set():
            doc_id = f"{index}-{uuid.uuid4().hex}"
            collection.insert_one({"_id": doc_id, "state": "new", "n": 0, "outbox": {"e": {"x": 1}}})
            collection.find_one({"_id": doc_id})
            collection.update_one(
                {"_id": doc_id, "state": "new"}, {"$set": {"state": "done"}, "$unset": {"outbox.e": ""}}
            )
            collection.delete_one({"_id": doc_id})
            counts[index] += OPS_PER_CYCLE

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    rate = sum(counts) / (time.monotonic() - started)
    client.drop_database(database)
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="1,4,16", help="comma-separated client counts")
    args = parser.parse_args(argv)
    print(f"{'clients':>8} {'round trips/s':>14}")
    for clients in (int(n) for n in args.clients.split(",")):
        print(f"{clients:>8} {run_clients(clients, args.seconds):>14.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
