"""The launcher's PID files: written per child, removed when that child is stopped or killed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devstack import launcher


def sleeping_child(tmp_path: Path, replica: int = 0) -> launcher.Child:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    return launcher.Child("order", "worker", replica, process, tmp_path / "order-worker.log", tmp_path)


def test_a_child_pid_file_holds_its_pid_and_stop_removes_it(tmp_path: Path):
    child = sleeping_child(tmp_path, replica=2)
    launcher.write_pid_file(child)
    assert child.pid_path == tmp_path / "order-worker-2.pid"
    assert child.pid_path.read_text() == f"{child.process.pid}\n"
    (found,) = launcher.read_pid_files(tmp_path)
    assert (found.name, found.service, found.pid) == ("order-worker-2", "order", child.process.pid)
    launcher.stop([child], timeout=5)
    assert child.process.returncode is not None
    assert not child.pid_path.exists()


def test_kill_removes_the_pid_file(tmp_path: Path):
    child = sleeping_child(tmp_path)
    launcher.write_pid_file(child)
    launcher.kill([child])
    assert not child.pid_path.exists()
    assert launcher.read_pid_files(tmp_path) == []


def test_stopping_a_child_leaves_the_pid_file_its_successor_wrote(tmp_path: Path):
    old, new = sleeping_child(tmp_path), sleeping_child(tmp_path)
    try:
        launcher.write_pid_file(old)
        launcher.write_pid_file(new)  # restarted under the same name before the old one was reaped
        launcher.kill([old])
        assert new.pid_path.read_text() == f"{new.process.pid}\n"
    finally:
        launcher.kill([new])
    assert not new.pid_path.exists()
