"""CPU and RSS accounting over the stack's processes, on an in-memory process table."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from devstack.launcher import PidFile, read_pid_files
from load.usage import ProcStat, StackUsage, pid_file_roots


@dataclass
class FakeProcess:
    parent: int
    started_at: float
    cpu_s: float = 0.0
    rss: int = 0


@dataclass
class FakeProcessTable:
    """A machine's processes: pid -> FakeProcess; a process that exits is removed."""

    processes: dict[int, FakeProcess] = field(default_factory=dict)

    def spawn(self, pid: int, parent: int = 1, started_at: float = 100.0, cpu_s: float = 0.0, rss: int = 0) -> None:
        self.processes[pid] = FakeProcess(parent, started_at, cpu_s, rss)

    def exit(self, pid: int) -> None:
        del self.processes[pid]

    def parents(self) -> dict[int, int]:
        return {pid: proc.parent for pid, proc in self.processes.items()}

    def stat(self, pid: int) -> ProcStat | None:
        proc = self.processes.get(pid)
        return None if proc is None else ProcStat(proc.started_at, proc.cpu_s, proc.rss)


def test_counts_cpu_of_the_roots_and_all_their_descendants_used_since_start():
    table = FakeProcessTable()
    table.spawn(10, cpu_s=5.0)  # order-api: the gunicorn master
    table.spawn(11, parent=10, cpu_s=7.0)  # its worker
    table.spawn(12, parent=11, cpu_s=1.0)  # and a grandchild
    usage = StackUsage(lambda: {"order": [10]}, table)
    usage.start()
    table.processes[10].cpu_s += 0.5
    table.processes[11].cpu_s += 2.0
    table.processes[12].cpu_s += 0.25
    usage.sample()
    assert usage.cpu_seconds() == 2.75
    assert usage.processes_seen() == 3


def test_counts_no_process_outside_the_stack():
    table = FakeProcessTable()
    table.spawn(10)
    table.spawn(20)  # another stack's service on the same box
    table.spawn(21, parent=20)
    usage = StackUsage(lambda: {"order": [10]}, table)
    usage.start()
    table.processes[20].cpu_s += 50.0
    table.processes[21].cpu_s += 50.0
    table.processes[10].cpu_s += 1.0
    usage.sample()
    assert usage.cpu_seconds() == 1.0


def test_a_process_that_exits_keeps_its_last_sampled_cpu_and_one_that_appears_counts_in_full():
    table = FakeProcessTable()
    table.spawn(10, cpu_s=1.0)
    table.spawn(11, parent=10, cpu_s=3.0)  # a gunicorn worker that will be replaced
    usage = StackUsage(lambda: {"order": [10]}, table)
    usage.start()
    table.processes[11].cpu_s = 4.5
    usage.sample()
    table.exit(11)
    table.spawn(13, parent=10, started_at=200.0, cpu_s=0.75)  # its replacement
    usage.sample()
    table.processes[13].cpu_s = 2.0
    usage.sample()
    assert usage.cpu_seconds() == 1.5 + 2.0
    assert usage.processes_seen() == 3


def test_a_restarted_service_found_through_new_roots_is_counted():
    table = FakeProcessTable()
    roots = {"payment": [30]}
    table.spawn(30, cpu_s=10.0)
    usage = StackUsage(lambda: roots, table)
    usage.start()
    table.processes[30].cpu_s = 12.0
    usage.sample()
    table.exit(30)  # killed mid-run, and started again by the launcher with a new PID file
    table.spawn(31, started_at=300.0, cpu_s=0.5)
    table.spawn(32, parent=31, started_at=300.5, cpu_s=0.5)
    roots["payment"] = [31]
    usage.sample()
    assert usage.cpu_seconds() == 2.0 + 1.0


def test_a_reused_pid_is_a_new_process():
    table = FakeProcessTable()
    table.spawn(10)
    table.spawn(11, parent=10, started_at=100.0, cpu_s=4.0)
    usage = StackUsage(lambda: {"order": [10]}, table)
    usage.start()
    table.exit(11)
    table.spawn(11, parent=10, started_at=250.0, cpu_s=1.0)  # same PID, another process
    usage.sample()
    assert usage.cpu_seconds() == 1.0


def test_peak_rss_is_the_largest_process_of_each_service_over_the_samples():
    table = FakeProcessTable()
    table.spawn(10, rss=50)
    table.spawn(11, parent=10, rss=70)
    table.spawn(20, rss=30)
    usage = StackUsage(lambda: {"order": [10], "payment": [20]}, table)
    usage.start()
    table.processes[11].rss = 90
    usage.sample()
    table.exit(11)
    usage.sample()
    assert usage.peak_rss == {"order": 90, "payment": 30}


def write_pid_file(directory: Path, name: str, pid: int, written_at: float) -> None:
    path = directory / f"{name}.pid"
    path.write_text(f"{pid}\n")
    os.utime(path, (written_at, written_at))


def test_roots_come_from_live_pid_files_grouped_by_service_and_stale_ones_are_skipped(tmp_path: Path):
    table = FakeProcessTable()
    table.spawn(10, started_at=1000.0)
    table.spawn(11, started_at=1000.0)
    table.spawn(12, started_at=1000.0)
    table.spawn(13, started_at=5000.0)  # got the PID of a child that died, long after its file was written
    write_pid_file(tmp_path, "order-api", 10, 1000.2)
    write_pid_file(tmp_path, "order-worker", 11, 1000.2)
    write_pid_file(tmp_path, "payment-worker-1", 12, 1000.2)
    write_pid_file(tmp_path, "inventory-api", 13, 1000.2)
    write_pid_file(tmp_path, "inventory-worker", 14, 1000.2)  # gone
    assert read_pid_files(tmp_path)[0] == PidFile("inventory-api", 13, 1000.2)
    assert pid_file_roots(table, tmp_path) == {"order": [10, 11], "payment": [12]}
