"""Fetch, build, start and stop a local Kafka broker and FerretDB (MongoDB wire protocol) without Docker.

    python -m devstack.infra up|down|status

Kafka 4.1.1 (KRaft, combined broker+controller) runs from jars fetched with Maven; FerretDB v1.24.2
(SQLite backend, authentication on) is built from source with Go. Both bind to 127.0.0.1 and keep
their data under ``.local/``. Servers named by KAFKA_BOOTSTRAP_SERVERS / MONGO_URI are only checked.
The servers themselves are in devstack.kafka and devstack.ferretdb; this module is what the Makefile,
the chaos suite and the end-to-end tests use.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devstack.ferretdb import (
    FERRET_DATA,
    ensure_credentials,
    mongo_address,
    mongo_check,
    start_mongo,
    stop_mongo,
)
from devstack.kafka import KAFKA_DATA, kafka_answers, start_kafka, stop_kafka
from devstack.processes import InfraError, crash, log_file, running_pid, say
from shared.config import LOCAL_ENV_FILE, ConfigError, Settings, load_settings

__all__ = ["crash", "down", "ensure_up", "main", "start_kafka", "start_mongo", "status", "stop_kafka", "stop_mongo"]

DATA_DIRS = {"kafka": KAFKA_DATA, "mongo": FERRET_DATA}


def ensure_up(settings: Settings | None = None) -> None:
    """Fetch/build, start and wait for Kafka and FerretDB (unless external), then ensure the topics."""
    settings = settings or load_settings()
    if settings.kafka.external:
        if not kafka_answers(settings.kafka.bootstrap_servers):
            raise InfraError(f"external Kafka {settings.kafka.bootstrap_servers} does not answer")
        say(f"kafka: external broker {settings.kafka.bootstrap_servers} answers")
    else:
        start_kafka(settings)
    if settings.mongo.external:
        reason = mongo_check(settings)
        if reason:
            raise InfraError(f"external MongoDB does not answer an authenticated ping: {reason}")
        say("mongo: external server answers")
    else:
        settings = ensure_credentials(settings)
        start_mongo(settings)
    try:
        from shared.kafka_utils import ensure_topics

        created = ensure_topics(settings.kafka)
    except Exception as err:
        raise InfraError(f"could not ensure the Kafka topics: {err!r}") from err
    say(f"topics: created {', '.join(created)}" if created else "topics: all present")
    _summary(settings)


def _summary(settings: Settings) -> None:
    rows = [
        ("kafka", settings.kafka.bootstrap_servers, settings.kafka.external),
        ("mongo", "{}:{}".format(*mongo_address(settings.mongo.uri)), settings.mongo.external),
    ]
    say("")
    for name, address, external in rows:
        if external:
            say(f"{name:6} {address}  (external, not managed here)")
            continue
        pid = running_pid(name)
        say(f"{name:6} {address}  pid {pid or '-'}  log {log_file(name)}  data {DATA_DIRS[name]}")
    if not settings.mongo.external:
        say(f"credentials: {LOCAL_ENV_FILE} (user {settings.mongo.username})")


def down(settings: Settings | None = None) -> list[str]:
    """Stop the servers started by ``up``; return the names of those that were stopped."""
    settings = settings or load_settings()
    stopped = []
    for name, external, stop in (
        ("kafka", settings.kafka.external, stop_kafka),
        ("mongo", settings.mongo.external, stop_mongo),
    ):
        if external:
            say(f"{name}: external, left alone")
            continue
        pid = stop()
        say(f"{name}: stopped pid {pid}" if pid else f"{name}: not running")
        if pid:
            stopped.append(name)
    return stopped


def status(settings: Settings | None = None) -> bool:
    """Print the state of both servers; True when both answer."""
    settings = settings or load_settings()
    checks = {
        "kafka": (settings.kafka.bootstrap_servers, kafka_answers(settings.kafka.bootstrap_servers)),
        "mongo": ("{}:{}".format(*mongo_address(settings.mongo.uri)), mongo_check(settings) is None),
    }
    external = {"kafka": settings.kafka.external, "mongo": settings.mongo.external}
    for name, (address, answers) in checks.items():
        pid = None if external[name] else running_pid(name)
        state = "external" if external[name] else "running" if pid else "stopped"
        say(f"{name:6} {state:8} pid {pid or '-':<8} {address:22} answering: {'yes' if answers else 'no'}")
    return all(answers for _, answers in checks.values())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.infra", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            ensure_up()
        elif args.command == "down":
            down()
        else:
            return 0 if status() else 3
    except (InfraError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
