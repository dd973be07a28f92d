"""Streaming a peek of the lake's slot: ``COPY (SELECT lsn, xid, data FROM
pg_logical_slot_peek_binary_changes(...)) TO STDOUT (FORMAT binary)`` read through libpq in a
thread of its own, gathered into chunks of rows (their payloads back to back, and their
lengths) for lake/changes.py to decode in bulk.

psycopg's ``cursor.copy`` costs about 2 µs a row; this reads libpq directly and waits for the
socket without the interpreter's lock, so the server decodes the next changes while this
process decodes the last ones. A consumer that stops early cancels and drains the COPY, and
leaves the connection usable.
"""

from __future__ import annotations

import logging
import queue
import select
import threading
from array import array
from collections.abc import Generator, Iterator
from contextlib import closing, suppress
from typing import Any, Self

import psycopg
from psycopg import pq
from psycopg.errors import error_from_result

from abaco_cli.lake.pgoutput import ProtocolError

__all__ = ["CHUNK_BYTES", "ROW_HEAD", "Chunk", "Prefetch"]

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 << 20  # a chunk ends at this many bytes of messages, whatever their count
PREFETCH = 2  # chunks read ahead of the decoding
_POLL_MS = 500  # how often a wait looks whether the reading was stopped
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = len(_SIGNATURE) + 8  # signature, flags, header extension length
_TRAILER = b"\xff\xff"
ROW_HEAD = 26  # a peek row: 3 fields; lsn (4 + 8 bytes), xid (4 + 4), data (4 + its bytes)

Chunk = tuple[bytearray, "array[int]"]


class _StoppedError(Exception):
    """The consumer went away: the COPY is abandoned."""


class Prefetch:
    """Reads the COPY in a thread of its own, up to PREFETCH chunks ahead of the decoding,
    so that the server decodes the next changes while this process decodes the last ones
    (waiting for the socket, reading and numpy's work release the interpreter's lock). The
    caller must not use the connection until the prefetch is closed."""

    def __init__(self, conn: psycopg.Connection[Any], statement: bytes, chunk_rows: int) -> None:
        self._queue: queue.Queue[Chunk | BaseException | None] = queue.Queue(PREFETCH)
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(conn, statement, chunk_rows), name="abaco-lake-peek"
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, conn: psycopg.Connection[Any], statement: bytes, chunk_rows: int) -> None:
        item: Chunk | BaseException | None = None
        try:
            with closing(_copy_chunks(conn, statement, chunk_rows, self._stopping)) as chunks:
                for item in chunks:
                    self._put(item)
            item = None
        except _StoppedError:
            return
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer's thread
            item = exc
        with suppress(_StoppedError):
            self._put(item)

    def _put(self, item: Chunk | BaseException | None) -> None:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=_POLL_MS / 1000)
                return
            except queue.Full:
                continue
        raise _StoppedError

    def __iter__(self) -> Iterator[Chunk]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the reading (the COPY cancelled if unfinished) and wait for the thread."""
        self._stopping.set()
        while self._thread.is_alive():
            with suppress(queue.Empty):
                self._queue.get(timeout=_POLL_MS / 1000)
        self._thread.join()


def _copy_chunks(
    conn: psycopg.Connection[Any], statement: bytes, chunk_rows: int, stopping: threading.Event
) -> Generator[Chunk, None, None]:
    """Run a binary COPY TO STDOUT and yield its rows gathered into chunks: their payloads
    back to back, and their lengths; a chunk ends at about ``chunk_rows`` rows or CHUNK_BYTES.

    libpq is read directly, without blocking (one ``get_copy_data`` a row; the socket is
    waited for only when libpq's buffer is empty): psycopg's ``cursor.copy`` costs a few
    microseconds a row, as much as the decoding itself. Closed early, the COPY is cancelled
    and drained, so the connection stays usable.
    """
    pgconn = conn.pgconn
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    pgconn.send_query(statement)
    finished = False
    try:
        while pgconn.flush():
            select.select([], [pgconn.socket], [], _POLL_MS / 1000)
        started = _next_result(pgconn, poller, stopping)
        if started is None or started.status != pq.ExecStatus.COPY_OUT:
            finished = True
            _raise_for(conn, started, then=poller)
            raise ProtocolError("the server did not start the COPY of the slot's changes")
        buffer, lengths = bytearray(), array("q")
        header = trailer = False
        get = pgconn.get_copy_data
        while True:
            size, data = get(1)
            if size > 0:
                if not header:
                    header = True
                    data = _strip_header(data)
                    size = len(data)
                    if not size:
                        continue
                buffer += data
                lengths.append(size)
                continue
            if size < 0:
                break
            if len(lengths) >= chunk_rows or len(buffer) >= CHUNK_BYTES:
                trailer = _drop_trailer(buffer, lengths)
                yield buffer, lengths
                buffer, lengths = bytearray(), array("q")
            _wait(poller, stopping)
            pgconn.consume_input()
        finished = True
        _finish(conn, poller, stopping)
        if not header:
            raise ProtocolError("the change stream ended without its COPY header")
        if not (_drop_trailer(buffer, lengths) or trailer):
            raise ProtocolError("the change stream ended without its COPY trailer")
        if lengths:
            yield buffer, lengths
    finally:
        if not finished:
            _abandon(conn, poller)


def _wait(poller: select.poll, stopping: threading.Event | None) -> None:
    """Until the socket has data (the interpreter's lock released); _StoppedError when asked."""
    while not poller.poll(_POLL_MS):
        if stopping is not None and stopping.is_set():
            raise _StoppedError


def _next_result(
    pgconn: pq.abc.PGconn, poller: select.poll, stopping: threading.Event | None
) -> pq.abc.PGresult | None:
    """The statement's next result, waiting for the socket without blocking in libpq."""
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            return pgconn.get_result()
        _wait(poller, stopping)


def _raise_for(
    conn: psycopg.Connection[Any], result: pq.abc.PGresult | None, then: select.poll | None = None
) -> None:
    """Raise the error a result holds; ``then``: first read the statement's other results,
    so that the connection is idle again."""
    if result is not None and result.status == pq.ExecStatus.FATAL_ERROR:
        error = error_from_result(result, encoding=conn.info.encoding)
        if then is not None:
            with suppress(psycopg.Error):
                _finish(conn, then, None)
        raise error


def _finish(
    conn: psycopg.Connection[Any], poller: select.poll, stopping: threading.Event | None
) -> None:
    """Read the results that follow the COPY's data; the first error is raised."""
    error: psycopg.Error | None = None
    while (result := _next_result(conn.pgconn, poller, stopping)) is not None:
        try:
            _raise_for(conn, result)
        except psycopg.Error as exc:
            error = error or exc
    if error is not None:
        raise error


def _abandon(conn: psycopg.Connection[Any], poller: select.poll) -> None:
    """Cancel a COPY left before its end (or before it started) and read what is left of
    it, so that the connection is idle again; never raises (an error is on its way)."""
    try:
        conn.cancel_safe(timeout=5.0)
        pgconn = conn.pgconn
        while True:
            pgconn.consume_input()
            if pgconn.is_busy():
                _wait(poller, None)
                continue
            result = pgconn.get_result()
            if result is None:
                return
            if result.status == pq.ExecStatus.COPY_OUT:
                while (size := pgconn.get_copy_data(1)[0]) >= 0:
                    if size == 0:
                        _wait(poller, None)
                        pgconn.consume_input()
    except Exception as exc:  # noqa: BLE001 - the error that stopped the read matters more
        log.debug("could not cancel the change stream's COPY: %s", exc)


def _strip_header(data: memoryview) -> memoryview:
    """The first CopyData starts with binary COPY's header: check it and drop it."""
    if len(data) < _HEADER or bytes(data[: len(_SIGNATURE)]) != _SIGNATURE:
        raise ProtocolError("the change stream is not PostgreSQL's binary COPY format")
    extension = int.from_bytes(data[_HEADER - 4 : _HEADER], "big")
    return data[_HEADER + extension :]


def _drop_trailer(buffer: bytearray, lengths: array[int]) -> bool:
    """Drop binary COPY's trailer (the last message, two bytes 0xFFFF) when it is there."""
    if lengths and lengths[-1] == len(_TRAILER) and buffer[-len(_TRAILER) :] == _TRAILER:
        del buffer[-len(_TRAILER) :]
        lengths.pop()
        return True
    return False
