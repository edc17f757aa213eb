"""Start, watch and stop the six services as local processes (what `python main.py` does)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from shared.config import LOCAL_DIR, ROOT, SERVICE_NAMES, Settings, load_settings, process_env

if TYPE_CHECKING:
    from devstack.credentials import Credentials

LOG_DIR = LOCAL_DIR / "logs"
METRICS_DIR = LOCAL_DIR / "prometheus"
# One file per child we start, holding its PID, so tools (load.bench) find exactly this stack's
# processes: each child leads its own session, so its gunicorn workers are its descendants.
PID_DIR = LOCAL_DIR / "run" / "services"
# The processes of each service, as main.py names them: python main.py <service> api|worker.
ROLES = ("api", "worker")


@dataclass
class Child:
    service: str
    role: str
    replica: int
    process: subprocess.Popen[bytes]
    log_path: Path
    pid_dir: Path = PID_DIR

    @property
    def name(self) -> str:
        suffix = f"-{self.replica}" if self.replica else ""
        return f"{self.service}-{self.role}{suffix}"

    @property
    def pid_path(self) -> Path:
        return self.pid_dir / f"{self.name}.pid"


@dataclass(frozen=True)
class PidFile:
    name: str  # the child's name, e.g. order-worker-1
    pid: int
    written_at: float  # the file's mtime: a process created after it only reuses the PID

    @property
    def service(self) -> str:
        return self.name.split("-", 1)[0]


def write_pid_file(child: Child) -> None:
    """Record the child's PID in its PID file (replacing one a predecessor of the same name left)."""
    child.pid_dir.mkdir(parents=True, exist_ok=True)
    partial = child.pid_path.with_suffix(f".{child.process.pid}.tmp")
    partial.write_text(f"{child.process.pid}\n")
    partial.replace(child.pid_path)  # readers never see a half-written file


def remove_pid_file(child: Child) -> None:
    """Remove the child's PID file, unless a successor of the same name has written its own since."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        if int(child.pid_path.read_text().strip()) == child.process.pid:
            child.pid_path.unlink()


def read_pid_files(directory: Path = PID_DIR) -> list[PidFile]:
    """Return the PID files the launcher has written and not yet removed (some may be stale)."""
    found = []
    for path in sorted(directory.glob("*.pid")):
        with contextlib.suppress(FileNotFoundError, ValueError):  # removed or rewritten meanwhile
            found.append(PidFile(path.stem, int(path.read_text().strip()), path.stat().st_mtime))
    return found


def log_path(service: str, role: str, replica: int = 0) -> Path:
    return LOG_DIR / f"{service}-{role}{f'-{replica}' if replica else ''}.log"


def start(
    services: Sequence[str],
    replicas: int = 1,
    env: dict[str, str] | None = None,
    roles: Sequence[str] = ROLES,
    pid_dir: Path = PID_DIR,
) -> list[Child]:
    """Spawn an API and ``replicas`` workers per service, logging to .local/logs, each with a PID file."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    children = []
    for service in services:
        # Every process of a service (gunicorn workers and consumer workers) writes its metrics
        # here, and the service's /metrics adds them all up.
        metrics_dir = METRICS_DIR / service
        if "api" in roles:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for role in roles:
            for replica in range(replicas if role == "worker" else 1):
                child_env = {**os.environ, **(env or {}), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
                path = log_path(service, role, replica)
                with path.open("ab") as log:
                    process = subprocess.Popen(
                        [sys.executable, str(ROOT / "main.py"), service, role],
                        cwd=ROOT,
                        env=child_env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                child = Child(service, role, replica, process, path, pid_dir)
                write_pid_file(child)
                children.append(child)
    return children


def wait_healthy(settings: Settings, services: Iterable[str], children: list[Child], timeout: float = 60) -> None:
    """Wait until every service answers /health; raise naming the ones that do not."""
    pending = set(services)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for child in children:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}; see {child.log_path}")
        for service in list(pending):
            if health(settings, service)[0] == 200:
                pending.discard(service)
        time.sleep(0.3)
    if pending:
        raise RuntimeError(f"not healthy after {timeout:.0f}s: {', '.join(sorted(pending))}; see {LOG_DIR}")


def health(settings: Settings, service: str, detailed: bool = False) -> tuple[int, dict]:
    """Return the HTTP status and body of a service's health endpoint (0 when unreachable)."""
    url = settings.services[service].url + ("/health/detailed" if detailed else "/health")
    try:
        response = requests.get(url, timeout=2)
        return response.status_code, response.json()
    except (requests.RequestException, ValueError):
        return 0, {}


def kill(children: list[Child]) -> None:
    """SIGKILL children and their process groups, as a crash would."""
    for child in children:
        _signal_group(child, signal.SIGKILL)
        child.process.wait()
        remove_pid_file(child)


def start_fresh(
    env: dict[str, str], replicas: int = 1, timeout: float = 120
) -> tuple[Settings, list[Child], Credentials]:
    """Start all six services on the databases and topics ``env`` names, the databases emptied, the
    catalogue seeded and credentials made first: a stack of its own for a test or benchmark run.
    ``env`` must name the run's key database (AUTH_DATABASE); the stack's JWT secret and service
    keys are added to it, so a service restarted with ``start(..., env=env)`` accepts the same
    credentials. Refuse when the services' ports are taken; stop what was started if it does not
    come up."""
    from devstack.credentials import provision
    from services.inventory.app import seed  # the catalogue the runs order from
    from shared.kafka_utils import ensure_topics
    from shared.mongo import make_mongo_client

    if not env.get("AUTH_DATABASE"):
        raise ValueError("name the run's key database (AUTH_DATABASE), so the local one is left alone")
    settings = load_settings(env={**process_env(), **env})
    busy = [name for name in SERVICE_NAMES if health(settings, name)[0]]
    if busy:
        raise RuntimeError(f"ports of {', '.join(busy)} are in use: stop the running stack (`make run`) first")
    client = make_mongo_client(settings.mongo)
    try:
        for database in [settings.services[name].database for name in SERVICE_NAMES] + [settings.auth.database]:
            client.drop_database(database)
    finally:
        client.close()
    credentials = provision(settings)
    env.update(credentials.service_env)
    seed(load_settings("inventory", env={**process_env(), **env}))
    ensure_topics(settings.kafka)
    children = start(SERVICE_NAMES, replicas=replicas, env=env)
    try:
        wait_healthy(settings, SERVICE_NAMES, children, timeout=timeout)
    except BaseException:
        stop(children)
        raise
    return settings, children, credentials


def _interrupt(*_args: object) -> None:
    raise KeyboardInterrupt


def stop(children: list[Child], timeout: float = 20) -> None:
    """SIGTERM every child we started, then SIGKILL what is still running after ``timeout``."""
    # A second Ctrl-C must not cut the shutdown short and leave children behind.
    held = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = [signal.signal(signum, signal.SIG_IGN) for signum in held] if main_thread else []
    try:
        for child in children:
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.process.wait()
            remove_pid_file(child)
    finally:
        for signum, handler in zip(held, previous, strict=False):
            signal.signal(signum, handler)


def _signal_group(child: Child, signum: int) -> None:
    # The child leads its own session, so its gunicorn workers get the signal too.
    if child.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, signum)


def launch(services: Sequence[str], replicas: int = 1) -> int:
    """Run the services until Ctrl-C or SIGTERM; restart nothing, report any child that dies."""
    settings = load_settings()
    busy = [s for s in services if health(settings, s)[0]]
    if busy:
        print(f"already answering on their ports: {', '.join(busy)} — stop them first (or check `main.py --status`)")
        return 1
    # SIGTERM and a closed terminal (SIGHUP) stop the children like Ctrl-C does; never orphan them.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    children = start(services, replicas)
    try:
        print(f"starting {', '.join(services)} (logs in {LOG_DIR}) ...", flush=True)
        wait_healthy(settings, services, children)
        print_table(settings, services)
        print("all services are up. Ctrl-C stops them.", flush=True)
        while True:
            for child in children:
                if child.process.poll() is not None:
                    print(f"{child.name} exited with {child.process.returncode}; see {child.log_path}", flush=True)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)
        return 0
    except RuntimeError as err:
        print(f"startup failed: {err}", flush=True)
        return 1
    finally:
        stop(children)


def print_table(settings: Settings, services: Iterable[str] = SERVICE_NAMES) -> bool:
    """Print a health table of the services; return True when all are healthy."""
    print(f"{'service':<14}{'url':<28}{'status':<11}{'kafka':<8}{'mongo':<8}")
    all_ok = True
    for service in services:
        code, body = health(settings, service, detailed=True)
        deps = body.get("dependencies", {})
        status = body.get("status", "down") if code else "down"
        all_ok &= status == "healthy"
        kafka, mongo = (deps.get(d, {}).get("status", "-") for d in ("kafka", "mongo"))
        print(f"{service:<14}{settings.services[service].url:<28}{status:<11}{kafka:<8}{mongo:<8}")
    print(f"monitoring dashboard: {settings.services['monitoring'].url}/dashboard")
    return all_ok


def show_logs(service: str | None, lines: int = 50) -> None:
    """Print the last lines of each service's logs."""
    paths = sorted(LOG_DIR.glob(f"{service}-*.log" if service else "*.log"))
    if not paths:
        print(f"no logs in {LOG_DIR}")
    for path in paths:
        print(f"==> {path} <==")
        print("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
