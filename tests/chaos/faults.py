"""The chaos run's processes and the faults it inflicts on them: kill -9 of a service (all its
processes), of one worker replica (its group rebalances around the survivors), of the Kafka
broker and of the document store, each restarted after a short, seeded downtime."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from devstack import infra, launcher
from devstack.credentials import Credentials
from shared.config import SERVICE_NAMES, Settings
from shared.events import iso_now

FAULT_KINDS = ("services", "broker", "store")


@dataclass
class Fault:
    name: str
    planned_at: float  # seconds into the load
    action: Callable[[], str]  # returns the PIDs it killed; raises when it could not
    at: str = ""  # when it struck (ISO, UTC)
    killed: str = ""
    down_s: float = 0.0  # from the kill until it answered again
    problem: str = ""
    in_flight: int = 0  # sagas begun and not ended at that moment (from the topics, afterwards)
    during_load: bool = False


class Stack:
    """The six services on the run's databases and topics, with the processes of each as they are now."""

    def __init__(self, settings: Settings, env: dict[str, str], replicas: int, seed: int) -> None:
        self.settings = settings
        self.env = env
        self.replicas = replicas
        self.children: list[launcher.Child] = []
        self.credentials: Credentials | None = None
        self._lock = threading.Lock()
        self._downtime = random.Random(f"{seed}-downtime")

    def start(self) -> None:
        try:
            _settings, self.children, self.credentials = launcher.start_fresh(self.env, replicas=self.replicas)
        except RuntimeError as err:
            raise SystemExit(str(err)) from err

    def stop(self) -> None:
        launcher.stop(self.children)

    def crash(self, service: str, replica: int | None = None) -> str:
        """kill -9 the service's processes (or one worker replica), start them again, wait until healthy."""
        with self._lock:
            victims = [
                c
                for c in self.children
                if c.service == service and (replica is None or (c.role == "worker" and c.replica == replica))
            ]
            self.children = [c for c in self.children if c not in victims]
        if not victims:
            raise RuntimeError(f"no running process of {service} to kill")
        pids = ",".join(str(c.process.pid) for c in victims)
        launcher.kill(victims)
        time.sleep(self._downtime.uniform(0.5, 2.0))
        if replica is None:
            started = launcher.start([service], replicas=self.replicas, env=self.env)
        else:
            started = launcher.start([service], replicas=1, env=self.env, roles=("worker",))
            for child in started:  # keep its replica number, so a later fault finds it
                child.replica = replica
        with self._lock:
            self.children += started
        launcher.wait_healthy(self.settings, [service], started, timeout=120)
        return pids

    def crash_server(self, name: str) -> str:
        """kill -9 our ``kafka`` or ``mongo`` server and start it again; refuse one we did not start."""
        server = self.settings.kafka if name == "kafka" else self.settings.mongo
        if server.external:
            raise RuntimeError(f"{name} is external: this suite cannot crash it (run with --faults services)")
        pid = infra.crash(name)
        if pid is None:
            raise RuntimeError(f"our {name} server was not running")
        time.sleep(self._downtime.uniform(1.0, 4.0))
        (infra.start_kafka if name == "kafka" else infra.start_mongo)(self.settings)
        return str(pid)


def plan(stack: Stack, kinds: set[str], duration: float, seed: int) -> list[Fault]:
    """Each fault of ``kinds`` at a seeded moment within the load's ``duration`` seconds, in time order."""
    rng = random.Random(f"{seed}-faults")
    faults = []
    if "services" in kinds:
        for service in SERVICE_NAMES:
            crash_all = lambda s=service: stack.crash(s)  # noqa: E731
            faults.append(Fault(f"kill -9 {service} (all)", rng.uniform(0.05, 0.85) * duration, crash_all))
            if stack.replicas > 1:
                replica = rng.randrange(stack.replicas)
                crash_one = lambda s=service, r=replica: stack.crash(s, r)  # noqa: E731
                name = f"kill -9 {service}-worker-{replica}"
                faults.append(Fault(name, rng.uniform(0.05, 0.85) * duration, crash_one))
    if "broker" in kinds:
        faults.append(
            Fault("kill -9 Kafka broker", rng.uniform(0.3, 0.6) * duration, lambda: stack.crash_server("kafka"))
        )
    if "store" in kinds:
        faults.append(
            Fault("kill -9 document store", rng.uniform(0.3, 0.7) * duration, lambda: stack.crash_server("mongo"))
        )
    return sorted(faults, key=lambda f: f.planned_at)


def inflict(faults: list[Fault]) -> None:
    """Carry out the faults one after another at their moments, recording what each did."""
    started = time.monotonic()
    for fault in faults:
        wait = started + fault.planned_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        fault.at = iso_now()
        began = time.monotonic()
        try:
            fault.killed = fault.action()
        except Exception as err:
            fault.problem = f"{type(err).__name__}: {err}"
        fault.down_s = round(time.monotonic() - began, 1)
        print(
            f"  {fault.at} {fault.name}: pids {fault.killed or '-'}, back after {fault.down_s}s {fault.problem}",
            flush=True,
        )
