"""The local servers' processes: PID files (.local/run), logs (.local/logs), start, stop and crash.

A server counts as ours only while its PID file names a live process whose command line contains
its marker path, so a reused PID is never taken for our broker or store.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from shared.config import LOCAL_DIR

RUN_DIR = LOCAL_DIR / "run"
LOG_DIR = LOCAL_DIR / "logs"
KAFKA_DIR = LOCAL_DIR / "kafka"
KAFKA_PROPERTIES = KAFKA_DIR / "server.properties"
FERRET_DIR = LOCAL_DIR / "ferretdb"
FERRET_BIN = FERRET_DIR / "bin" / "ferretdb"
# A PID file only counts when the live process's command line contains this path.
MARKERS = {"kafka": str(KAFKA_PROPERTIES), "mongo": str(FERRET_BIN)}


class InfraError(Exception):
    """The local infrastructure could not be prepared, started or reached; the message says why."""


def say(message: str) -> None:
    print(message, flush=True)


def pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def log_file(name: str) -> Path:
    return LOG_DIR / f"{name}.log"


def running_pid(name: str) -> int | None:
    """PID of our live server process; a PID file naming anything else is stale and removed."""
    path = pid_file(name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE and MARKERS[name] in " ".join(proc.cmdline()):
            return pid
    except psutil.NoSuchProcess:
        pass
    except psutil.Error:
        # Could not look at it right now: keep the file, or the server would be orphaned.
        return pid
    path.unlink(missing_ok=True)
    return None


def is_running(name: str) -> bool:
    """True when our ``kafka`` or ``mongo`` process is alive (it may still be starting)."""
    return running_pid(name) is not None


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with log_file(name).open("a") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} devstack starting {name}\n")
        log.flush()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(name).write_text(f"{proc.pid}\n")
    return proc.pid


def stop(name: str, timeout: float = 20.0) -> int | None:
    """SIGTERM our process (SIGKILL after ``timeout``); return its PID, or None if none was running."""
    pid = running_pid(name)
    if pid is None:
        return None
    proc = psutil.Process(pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except psutil.TimeoutExpired:
        say(f"{name}: pid {pid} still alive after {timeout:.0f} s, sending SIGKILL")
        proc.kill()
        proc.wait(10)
    except psutil.NoSuchProcess:
        pass
    pid_file(name).unlink(missing_ok=True)
    return pid


def crash(name: str, timeout: float = 10.0) -> int | None:
    """SIGKILL our ``kafka`` or ``mongo`` process, as a power cut would stop it; return its PID, or
    None if it was not running (for the chaos suite: a fault that did not happen must be seen)."""
    pid = running_pid(name)
    if pid is None:
        return None
    proc = psutil.Process(pid)
    proc.kill()
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.wait(timeout)
    pid_file(name).unlink(missing_ok=True)
    return pid


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (a zombie does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # it exists, we just could not look at it


def _listening_ports(pid: int) -> set[int]:
    try:
        return {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == "LISTEN"}
    except psutil.Error:
        return set()


def _wait_ready(name: str, pid: int, ready: Callable[[], bool], timeout: float, spawned: bool) -> None:
    """Wait for ``ready``; on timeout stop the process only if this call ``spawned`` it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            pid_file(name).write_text(f"{pid}\n")  # a momentary check failure may have removed it
            return
        # Ask about the process itself: a transient failure to read its details is not an exit.
        if not _alive(pid):
            raise InfraError(f"{name} (pid {pid}) exited during startup; last log lines:\n{_tail(log_file(name))}")
        time.sleep(0.5)
    if spawned:
        stop(name)
    raise InfraError(
        f"{name} (pid {pid}{', now stopped' if spawned else ''}) did not answer within {timeout:.0f} s; "
        f"last lines of {log_file(name)}:\n{_tail(log_file(name))}"
    )


def run_logged(
    argv: Sequence[str],
    log: Path,
    label: str,
    unit: str,
    counted: Callable[[str], bool],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run a build step, appending its output to ``log``; every 10 s print how many lines were ``counted``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started, count = time.monotonic(), [0]
    with log.open("a") as out:
        out.write(f"\n==== {' '.join(argv)}\n")
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                count[0] += counted(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        while True:
            try:
                proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                say(f"  ... {label}: {time.monotonic() - started:.0f} s, {count[0]} {unit}")
        reader.join()
    if proc.returncode != 0:
        raise InfraError(f"{label} failed (exit {proc.returncode}); last lines of {log}:\n{_tail(log)}")
    say(f"  {label}: done in {time.monotonic() - started:.0f} s ({count[0]} {unit})")


def require_tool(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise InfraError(f"`{tool}` not found on PATH; {hint}")
    return path


def start(
    name: str, ports: tuple[int, ...], answers: Callable[[], bool], prepare: Callable[[], int], timeout: float
) -> int | None:
    """Start server ``name`` with ``prepare`` (returns the PID) unless it answers; wait until it does."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with (RUN_DIR / f"{name}.lock").open("w") as lock:  # one `up` at a time per server
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid, state = _start_locked(name, ports, answers, prepare)
    if state == "ready":
        return pid
    assert pid is not None
    started = time.monotonic()
    _wait_ready(name, pid, answers, timeout, spawned=state == "spawned")
    say(f"{name}: ready after {time.monotonic() - started:.1f} s")
    return pid


def _start_locked(
    name: str, ports: tuple[int, ...], answers: Callable[[], bool], prepare: Callable[[], int]
) -> tuple[int | None, str]:
    """Return the PID and "ready", "starting" (someone else started it) or "spawned" (we did)."""
    pid = running_pid(name)
    if pid is not None:
        if answers():
            say(f"{name}: already running (pid {pid}) on 127.0.0.1:{ports[0]}")
            return pid, "ready"
        listening = _listening_ports(pid)
        if listening and not listening & set(ports):
            raise InfraError(
                f"{name}: our process (pid {pid}) listens on {sorted(listening)}, not on "
                f"127.0.0.1:{ports[0]} (configuration changed?); run `down` first"
            )
        say(f"{name}: pid {pid} is still starting, waiting for 127.0.0.1:{ports[0]} ...")
        return pid, "starting"
    for port in ports:
        if port_open(port):
            if port == ports[0] and answers():
                say(f"{name}: a server not started by devstack answers on 127.0.0.1:{port}; using it")
                return None, "ready"
            raise InfraError(f"{name}: port {port} on 127.0.0.1 is taken by a process that is not ours")
    pid = prepare()
    say(f"{name}: started pid {pid}, waiting for 127.0.0.1:{ports[0]} ...")
    return pid, "spawned"
