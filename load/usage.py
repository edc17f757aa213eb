"""What a stack's own processes use: CPU seconds and peak RSS, for the benchmark (load.bench).

The stack is found from its root processes (the launcher's PID files, or the children this process
started) plus all their descendants, found again on every sample, so processes that restart or
appear mid-run count too. ``Sampler`` samples in the background every 0.5 s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

from devstack import launcher


@dataclass(frozen=True)
class ProcStat:
    started_at: float  # with the PID, names one process: PIDs get reused
    cpu_s: float  # user + system
    rss: int


class ProcessTable(Protocol):
    """The machine's processes, as far as the benchmark needs them."""

    def parents(self) -> dict[int, int]:
        """Return every process's parent: pid -> ppid."""
        ...

    def stat(self, pid: int) -> ProcStat | None:
        """Return the process's start time, CPU seconds and RSS; None once it is gone."""
        ...


class PsutilProcessTable:
    def parents(self) -> dict[int, int]:
        return {proc.pid: proc.info["ppid"] for proc in psutil.process_iter(["ppid"])}

    def stat(self, pid: int) -> ProcStat | None:
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                return ProcStat(proc.create_time(), times.user + times.system, proc.memory_info().rss)
        except psutil.Error:
            return None


Roots = Callable[[], dict[str, list[int]]]  # service -> the PIDs of the processes the launcher started


def pid_file_roots(table: ProcessTable, directory: Path = launcher.PID_DIR) -> dict[str, list[int]]:
    """Return the live processes named by the launcher's PID files, by service. A file whose PID is
    gone, or now belongs to a process started after the file was written, is stale and skipped."""
    roots: dict[str, list[int]] = {}
    for pid_file in launcher.read_pid_files(directory):
        stat = table.stat(pid_file.pid)
        if stat is None or stat.started_at > pid_file.written_at + PID_CLOCK_SLACK_S:
            continue
        roots.setdefault(pid_file.service, []).append(pid_file.pid)
    return roots


PID_CLOCK_SLACK_S = 2.0  # process start times are derived from the boot time, in whole seconds


def children_roots(children: list[launcher.Child]) -> Roots:
    """Return the roots of a stack this process started itself."""

    def roots() -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for child in children:
            found.setdefault(child.service, []).append(child.process.pid)
        return found

    return roots


class StackUsage:
    """CPU seconds and peak RSS of a stack: its root processes and all their descendants, found
    again on every sample, so processes that restart or appear mid-run are counted. A process that
    exits keeps the CPU time it had at its last sample (so up to one interval of it is missed)."""

    def __init__(self, roots: Roots, table: ProcessTable) -> None:
        self._roots = roots
        self._table = table
        self._lock = threading.Lock()
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, started_at) -> CPU seconds last seen
        self._baseline: dict[tuple[int, float], float] = {}
        self.peak_rss: dict[str, int] = {}  # service -> the largest process's RSS, bytes

    def sample(self) -> None:
        """Find the stack's processes now and record each one's CPU time and RSS."""
        with self._lock:
            children: dict[int, list[int]] = {}
            for pid, ppid in self._table.parents().items():
                children.setdefault(ppid, []).append(pid)
            for service, pids in self._roots().items():
                largest = 0
                for pid in descendants_and_self(pids, children):
                    stat = self._table.stat(pid)
                    if stat is None:
                        continue
                    self._cpu[(pid, stat.started_at)] = stat.cpu_s
                    largest = max(largest, stat.rss)
                self.peak_rss[service] = max(self.peak_rss.get(service, 0), largest)

    def start(self) -> None:
        """Sample, and count CPU from here: what the processes running now have used is left out."""
        self.sample()
        with self._lock:
            self._baseline = dict(self._cpu)
            self.peak_rss = dict.fromkeys(self.peak_rss, 0)

    def cpu_seconds(self) -> float:
        """Return the CPU seconds the stack's processes used since ``start``, as last sampled."""
        with self._lock:
            return sum(cpu - self._baseline.get(key, 0.0) for key, cpu in self._cpu.items())

    def processes_seen(self) -> int:
        with self._lock:
            return len(self._cpu)


def descendants_and_self(roots: list[int], children: dict[int, list[int]]) -> list[int]:
    found, queue = [], list(roots)
    seen = set(queue)
    while queue:
        pid = queue.pop()
        found.append(pid)
        for child in children.get(pid, []):
            if child not in seen:
                seen.add(child)
                queue.append(child)
    return found


class Sampler(threading.Thread):
    """Sample the stack's usage every ``interval`` seconds until stopped."""

    def __init__(self, usage: StackUsage, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.usage = usage
        self.interval = interval
        self.stop = threading.Event()
        self.error: Exception | None = None  # why sampling stopped early: the CPU figure is short

    def run(self) -> None:
        try:
            while not self.stop.wait(self.interval):
                self.usage.sample()
        except Exception as err:
            self.error = err
            raise
