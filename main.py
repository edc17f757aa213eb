"""Start the system.

python main.py                        all six services (API + worker each), Ctrl-C stops them
python main.py --service order        one service only (repeatable)
python main.py --replicas 3           three consumer workers per service, in one group each
python main.py --status               health table of the running services
python main.py --logs [NAME]          the last lines of the services' logs
python main.py order api|worker       one process in the foreground (what containers run)
python main.py inventory seed         load the catalogue into an empty inventory database
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


def main(argv: list[str] | None = None) -> int:
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
