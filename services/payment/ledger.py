"""The simulated gateway's statement: one JSON line per charge attempt and refund, kept in a file.

A real gateway keeps its own books, apart from ours. The simulation gets the same from an
append-only file that every payment process (API and workers, all replicas) writes and that
survives restarts: the answer to an idempotency key is the first one written for it, whoever
wrote it and however often the process died since. The chaos suite reads the same file as an
independent witness of how much money moved per order.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

CHARGE, REFUND = "charge", "refund"


class GatewayLedger:
    """Append-only JSON lines under an exclusive file lock, read back from where this process stopped."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: BinaryIO = self.path.open("a+b")  # O_APPEND: every write lands at the end
        self._offset = 0
        self._lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[list[dict[str, Any]]]:
        """Hold the ledger (across threads and processes) and yield the lines others wrote since the last look."""
        with self._lock:
            fcntl.flock(self._file, fcntl.LOCK_EX)
            try:
                yield self._read_new()
            finally:
                fcntl.flock(self._file, fcntl.LOCK_UN)

    def append(self, entry: dict[str, Any]) -> None:
        """Write one line; call inside ``session`` so nobody writes in between."""
        line = json.dumps({**entry, "pid": os.getpid()}, separators=(",", ":")).encode() + b"\n"
        self._file.write(line)
        self._file.flush()
        self._offset = self._file.tell()

    def close(self) -> None:
        self._file.close()

    def _read_new(self) -> list[dict[str, Any]]:
        self._file.seek(self._offset)
        data = self._file.read()
        if data and not data.endswith(b"\n"):
            # A line cut short by a crash mid-write (we hold the lock, so nobody is writing it now):
            # end it, so the next line starts on its own and only the torn one is unreadable.
            self._file.write(b"\n")
            self._file.flush()
            data += b"\n"
        self._offset += len(data)
        entries = []
        for raw in data.splitlines():
            try:
                entries.append(json.loads(raw))
            except ValueError:
                continue  # a torn line
        return entries


def read_ledger(path: Path | str) -> list[dict[str, Any]]:
    """Every whole line of a ledger file (for witnesses and tests)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    entries = []
    for line in raw.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def money_by_order(entries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per order: charges approved and refunds made (first answers only, replays excluded), and the net."""
    books: dict[str, dict[str, float]] = {}
    for entry in entries:
        if entry.get("replay"):
            continue
        book = books.setdefault(entry["order_id"], {"charges": 0, "refunds": 0, "charged": 0.0, "refunded": 0.0})
        if entry["op"] == CHARGE and entry["approved"]:
            book["charges"] += 1
            book["charged"] = round(book["charged"] + entry["amount"], 2)
        elif entry["op"] == REFUND:
            book["refunds"] += 1
            book["refunded"] = round(book["refunded"] + entry["amount"], 2)
    for book in books.values():
        book["net"] = round(book["charged"] - book["refunded"], 2)
    return books
