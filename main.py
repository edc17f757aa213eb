"""Start the system.

python main.py                        all six services (API + worker each), Ctrl-C stops them
python main.py --service order        one service only (repeatable)
python main.py --replicas 3           three consumer workers per service, in one group each
python main.py --status               health table of the running services
python main.py --logs [NAME]          the last lines of the services' logs
python main.py order api|worker       one process in the foreground (what containers run)
"""

from __future__ import annotations

import argparse
import importlib
import sys

from shared.config import SERVICE_NAMES, load_settings
from shared.logs import configure_logging

ROLES = ("api", "worker")


def run_role(service: str, role: str) -> None:
    """Run one process of one service in the foreground: its API server or its consumer worker."""
    settings = load_settings(service)
    configure_logging(settings.logging, f"{service}-{role}")
    if role == "api":
        from shared.runtime import serve

        module = importlib.import_module(f"services.{service}.app")
        serve(lambda: module.create_app(load_settings(service)), settings)
    else:
        importlib.import_module(f"services.{service}.worker").main(settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("service_name", nargs="?", choices=SERVICE_NAMES, help="run one process of this service")
    parser.add_argument("role", nargs="?", choices=ROLES, help="api or worker")
    parser.add_argument("--service", action="append", choices=SERVICE_NAMES, help="start only this service")
    parser.add_argument("--replicas", type=int, default=1, help="consumer workers per service (default 1)")
    parser.add_argument("--status", action="store_true", help="print the health of the running services")
    parser.add_argument("--logs", nargs="?", const="", metavar="NAME", help="show recent logs")
    args = parser.parse_args(argv)

    if args.service_name:
        if not args.role:
            parser.error("name the process to run: api or worker")
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
