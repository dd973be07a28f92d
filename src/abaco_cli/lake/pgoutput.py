"""pgoutput, the logical replication protocol (version 1), decoded in bulk: no database here.

PostgreSQL's logical decoding with the pgoutput plugin turns the write-ahead log into messages
(the PostgreSQL docs, "Logical Replication Message Formats"): Begin, Commit, Relation (a table's
columns), Insert, Update, Delete, Truncate, and Type, Origin and Message, which abaco ignores.
Row values arrive as PostgreSQL's text output ('t': an int32 length and the bytes), NULL ('n')
or "unchanged TOASTed value, not sent" ('u').

A per-message Python object cannot keep up with a million changes, so the messages of a chunk
live in one buffer (``Messages``) and are decoded column by column for many messages at once:
``walk_tuples`` follows the tuples of every message of one table and kind together, one numpy
step per column, and keeps only where each wanted value's text lies; ``gather`` copies those
spans into one Arrow binary array in one call; ``text_to_arrow`` turns a whole column of text
into its exact Arrow type (the whole-table reader's types: numeric(p,s) to decimal128(p,s),
never float). The rare messages (Begin, Commit, Relation, Truncate) are parsed one by one.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from abaco_cli.errors import DataError

__all__ = [
    "BEGIN",
    "COMMIT",
    "DELETE",
    "INSERT",
    "MESSAGE",
    "ORIGIN",
    "PADDING",
    "RELATION",
    "TRUNCATE",
    "TYPE",
    "UPDATE",
    "Begin",
    "Commit",
    "Messages",
    "ProtocolError",
    "Relation",
    "RelationColumn",
    "Truncate",
    "TupleColumn",
    "Tuples",
    "column_to_arrow",
    "gather",
    "parse_begin",
    "parse_commit",
    "parse_relation",
    "parse_truncate",
    "pg_micros_to_unix",
    "text_to_arrow",
    "walk_tuples",
]

Int64s = npt.NDArray[np.int64]
UInt8s = npt.NDArray[np.uint8]
Bools = npt.NDArray[np.bool_]

BEGIN, COMMIT, RELATION, TYPE, ORIGIN = b"B"[0], b"C"[0], b"R"[0], b"Y"[0], b"O"[0]
INSERT, UPDATE, DELETE, TRUNCATE, MESSAGE = b"I"[0], b"U"[0], b"D"[0], b"T"[0], b"M"[0]
NEW, KEY, OLD = b"N"[0], b"K"[0], b"O"[0]  # the tuple tags of Insert, Update and Delete
NULL, UNCHANGED, TEXT = b"n"[0], b"u"[0], b"t"[0]  # a TupleData column's kind
PADDING = 8  # zero bytes after the last message, so that a 4-byte read never leaves the buffer

_PG_EPOCH_MICROS = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
_BEGIN = struct.Struct(">qqI")  # final LSN, commit time, xid
_COMMIT = struct.Struct(">bqqq")  # flags, commit LSN, end LSN, commit time
_INT32 = struct.Struct(">i")
_INT16 = struct.Struct(">h")
_UINT32 = struct.Struct(">I")


class ProtocolError(DataError):
    """The change stream does not follow the pgoutput protocol (version 1)."""

    default_hint = (
        "The slot's output plugin must be pgoutput read with proto_version 1; if it is, "
        "report this with the server's version: `abaco lake resync` rebuilds from a snapshot."
    )


# ------------------------------------------------------------------------ the rare messages


@dataclass(frozen=True)
class RelationColumn:
    """One column of a Relation message: ``key`` when it is part of the replica identity."""

    name: str
    type_oid: int
    typmod: int
    key: bool


@dataclass(frozen=True)
class Relation:
    """A table as pgoutput describes it before its first change (and again after a change of
    its definition): ``replica_identity`` 'd' default, 'n' nothing, 'f' full, 'i' index."""

    oid: int
    schema: str
    name: str
    replica_identity: str
    columns: tuple[RelationColumn, ...]

    @property
    def qualified(self) -> str:
        """``schema.name``, as ``lake.tables`` names the table."""
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class Begin:
    """A transaction starts: its commit's LSN, commit time (µs since 1970, UTC) and xid."""

    final_lsn: int
    commit_time: int
    xid: int


@dataclass(frozen=True)
class Commit:
    """A transaction ends: its commit's LSN, the LSN just past its commit record (where a
    consumer that has kept it may advance its slot) and its commit time (µs since 1970)."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True)
class Truncate:
    """TRUNCATE of one or more tables (``options``: 1 CASCADE, 2 RESTART IDENTITY)."""

    options: int
    oids: tuple[int, ...]


def pg_micros_to_unix(micros: int) -> int:
    """PostgreSQL's microseconds since 2000-01-01 as microseconds since 1970-01-01."""
    return micros + _PG_EPOCH_MICROS


def _expect(data: memoryview | bytes, kind: int, size: int | None = None) -> memoryview:
    view = memoryview(data)
    if len(view) == 0 or view[0] != kind:
        raise ProtocolError(f"expected a pgoutput {chr(kind)!r} message")
    if size is not None and len(view) != size:
        raise ProtocolError(f"a pgoutput {chr(kind)!r} message of {len(view)} bytes, not {size}")
    return view


def parse_begin(data: memoryview | bytes) -> Begin:
    """A Begin message ('B')."""
    view = _expect(data, BEGIN, 1 + _BEGIN.size)
    final_lsn, micros, xid = _BEGIN.unpack_from(view, 1)
    return Begin(final_lsn & 0xFFFFFFFFFFFFFFFF, pg_micros_to_unix(micros), xid)


def parse_commit(data: memoryview | bytes) -> Commit:
    """A Commit message ('C')."""
    view = _expect(data, COMMIT, 1 + _COMMIT.size)
    flags, commit_lsn, end_lsn, micros = _COMMIT.unpack_from(view, 1)
    mask = 0xFFFFFFFFFFFFFFFF
    return Commit(flags, commit_lsn & mask, end_lsn & mask, pg_micros_to_unix(micros))


def _string(view: memoryview, offset: int) -> tuple[str, int]:
    """A NUL-terminated string at ``offset`` and the offset after its NUL."""
    end = bytes(view[offset:]).find(b"\0") if offset < len(view) else -1
    if end < 0:
        raise ProtocolError("a pgoutput string without its terminating NUL")
    raw = bytes(view[offset : offset + end])
    try:
        return raw.decode("utf-8"), offset + end + 1
    except UnicodeDecodeError:
        raise ProtocolError("a pgoutput name that is not UTF-8") from None


def parse_relation(data: memoryview | bytes) -> Relation:
    """A Relation message ('R'); an empty namespace is pg_catalog, as the protocol says."""
    view = _expect(data, RELATION)
    try:
        (oid,) = _UINT32.unpack_from(view, 1)
        schema, offset = _string(view, 5)
        name, offset = _string(view, offset)
        identity = chr(view[offset])
        (count,) = _INT16.unpack_from(view, offset + 1)
        offset += 3
        columns = []
        for _ in range(count):
            flags = view[offset]
            column, offset = _string(view, offset + 1)
            type_oid, typmod = struct.unpack_from(">Ii", view, offset)
            offset += 8
            columns.append(RelationColumn(column, type_oid, typmod, bool(flags & 1)))
    except (struct.error, IndexError):
        raise ProtocolError("a pgoutput Relation message shorter than its columns") from None
    if offset != len(view) or count < 0 or identity not in "dnfi":
        raise ProtocolError("a pgoutput Relation message with bytes out of place")
    return Relation(oid, schema or "pg_catalog", name, identity, tuple(columns))


def parse_truncate(data: memoryview | bytes) -> Truncate:
    """A Truncate message ('T')."""
    view = _expect(data, TRUNCATE)
    if len(view) < 6:
        raise ProtocolError("a pgoutput Truncate message shorter than its header")
    (count,) = _INT32.unpack_from(view, 1)
    if count < 0 or len(view) != 6 + 4 * count:
        raise ProtocolError("a pgoutput Truncate message whose length does not match its tables")
    oids = struct.unpack_from(f">{count}I", view, 6)
    return Truncate(view[5], tuple(oids))


# --------------------------------------------------------------------- the messages in bulk


class Messages:
    """A chunk of pgoutput messages: ``buffer`` holds them (followed by PADDING zero bytes),
    message ``i`` is ``buffer[starts[i] : starts[i] + sizes[i]]``. Reads at any byte offset
    go through unaligned big-endian views of the buffer, one gather per column of values."""

    def __init__(self, buffer: bytearray | bytes, starts: Int64s, sizes: Int64s) -> None:
        if len(buffer) < PADDING or (len(starts) and int((starts + sizes).max()) > len(buffer)):
            raise ProtocolError("a chunk of messages that does not fit its buffer")
        self.buffer = buffer
        self.starts = starts.astype(np.int64, copy=False)
        self.sizes = sizes.astype(np.int64, copy=False)
        self.ends = self.starts + self.sizes
        self.u1: UInt8s = np.frombuffer(buffer, np.uint8)
        self.arrow = pa.py_buffer(buffer)
        self._views: dict[str, np.ndarray[Any, Any]] = {}
        if len(starts) and int(self.sizes.min()) < 1:
            raise ProtocolError("an empty pgoutput message")
        self.kinds: UInt8s = self.u1[self.starts] if len(starts) else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.starts)

    def message(self, index: int) -> memoryview:
        """The bytes of message ``index``."""
        start = int(self.starts[index])
        return memoryview(self.buffer)[start : start + int(self.sizes[index])]

    def at(self, dtype: str, offsets: Int64s) -> np.ndarray[Any, Any]:
        """The big-endian ``dtype`` values that start at byte ``offsets``, natively ordered
        (as int64 for the integer types)."""
        view = self._views.get(dtype)
        if view is None:
            kind = np.dtype(dtype)
            size = len(self.u1) - kind.itemsize + 1
            view = np.ndarray((size,), kind, self.buffer, 0, (1,))
            self._views[dtype] = view
        values = view[offsets]
        return values.astype(np.int64) if values.dtype.kind in "iu" else values

    def oids(self, indices: Int64s) -> Int64s:
        """The relation oid of each change message (Insert, Update, Delete) in ``indices``."""
        return self.at(">u4", self.starts[indices] + 1)


@dataclass
class TupleColumn:
    """Where one column's value of every walked tuple lies: its kind ('n', 'u' or 't'), and
    for 't' the first byte and length of its text in the buffer."""

    kind: UInt8s
    start: Int64s
    length: Int64s

    @property
    def valid(self) -> Bools:
        text: Bools = self.kind == TEXT
        return text

    @property
    def unchanged(self) -> Bools:
        unchanged: Bools = self.kind == UNCHANGED
        return unchanged

    def take(self, rows: Int64s | Bools) -> TupleColumn:
        return TupleColumn(self.kind[rows], self.start[rows], self.length[rows])


@dataclass
class Tuples:
    """The wanted columns of a set of TupleData (by column number) and where each ends."""

    columns: dict[int, TupleColumn]
    end: Int64s


def walk_tuples(messages: Messages, positions: Int64s, ncols: int, wanted: Sequence[int]) -> Tuples:
    """Follow the TupleData that start at ``positions`` (one per message, all of one
    relation: ``ncols`` columns) column by column, keeping the columns in ``wanted``."""
    count = len(positions)
    if count and not np.all(messages.at(">i2", positions) == ncols):
        raise ProtocolError(f"a pgoutput tuple whose column count is not its relation's {ncols}")
    keep = set(wanted)
    u1 = messages.u1
    position = positions + 2
    columns: dict[int, TupleColumn] = {}
    limit = len(u1) - PADDING
    for index in range(ncols):
        kind = u1[position]
        text = kind == TEXT
        if text.all():
            length = messages.at(">i4", position + 1)
            start = position + 5
            after = start + length
        else:
            if not np.all(text | (kind == NULL) | (kind == UNCHANGED)):
                raise ProtocolError("a pgoutput tuple column of an unknown kind")
            # NULL and unchanged: an empty span just after the kind, so that the spans of a
            # column still run forward through the buffer
            length = np.where(text, messages.at(">i4", position + 1), 0)
            start = np.where(text, position + 5, position + 1)
            after = start + length
        if count and (int(length.min()) < 0 or int(after.max()) > limit):
            raise ProtocolError("a pgoutput tuple value that runs past its message")
        if index in keep:
            columns[index] = TupleColumn(kind, start, length)
        position = after
    return Tuples(columns, position)


def _spans(
    messages: Messages, start: Int64s, length: Int64s, valid: Bools
) -> npt.NDArray[np.int32] | None:
    """Offsets of a binary array of 2n values over the buffer whose even values are the spans
    ``[start, start + length)`` (empty where not ``valid``) and whose odd values are the
    bytes between them; None when the spans do not run forward through the buffer (Arrow's
    offsets never decrease)."""
    count = len(start)
    if not valid.all():
        length = np.where(valid, length, 0)
    offsets = np.empty(2 * count + 1, dtype=np.int64)
    offsets[0 : 2 * count : 2] = start
    offsets[1 : 2 * count : 2] = start + length
    offsets[2 * count] = offsets[2 * count - 1]
    if offsets[-1] >= 2**31 or not bool(np.all(offsets[1:] >= offsets[:-1])):
        return None
    return offsets.astype(np.int32)


def gather(messages: Messages, start: Int64s, length: Int64s, valid: Bools) -> pa.Array:
    """The spans ``[start, start + length)`` of the buffer as one binary array (NULL where not
    ``valid``), copied in one Arrow ``take`` when the spans run forward through the buffer
    (as a column's spans do, in message order: walk_tuples places a NULL's empty span where it
    lies), by a numpy gather otherwise."""
    count = len(start)
    if count == 0:
        return pa.array([], pa.binary())
    offsets = _spans(messages, start, length, valid)
    if offsets is not None:
        spans = pa.Array.from_buffers(
            pa.binary(), 2 * count, [None, pa.py_buffer(offsets), messages.arrow]
        )
        mask = None if valid.all() else ~valid
        indices = pa.array(np.arange(0, 2 * count, 2, dtype=np.int64), mask=mask)
        return pc.take(spans, indices)
    all_valid = bool(valid.all())
    sizes = np.where(valid, length, 0)
    ends = np.cumsum(sizes)
    if ends[-1] >= 2**31:
        raise ProtocolError("a chunk of values larger than 2 GiB: lower chunk_changes")
    firsts = ends - sizes
    index = np.repeat(start - firsts, sizes) + np.arange(int(ends[-1]), dtype=np.int64)
    data = messages.u1[index]
    out_offsets = np.concatenate([[0], ends]).astype(np.int32)
    bitmap = None if all_valid else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.binary(),
        count,
        [bitmap, pa.py_buffer(out_offsets), pa.py_buffer(data)],
        0 if all_valid else int(count - np.count_nonzero(valid)),
    )


# ------------------------------------------------------------------- text to exact Arrow types

_SPECIAL_NUMBERS = ("NaN", "Infinity", "-Infinity")
_UNHEX = np.full(256, 255, dtype=np.uint8)
for _digit, _char in enumerate(b"0123456789abcdef"):
    _UNHEX[_char] = _digit
for _digit, _char in enumerate(b"ABCDEF", start=10):
    _UNHEX[_char] = _digit
_DATE = re.compile(r"(\d{4,})-(\d\d)-(\d\d)")
_TIMESTAMP = re.compile(r"(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(\+00)?")
_DAY_MICROS = 86_400_000_000


class _Column:
    """Says which column a conversion error is about."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, problem: str, hint: str | None = None) -> DataError:
        return DataError(f"{self.where} {problem}", hint=hint)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year, unlike datetime's)."""
    year -= month <= 2
    era = year // 400
    of_era = year - era * 400
    of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    of_era_days = of_era * 365 + of_era // 4 - of_era // 100 + of_year
    return era * 146_097 + of_era_days - 719_468


def _slow_times(column: _Column, values: pa.Array, kind: pa.DataType) -> pa.Array:
    """Dates and timestamps Arrow's parser refused, one by one: years past 9999 exactly;
    an infinity or a date before year 1 (BC) is a DataError naming the column."""
    out: list[int | None] = []
    date = pa.types.is_date(kind)
    for text in values.to_pylist():
        if text is None:
            out.append(None)
            continue
        if "infinity" in text:
            raise column.error(
                f"holds an infinite {'date' if date else 'timestamp'}, which Arrow cannot "
                "represent",
                hint="Fix the value in the source, or leave the column out of lake.tables.",
            )
        if text.endswith(" BC"):
            raise column.error(
                "holds a date before the year 1 (BC), which abaco does not export",
                hint="Fix the value in the source, or leave the column out of lake.tables.",
            )
        match = (_DATE if date else _TIMESTAMP).fullmatch(text)
        if match is None or (not date and (match[8] is None) == (kind.tz is not None)):
            raise column.error(f"sent {text!r} as a {kind}, which abaco cannot read")
        days = _days_from_civil(int(match[1]), int(match[2]), int(match[3]))
        if date:
            out.append(days)
            continue
        seconds = int(match[4]) * 3600 + int(match[5]) * 60 + int(match[6])
        fraction = int((match[7] or "").ljust(6, "0"))
        out.append(days * _DAY_MICROS + seconds * 1_000_000 + fraction)
    try:
        return pa.array(out, pa.int32() if date else pa.int64()).view(kind)
    except (pa.ArrowInvalid, OverflowError):
        raise column.error(f"holds a value beyond the range of Arrow's {kind}") from None


def _finite(column: _Column, values: pa.Array) -> pa.Array:
    if pc.any(pc.is_nan(values)).as_py() or pc.any(pc.is_inf(values)).as_py():
        raise column.error(
            "holds NaN or an infinity, which abaco does not export (strict JSON has none, "
            "and CSV readers disagree on it)",
            hint="Fix the value in the source, or leave the column out of lake.tables.",
        )
    return values


def _decimal(column: _Column, text: pa.Array, kind: pa.DataType) -> pa.Array:
    try:
        return pc.cast(text, kind)
    except pa.ArrowInvalid:
        special = pc.is_in(text, value_set=pa.array(_SPECIAL_NUMBERS))
        found = pc.filter(text, pc.fill_null(special, False))
        if len(found):
            raise column.error(
                f"holds {found[0].as_py()}, which {kind} cannot represent exactly",
                hint="Fix the value in the source (`abaco db check --data` finds NaN and "
                "Infinity in the contract's columns), or leave the column out of lake.tables.",
            ) from None
        raise column.error(f"holds a value that {kind} cannot hold exactly") from None


def _bool(column: _Column, text: pa.Array) -> pa.Array:
    true = pc.equal(text, "t")
    if pc.all(pc.or_(true, pc.equal(text, "f"))).as_py() is False:
        raise column.error("sent a boolean that is neither t nor f")
    return true


def _bytea(column: _Column, values: pa.Array) -> pa.Array:
    """bytea's hex text (``\\x`` then two hex digits a byte) as the bytes themselves."""
    if values.offset:
        values = pa.concat_arrays([values])
    count = len(values)
    offsets = np.frombuffer(values.buffers()[1], np.int32, count + 1).astype(np.int64)
    data = np.frombuffer(values.buffers()[2] or b"\0", np.uint8)
    valid = (
        np.ones(count, bool)
        if values.null_count == 0
        else np.asarray(values.is_valid().to_numpy(zero_copy_only=False))
    )
    lengths = np.diff(offsets)
    firsts = offsets[:-1][valid]
    sized = lengths[valid]
    if np.any(sized < 2) or np.any(sized % 2) or np.any(data[firsts] != ord("\\")):
        raise column.error("sent a bytea that is not in hex form (bytea_output = 'hex')")
    if np.any(data[firsts + 1] != ord("x")):
        raise column.error("sent a bytea that is not in hex form (bytea_output = 'hex')")
    keep = np.ones(int(offsets[-1] - offsets[0]), bool)
    keep[firsts - offsets[0]] = False
    keep[firsts + 1 - offsets[0]] = False
    digits = _UNHEX[data[int(offsets[0]) : int(offsets[-1])][keep]]
    if np.any(digits == 255):
        raise column.error("sent a bytea with a character that is no hex digit")
    raw = (digits[0::2] << 4) | digits[1::2]
    new_lengths = np.where(valid, (lengths - 2) // 2, 0)
    new_offsets = np.concatenate([[0], np.cumsum(new_lengths)]).astype(np.int32)
    return pa.Array.from_buffers(
        pa.binary(),
        count,
        [values.buffers()[0], pa.py_buffer(new_offsets), pa.py_buffer(raw)],
        values.null_count,
    )


def text_to_arrow(
    values: pa.Array, kind: pa.DataType, where: str, *, check_utf8: bool = True
) -> pa.Array:
    """A column of PostgreSQL text output (a binary array, NULLs kept) as exact ``kind``
    values; ``where`` names the column in errors ("column 'x' of schema.table"). The session
    that decoded the values had DateStyle ISO, TimeZone UTC, extra_float_digits 3 and hex
    bytea, so every value has one exact form. ``check_utf8``: validate text (needed only when
    the server's encoding is SQL_ASCII)."""
    column = _Column(where)
    if pa.types.is_binary(kind):
        return _bytea(column, values)
    text = values.view(pa.string())
    if pa.types.is_string(kind):
        if check_utf8:
            try:
                text.validate(full=True)
            except pa.ArrowInvalid:
                raise column.error("holds text that is not valid UTF-8") from None
        return text
    if pa.types.is_boolean(kind):
        return _bool(column, text)
    if pa.types.is_decimal(kind):
        return _decimal(column, text, kind)
    if pa.types.is_date32(kind) or pa.types.is_timestamp(kind):
        if pa.types.is_timestamp(kind) and kind.unit != "us":
            raise column.error(f"has the Arrow type {kind}, which the lake does not write")
        try:
            return pc.cast(text, kind)
        except pa.ArrowInvalid:
            return _slow_times(column, text, kind)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        try:
            converted = pc.cast(text, kind)
        except pa.ArrowInvalid:
            raise column.error(f"sent a value that is no {kind}") from None
        return _finite(column, converted) if pa.types.is_floating(kind) else converted
    raise column.error(f"has the Arrow type {kind}, which the lake cannot fill from text")


def _parsed_in_place(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_decimal128(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_date32(kind)
        or pa.types.is_timestamp(kind)
    )


def column_to_arrow(
    messages: Messages,
    start: Int64s,
    length: Int64s,
    valid: Bools,
    kind: pa.DataType,
    where: str,
    *,
    check_utf8: bool = True,
) -> pa.Array:
    """One column's values, the spans ``[start, start + length)`` of the buffer (NULL where
    not ``valid``), as exact ``kind`` values (``text_to_arrow``). Numbers, dates and
    timestamps are parsed where they lie, never copied: Arrow's cast reads the even values
    of a string array of 2n values over the buffer whose odd values (the bytes between two
    spans) are NULL, and the even results are kept."""
    count = len(start)
    offsets = _spans(messages, start, length, valid) if count else None
    if offsets is None or not _parsed_in_place(kind):
        return text_to_arrow(
            gather(messages, start, length, valid), kind, where, check_utf8=check_utf8
        )
    every = np.zeros(2 * count, dtype=bool)
    every[0::2] = valid
    present = int(np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(every, bitorder="little"))
    spans = pa.Array.from_buffers(
        pa.binary(), 2 * count, [bitmap, pa.py_buffer(offsets), messages.arrow], 2 * count - present
    )
    parsed = text_to_arrow(spans, kind, where, check_utf8=False)
    width = kind.bit_width // 8
    values = np.frombuffer(parsed.buffers()[1], np.uint8, 2 * count * width, parsed.offset * width)
    kept = np.ascontiguousarray(values.reshape(2 * count, width)[0::2])
    nulls = None if present == count else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(kind, count, [nulls, pa.py_buffer(kept)], count - present)
