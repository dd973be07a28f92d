"""PostgreSQL's binary COPY rows into Arrow record batches, column by column, with numpy.

A worker gathers the rows of a COPY (one CopyData message each) into one buffer and their
lengths; ``decode_rows`` then walks every column for all the rows at once: the field lengths
through unaligned big-endian views of the buffer, fixed-width values by one gather each, text
and bytes by Arrow's ``take`` over a zero-copy array of spans of the buffer, numeric from its
base-10,000 digits into exact 64-bit (precision up to 18) or 128-bit integers. No Python object
is made per value. Every row is checked: its field count, and that its fields end exactly where
its message ends.

The types are exact (``arrow_type``): numeric(p,s) is decimal128(p,s) (an unconstrained numeric
gets the scale its values need, measured in the same snapshot), timestamps are microseconds
(UTC for timestamptz), dates are days. A value Arrow cannot hold exactly (NaN, an infinity, a
date or timestamp out of Arrow's range) is a DataError naming the column, never a guess.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from abaco_cli import libc
from abaco_cli.errors import DataError
from abaco_cli.libc import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD

Int64s = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER_BYTES = len(SIGNATURE) + 8  # signature, flags (int32), header extension length (int32)
TRAILER = b"\xff\xff"
PADDING = 64  # zero bytes after the last row, so that a gather never reads past the buffer
MAX_DECIMAL_DIGITS = 38  # decimal128
MAX_INT64_DIGITS = 18

_PG_EPOCH_DAYS = 10_957  # 1970-01-01 -> 2000-01-01
_PG_EPOCH_MICROS = _PG_EPOCH_DAYS * 86_400 * 1_000_000
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MAX = 2**63 - 1
_NUMERIC_POS, _NUMERIC_NEG = 0x0000, 0x4000
_NUMERIC_SPECIAL = {0xC000: "NaN", 0xD000: "Infinity", 0xF000: "-Infinity"}
_POW10 = np.array([10**e for e in range(MAX_INT64_DIGITS + 1)], dtype=np.int64)
# 10**e as four 32-bit limbs (least significant first), for e up to 38: the 128-bit path
_LIMBS = np.array(
    [[(10**e >> (32 * j)) & 0xFFFFFFFF for j in range(4)] for e in range(MAX_DECIMAL_DIGITS + 1)],
    dtype=np.uint64,
)
# the bits of the first m digits of an 8-byte gather of four big-endian digits, m = 0 .. 4
_KEEP = np.array(
    [0, 0xFFFF << 48, 0xFFFFFFFF << 32, 0xFFFFFFFFFFFF << 16, 0xFFFFFFFFFFFFFFFF], dtype=np.uint64
)


def _memory_pool() -> pa.MemoryPool:
    """jemalloc where pyarrow has it, for the Arrow memory of the decoded batches and of the
    Parquet writer: batches are made in the reader's threads and freed in the writer's, and
    under that pattern mimalloc (pyarrow's default) kept about 30 MB more of a table extract
    resident."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:  # pragma: no cover - a pyarrow built without jemalloc
        return pa.default_memory_pool()


MEMORY_POOL = _memory_pool()

HEAP_BLOCK_BYTES = 32 << 20  # blocks up to this size come from malloc's heap, not mmap
HEAP_KEEP_BYTES = 128 << 20  # ... which keeps this much freed memory before giving it back


@functools.cache
def keep_heap_memory() -> bool:
    """Have glibc's malloc serve blocks of up to HEAP_BLOCK_BYTES from its heap and keep up to
    HEAP_KEEP_BYTES of freed memory, for the rest of the process; True where that took (glibc).

    Decoding makes and frees numpy temporaries of a few MiB for every batch in the reader's
    threads. By default malloc maps most of them afresh and unmaps them when freed (its
    threshold only grows as it meets them): a page fault every 4 KiB, and each unmapping
    interrupts the other core to flush its TLB, a core the server's COPY is using. Whole-table
    extract of the benchmark's 5,000,000 rows, 8 runs alternating with and without: 0.08 s
    less CPU, about 1 % less time, the same peak memory. Only the whole-table reader asks.
    """
    mallopt = libc.mallopt()
    if mallopt is None:
        return False
    return bool(
        mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_BYTES) and mallopt(M_TRIM_THRESHOLD, HEAP_KEEP_BYTES)
    )


_HEX = np.frombuffer(b"".join(f"{i:02x}".encode() for i in range(256)), np.uint8).reshape(256, 2)

# PostgreSQL base type (pg_type.typname) -> Arrow type, for the types of fixed meaning
_FIXED: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "uuid": pa.string(),  # the canonical text, 8-4-4-4-12 lower-case hex
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),  # with its padding, as PostgreSQL prints it
    "name": pa.string(),
    "json": pa.string(),
    "jsonb": pa.string(),  # jsonb's own text form, as PostgreSQL prints it
    "bytea": pa.binary(),
}
SUPPORTED_TYPES = (*_FIXED, "numeric", "enum")


@dataclass(frozen=True)
class SourceColumn:
    """One column of a source table as the reader decodes it.

    ``type_name`` is the base type's ``pg_type.typname`` (a domain is read as its base type,
    an enum as ``enum``); ``precision`` and ``scale`` are numeric's, declared or (for a numeric
    without them) measured.
    """

    name: str
    type_name: str
    precision: int | None = None
    scale: int | None = None

    @property
    def arrow_type(self) -> pa.DataType:
        if self.type_name == "numeric":
            assert self.precision is not None and self.scale is not None
            return pa.decimal128(self.precision, self.scale)
        if self.type_name == "enum":
            return pa.string()
        return _FIXED[self.type_name]


def check_supported(table: str, name: str, type_name: str, shown: str) -> None:
    """A DataError naming the column when the reader has no exact Arrow type for it."""
    if type_name not in SUPPORTED_TYPES:
        raise DataError(
            f"column {name!r} of {table} has type {shown}, which abaco does not read exactly",
            hint="Leave the column out of extract.tables; the supported types are "
            "bool, int2/4/8, float4/8, numeric, text, varchar, char, name, uuid, json, jsonb, "
            "bytea, date, timestamp, timestamptz and enums (domains of these too).",
        )


def numeric_type(
    table: str, name: str, precision: int | None, scale: int | None
) -> tuple[int, int] | None:
    """The (precision, scale) of a declared numeric(p,s); None for an unconstrained numeric
    (its scale is then measured); a DataError when decimal128 cannot hold it."""
    if precision is None or scale is None:
        return None
    if precision > MAX_DECIMAL_DIGITS or scale < 0 or scale > precision:
        raise DataError(
            f"column {name!r} of {table} is numeric({precision},{scale}), which no decimal128 "
            f"holds exactly (at most 38 digits, a scale from 0 to the precision)",
            hint="Leave the column out of extract.tables, or declare it numeric(p,s) with p <= 38.",
        )
    return precision, scale


def measured_numeric(
    table: str, name: str, integer_digits: int | None, scale: int | None
) -> tuple[int, int]:
    """decimal128(38, s) for an unconstrained numeric whose values have at most
    ``integer_digits`` digits before the point and ``scale`` after it."""
    digits, places = integer_digits or 1, scale or 0
    if digits + places > MAX_DECIMAL_DIGITS:
        raise DataError(
            f"column {name!r} of {table} is numeric without precision and its values need "
            f"{digits} digits before the point and {places} after it: no decimal128 "
            "(38 digits) holds them exactly",
            hint="Declare the column numeric(p,s) with p <= 38, or leave it out of extract.tables.",
        )
    return MAX_DECIMAL_DIGITS, places


# ---------------------------------------------------------------------------------- decoding


class _Rows:
    """One buffer of rows, and gathers from it at any byte offset.

    A gather reads fixed-size records through an unaligned view of the buffer (one record per
    offset, whatever its width: numpy's cost is per record, not per byte), so each column
    costs one gather of its length field together with the value that follows it.
    """

    def __init__(self, buffer: bytearray | bytes, count: int) -> None:
        self.raw = buffer
        self.count = count
        self.u1 = np.frombuffer(buffer, np.uint8)
        self.arrow = pa.py_buffer(buffer)
        self._views: dict[int, np.ndarray[Any, Any]] = {}

    def records(self, offsets: Int64s, width: int) -> npt.NDArray[np.uint8]:
        """The ``width`` bytes at each (increasing) offset, as an (n, width) matrix; zeros
        past the end of the buffer (a record of fixed-width columns is gathered whole, even
        when NULLs leave the last row shorter than the record)."""
        view = self._views.get(width)
        if view is None:
            size = max(len(self.u1) - width + 1, 0)
            view = np.ndarray((size,), np.dtype(f"V{width}"), self.raw, 0, (1,))
            self._views[width] = view
        count = len(offsets)
        if count and offsets[-1] >= len(view):
            inside = int(np.searchsorted(offsets, len(view)))
            last = np.zeros((count - inside, width), np.uint8)
            for row, offset in enumerate(offsets[inside:].tolist()):
                present = self.u1[offset : offset + width]
                last[row, : len(present)] = present
            first = view[offsets[:inside]].view(np.uint8).reshape(inside, width)
            return np.concatenate([first, last])
        return view[offsets].view(np.uint8).reshape(count, width)

    def at(self, dtype: str, offsets: Int64s) -> np.ndarray[Any, Any]:
        """The values of big-endian ``dtype`` that start at ``offsets``, natively ordered."""
        kind = np.dtype(dtype)
        return field_of(self.records(offsets, kind.itemsize), 0, dtype)


def field_of(
    records: npt.NDArray[np.uint8], offset: int, dtype: str, into: Any = None
) -> np.ndarray[Any, Any]:
    """The big-endian ``dtype`` at byte ``offset`` of every record, natively ordered (or
    converted to ``into`` in the same pass)."""
    kind = np.dtype(dtype)
    count, width = records.shape
    view = np.ndarray((count,), kind, records, offset, (width,))
    return view.astype(kind.newbyteorder("=") if into is None else into)


@dataclass
class _Field:
    """One column's fields in every row: the records gathered at its length field (``base``:
    where the length is in each record; the value's first bytes follow it), where its data
    starts, its length, NULL or not."""

    column: SourceColumn
    table: str
    record: npt.NDArray[np.uint8]
    base: int
    start: Int64s
    length: Int64s
    valid: Bools
    all_valid: bool
    check_utf8: bool = True

    def bitmap(self) -> pa.Buffer | None:
        if self.all_valid:
            return None
        return pa.py_buffer(np.packbits(self.valid, bitorder="little"))

    def nulls(self) -> int:
        return 0 if self.all_valid else int(len(self.valid) - np.count_nonzero(self.valid))

    def raw(self, offset: int, dtype: str, into: Any = None) -> np.ndarray[Any, Any]:
        """The big-endian ``dtype`` at ``offset`` of the field's data, garbage where NULL
        (natively ordered, or converted to ``into`` in the same pass)."""
        return field_of(self.record, self.base + 4 + offset, dtype, into)

    def bytes_at(self, offset: int, count: int) -> npt.NDArray[np.uint8]:
        first = self.base + 4 + offset
        return self.record[:, first : first + count]

    def value(self, dtype: str, offset: int = 0) -> np.ndarray[Any, Any]:
        """The fixed-width value at ``offset`` of the field's data, NULLs as 0."""
        values = self.raw(offset, dtype)
        if not self.all_valid:
            values[~self.valid] = 0
        return values

    def error(self, problem: str, hint: str | None = None) -> DataError:
        return DataError(f"column {self.column.name!r} of {self.table} {problem}", hint=hint)

    def expect_width(self, width: int) -> None:
        lengths = self.length if self.all_valid else self.length[self.valid]
        if not np.all(lengths == width):
            raise self.error(
                f"sent a {self.column.type_name} value that is not {width} bytes long: the "
                "COPY stream does not match the column's type"
            )


@dataclass(frozen=True)
class _Decoder:
    """How one type becomes an Arrow array. ``width``: the bytes of its value gathered with
    its length field; ``fixed``: every value has exactly that many bytes (so the next field's
    length follows at a known place, and is gathered in the same record)."""

    width: int
    decode: Callable[[_Rows, _Field], pa.Array]
    fixed: bool = False


def _primitive(dtype: str, arrow: pa.DataType) -> _Decoder:
    width = np.dtype(dtype).itemsize

    def decode(rows: _Rows, field: _Field) -> pa.Array:
        field.expect_width(width)
        values = field.value(dtype)
        if pa.types.is_floating(arrow):
            finite = np.isfinite(values)
            if not finite.all():
                bad = values[~finite][0]
                what = "NaN" if np.isnan(bad) else ("Infinity" if bad > 0 else "-Infinity")
                raise field.error(
                    f"holds {what}, which abaco does not export (strict JSON has none, and "
                    "CSV readers disagree on it)",
                    hint="Fix the value in the source, or leave the column out of extract.tables.",
                )
        return pa.Array.from_buffers(
            arrow, rows.count, [field.bitmap(), pa.py_buffer(values)], field.nulls()
        )

    return _Decoder(width, decode, fixed=True)


def _bool(rows: _Rows, field: _Field) -> pa.Array:
    field.expect_width(1)
    values = np.packbits(field.bytes_at(0, 1)[:, 0] != 0, bitorder="little")
    return pa.Array.from_buffers(
        pa.bool_(), rows.count, [field.bitmap(), pa.py_buffer(values)], field.nulls()
    )


def _date(rows: _Rows, field: _Field) -> pa.Array:
    field.expect_width(4)
    days = field.value(">i4").astype(np.int64)
    if days.size and (days.min() == _INT32_MIN or days.max() == _INT32_MAX):
        raise field.error("holds an infinite date, which Arrow cannot represent")
    days += _PG_EPOCH_DAYS
    if days.size and days.max() > _INT32_MAX:
        raise field.error("holds a date beyond the range of Arrow's date32")
    values = days.astype(np.int32)
    return pa.Array.from_buffers(
        pa.date32(), rows.count, [field.bitmap(), pa.py_buffer(values)], field.nulls()
    )


def _timestamp(arrow: pa.DataType) -> _Decoder:
    def decode(rows: _Rows, field: _Field) -> pa.Array:
        field.expect_width(8)
        micros = field.value(">i8")
        if micros.size:
            low, high = int(micros.min()), int(micros.max())
            if high == _INT64_MAX or low == -_INT64_MAX - 1:
                raise field.error("holds an infinite timestamp, which Arrow cannot represent")
            if high > _INT64_MAX - _PG_EPOCH_MICROS:
                raise field.error("holds a timestamp beyond the range of Arrow's timestamps")
        micros += _PG_EPOCH_MICROS
        return pa.Array.from_buffers(
            arrow, rows.count, [field.bitmap(), pa.py_buffer(micros)], field.nulls()
        )

    return _Decoder(8, decode, fixed=True)


def _spans(rows: _Rows, start: Int64s, length: Int64s) -> pa.Array:
    """A zero-copy binary array over the buffer whose even values are the spans
    [start, start + length) and whose odd values are the bytes between them."""
    count = len(start)
    offsets = np.empty(2 * count + 1, dtype=np.int32)
    offsets[0 : 2 * count : 2] = start
    ends = start + length
    offsets[1 : 2 * count : 2] = ends
    offsets[2 * count] = ends[-1] if count else 0
    return pa.Array.from_buffers(
        pa.binary(), 2 * count, [None, pa.py_buffer(offsets), rows.arrow], 0
    )


def _gathered(rows: _Rows, field: _Field, skip: int = 0) -> pa.Array:
    """The fields as one contiguous binary array (NULL where NULL), ``skip`` bytes dropped
    from the front of each value."""
    length = np.maximum(field.length - skip, 0)
    spans = _spans(rows, field.start + skip, length)
    positions = np.arange(0, 2 * rows.count, 2, dtype=np.int64)
    indices = pa.Array.from_buffers(
        pa.int64(), rows.count, [field.bitmap(), pa.py_buffer(positions)], field.nulls()
    )
    return pc.take(spans, indices, memory_pool=MEMORY_POOL)


def _utf8(field: _Field, values: pa.Array) -> pa.Array:
    """Binary as text; checked unless the server's own encoding guarantees UTF-8."""
    text = values.view(pa.string())
    if not field.check_utf8:
        return text
    try:
        text.validate(full=True)
    except pa.ArrowInvalid:
        raise field.error(
            "holds text that is not valid UTF-8",
            hint="abaco reads with client_encoding UTF8; a SQL_ASCII database can hold bytes "
            "that are no text: fix them, or leave the column out of extract.tables.",
        ) from None
    return text


def _text(rows: _Rows, field: _Field) -> pa.Array:
    return _utf8(field, _gathered(rows, field))


def _jsonb(rows: _Rows, field: _Field) -> pa.Array:
    versions = field.bytes_at(0, 1)[:, 0]
    if not field.all_valid:
        versions = versions[field.valid]
    if not np.all(versions == 1):
        raise field.error("sent a jsonb value of an unknown binary version")
    return _utf8(field, _gathered(rows, field, skip=1))


def _bytea(rows: _Rows, field: _Field) -> pa.Array:
    return _gathered(rows, field)


def _uuid(rows: _Rows, field: _Field) -> pa.Array:
    field.expect_width(16)
    hexed = _HEX[field.bytes_at(0, 16)].reshape(rows.count, 32)
    text = np.empty((rows.count, 36), np.uint8)
    text[:, [8, 13, 18, 23]] = ord("-")
    for first, last, source in ((0, 8, 0), (9, 13, 8), (14, 18, 12), (19, 23, 16), (24, 36, 20)):
        text[:, first:last] = hexed[:, source : source + last - first]
    offsets = np.arange(0, 36 * rows.count + 1, 36, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(),
        rows.count,
        [field.bitmap(), pa.py_buffer(offsets), pa.py_buffer(text)],
        field.nulls(),
    )


def _numeric(rows: _Rows, field: _Field) -> pa.Array:
    """numeric: ndigits, weight, sign, dscale (int16 each), then ndigits base-10,000 digits.
    Worked out for every row at once (a NULL row's garbage is dropped at the end)."""
    column = field.column
    assert column.precision is not None and column.scale is not None
    precision, scale = column.precision, column.scale
    valid = field.valid
    groups = field.raw(0, ">i2")
    sign = field.raw(4, ">u2")
    special = (sign & ~np.uint16(_NUMERIC_NEG)) != 0  # anything but 0x0000 and 0x4000
    if not field.all_valid:
        special &= valid
    if special.any():
        what = _NUMERIC_SPECIAL.get(int(sign[special][0]), "a value that is no number")
        raise field.error(
            f"holds {what}, which decimal128({precision},{scale}) cannot represent exactly",
            hint="Fix the value in the source (`abaco db check --data` finds NaN and Infinity "
            "in the contract's columns), or leave the column out of extract.tables.",
        )
    if field.all_valid:
        wrong = not np.array_equal(field.length, 8 + 2 * groups)
    else:
        wrong = bool(np.any((field.length != 8 + 2 * groups) & valid))
    if wrong:
        raise field.error("sent a numeric value whose length does not match its digits")
    most = int(groups.max(initial=0, where=valid))
    weight = field.raw(2, ">i2", into=np.int64)
    negative = sign == _NUMERIC_NEG
    if precision <= MAX_INT64_DIGITS:
        words = _numeric_int64(rows, field, groups, weight, most, negative)
    else:
        words = _numeric_int128(rows, field, groups, weight, most)
        _negate(words, negative)
    if not field.all_valid:
        words[~valid] = 0
    return pa.Array.from_buffers(
        pa.decimal128(precision, scale),
        rows.count,
        [field.bitmap(), pa.py_buffer(words)],
        field.nulls(),
    )


def _beyond(field: _Field, magnitude: npt.NDArray[Any], limit: int) -> None:
    if field.all_valid:
        too_big = bool(np.any(magnitude >= limit))
    else:
        too_big = bool(np.any((magnitude >= limit) & field.valid))
    if too_big:
        raise field.error("sent a numeric value beyond its declared precision")


def _numeric_int64(
    rows: _Rows,
    field: _Field,
    groups: npt.NDArray[np.int16],
    weight: Int64s,
    most: int,
    negative: Bools,
) -> npt.NDArray[np.int64]:
    """The unscaled values of precision <= 18 as (n, 2) int64: the 128-bit words.

    Four digits at a time: one 8-byte read holds digits 4c .. 4c+3, together worth at most
    10**16; digits past a value's ndigits are masked off, and the four are multiplied (or,
    past the scale, exactly divided) by the power of ten of the last one. A negative value
    is negated in 64 bits, its high word all ones (two's complement).
    """
    assert field.column.scale is not None and field.column.precision is not None
    base = 4 * weight + field.column.scale  # the power of ten of digit 0
    magnitude: Int64s | None = None
    for chunk in range((most + 3) // 4):
        # the first four digits were gathered with the length and the head
        quad = field.raw(8, ">u8") if chunk == 0 else rows.at(">u8", field.start + 8 + 8 * chunk)
        quad &= _KEEP.take(groups - 4 * chunk, mode="clip")
        digits = quad.view(np.uint16)  # little-endian machine: [d3, d2, d1, d0] per value
        value = digits[3::4] * np.uint64(10**12)
        value += digits[2::4] * np.uint64(10**8)
        value += digits[1::4] * np.uint64(10**4)
        value += digits[0::4]
        exponent = base - (16 * chunk + 12)
        signed = value.view(np.int64)
        low, high = int(exponent.min()), int(exponent.max())
        if high > 0:
            signed *= _POW10.take(exponent, mode="clip")
        if low < 0:
            signed //= _POW10.take(-exponent, mode="clip")
        if magnitude is None:
            magnitude = signed
        else:
            magnitude += signed
    if magnitude is None:
        magnitude = np.zeros(rows.count, dtype=np.int64)
    _beyond(field, magnitude, 10**field.column.precision)
    words = np.empty((rows.count, 2), dtype=np.int64)
    words[:, 0] = np.where(negative, -magnitude, magnitude) if negative.any() else magnitude
    words[:, 1] = words[:, 0] >> 63
    return words


def _negate(words: npt.NDArray[Any], negative: Bools) -> None:
    """Two's complement of the 128-bit words (n, 2) int64 of the negative rows, in place."""
    if not negative.any():
        return
    low = ~words[negative, 0].view(np.uint64) + np.uint64(1)
    high = ~words[negative, 1].view(np.uint64) + (low == 0).astype(np.uint64)
    words[negative, 0] = low.view(np.int64)
    words[negative, 1] = high.view(np.int64)


def _numeric_int128(
    rows: _Rows, field: _Field, groups: Int64s, weight: Int64s, most: int
) -> npt.NDArray[np.int64]:
    """The unscaled magnitudes of precision 19 to 38 as (n, 2) int64 words: each digit times
    its power of ten in four 32-bit limbs (uint64 sums, no overflow), then the carries."""
    assert field.column.scale is not None
    limbs = np.zeros((rows.count, 4), dtype=np.uint64)
    base = 4 * weight + field.column.scale
    for k in range(most):
        digit = rows.at(">u2", field.start + 8 + 2 * k).astype(np.int64)
        digit[k >= groups] = 0
        exponent = base - 4 * k
        if exponent.min() < 0:  # past the scale: only the digit's leading part counts
            digit //= _POW10[np.clip(-exponent, 0, 4)]
        if np.any((exponent > MAX_DECIMAL_DIGITS) & (digit != 0)):
            raise field.error("sent a numeric value beyond 38 digits")
        limbs += digit.astype(np.uint64)[:, None] * _LIMBS[np.clip(exponent, 0, 38)]
    for j in range(3):
        limbs[:, j + 1] += limbs[:, j] >> np.uint64(32)
        limbs[:, j] &= np.uint64(0xFFFFFFFF)
    _beyond(field, limbs[:, 3], 2**31)
    return np.ascontiguousarray(limbs.astype(np.uint32).view(np.int64))


_TEXT = _Decoder(0, lambda rows, field: _text(rows, field))
_DECODERS: dict[str, _Decoder] = {
    "bool": _Decoder(1, _bool, fixed=True),
    "int2": _primitive(">i2", pa.int16()),
    "int4": _primitive(">i4", pa.int32()),
    "int8": _primitive(">i8", pa.int64()),
    "float4": _primitive(">f4", pa.float32()),
    "float8": _primitive(">f8", pa.float64()),
    "date": _Decoder(4, _date, fixed=True),
    "timestamp": _timestamp(pa.timestamp("us")),
    "timestamptz": _timestamp(pa.timestamp("us", tz="UTC")),
    "uuid": _Decoder(16, _uuid, fixed=True),
    "numeric": _Decoder(16, _numeric),  # the head and the first four digits
    "jsonb": _Decoder(1, _jsonb),
    "bytea": _Decoder(0, _bytea),
    **dict.fromkeys(("text", "varchar", "bpchar", "name", "json", "enum"), _TEXT),
}


class RowDecoder:
    """Decodes buffers of binary COPY rows of one table into record batches of its schema.

    ``check_utf8``: validate text (needed only when the server's encoding is SQL_ASCII: any
    other server encoding, converted to the client encoding UTF8, is valid UTF-8).
    """

    def __init__(
        self, table: str, columns: Sequence[SourceColumn], *, check_utf8: bool = True
    ) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.check_utf8 = check_utf8
        self.schema = pa.schema([pa.field(c.name, c.arrow_type) for c in self.columns])
        self._decoders = [_DECODERS[c.type_name] for c in self.columns]

    def _framing(self) -> DataError:
        return DataError(f"the COPY stream of {self.table} lost its framing")

    def decode(
        self, buffer: bytearray | bytes, lengths: Int64s, starts: Int64s | None = None
    ) -> pa.RecordBatch:
        """The rows in ``buffer`` (each a CopyData message's payload: a field count, then
        each field's length and bytes); ``lengths`` are the rows' sizes in order. Without
        ``starts`` the rows fill the buffer one after another up to its last PADDING bytes
        (zeros); with it, row i is at ``starts[i]`` (in increasing order, as the messages
        came: the protocol's framing may lie between them) and at least PADDING bytes of the
        buffer follow the last one.

        One gather reads a column's length and its value's first bytes; after a column whose
        values all have their fixed width (no NULL in this batch), the next column's length
        is in the same record, so a run of fixed-width columns costs one gather.
        """
        count = len(lengths)
        if count == 0:
            return pa.RecordBatch.from_pylist([], schema=self.schema)
        size = len(buffer) - PADDING
        if size >= 2**31:
            raise self._framing()
        if starts is None:
            if size != int(lengths.sum()):
                raise self._framing()
            ends = np.cumsum(lengths)
            starts = ends - lengths
        else:
            ends = starts + lengths
            if int(ends[-1]) > size or int(starts[0]) < 0:
                raise self._framing()
        rows = _Rows(buffer, count)
        try:
            position, arrays = self._columns(rows, starts, size)
        except (IndexError, ValueError):  # ArrowInvalid too
            # a length pointing outside the buffer: the check below would fail as well
            raise self._framing() from None
        if not np.array_equal(position, ends):
            raise self._framing()
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _fields(self, record: npt.NDArray[np.uint8]) -> None:
        """Every row's field count (the first two bytes of the first record) checked."""
        fields = field_of(record, 0, ">i2")
        if not np.all(fields == len(self.columns)):
            wrong = int(fields[fields != len(self.columns)][0])
            raise DataError(
                f"the COPY stream of {self.table} has rows of {wrong} fields, "
                f"not {len(self.columns)}"
            )

    def _columns(self, rows: _Rows, starts: Int64s, size: int) -> tuple[Int64s, list[pa.Array]]:
        """Every column's array, and where each row's fields end. The first record also
        holds the rows' field counts (checked first)."""
        arrays: list[pa.Array] = []
        index = 0
        position, lead = starts, 2
        while index < len(self.columns):
            run = index + 1  # the run: fixed-width columns, then one more
            while run < len(self.columns) and self._decoders[run - 1].fixed:
                run += 1
            widths = [4 + d.width for d in self._decoders[index:run]]
            record = rows.records(position, lead + sum(widths))
            if lead:
                self._fields(record)
                position = position + lead
            base, lead = lead, 0
            for column, decoder, width in zip(
                self.columns[index:run], self._decoders[index:run], widths, strict=True
            ):
                length = field_of(record, base, ">i4", np.int64)
                valid = length >= 0
                all_valid = bool(valid.all())
                start = position + 4
                position = start + (length if all_valid else np.maximum(length, 0))
                if position[-1] > size:
                    raise self._framing()
                field = _Field(
                    column, self.table, record, base, start, length, valid, all_valid,
                    self.check_utf8,
                )  # fmt: skip
                arrays.append(decoder.decode(rows, field))
                index += 1
                if decoder.fixed and not all_valid:
                    break  # a NULL moved the next length: gather it where it is
                base += width
        return position, arrays


_NO_ROWS: Int64s = np.zeros(0, dtype=np.int64)
_COPY_DATA = ord("d")


def row_messages(buffer: bytearray, start: int, end: int, fields: int) -> tuple[Int64s, Int64s]:
    """The CopyData messages of one row of ``fields`` fields each that follow one another
    from ``start`` (where a message begins) and end within ``end``: where each message
    begins and where it ends; none when the message at ``start`` is not such a row.

    Found without a loop over the rows: every place where the bytes could begin such a
    message (``d``, then a length, then the field count) is a candidate, and each
    candidate's length says where its successor begins. From a true message, a run of
    candidates each beginning where the one before ends is a run of true messages; a
    candidate inside a value (bytes that happen to look like a header) breaks the run, and
    the walk goes on from the true next message, so the Python loop turns once per such
    lookalike, not per row.
    """
    count = end - start - 6  # a candidate needs its 7 bytes within end
    if count <= 0:
        return _NO_ROWS, _NO_ROWS
    data = np.frombuffer(buffer, np.uint8)
    mark = data[start : start + count] == _COPY_DATA
    mark &= data[start + 6 : start + 6 + count] == (fields & 0xFF)
    mark &= data[start + 5 : start + 5 + count] == (fields >> 8)
    begins = np.flatnonzero(mark)
    if not len(begins) or begins[0] != 0:
        return _NO_ROWS, _NO_ROWS
    begins += start
    sizes = np.ndarray((len(buffer) - 4,), ">u4", buffer, 1, (1,))[begins]
    ends = begins + 1 + sizes.astype(np.int64)
    breaks = np.flatnonzero(ends[:-1] != begins[1:])
    if len(breaks):
        runs: list[Int64s] = []
        first = 0
        for last in breaks.tolist():
            if last < first:
                continue  # a lookalike skipped by the run before
            runs.append(np.arange(first, last + 1))
            following = int(np.searchsorted(begins, ends[last]))
            if following >= len(begins) or begins[following] != ends[last]:
                first = -1  # the next message is no row: the run stops here
                break
            first = following
        if first >= 0:
            runs.append(np.arange(first, len(begins)))
        chosen = np.concatenate(runs)
        begins, ends = begins[chosen], ends[chosen]
    complete = int(np.searchsorted(ends, end, side="right"))
    return begins[:complete], ends[:complete]


def bytea_text(values: pa.Array) -> pa.Array:
    """Binary values as PostgreSQL prints bytea (``\\x`` and lower-case hex), NULL kept: the
    text form for CSV and JSON."""
    binary = values.cast(pa.binary())
    if binary.offset:
        binary = pa.concat_arrays([binary])  # a slice: its own buffers, from offset 0
    offsets = np.frombuffer(binary.buffers()[1], np.int32, len(binary) + 1)
    data = np.frombuffer(binary.buffers()[2] or b"", np.uint8)
    first, last = int(offsets[0]), int(offsets[-1])
    hexed = _HEX[data[first:last]].reshape(-1)
    lengths = np.diff(offsets).astype(np.int64)
    new_offsets = np.zeros(len(binary) + 1, np.int64)
    np.cumsum(2 + 2 * lengths, out=new_offsets[1:])
    text = np.empty(int(new_offsets[-1]), np.uint8)
    starts = new_offsets[:-1]
    text[starts] = ord("\\")
    text[starts + 1] = ord("x")
    # each value's hex digits go after its two-character prefix
    positions = np.repeat(starts + 2 - 2 * (offsets[:-1] - first), 2 * lengths)
    text[positions + np.arange(len(hexed))] = hexed
    if new_offsets[-1] >= 2**31:
        raise DataError("a batch of bytea values is too large to print as text")
    return pa.Array.from_buffers(
        pa.string(),
        len(binary),
        [binary.buffers()[0], pa.py_buffer(new_offsets.astype(np.int32)), pa.py_buffer(text)],
        binary.null_count,
    )
