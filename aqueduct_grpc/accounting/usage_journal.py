"""A write-ahead file of requests in flight, so that a crash cannot make one vanish.

Each process appends to a journal of its own in the data folder: a line when a
request starts, one when it is admitted (its model, team and known cost), and
its finished row until the database has it. Lines are written with `write()`,
so they are in the kernel's page cache when the call returns and survive
`kill -9` of the process (not a power cut: that would need an fsync per
request). A finished row is written at once, before its answer leaves; the
start and admission lines of all requests of one event-loop turn share one
`write()` at the end of the turn (each syscall lets other threads take the
GIL, which cost a tenth of a millisecond per request when each line had its own).
The owner holds an exclusive `flock` on its lock file while it lives;
whoever can take that lock knows the owner is dead and claims its journal: rows
that were finished are written as they were, requests that were in flight as
`INTERRUPTED`, charged their known price.

The journal never says "done": whether a request's row reached the database is
read back by its `request_key` at recovery, so a crash between the commit and
any note of it cannot count a request twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import pathlib
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aqueduct_grpc.accounting.usage_record import USAGE_COLUMNS, UsageRecord

__all__ = ["INTERRUPTED", "ClaimedJournal", "UsageJournal"]

log = logging.getLogger(__name__)

INTERRUPTED = "INTERRUPTED"
"""The status of a request that was in flight when its process died."""

_PREFIX = "usage-journal-"


@dataclass
class _Open:
    """A request in flight, as its journal lines describe it."""

    row: UsageRecord
    admitted: dict[str, Any] | None = None


class UsageJournal:
    """This process's journal: appends, and rewrites itself small now and then."""

    def __init__(self, folder: str | os.PathLike[str], *, rewrite_every: int = 20_000) -> None:
        """Creates the UsageJournal; `open()` starts it.

        Args:
            folder: where journals live (the data folder; replicas may share it).
            rewrite_every: lines after which the file is rewritten with only
                what is still open, so it stays small.
        """
        self._folder = pathlib.Path(folder)
        self._rewrite_every = rewrite_every
        self._name = _PREFIX + secrets.token_hex(6)
        self._lock_fd = -1
        self._fd = -1
        self._generation = 0
        self._lines = 0
        self._open: dict[str, _Open] = {}
        # Finished rows written here and not yet in the database: handed to
        # the writer (`ending`), or refused by the database for now (`spilled`).
        self._ending: dict[str, UsageRecord] = {}
        self._spilled: dict[str, UsageRecord] = {}
        self._buffer: list[bytes] = []
        self._flush_scheduled = False

    def open(self) -> None:
        """Takes this process's lock and starts its first file."""
        self._folder.mkdir(parents=True, exist_ok=True)
        # Locked under a name claimers do not look at, then renamed: no one can
        # ever find this lock file unlocked and take the journal of a live process.
        hidden = self._folder / f".{self._name}.lock"
        self._lock_fd = os.open(hidden, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        hidden.rename(self._folder / f"{self._name}.lock")
        self._fd = self._new_file()

    def close(self) -> None:
        """Removes the journal when nothing in it is still owed, and releases the lock.

        Rows still spilled (the database never took them) stay on disk for the
        next process to claim.
        """
        if self._fd < 0:
            return
        self._flush()
        os.close(self._fd)
        self._fd = -1
        if not self._open and not self._ending and not self._spilled:
            for path in self._files():
                path.unlink(missing_ok=True)
            (self._folder / f"{self._name}.lock").unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = -1

    def started(self, row: UsageRecord) -> None:
        """Notes a request that has begun (its row carries its `request_key`)."""
        self._open[row.request_key] = _Open(row)
        self._append({"start": _fields(row)})

    def admitted(self, row: UsageRecord, *, team_id: str | None, estimate: float | None) -> None:
        """Notes the admitted request's model, team and its cost when known in advance."""
        note = {"key": row.request_key, "model": row.model, "team_id": team_id, "cost": estimate}
        entry = self._open.get(row.request_key)
        if entry is not None:
            entry.admitted = note
        self._append({"admit": note})

    def ended(self, row: UsageRecord) -> None:
        """Keeps a finished row on its way to the database: from now on no crash can lose it."""
        self._open.pop(row.request_key, None)
        self._ending[row.request_key] = row
        self._append({"row": _fields(row)}, now=True)

    def finished(self, row: UsageRecord) -> None:
        """Forgets a request whose row is in the database."""
        self._open.pop(row.request_key, None)
        self._ending.pop(row.request_key, None)
        self._spilled.pop(row.request_key, None)
        if self._lines >= self._rewrite_every:
            self._rewrite()

    def spilled(self, row: UsageRecord) -> None:
        """Keeps a finished row the database could not take, until it does."""
        key = row.request_key
        self._open.pop(key, None)
        if self._ending.pop(key, None) is None and key not in self._spilled:
            self._append({"row": _fields(row)}, now=True)  # else its line is there already
        self._spilled[key] = row

    def owed(self) -> list[UsageRecord]:
        """Finished rows the database has not taken yet."""
        return list(self._spilled.values())

    def claim_dead(self) -> Iterator[ClaimedJournal]:
        """The journals of processes that are gone, each locked for the caller."""
        for lock_path in sorted(self._folder.glob(f"{_PREFIX}*.lock")):
            name = lock_path.name.removesuffix(".lock")
            if name == self._name:
                continue
            try:
                fd = os.open(lock_path, os.O_RDWR)
            except FileNotFoundError:
                continue  # claimed and removed by someone else meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # its owner is alive
                continue
            yield ClaimedJournal(self._folder, name, fd)

    def _append(self, entry: dict[str, Any], *, now: bool = False) -> None:
        self._buffer.append(_line(entry))
        self._lines += 1
        if now:
            self._flush()
        elif not self._flush_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (the CLI, tests): write at once
                self._flush()
                return
            self._flush_scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._buffer and self._fd >= 0:
            os.write(self._fd, b"".join(self._buffer))
        self._buffer.clear()

    def _rewrite(self) -> None:
        # The new file holds all that is still owed before the old one goes, so
        # a crash in between leaves duplicates (recovery keeps one per key),
        # never a gap.
        self._flush()
        old = self._files()
        self._generation += 1
        lines = []
        for entry in self._open.values():
            lines.append(_line({"start": _fields(entry.row)}))
            if entry.admitted is not None:
                lines.append(_line({"admit": entry.admitted}))
        for row in [*self._ending.values(), *self._spilled.values()]:
            lines.append(_line({"row": _fields(row)}))
        fd = self._new_file()
        os.write(fd, b"".join(lines))
        os.close(self._fd)
        self._fd = fd
        self._lines = len(lines)
        for path in old:
            path.unlink(missing_ok=True)

    def _new_file(self) -> int:
        path = self._folder / f"{self._name}.{self._generation}.jsonl"
        return os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)

    def _files(self) -> list[pathlib.Path]:
        return sorted(self._folder.glob(f"{self._name}.*.jsonl"))


class ClaimedJournal:
    """A dead process's journal, locked by the claimer until it is `removed()`."""

    def __init__(self, folder: pathlib.Path, name: str, lock_fd: int) -> None:
        """Creates the ClaimedJournal.

        Args:
            folder: the journals' folder.
            name: the dead journal's name.
            lock_fd: its lock file, flocked by the claimer.
        """
        self._folder = folder
        self._name = name
        self._lock_fd = lock_fd

    def rows(self) -> list[UsageRecord]:
        """What the dead process owed: finished rows, and in-flight requests as INTERRUPTED."""
        started: dict[str, UsageRecord] = {}
        admitted: dict[str, dict[str, Any]] = {}
        finished: dict[str, UsageRecord] = {}
        for entry in self._entries():
            if "start" in entry:
                row = _record(entry["start"])
                started[row.request_key] = row
            elif "admit" in entry:
                admitted[entry["admit"]["key"]] = entry["admit"]
            elif "row" in entry:
                row = _record(entry["row"])
                finished[row.request_key] = row
        for key, row in started.items():
            if key not in finished:
                finished[key] = _interrupted(row, admitted.get(key))
        return list(finished.values())

    def remove(self) -> None:
        """Deletes the journal once what it owed is in the database."""
        for path in self._folder.glob(f"{self._name}.*.jsonl"):
            path.unlink(missing_ok=True)
        (self._folder / f"{self._name}.lock").unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        """Lets go of the lock, leaving the journal for a later claim."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _entries(self) -> Iterable[dict[str, Any]]:
        for path in sorted(self._folder.glob(f"{self._name}.*.jsonl")):
            for line in path.read_bytes().splitlines():
                # The last line of a process killed mid-write may be cut short.
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        yield entry


def _interrupted(row: UsageRecord, admitted: dict[str, Any] | None) -> UsageRecord:
    row.status, row.error_reason = INTERRUPTED, INTERRUPTED
    if admitted is not None:
        # The upstream may have done the work: budgets count its known price.
        row.model = admitted.get("model")
        row.team_id = admitted.get("team_id")
        row.cost = admitted.get("cost")
    return row


def _fields(row: UsageRecord) -> dict[str, Any]:
    return {name: value for name, value in vars(row).items() if value is not None}


def _record(raw: dict[str, Any]) -> UsageRecord:
    # Lines leave out None values (`_fields`), the required ones included: a
    # request without a model (the default one) or a listing has none.
    known = {k: v for k, v in raw.items() if k in USAGE_COLUMNS}
    known.setdefault("token_id", None)
    known.setdefault("requested_model", None)
    return UsageRecord(**known)


def _line(entry: dict[str, Any]) -> bytes:
    return (json.dumps(entry, separators=(",", ":")) + "\n").encode()
