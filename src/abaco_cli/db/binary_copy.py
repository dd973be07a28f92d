"""Whole tables out of PostgreSQL as fast as it serves them: parallel binary COPY in one snapshot.

    with TableReader(settings, "core_banking.payments") as reader:
        for batch in reader.batches():    # pyarrow.RecordBatch of reader.schema, in ctid order
            ...

A coordinator connection opens a read-only REPEATABLE READ transaction, exports its snapshot
(or imports the one it is given, e.g. a replication slot's) and splits the table into ranges of
``RANGE_BLOCKS`` heap blocks (its size from ``pg_relation_size``, never the stale
``relpages``; the last range is open-ended). ``workers`` connections (the coordinator is the
first) adopt the snapshot and each runs, range after range,
``COPY (SELECT cols FROM t WHERE ctid >= '(a,0)' AND ctid < '(b,0)') TO STDOUT (FORMAT binary)``
(a TID range scan from PostgreSQL 14 on). A worker writes that query to the connection's socket
and reads the answer from it in large reads that release the GIL (``_SocketCopy``): the rows
are found in the read buffer without a loop over them (``row_messages``) and decoded where they
lie with numpy (db/pgbinary.py) into batches of about ``batch_rows`` rows; libpq sees neither
the query nor its answer and stays in step. On a connection that TLS or GSSAPI encrypts, the
worker reads the CopyData messages through libpq instead, without blocking (it waits for the
socket in ``poll``, so the other threads run meanwhile). The caller's thread receives the
batches in range order, so a table read twice in the same state gives the same rows in the
same order. Memory is bounded by the ranges in flight (one more than the workers), never by
the table.

``read_table`` is the same as a generator; ``copy_table_to_parquet`` (db/table_parquet.py)
writes one table into one zstd Parquet file.
"""

from __future__ import annotations

import array
import logging
import os
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Self

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import pq, sql
from psycopg.errors import error_from_result

from abaco_cli.db.classify import classify
from abaco_cli.db.connect import Connection, SourceIdentity, connect, snapshot
from abaco_cli.db.pgbinary import (
    HEADER_BYTES,
    PADDING,
    SIGNATURE,
    TRAILER,
    Int64s,
    RowDecoder,
    SourceColumn,
    check_supported,
    keep_heap_memory,
    measured_numeric,
    numeric_type,
    row_messages,
)
from abaco_cli.db.snapshot import export_snapshot, import_snapshot, snapshot_time
from abaco_cli.errors import DataError, SourceQueryError, UsageError
from abaco_cli.redaction import Redactor
from abaco_cli.settings import Settings

__all__ = [
    "BATCH_ROWS",
    "RANGE_BLOCKS",
    "BlockRange",
    "TableName",
    "TableReader",
    "read_table",
]
log = logging.getLogger(__name__)

RANGE_BLOCKS = 2048  # heap blocks (8 KiB) per COPY: 16 MiB of table
TAPER_DIVISOR = 8  # the ranges at the end of a table shrink to RANGE_BLOCKS / this
BATCH_ROWS = 32_768  # rows per decoded batch (numpy works best on a few MiB at a time) ...
BATCH_BYTES = 4 << 20  # ... or this many bytes of rows, whichever comes first
READ_BYTES = 4 << 20  # the socket is read into buffers of this size (larger for a larger row)
PARSE_BYTES = 1 << 20  # ... and what was read is parsed this much at a time
TID_RANGE_SCAN = 140_000  # server_version_num of PostgreSQL 14: ctid ranges without a seq scan
_POLL_MS = 500  # how often a waiting worker looks whether the read was stopped
# a read of less than this means the server is slower than the reader: wait a moment before
# the next one, so that reads bring a few server sends each rather than one (the server sends
# 8 KiB at a time; waking up for each costs more than the data is worth)
_SMALL_READ = 64 << 10
_NAP_SECONDS = 0.0003
_MESSAGE_LIMIT = (1 << 30) + 64  # PostgreSQL sends no message larger than 1 GiB
# the protocol's message types (the first byte of each message the server sends)
_COPY_DATA, _COPY_OUT_RESPONSE, _COMMAND_COMPLETE = ord("d"), ord("H"), ord("C")
_READY_FOR_QUERY, _ERROR_RESPONSE, _NOTICE_RESPONSE = ord("Z"), ord("E"), ord("N")
_READY_HEAD = b"Z\x00\x00\x00\x05"  # ReadyForQuery: type, length (then the status)
_IGNORED_MESSAGES = frozenset(b"cSA")  # CopyDone, ParameterStatus, NotificationResponse
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RANGED = ("r", "m", "p")  # heap tables, materialized views, partitioned tables: ctid ranges
_READABLE = (*_RANGED, "v", "f")  # views and foreign tables: one COPY without ranges


@dataclass(frozen=True)
class TableName:
    """A schema-qualified table name of plain lower-case identifiers (also a folder name)."""

    schema: str
    name: str

    @classmethod
    def parse(cls, text: str) -> TableName:
        schema, dot, name = text.strip().partition(".")
        if not dot or not _IDENTIFIER.match(schema) or not _IDENTIFIER.match(name):
            raise UsageError(
                f"{text!r} is not a table name like schema.table (lower-case letters, digits "
                "and _; quoted identifiers are not supported)"
            )
        return cls(schema, name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


@dataclass(frozen=True)
class BlockRange:
    """Heap blocks [first, end) of a table; ``end`` None: to the end (open-ended)."""

    first: int
    end: int | None

    def condition(self) -> sql.Composable:
        parts: list[sql.Composable] = []
        if self.first > 0:
            parts.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({self.first},0)")))
        if self.end is not None:
            parts.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({self.end},0)")))
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


def block_ranges(blocks: int, per_range: int = RANGE_BLOCKS) -> list[BlockRange]:
    """Ranges covering ``blocks``: ``per_range`` blocks each, then smaller ones toward the end
    (a quarter of what is left, down to an eighth of ``per_range``), so that the workers
    finish close together instead of one reading a whole last range alone while the other
    waits (a 2,048-block range of the benchmark's table is 0.15 s of a worker's time). The
    last range is open-ended, so rows on blocks past the measured size are read too."""
    smallest = max(1, per_range // TAPER_DIVISOR)
    starts: list[int] = []
    first = 0
    while first < max(blocks, 1):
        starts.append(first)
        first += min(per_range, max(smallest, -(-(blocks - first) // 4)))
    return [
        BlockRange(first, starts[i + 1] if i + 1 < len(starts) else None)
        for i, first in enumerate(starts)
    ]


# --------------------------------------------------------------------------- the table itself


def relation_facts(conn: Connection, table: TableName) -> tuple[int, str, str]:
    """(oid, relkind, relreplident) of a relation; SourceQueryError when there is none."""
    row = conn.execute(
        "SELECT c.oid, c.relkind, c.relreplident FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (table.schema, table.name),
    ).fetchone()
    if row is None:
        raise SourceQueryError(
            f"table {table} does not exist in the source",
            hint="Check the name (schema.table) and the source database; `abaco config show` "
            "shows which database abaco reads.",
        )
    return int(row[0]), str(row[1]), str(row[2])


def _relation(conn: Connection, table: TableName) -> tuple[int, str]:
    oid, kind, _ = relation_facts(conn, table)
    if kind not in _READABLE:
        raise SourceQueryError(f"{table} is not a table, view or materialized view")
    return oid, kind


def _base_type(conn: Connection, type_oid: int, typmod: int) -> tuple[str, str, int]:
    """(typname, typtype, typmod) of a type, a domain resolved to the type it is based on."""
    for _ in range(32):
        row = conn.execute(
            "SELECT typname, typtype, typbasetype, typtypmod FROM pg_catalog.pg_type "
            "WHERE oid = %s",
            (type_oid,),
        ).fetchone()
        if row is None:  # pragma: no cover - a column's type always exists
            break
        name, kind, base, base_mod = str(row[0]), str(row[1]), int(row[2]), int(row[3])
        if kind != "d":
            return name, kind, typmod
        type_oid, typmod = base, base_mod
    return "unknown", "b", -1  # pragma: no cover


def _numeric_typmod(typmod: int) -> tuple[int | None, int | None]:
    if typmod < 4:
        return None, None
    packed = typmod - 4
    scale = ((packed & 0x7FF) ^ 1024) - 1024  # 11-bit signed since PostgreSQL 15
    return (packed >> 16) & 0xFFFF, scale


def column_of(
    conn: Connection, table: str, name: str, type_oid: int, typmod: int, shown: str
) -> SourceColumn:
    """One column as the reader decodes it (a domain as its base type, an enum as text); a
    DataError naming it when no Arrow type holds it exactly. A numeric without declared
    precision gets precision and scale None (``measure_numerics``)."""
    type_name, kind, base_mod = _base_type(conn, type_oid, typmod)
    if kind == "e":
        type_name = "enum"
    check_supported(table, name, type_name, shown)
    precision: int | None = None
    scale: int | None = None
    if type_name == "numeric":
        declared = numeric_type(table, name, *_numeric_typmod(base_mod))
        if declared is not None:
            precision, scale = declared
    return SourceColumn(name, type_name, precision, scale)


def describe_columns(
    conn: Connection, table: TableName, oid: int, wanted: Sequence[str] | None
) -> list[SourceColumn]:
    """The table's columns (those in ``wanted``, in the table's order), each with the type the
    reader decodes; a DataError naming a column whose type it cannot read exactly. Numeric
    columns without precision get precision and scale None (``measure_numerics``)."""
    rows = conn.execute(
        "SELECT a.attname, a.atttypid, a.atttypmod, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_catalog.pg_attribute a "
        "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (oid,),
    ).fetchall()
    present = {str(r[0]) for r in rows}
    if wanted is not None:
        missing = [c for c in wanted if c not in present]
        if missing:
            raise SourceQueryError(
                f"{table} has no column {', '.join(repr(c) for c in missing)}",
                hint="Check extract.tables against the table (`\\d " + str(table) + "` in psql).",
            )
    chosen = set(wanted) if wanted is not None else present
    columns: list[SourceColumn] = []
    for name, type_oid, typmod, shown in rows:
        if name not in chosen:
            continue
        columns.append(
            column_of(conn, str(table), str(name), int(type_oid), int(typmod), str(shown))
        )
    if not columns:
        raise UsageError(f"no column of {table} is selected")
    return columns


def measure_numerics(
    conn: Connection, table: TableName, columns: list[SourceColumn]
) -> list[SourceColumn]:
    """Give every numeric column without declared precision decimal128(38, s), s the largest
    scale among its values in this snapshot (one pass over the table); a DataError when its
    values need more than 38 digits."""
    open_columns = [c for c in columns if c.type_name == "numeric" and c.precision is None]
    if not open_columns:
        return columns
    parts: list[sql.Composable] = []
    for column in open_columns:
        name = sql.Identifier(column.name)
        parts.append(sql.SQL("max(scale({}))").format(name))
        parts.append(
            sql.SQL(
                "max(length(trunc(abs({}))::text)) FILTER (WHERE scale({}) IS NOT NULL)"
            ).format(name, name)
        )
    query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(parts), table.identifier)
    row = conn.execute(query).fetchone()
    assert row is not None
    measured: dict[str, tuple[int, int]] = {}
    for index, column in enumerate(open_columns):
        places, digits = row[2 * index], row[2 * index + 1]
        measured[column.name] = measured_numeric(
            str(table), column.name, None if digits is None else int(digits),
            None if places is None else int(places),
        )  # fmt: skip
    return [
        SourceColumn(c.name, c.type_name, *measured[c.name]) if c.name in measured else c
        for c in columns
    ]


def table_blocks(conn: Connection, oid: int, kind: str) -> int:
    """The table's size in heap blocks now (for a partitioned table: its largest partition)."""
    if kind == "p":
        query = (
            "SELECT coalesce(max(pg_relation_size(relid)), 0) FROM pg_partition_tree(%s) "
            "WHERE isleaf"
        )
    else:
        query = "SELECT pg_relation_size(%s)"
    row = conn.execute(query, (oid,)).fetchone()
    size = int(row[0]) if row is not None and row[0] is not None else 0
    block = conn.execute("SELECT current_setting('block_size')::int").fetchone()
    return -(-size // int(block[0] if block else 8192))


# -------------------------------------------------------------------------------- one worker


class _StoppedError(Exception):
    """The read was stopped (another worker failed, or the caller went away)."""


def _wait(conn_fd: int, stopping: threading.Event, *, write: bool = False) -> None:
    """Until the socket is ready; the GIL is released meanwhile. _StoppedError when asked to."""
    poller = select.poll()
    poller.register(conn_fd, select.POLLOUT if write else select.POLLIN)
    while not poller.poll(_POLL_MS):
        if stopping.is_set():
            raise _StoppedError


def _result(pgconn: pq.abc.PGconn, stopping: threading.Event) -> pq.abc.PGresult | None:
    """The next result of the running statement, without blocking the other threads."""
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            return pgconn.get_result()
        _wait(pgconn.socket, stopping)


def _raise_for(result: pq.abc.PGresult | None, conn: Connection) -> None:
    if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
        raise error_from_result(result, encoding=conn.info.encoding)


def _strip_header(data: memoryview, table: TableName) -> memoryview:
    """The first message of a binary COPY starts with its header: check and drop it."""
    if bytes(data[: len(SIGNATURE)]) != SIGNATURE or len(data) < HEADER_BYTES:
        raise DataError(f"the COPY stream of {table} is not PostgreSQL's binary format")
    extension = int.from_bytes(data[HEADER_BYTES - 4 : HEADER_BYTES], "big")
    return data[HEADER_BYTES + extension :]


def _socket_readable(conn: Connection) -> bool:
    """Whether the COPY stream can be read from the socket itself: only when nothing
    (TLS, GSSAPI) encrypts it, so that the bytes on the socket are the protocol's."""
    pgconn = conn.pgconn
    return not pgconn.ssl_in_use and not pgconn.used_gssapi


def _server_error(fields: bytes, encoding: str) -> psycopg.Error:
    """An ErrorResponse's fields as the psycopg error libpq would have raised: the class of
    its SQLSTATE, its diagnostics (``diag``), its primary message as the text."""
    info: dict[int, bytes | None] = {}
    for field in fields.split(b"\0"):
        if field:
            info[field[0]] = field[1:]
    state = (info.get(ord("C")) or b"").decode("ascii", "replace")
    try:
        kind = psycopg.errors.lookup(state)
    except KeyError:
        kind = psycopg.DatabaseError
    message = (info.get(ord("M")) or b"the server reported an error").decode(encoding, "replace")
    return kind(message, info=info, encoding=encoding)


class _Worker:
    """One connection's share of the ranges: COPY, gather, decode, hand over."""

    def __init__(self, reader: TableReader, conn: Connection) -> None:
        self.reader = reader
        self.conn = conn
        # a COPY's answer is being read from the socket: libpq does not know, so the
        # connection is out of step with it if the read stops half way (then it is closed)
        self.streaming = False
        self._spare: list[bytearray] = []

    def buffer(self, size: int = READ_BYTES) -> bytearray:
        """A read buffer of ``size`` bytes and PADDING more: a spare one when there is one
        (fresh memory costs a page fault every 4 KiB, about a tenth of the reading)."""
        if size == READ_BYTES and self._spare:
            return self._spare.pop()
        return bytearray(size + PADDING)

    def release(self, buffer: bytearray) -> None:
        """Keep a read buffer whose rows are decoded for the next one: every decoder copies
        the values out (nothing decoded points into the buffer)."""
        if len(buffer) == READ_BYTES + PADDING and len(self._spare) < 2:
            self._spare.append(buffer)

    def run(self) -> None:
        reader = self.reader
        sock: socket.socket | None = None
        try:
            with self.conn.lock:
                if reader.socket_reads:
                    sock = socket.socket(fileno=os.dup(self.conn.pgconn.socket))
                    sock.settimeout(_POLL_MS / 1000)
                while (index := reader._take_range()) is not None:
                    statement = reader._statement(reader.ranges[index])
                    if sock is not None:
                        _SocketCopy(self, index, sock).run(statement)
                    else:
                        self._copy(index, statement)
                    reader._range_done(index)
        except _StoppedError:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            reader._fail(exc)
        finally:
            if sock is not None:
                sock.close()
            if self.streaming:  # stopped half way through an answer: no more use for it
                self.conn.close()

    def _emit(self, index: int, buffer: bytearray, lengths: array.array[int]) -> bool:
        """Decode the gathered rows and hand the batch over; True when the last message was
        the COPY's trailer (dropped)."""
        trailer = False
        if lengths and lengths[-1] == len(TRAILER) and buffer[-len(TRAILER) :] == TRAILER:
            del buffer[-len(TRAILER) :]
            lengths.pop()
            trailer = True
        if lengths:
            buffer += bytes(PADDING)
            batch = self.reader.decoder.decode(buffer, np.frombuffer(lengths, dtype=np.int64))
            self.reader._put(index, batch)
        return trailer

    def _copy(self, index: int, statement: bytes) -> None:
        """One COPY of one range through libpq, read without ever blocking in it (the path
        of an encrypted connection)."""
        reader, stopping = self.reader, self.reader._stopping
        pgconn = self.conn.pgconn
        fd = pgconn.socket
        pgconn.send_query(statement)
        while pgconn.flush():
            _wait(fd, stopping, write=True)
        started = _result(pgconn, stopping)
        _raise_for(started, self.conn)
        if started is None or started.status != pq.ExecStatus.COPY_OUT:
            raise DataError(f"the server did not start the COPY of {reader.table}")
        get = pgconn.get_copy_data
        buffer = bytearray()
        lengths: array.array[int] = array.array("q")
        while True:  # the first message: the header, then (usually) the first row
            size, data = get(1)
            if size > 0:
                rest = _strip_header(data, reader.table)
                if len(rest):
                    buffer += rest
                    lengths.append(len(rest))
                break
            if size < 0:
                raise DataError(f"the COPY stream of {reader.table} ended without its header")
            _wait(fd, stopping)
            pgconn.consume_input()
        append = lengths.append
        limit_rows, limit_bytes = reader.batch_rows, BATCH_BYTES
        trailer = False
        while True:
            # the hot loop: one CopyData message (one row) a turn, in locals only; the rest
            # happens when libpq's buffer is empty and the socket has to be waited for
            size, data = get(1)
            if size > 0:
                buffer += data
                append(size)
                continue
            if size < 0:
                break
            if len(lengths) >= limit_rows or len(buffer) >= limit_bytes:
                trailer = self._emit(index, buffer, lengths)
                buffer = bytearray()
                lengths = array.array("q")
                append = lengths.append
            _wait(fd, stopping)
            pgconn.consume_input()
        trailer = self._emit(index, buffer, lengths) or trailer
        final = _result(pgconn, stopping)
        _raise_for(final, self.conn)
        while final is not None:
            final = _result(pgconn, stopping)
            _raise_for(final, self.conn)
        if not trailer:
            raise DataError(f"the COPY stream of {reader.table} ended without its trailer")


class _SocketCopy:
    """One COPY of one range, its query written to and its answer read from the socket
    itself, in large reads that release the GIL, instead of one libpq call per row.

    The query goes out as a simple Query message and the answer is read to its
    ReadyForQuery, so libpq, which sees neither, stays in step with the server (idle in
    the transaction) and the connection serves the next range and the end of the
    transaction as usual. The rows are found in the read buffer by ``row_messages`` and
    decoded from it where they lie; the other messages are handled one by one: the
    CopyOutResponse, the header and the trailer, CopyDone, CommandComplete, notices and
    parameter changes (logged and dropped, as libpq's default would), and an ErrorResponse,
    raised as the psycopg error libpq would have raised once the server is ready again.
    """

    def __init__(self, worker: _Worker, index: int, sock: socket.socket) -> None:
        self.worker = worker
        self.reader = worker.reader
        self.index = index
        self.sock = sock
        self.fields = len(self.reader.columns)
        self.buffer = worker.buffer()
        self.filled = 0  # bytes read into the buffer
        self.parsed = 0  # where the first message not handled yet begins
        self.starts: list[Int64s] = []  # the rows found in the buffer and not decoded yet
        self.ends: list[Int64s] = []
        self.pending = 0
        self.started = False  # CopyOutResponse
        self.header = False
        self.trailer = False
        self.completed = False  # CommandComplete
        self.ready = False  # ReadyForQuery: the answer is over
        self.error: psycopg.Error | None = None

    def run(self, statement: bytes) -> None:
        self.worker.streaming = True
        self._send(b"Q" + (len(statement) + 5).to_bytes(4, "big") + statement + b"\0")
        while not self.ready:
            room = len(self.buffer) - PADDING - self.filled
            if room == 0:
                self._parse()
                if self.ready:
                    break
                self._decode()
                self._move_on()
                continue
            received = self._receive(memoryview(self.buffer)[self.filled : self.filled + room])
            if received is None:  # the server is quiet (a slow query): hand over what came
                self._parse()
                self._decode()
                continue
            if received == 0:
                raise self._lost(None)
            self.filled += received
            # a read often brings only what the server has sent since the last one: parse a
            # good piece at a time, or when the bytes read may end the answer
            if self.filled - self.parsed >= PARSE_BYTES or self._may_be_over():
                self._parse()
                if self.pending >= self.reader.batch_rows:
                    self._decode()
            elif received < _SMALL_READ:
                time.sleep(_NAP_SECONDS)
        self.worker.streaming = False
        if self.error is not None:
            raise self.error
        self._decode()
        self.worker.release(self.buffer)
        table = self.reader.table
        if not self.started or not self.header:
            raise DataError(f"the COPY of {table} sent no binary header")
        if not self.trailer or not self.completed:
            raise DataError(f"the COPY stream of {table} ended without its trailer")

    # ------------------------------------------------------------------ the socket

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except TimeoutError:
                if self.reader._stopping.is_set():
                    raise _StoppedError from None
            except OSError as exc:  # the server ended the session between two COPYs
                raise self._lost(exc) from None

    def _receive(self, into: memoryview) -> int | None:
        """Bytes read into ``into`` (0: the server closed the connection); None when none
        came for a while and some are not parsed yet."""
        while True:
            try:
                return self.sock.recv_into(into)
            except TimeoutError:
                if self.reader._stopping.is_set():
                    raise _StoppedError from None
                if self.filled > self.parsed:
                    return None
            except OSError as exc:
                raise self._lost(exc) from None

    def _lost(self, exc: OSError | None) -> psycopg.Error:
        """The connection is gone: the server's last word if it sent one before closing (a
        FATAL ErrorResponse, e.g. 57P01 when an administrator ended the session), else the
        OperationalError libpq would raise; either is transient to abaco (a retry may cure)."""
        try:
            self._parse()  # what was read and not parsed yet may hold it
            while self.error is None:
                room = memoryview(self.buffer)[self.filled : len(self.buffer) - PADDING]
                received = self.sock.recv_into(room) if len(room) else 0
                if received == 0:
                    break
                self.filled += received
                self._parse()
        except (OSError, DataError):
            pass
        if self.error is not None:
            return self.error
        reason = f": {exc.strerror or exc}" if exc is not None else ""
        return psycopg.OperationalError(f"the server closed the connection unexpectedly{reason}")

    def _may_be_over(self) -> bool:
        """Whether the bytes read end like the answer's last message, ReadyForQuery."""
        end = self.filled
        return end - self.parsed >= 6 and self.buffer[end - 6 : end - 1] == _READY_HEAD

    # ------------------------------------------------------------------- the buffer

    def _move_on(self) -> None:
        """A new buffer holding the message begun at the end of the full one (the new one
        larger when that message is)."""
        tail = self.buffer[self.parsed : self.filled]
        size = READ_BYTES
        if len(tail) >= 5:
            size = max(size, 1 + int.from_bytes(tail[1:5], "big"))
        self.worker.release(self.buffer)
        self.buffer = self.worker.buffer(size)
        self.buffer[: len(tail)] = tail
        self.filled, self.parsed = len(tail), 0

    def _decode(self) -> None:
        """Decode the rows found so far (in batches of at most ``batch_rows``) and hand
        them over."""
        if not self.pending:
            return
        starts = np.concatenate(self.starts) if len(self.starts) > 1 else self.starts[0]
        ends = np.concatenate(self.ends) if len(self.ends) > 1 else self.ends[0]
        self.starts, self.ends, self.pending = [], [], 0
        lengths = ends - starts
        step = self.reader.batch_rows
        for first in range(0, len(starts), step):
            batch = self.reader.decoder.decode(
                self.buffer, lengths[first : first + step], starts[first : first + step]
            )
            self.reader._put(self.index, batch)

    def _rows(self, starts: Int64s, ends: Int64s) -> None:
        if self.trailer:
            raise DataError(f"the COPY stream of {self.reader.table} has rows after its trailer")
        self.starts.append(starts)
        self.ends.append(ends)
        self.pending += len(starts)

    # ----------------------------------------------------------------- the messages

    def _parse(self) -> None:
        """Handle every complete message in the buffer: runs of rows at once, the others
        one by one."""
        buffer, filled, position = self.buffer, self.filled, self.parsed
        while filled - position >= 5:
            if self.header and not self.trailer and self.error is None:
                begins, ends = row_messages(buffer, position, filled, self.fields)
                if len(begins):
                    self._rows(begins + 5, ends)
                    position = int(ends[-1])
                    continue
            size = int.from_bytes(buffer[position + 1 : position + 5], "big")
            if size < 4 or size > _MESSAGE_LIMIT:
                raise DataError(f"the answer to the COPY of {self.reader.table} lost its framing")
            end = position + 1 + size
            if end > filled:
                break
            self._message(buffer[position], position + 5, end)
            position = end
            if self.ready:
                break
        self.parsed = position

    def _message(self, kind: int, first: int, end: int) -> None:
        """One message other than a run of rows: its type, where its body begins and ends."""
        table = self.reader.table
        if kind == _COPY_DATA:
            if self.error is not None:
                return
            if not self.header:
                self._header(first, end)
            elif end - first == len(TRAILER) and self.buffer[first:end] == TRAILER:
                self.trailer = True
            else:  # a row that row_messages did not take: its field count is wrong
                self._rows(np.array([first], np.int64), np.array([end], np.int64))
        elif kind == _COPY_OUT_RESPONSE:
            if self.buffer[first] != 1:
                raise DataError(f"the server did not start a binary COPY of {table}")
            self.started = True
        elif kind == _COMMAND_COMPLETE:
            self.completed = True
        elif kind == _READY_FOR_QUERY:
            self.ready = True
        elif kind == _ERROR_RESPONSE:
            encoding = self.worker.conn.info.encoding
            self.error = self.error or _server_error(bytes(self.buffer[first:end]), encoding)
        elif kind == _NOTICE_RESPONSE:
            notice = _server_error(bytes(self.buffer[first:end]), "utf-8")
            log.debug("the server's notice during the COPY of %s: %s", table, notice)
        elif kind not in _IGNORED_MESSAGES:
            raise DataError(
                f"the answer to the COPY of {table} holds an unexpected message ({chr(kind)!r})"
            )

    def _header(self, first: int, end: int) -> None:
        """The first CopyData: the binary header, then (unless the range is empty) the
        first row."""
        body = memoryview(self.buffer)[first:end]
        rest = _strip_header(body, self.reader.table)
        self.header = True
        if rest == TRAILER:  # no row at all: the trailer came with the header
            self.trailer = True
        elif len(rest):
            self._rows(np.array([end - len(rest)], np.int64), np.array([end], np.int64))


# ---------------------------------------------------------------------------------- the reader


class TableReader:
    """One table (or the chosen columns of it) read in one snapshot by parallel binary COPY.

    Open it (``with``), then ``schema``, ``snapshot_at`` and ``snapshot_id`` are known and
    ``batches()`` yields the rows. ``snapshot`` adopts an exported snapshot instead of taking a
    new one (the lakehouse's initial load reads inside its replication slot's snapshot).
    Errors are abaco's: DataError naming the column of a value with no exact Arrow type,
    SourceQueryError and SourceUnavailableError (transient ones a retry may cure).
    """

    def __init__(
        self,
        settings: Settings,
        table: str | TableName,
        columns: Sequence[str] | None = None,
        *,
        snapshot: str | None = None,
        workers: int | None = None,
        batch_rows: int = BATCH_ROWS,
        range_blocks: int = RANGE_BLOCKS,
        on_connect: Callable[[SourceIdentity], None] | None = None,
        read_socket: bool = True,
    ) -> None:
        self.settings = settings
        self.table = table if isinstance(table, TableName) else TableName.parse(table)
        self.wanted = list(columns) if columns is not None else None
        self.given_snapshot = snapshot
        self.workers = max(1, workers if workers is not None else settings.parallel_queries)
        self.batch_rows = max(1, batch_rows)
        self.range_blocks = max(1, range_blocks)
        self.on_connect = on_connect
        self.read_socket = read_socket
        self.socket_reads = False  # whether the COPY streams are read from the sockets
        self.columns: tuple[SourceColumn, ...] = ()
        self.schema: pa.Schema = pa.schema([])
        self.snapshot_at: datetime | None = None
        self.snapshot_id: str | None = None
        self.ranges: list[BlockRange] = []
        self.rows = 0
        self._stack = ExitStack()
        self._connections: list[Connection] = []
        self._workers: list[_Worker] = []
        self._redactor = Redactor.from_settings(settings)
        self._select: sql.Composable = sql.SQL("")
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._next = 0
        self._consumed = 0
        self._out: dict[int, deque[pa.RecordBatch]] = {}
        self._done: set[int] = set()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------------- open and close

    def __enter__(self) -> Self:
        try:
            self._open()
        except BaseException as exc:  # noqa: BLE001 - closed, then raised as abaco's error
            self.close()
            raise self._translated(exc) from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers (their queries cancelled) and close every connection."""
        self._stopping.set()
        self._cancel()
        try:
            self._stack.close()
        except (psycopg.Error, OSError) as exc:
            log.debug("closing the reader's connections: %s", exc)
        for conn in self._connections:
            conn.close()
        self._connections = []

    def _connect(self) -> Connection:
        conn = connect(self.settings)
        self._connections.append(conn)
        if self.on_connect is not None and len(self._connections) == 1:
            self.on_connect(SourceIdentity.of(conn))
        return conn

    def _begin(self, conn: Connection) -> None:
        self._stack.enter_context(snapshot(conn, self.settings))
        conn.execute("SET LOCAL client_encoding = 'UTF8'")

    def _open(self) -> None:
        first = self._connect()
        self._begin(first)
        if self.given_snapshot is not None:
            import_snapshot(first, self.given_snapshot)
            self.snapshot_id = self.given_snapshot
        self.socket_reads = self.read_socket and _socket_readable(first)
        oid, kind = _relation(first, self.table)
        ranged = kind in _RANGED and first.info.server_version >= TID_RANGE_SCAN
        if ranged:
            self.ranges = block_ranges(table_blocks(first, oid, kind), self.range_blocks)
        else:
            self.ranges = [BlockRange(0, None)]
        workers = min(self.workers, len(self.ranges))
        if workers > 1 and self.snapshot_id is None:
            self.snapshot_id = export_snapshot(first)
        self.snapshot_at = snapshot_time(first)
        columns = describe_columns(first, self.table, oid, self.wanted)
        self.columns = tuple(measure_numerics(first, self.table, columns))
        encoding = first.execute("SELECT current_setting('server_encoding')").fetchone()
        check_utf8 = encoding is None or str(encoding[0]).upper() == "SQL_ASCII"
        self.decoder = RowDecoder(str(self.table), self.columns, check_utf8=check_utf8)
        self.schema = self.decoder.schema
        names = sql.SQL(", ").join(sql.Identifier(c.name) for c in self.columns)
        self._select = sql.SQL("SELECT {} FROM {}").format(names, self.table.identifier)
        self._ranged = ranged
        for _ in range(workers - 1):
            helper = self._connect()
            self._begin(helper)
            assert self.snapshot_id is not None
            import_snapshot(helper, self.snapshot_id)

    def _statement(self, block_range: BlockRange) -> bytes:
        query: sql.Composable = self._select
        if self._ranged:
            query = sql.SQL("{} WHERE {}").format(self._select, block_range.condition())
        copy = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(query)
        return copy.as_bytes(self._connections[0])

    def _translated(self, exc: BaseException) -> BaseException:
        if isinstance(exc, psycopg.Error):
            return classify(exc, redactor=self._redactor, during=f"reading {self.table}")
        return exc

    # ---------------------------------------------------------------------------- the batches

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every row of the table in the snapshot, in batches of the reader's schema, in
        range (ctid) order. Call once."""
        keep_heap_memory()
        self._workers = [_Worker(self, conn) for conn in self._connections]
        threads = [
            threading.Thread(target=worker.run, name=f"abaco-copy-{i}", daemon=True)
            for i, worker in enumerate(self._workers)
        ]
        for thread in threads:
            thread.start()
        try:
            for index in range(len(self.ranges)):
                while True:
                    ready, finished = self._collect(index)
                    for batch in ready:
                        self.rows += batch.num_rows
                        yield batch
                    if finished:
                        break
        except BaseException as exc:  # noqa: BLE001 - workers stopped, then raised again
            self._stopping.set()
            self._cancel()
            for thread in threads:
                thread.join()
            raise self._translated(exc) from None
        for thread in threads:
            thread.join()

    def _collect(self, index: int) -> tuple[list[pa.RecordBatch], bool]:
        """The batches of range ``index`` that are ready, and whether it is complete."""
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                queue = self._out.get(index)
                if queue:
                    ready = list(queue)
                    queue.clear()
                    return ready, False
                if index in self._done:
                    self._out.pop(index, None)
                    self._consumed = index + 1
                    self._cond.notify_all()
                    return [], True
                self._cond.wait(timeout=0.5)

    def _take_range(self) -> int | None:
        """The next range for a worker; it waits while the ranges in flight are one more than
        the workers, so memory stays bounded when the caller writes slower than they read."""
        with self._cond:
            while True:
                if self._stopping.is_set():
                    raise _StoppedError
                if self._next >= len(self.ranges):
                    return None
                if self._next < self._consumed + len(self._connections) + 1:
                    index = self._next
                    self._next += 1
                    self._out[index] = deque()
                    return index
                self._cond.wait(timeout=0.5)

    def _put(self, index: int, batch: pa.RecordBatch) -> None:
        with self._cond:
            self._out[index].append(batch)
            self._cond.notify_all()

    def _range_done(self, index: int) -> None:
        with self._cond:
            self._done.add(index)
            self._cond.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = exc
            self._stopping.set()
            self._cond.notify_all()
        self._cancel()

    def _cancel(self) -> None:
        """Ask the server to stop every COPY running (libpq's, or one read from the socket,
        which libpq does not know of); never raises."""
        streaming = {id(w.conn) for w in self._workers if w.streaming}
        for conn in self._connections:
            try:
                active = conn.pgconn.transaction_status == pq.TransactionStatus.ACTIVE
                if not conn.closed and (active or id(conn) in streaming):
                    conn.cancel_safe(timeout=5.0)
            except Exception as exc:  # noqa: BLE001 - only speeds up a stop that happens anyway
                log.debug("could not cancel a running COPY: %s", exc)


def read_table(
    settings: Settings,
    table: str | TableName,
    columns: Sequence[str] | None = None,
    *,
    snapshot: str | None = None,
    workers: int | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """The rows of ``table`` (its ``columns``, default all) in one snapshot as record batches
    of about ``batch_rows`` rows; the connections close when the iterator ends or is closed.
    ``TableReader`` gives the schema and the snapshot too."""
    with TableReader(
        settings, table, columns, snapshot=snapshot, workers=workers, batch_rows=batch_rows
    ) as reader:
        yield from reader.batches()
