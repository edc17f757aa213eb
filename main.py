"""Start the system.

python main.py                        all six services (API + worker each), Ctrl-C stops them
python main.py --service order        one service only (repeatable)
python main.py --replicas 3           three consumer workers per service, in one group each
python main.py --status               health table of the running services
python main.py --logs [NAME]          the last lines of the services' logs
python main.py order api|worker       one process in the foreground (what containers run)
python main.py inventory seed         load the catalogue into an empty inventory database
python main.py keys create --name N --scopes S [S ...]   make an API key (shown once)
python main.py keys list | keys revoke KEY_ID            list keys (never secrets), revoke one
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from shared.config import SERVICE_NAMES, load_settings
from shared.logs import configure_logging

ROLES = ("api", "worker", "seed")
SEEDED = ("inventory",)  # the services with a seed step


def run_role(service: str, role: str) -> None:
    """Run one process of one service in the foreground: its API server or its consumer worker."""
    settings = load_settings(service)
    configure_logging(settings.logging, f"{service}-{role}")
    app = importlib.import_module(f"services.{service}.app")
    if role == "api":
        from shared.runtime import serve

        serve(lambda: app.create_app(load_settings(service)), settings)
    elif importlib.util.find_spec(f"services.{service}.worker"):
        # A worker that does more than consume with its handlers (other consumers, its own jobs).
        importlib.import_module(f"services.{service}.worker").main(settings)
    else:
        from shared.runtime import run_service_worker

        run_service_worker(settings, app.bootstrap, app.WORKER)


def seed(service: str) -> None:
    """Load a service's initial data into its database if it holds none, and say what was done."""
    settings = load_settings(service)
    added = importlib.import_module(f"services.{service}.app").seed(settings)
    where = f"database {settings.this.database}"
    if added:
        print(f"{service}: seeded {added} catalogue products into {where}")
    else:
        print(f"{service}: {where} already holds products; nothing added")


def keys(argv: list[str]) -> int:
    """Create, list and revoke API keys in the auth database the settings name."""
    from datetime import UTC, datetime

    from shared.apikeys import MongoKeyStore, new_key
    from shared.auth import SCOPES
    from shared.mongo import make_mongo_client

    parser = argparse.ArgumentParser(prog="main.py keys", description="API keys of operators, back ends and services")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key; its secret is printed once and only its hash is stored")
    create.add_argument("--name", required=True, help="who or what holds it, e.g. 'checkout backend'")
    create.add_argument("--scopes", required=True, nargs="+", choices=sorted(SCOPES), metavar="SCOPE")
    commands.add_parser("list", help="every key with its scopes and state (never a secret)")
    revoke = commands.add_parser("revoke", help="revoke a key: refused everywhere within auth.key_cache_s")
    revoke.add_argument("key_id")
    args = parser.parse_args(argv)

    settings = load_settings()
    client = make_mongo_client(settings.mongo)
    try:
        store = MongoKeyStore(client[settings.auth.database]["api_keys"])
        if args.command == "create":
            try:
                whole, stored = new_key(args.name, args.scopes, SCOPES)
            except ValueError as err:
                parser.error(str(err))
            store.add(stored)
            print(f"key id {stored.key_id} ({stored.name}): {' '.join(stored.scopes)}")
            print(whole)
            print("This is the only time the key is shown; keep it in a secret store.", file=sys.stderr)
        elif args.command == "list":
            for key in store.all():
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
                print(f"{key.key_id}  {state:<24}  {key.name:<30}  {' '.join(key.scopes)}")
        elif not store.revoke(args.key_id, datetime.now(UTC)):
            print(f"no active key {args.key_id}", file=sys.stderr)
            return 1
        else:
            print(f"revoked {args.key_id}; refused within {settings.auth.key_cache_s:g} s everywhere")
    finally:
        client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keys"]:
        return keys(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("service_name", nargs="?", choices=SERVICE_NAMES, help="run one process of this service")
    parser.add_argument("role", nargs="?", choices=ROLES, help="api or worker (or seed, for inventory)")
    parser.add_argument("--service", action="append", choices=SERVICE_NAMES, help="start only this service")
    parser.add_argument("--replicas", type=int, default=1, help="consumer workers per service (default 1)")
    parser.add_argument("--status", action="store_true", help="print the health of the running services")
    parser.add_argument("--logs", nargs="?", const="", metavar="NAME", help="show recent logs")
    args = parser.parse_args(argv)

    if args.service_name:
        if not args.role:
            parser.error("name the process to run: api or worker")
        if args.role == "seed":
            if args.service_name not in SEEDED:
                parser.error(f"only {', '.join(SEEDED)} has a seed step")
            seed(args.service_name)
        else:
            run_role(args.service_name, args.role)
        return 0
    # The rest is local development (devstack/), which the container image does not ship.
    from devstack.launcher import launch, print_table, show_logs

    if args.status:
        return 0 if print_table(load_settings()) else 3
    if args.logs is not None:
        show_logs(args.logs or None)
        return 0
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    return launch(args.service or list(SERVICE_NAMES), replicas=args.replicas)


if __name__ == "__main__":
    sys.exit(main())
