"""The audit log: one JSON object a line, each chained to the one before it by sha256.

Every record carries ``seq`` (1, 2, 3, ...), ``prev_hash`` (the previous record's ``hash``, or
64 zeros for the first) and ``hash``: sha256 over the record's canonical JSON (sorted keys, no
spaces, UTF-8) without the ``hash`` field. Editing a record breaks its own hash; deleting,
inserting or reordering records breaks a link; cutting records off the end is caught by the head
file (``audit.jsonl.head``: the seq and hash of the last record), written after every append.

Archiving: move ``audit.jsonl`` away and keep the head; the next append continues the chain
from the head (seq N+1, prev_hash of record N), so the new log starts where the archived one
ended and a sink that holds both stays one chain. Records removed from the start of a log look
like such an archive, locally and against the sink alike (the sink still holds them).

Appends hold an exclusive flock on the log itself, so records of concurrent processes never
interleave and never fork the chain; readers hold a shared one and see whole records only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abaco_cli.runtime.atomic import write_text_atomic

GENESIS = "0" * 64
_TAIL_CHUNK = 1 << 16


def canonical(record: Mapping[str, Any]) -> bytes:
    """The exact bytes a record's hash is taken over (and, with its hash, the line written)."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_hash(record: Mapping[str, Any]) -> str:
    """sha256 of the record's canonical JSON without its own ``hash`` field."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


@dataclass(frozen=True)
class LogLine:
    """One line of the log: its 1-based number and the record, or None when it does not parse."""

    number: int
    record: dict[str, Any] | None
    raw: str


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str


@dataclass(frozen=True)
class ChainProblem:
    """Something `audit verify` reports about the log itself."""

    kind: str  # unparseable | edited | broken_link | truncated | head_mismatch | head_missing
    where: str
    message: str


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _last_record(fd: int) -> tuple[dict[str, Any] | None, bool]:
    """The last record that parses, and whether the file ends in a newline (a torn last line)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None, True
    ends_clean = os.pread(fd, 1, size - 1) == b"\n"
    position = size
    carry = b""
    while position > 0:
        start = max(0, position - _TAIL_CHUNK)
        carry = os.pread(fd, position - start, start) + carry
        position = start
        pieces = carry.split(b"\n")
        # pieces[0] may be cut at the chunk boundary unless the whole file has been read
        complete = pieces if position == 0 else pieces[1:]
        for piece in reversed(complete):
            record = _parse(piece) if piece.strip() else None
            if record is not None and isinstance(record.get("seq"), int):
                return record, ends_clean
        carry = pieces[0] if position > 0 else b""
    return None, ends_clean


class AuditLog:
    """The append-only JSON Lines file and its head."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.head_path = path.with_name(path.name + ".head")

    def append(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Chain ``fields`` to the last record and append it durably; returns the record."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last, ends_clean = _last_record(fd)
            record: dict[str, Any] = dict(fields)
            if last is not None:
                record["seq"] = int(last["seq"]) + 1
                record["prev_hash"] = str(last.get("hash", GENESIS))
            else:
                archived = self._read_head()  # a new log after an archive continues the chain
                record["seq"] = archived.seq + 1 if archived else 1
                record["prev_hash"] = archived.hash if archived else GENESIS
            record["hash"] = record_hash(record)
            line = canonical(record) + b"\n"
            if not ends_clean:
                line = b"\n" + line  # leave a torn line (a crash mid-write) on a line of its own
            os.write(fd, line)
            os.fsync(fd)
            head = {"seq": record["seq"], "hash": record["hash"]}
            write_text_atomic(self.head_path, json.dumps(head) + "\n", f"{os.getpid()}")
            return record
        finally:
            os.close(fd)  # closing releases the flock

    @contextmanager
    def _shared(self) -> Iterator[int | None]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield fd
        finally:
            os.close(fd)

    def read(self) -> tuple[list[LogLine], Head | None, bool]:
        """Every line, the head, and whether the log file exists at all."""
        with self._shared() as fd:
            if fd is None:
                return [], self._read_head(), False
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read()
            head = self._read_head()
        lines: list[LogLine] = []
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if raw.strip():
                lines.append(LogLine(number, _parse(raw), raw.decode("utf-8", "replace")))
        return lines, head, True

    def records(self) -> list[dict[str, Any]]:
        """Every record that parses, in file order (for listing, not for verification)."""
        lines, _, _ = self.read()
        return [line.record for line in lines if line.record is not None]

    def _read_head(self) -> Head | None:
        try:
            data = json.loads(self.head_path.read_text(encoding="utf-8"))
            return Head(int(data["seq"]), str(data["hash"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def first_seq(lines: list[LogLine]) -> int | None:
    """The seq the log starts at (above 1: it continues an archived log)."""
    for line in lines:
        if line.record is not None and isinstance(line.record.get("seq"), int):
            return int(line.record["seq"])
    return None


def _where(line: LogLine) -> str:
    record = line.record or {}
    detail = f"seq {record.get('seq')}, run {record.get('run_id')}" if record else "unreadable"
    return f"line {line.number} ({detail})"


def check_chain(lines: list[LogLine], head: Head | None, exists: bool) -> list[ChainProblem]:
    """Every edited record, broken link and cut-off end of the log."""
    problems: list[ChainProblem] = []
    previous: LogLine | None = None
    prev_hash, prev_seq = GENESIS, 0
    first = next((line for line in lines if line.record is not None), None)
    if first is not None and first.record is not None:
        start = first.record.get("seq")
        if isinstance(start, int) and start > 1:  # continues an archived log
            prev_hash, prev_seq = str(first.record.get("prev_hash")), start - 1
    for line in lines:
        record = line.record
        if record is None:
            problems.append(
                ChainProblem(
                    "unparseable",
                    _where(line),
                    f"line {line.number} is not a JSON record (edited, or torn by a crash)",
                )
            )
            continue
        stored = record.get("hash")
        if stored != record_hash(record):
            problems.append(
                ChainProblem(
                    "edited",
                    _where(line),
                    f"{_where(line)}: the record was edited: its content no longer matches its "
                    "hash",
                )
            )
        seq = record.get("seq")
        if record.get("prev_hash") != prev_hash or seq != prev_seq + 1:
            before = f"line {previous.number} (seq {prev_seq})" if previous else "the start"
            problems.append(
                ChainProblem(
                    "broken_link",
                    _where(line),
                    f"{_where(line)}: broken link after {before}: records were removed, "
                    f"inserted or reordered here, or the record before was edited "
                    f"(expected seq {prev_seq + 1}, found {seq})",
                )
            )
        previous = line
        prev_hash = str(stored)
        prev_seq = seq if isinstance(seq, int) else prev_seq + 1
    problems += _check_head([line for line in lines if line.record], head, exists)
    return problems


def _check_head(lines: list[LogLine], head: Head | None, exists: bool) -> list[ChainProblem]:
    if head is None:
        if lines:
            return [
                ChainProblem(
                    "head_missing",
                    "head",
                    "the head file (last seq and hash) is missing; records at the end may have "
                    "been removed",
                )
            ]
        return []
    if not exists or not lines:
        return [
            ChainProblem(
                "truncated",
                "head",
                f"the log is {'missing' if not exists else 'empty'} but its head says record "
                f"seq {head.seq} was written",
            )
        ]
    by_seq = {line.record.get("seq"): line for line in lines if line.record is not None}
    last_seq = max((s for s in by_seq if isinstance(s, int)), default=0)
    if head.seq > last_seq:
        return [
            ChainProblem(
                "truncated",
                "head",
                f"the log ends at seq {last_seq} but its head says seq {head.seq} was "
                f"written: {head.seq - last_seq} record(s) were cut off the end",
            )
        ]
    matching = by_seq.get(head.seq)
    if matching is None or matching.record is None or matching.record.get("hash") != head.hash:
        return [
            ChainProblem(
                "head_mismatch",
                "head",
                f"record seq {head.seq} does not have the hash the head file recorded",
            )
        ]
    if last_seq > head.seq + 1:
        return [
            ChainProblem(
                "head_mismatch",
                "head",
                f"{last_seq - head.seq} records follow the last one the head file recorded "
                f"(seq {head.seq}): appended without abaco?",
            )
        ]
    return []
