"""pgoutput decoding (lake/pgoutput.py) and LSNs (lake/lsn.py), without a database.

The messages are built here byte by byte from the protocol's description (PostgreSQL docs,
"Logical Replication Message Formats", version 1), independently of the decoder; the text
values are PostgreSQL's text output as a session with DateStyle ISO and TimeZone UTC prints it.
"""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from abaco_cli.errors import DataError
from abaco_cli.lake.lsn import MAX_LSN, format_lsn, lsn_key, parse_lsn, parse_lsn_key
from abaco_cli.lake.pgoutput import (
    PADDING,
    Begin,
    Commit,
    Messages,
    ProtocolError,
    Relation,
    RelationColumn,
    Truncate,
    column_to_arrow,
    gather,
    parse_begin,
    parse_commit,
    parse_relation,
    parse_truncate,
    text_to_arrow,
    walk_tuples,
)

UNCHANGED = object()  # a TupleData column sent as 'u'
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------------ LSNs


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/1", 1),
        ("16/B374D848", 0x16B374D848),
        ("16/b374d848", 0x16B374D848),
        ("1/0", 2**32),
        ("FFFFFFFF/FFFFFFFF", MAX_LSN),
        ("00000000/00000010", 16),
    ],
)
def test_parse_lsn(text: str, value: int) -> None:
    assert parse_lsn(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "/",
        "16/",
        "/B374D848",
        "16B374D848",
        "-1/0",
        "+1/0",
        "1/-0",
        " 1/0",
        "1/0 ",
        "1/0\n",
        "1 /0",
        "1/ 0",
        "100000000/0",
        "0/100000000",
        "0x1/0",
        "1//0",
        "1/0/0",
        "1_0/0",
        "G/0",
        "\uff11/0",  # full-width digit one
        "1/\u0660",  # Arabic-Indic digit zero
        "1/0\x00",
        "1.5/0",
        "1g3/0",
        "16/B374D848; DROP TABLE x",
    ],
)
def test_parse_lsn_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn(text)


@pytest.mark.parametrize("value", [None, b"0/0", 0, ["0/0"]])
def test_parse_lsn_refuses_what_is_no_text(value: Any) -> None:
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn(value)


def test_format_lsn_is_postgres_form() -> None:
    assert format_lsn(0) == "0/0"
    assert format_lsn(0x16B374D848) == "16/B374D848"
    assert format_lsn(2**32) == "1/0"
    assert format_lsn(MAX_LSN) == "FFFFFFFF/FFFFFFFF"
    for value in (0, 1, 2**31, 2**32 - 1, 2**32, 0x16B374D848, MAX_LSN):
        assert parse_lsn(format_lsn(value)) == value


@pytest.mark.parametrize("value", [-1, 2**64, True, 1.0, "0/0", None])
def test_out_of_range_lsns_are_refused(value: Any) -> None:
    with pytest.raises(ValueError, match="an LSN is an integer"):
        format_lsn(value)
    with pytest.raises(ValueError, match="an LSN is an integer"):
        lsn_key(value)


def test_lsn_keys_sort_in_lsn_order() -> None:
    assert lsn_key(0x16B374D848) == "00000016B374D848"
    assert lsn_key(0) == "0000000000000000"
    assert lsn_key(MAX_LSN) == "FFFFFFFFFFFFFFFF"
    values = [0, 9, 10, 0xF, 0x10, 2**32 - 1, 2**32, 9 << 32, 10 << 32, 0x16B374D848, MAX_LSN]
    keys = [lsn_key(v) for v in values]
    assert sorted(keys) == keys
    assert [parse_lsn_key(k) for k in keys] == values
    # as text, PostgreSQL's form does not sort: "F/0" > "10/0"
    assert format_lsn(0xF << 32) > format_lsn(0x10 << 32)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "00000016b374d848",  # lower case is not the key's form
        "00000016B374D84",
        "00000016B374D8480",
        " 00000016B374D848",
        "00000016B374D848\n",
        "+0000016B374D848",
        "-0000016B374D848",
        "0x000016B374D848",
        "16/B374D848",
        "0000_0016B374D848",
        "\uff10000000000000000",  # a full-width zero first
    ],
)
def test_parse_lsn_key_is_strict(text: str) -> None:
    with pytest.raises(ValueError, match="not a 16-digit LSN key"):
        parse_lsn_key(text)


# -------------------------------------------------------------- messages, built by hand


def cstring(text: str) -> bytes:
    return text.encode() + b"\0"


def tuple_data(*values: Any) -> bytes:
    """TupleData: int16 count, then per column 'n', 'u' or 't' + int32 length + text."""
    out = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED:
            out += b"u"
        else:
            raw = value.encode() if isinstance(value, str) else value
            out += b"t" + struct.pack(">i", len(raw)) + raw
    return out


def begin_message(final_lsn: int, micros: int, xid: int) -> bytes:
    return b"B" + struct.pack(">qqi", final_lsn, micros, xid)


def commit_message(commit_lsn: int, end_lsn: int, micros: int) -> bytes:
    return b"C" + struct.pack(">bqqq", 0, commit_lsn, end_lsn, micros)


def relation_message(
    oid: int, schema: str, name: str, identity: bytes, columns: list[tuple[int, str, int, int]]
) -> bytes:
    out = b"R" + struct.pack(">I", oid) + cstring(schema) + cstring(name) + identity
    out += struct.pack(">h", len(columns))
    for flags, column, type_oid, typmod in columns:
        out += struct.pack(">b", flags) + cstring(column) + struct.pack(">Ii", type_oid, typmod)
    return out


def insert_message(oid: int, *values: Any) -> bytes:
    return b"I" + struct.pack(">I", oid) + b"N" + tuple_data(*values)


def update_message(
    oid: int, new: tuple[Any, ...], old: tuple[bytes, tuple[Any, ...]] | None = None
) -> bytes:
    out = b"U" + struct.pack(">I", oid)
    if old is not None:
        out += old[0] + tuple_data(*old[1])
    return out + b"N" + tuple_data(*new)


def delete_message(oid: int, tag: bytes, *values: Any) -> bytes:
    return b"D" + struct.pack(">I", oid) + tag + tuple_data(*values)


def messages_of(*raw: bytes) -> Messages:
    buffer = bytearray(b"".join(raw) + bytes(PADDING))
    sizes = np.array([len(m) for m in raw], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return Messages(buffer, starts, sizes)


def test_begin_and_commit() -> None:
    micros = 789_012_345_678_901  # 2025-01-01 ... in PostgreSQL's epoch
    begin = parse_begin(begin_message(0x16B374D848, micros, 4_000_000_000 - 2**32))
    unix = int((PG_EPOCH - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 10**6 + micros
    assert begin == Begin(final_lsn=0x16B374D848, commit_time=unix, xid=4_000_000_000)
    commit = parse_commit(commit_message(0x16B374D848, 0x16B374D880, micros))
    assert commit == Commit(
        flags=0, commit_lsn=0x16B374D848, end_lsn=0x16B374D880, commit_time=unix
    )
    with pytest.raises(ProtocolError):
        parse_begin(begin_message(1, 2, 3)[:-1])
    with pytest.raises(ProtocolError):
        parse_commit(begin_message(1, 2, 3))


def test_relation() -> None:
    raw = relation_message(
        16385,
        "core_banking",
        "payments",
        b"d",
        [(1, "payment_id", 25, -1), (0, "principal_paid", 1700, (18 << 16 | 2) + 4)],
    )
    relation = parse_relation(raw)
    assert relation == Relation(
        16385,
        "core_banking",
        "payments",
        "d",
        (
            RelationColumn("payment_id", 25, -1, True),
            RelationColumn("principal_paid", 1700, (18 << 16 | 2) + 4, False),
        ),
    )
    assert relation.qualified == "core_banking.payments"
    # the namespace of pg_catalog is sent empty
    assert parse_relation(relation_message(1, "", "pg_class", b"n", [])).schema == "pg_catalog"
    for broken in (raw[:-1], raw + b"x", raw[:20], raw.replace(b"payments\0", b"payments")):
        with pytest.raises(ProtocolError):
            parse_relation(broken)


def test_truncate() -> None:
    raw = b"T" + struct.pack(">ib", 2, 1) + struct.pack(">II", 16385, 4_000_000_000)
    assert parse_truncate(raw) == Truncate(options=1, oids=(16385, 4_000_000_000))
    with pytest.raises(ProtocolError):
        parse_truncate(raw[:-1])
    with pytest.raises(ProtocolError):
        parse_truncate(b"T" + struct.pack(">ib", -1, 0))


def spans_as_text(messages: Messages, column: Any) -> list[str | None]:
    values = gather(messages, column.start, column.length, column.valid)
    return [None if v is None else v.decode() for v in values.to_pylist()]


def test_insert_update_delete_tuples_walked_in_bulk() -> None:
    oid = 16385
    messages = messages_of(
        insert_message(oid, "P1", "", None, "12.50"),
        insert_message(oid, "P2", "ñ€", "x" * 300, "-0.01"),
        update_message(oid, ("P3", "a", UNCHANGED, "1.00")),
        update_message(oid, ("P9", "b", None, "2.00"), old=(b"K", ("P4", None, None, None))),
        update_message(oid, ("P5", "c", UNCHANGED, "3.00"), old=(b"O", ("P5", "c", "big", "2.00"))),
        delete_message(oid, b"K", "P6", None, None, None),
        delete_message(oid, b"O", "P7", "d", "e", "4.00"),
        b"Y" + struct.pack(">I", 600) + cstring("public") + cstring("t"),
        b"M" + b"\x01" + struct.pack(">q", 0) + cstring("prefix") + struct.pack(">i", 0),
    )
    assert bytes(messages.kinds) == b"IIUUUDDYM"
    assert messages.oids(np.arange(7, dtype=np.int64)).tolist() == [oid] * 7
    inserts = messages.starts[:2] + 6
    tuples = walk_tuples(messages, inserts, 4, wanted=(0, 1, 3))
    assert sorted(tuples.columns) == [0, 1, 3]  # column 2 skipped, never gathered
    assert np.array_equal(tuples.end, messages.ends[:2])
    assert spans_as_text(messages, tuples.columns[0]) == ["P1", "P2"]
    assert spans_as_text(messages, tuples.columns[1]) == ["", "ñ€"]  # empty is not NULL
    assert spans_as_text(messages, tuples.columns[3]) == ["12.50", "-0.01"]
    # an update without an old tuple: 'u' is kept as such
    plain = walk_tuples(messages, messages.starts[2:3] + 6, 4, wanted=(0, 1, 2, 3))
    assert plain.columns[2].unchanged.tolist() == [True]
    assert spans_as_text(messages, plain.columns[2]) == [None]
    # updates with an old tuple: old ('K' or 'O'), then 'N' and the new tuple
    olds = walk_tuples(messages, messages.starts[3:5] + 6, 4, wanted=(0, 2))
    assert spans_as_text(messages, olds.columns[0]) == ["P4", "P5"]
    assert spans_as_text(messages, olds.columns[2]) == [None, "big"]
    assert bytes(messages.u1[olds.end]) == b"NN"
    news = walk_tuples(messages, olds.end + 1, 4, wanted=(0, 2))
    assert np.array_equal(news.end, messages.ends[3:5])
    assert spans_as_text(messages, news.columns[0]) == ["P9", "P5"]
    assert news.columns[2].kind.tolist() == [ord("n"), ord("u")]
    deletes = walk_tuples(messages, messages.starts[5:7] + 6, 4, wanted=(0, 1, 2, 3))
    assert np.array_equal(deletes.end, messages.ends[5:7])
    assert [spans_as_text(messages, deletes.columns[i]) for i in range(4)] == [
        ["P6", "P7"],
        [None, "d"],
        [None, "e"],
        [None, "4.00"],
    ]


def test_walk_refuses_broken_tuples() -> None:
    good = insert_message(1, "a", "b")
    messages = messages_of(good)
    with pytest.raises(ProtocolError, match="column count"):
        walk_tuples(messages, messages.starts + 6, 3, wanted=(0,))
    unknown = good[:-6] + b"x" + good[-5:]  # the second column's kind: 't' -> 'x'
    assert unknown != good and len(unknown) == len(good)
    with pytest.raises(ProtocolError, match="unknown kind"):
        walk_tuples(messages_of(unknown), messages.starts + 6, 2, (0, 1))
    # a length that runs past the buffer
    long = b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">h", 1) + b"t" + struct.pack(">i", 999)
    with pytest.raises(ProtocolError, match="runs past"):
        walk_tuples(messages_of(long), np.array([6], dtype=np.int64), 1, (0,))
    negative = long[:-4] + struct.pack(">i", -5)
    with pytest.raises(ProtocolError):
        walk_tuples(messages_of(negative), np.array([6], dtype=np.int64), 1, (0,))


def test_gather_spans_out_of_order() -> None:
    """Spans that do not run forward through the buffer (a value taken from an old tuple for
    two rows of one message) are gathered by the slower path, value for value."""
    messages = messages_of(b"abcdefghij")
    start = np.array([2, 2, 0, 5], dtype=np.int64)
    length = np.array([3, 3, 1, 0], dtype=np.int64)
    valid = np.array([True, True, True, False])
    assert gather(messages, start, length, valid).to_pylist() == [b"cde", b"cde", b"a", None]
    forward = gather(messages, start[2:], length[2:], valid[2:])
    assert forward.to_pylist() == [b"a", None]


def test_values_parsed_where_they_lie_equal_those_copied_first() -> None:
    """column_to_arrow parses numbers, dates and timestamps in the buffer (no copy): the same
    values as text_to_arrow of the gathered text, NULLs included; spans out of order too."""
    oid = 1
    rows = [
        ("1.50", "2024-02-29", "1999-12-31 23:59:59.5+00", "7", "0.25", "x"),
        (None, None, None, None, None, None),
        ("-9999999999999999.99", "10000-01-01", "2038-01-19 03:14:08+00", "-1", "1e-300", ""),
        ("0.00", "0001-01-01", "0001-01-01 00:00:00+00", "0", "-0", None),
    ]
    messages = messages_of(*(insert_message(oid, *row) for row in rows))
    tuples = walk_tuples(messages, messages.starts + 6, 6, wanted=range(6))
    kinds = [
        pa.decimal128(18, 2),
        pa.date32(),
        pa.timestamp("us", tz="UTC"),
        pa.int64(),
        pa.float64(),
        pa.string(),
    ]
    for index, kind in enumerate(kinds):
        column = tuples.columns[index]
        for order in (np.arange(4), np.array([2, 0, 3, 1])):  # forward, then out of order
            picked = column.take(order)
            parsed = column_to_arrow(
                messages, picked.start, picked.length, picked.valid, kind, "column 'c' of s.t"
            )
            copied = text_to_arrow(
                gather(messages, picked.start, picked.length, picked.valid), kind, "c"
            )
            assert parsed.type == kind and parsed.equals(copied), (kind, order)
            assert parsed.null_count == int((~picked.valid).sum())
    nan = messages_of(insert_message(oid, "1.00"), insert_message(oid, "NaN"))
    values = walk_tuples(nan, nan.starts + 6, 1, wanted=(0,)).columns[0]
    with pytest.raises(DataError, match=r"^column 'c' of s\.t holds NaN"):
        column_to_arrow(
            nan,
            values.start,
            values.length,
            values.valid,
            pa.decimal128(18, 2),
            "column 'c' of s.t",
        )


# ------------------------------------------------------------------- text to Arrow types


def convert(values: list[str | None], kind: pa.DataType) -> list[Any]:
    raw = pa.array([None if v is None else v.encode() for v in values], pa.binary())
    converted = text_to_arrow(raw, kind, "column 'c' of s.t")
    assert converted.type == kind
    return converted.to_pylist()


def test_text_of_each_type() -> None:
    assert convert(["t", "f", None], pa.bool_()) == [True, False, None]
    assert convert(["-32768", "32767", None], pa.int16()) == [-32768, 32767, None]
    assert convert(["-2147483648", "2147483647"], pa.int32()) == [-(2**31), 2**31 - 1]
    assert convert(["-9223372036854775808", "9223372036854775807"], pa.int64()) == [
        -(2**63),
        2**63 - 1,
    ]
    assert convert(["0.1", "3.4028235e+38", "1e-45", "-0"], pa.float32()) == [
        np.float32("0.1"),
        np.float32("3.4028235e+38"),
        np.float32("1e-45"),
        0.0,
    ]
    assert convert(["0.1", "1.7976931348623157e+308", "5e-324"], pa.float64()) == [
        0.1,
        1.7976931348623157e308,
        5e-324,
    ]
    money = ["9999999999999999.99", "-9999999999999999.99", "0.00", "-0.01", None]
    assert convert(money, pa.decimal128(18, 2)) == [Decimal(v) if v else None for v in money]
    wide = ["9999999999999999999999999999.9999999999", "-0.0000000001", "1.0000000000"]
    assert convert(wide, pa.decimal128(38, 10)) == [Decimal(v) for v in wide]
    assert convert(["", "tab\tnew\nline\\ ñ €", None], pa.string()) == [
        "",
        "tab\tnew\nline\\ ñ €",
        None,
    ]
    assert convert(["0044-03-15", "1999-12-31", "2038-01-20", "9999-12-31"], pa.date32()) == [
        date(44, 3, 15),
        date(1999, 12, 31),
        date(2038, 1, 20),
        date(9999, 12, 31),
    ]
    stamps = ["1901-12-13 20:45:52.5", "1999-12-31 23:59:59.999999", "2038-01-19 03:14:08"]
    assert convert(stamps, pa.timestamp("us")) == [
        datetime(1901, 12, 13, 20, 45, 52, 500000),
        datetime(1999, 12, 31, 23, 59, 59, 999999),
        datetime(2038, 1, 19, 3, 14, 8),
    ]
    zoned = ["0001-01-01 00:00:00+00", "2000-01-01 00:00:00.01+00", "2262-04-12 00:00:00+00"]
    assert convert(zoned, pa.timestamp("us", tz="UTC")) == [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(2000, 1, 1, 0, 0, 0, 10000, tzinfo=UTC),
        datetime(2262, 4, 12, tzinfo=UTC),
    ]
    assert convert(["\\x", "\\x00ff10", "\\xDEADbeef", None], pa.binary()) == [
        b"",
        b"\x00\xff\x10",
        b"\xde\xad\xbe\xef",
        None,
    ]


def test_years_past_9999_are_exact() -> None:
    """Arrow's parser takes four-digit years only; PostgreSQL prints dates up to 5874897 and
    timestamps up to 294276: those are worked out exactly (numpy's datetime64 is the
    independent check) or refused when Arrow's microseconds since 1970 cannot hold them."""
    days = text_to_arrow(
        pa.array([b"10000-01-01", b"5874897-12-31", b"2024-02-29"]), pa.date32(), "c"
    )
    expected = [np.datetime64(d, "D").astype(np.int64) for d in ("10000-01-01", "5874897-12-31")]
    assert days.view(pa.int32()).to_pylist() == [*expected, 19782]
    stamps = text_to_arrow(
        pa.array([b"10000-01-01 00:00:00.5+00", b"200000-02-29 23:59:59.000001+00"]),
        pa.timestamp("us", tz="UTC"),
        "c",
    )
    expected = [
        np.datetime64(t, "us").astype(np.int64)
        for t in ("10000-01-01T00:00:00.5", "200000-02-29T23:59:59.000001")
    ]
    assert stamps.view(pa.int64()).to_pylist() == expected
    with pytest.raises(DataError, match="beyond the range"):
        text_to_arrow(
            pa.array([b"294276-12-31 23:59:59.999999"]), pa.timestamp("us"), "column 'c' of s.t"
        )


@pytest.mark.parametrize(
    ("values", "kind", "message"),
    [
        (["NaN"], pa.decimal128(18, 2), "holds NaN, which decimal128"),
        (["1.00", "Infinity"], pa.decimal128(18, 2), "holds Infinity"),
        (["-Infinity"], pa.decimal128(38, 10), "holds -Infinity"),
        (["1.234"], pa.decimal128(18, 2), "cannot hold exactly"),
        (["99999999999999999.99"], pa.decimal128(18, 2), "cannot hold exactly"),
        (["NaN"], pa.float64(), "NaN or an infinity"),
        (["Infinity"], pa.float32(), "NaN or an infinity"),
        (["infinity"], pa.date32(), "infinite date"),
        (["-infinity"], pa.timestamp("us", tz="UTC"), "infinite timestamp"),
        (["0044-03-15 BC"], pa.date32(), "before the year 1"),
        (["0001-12-31 23:00:00+00 BC"], pa.timestamp("us", tz="UTC"), "before the year 1"),
        (["2024-01-01 00:00:00"], pa.timestamp("us", tz="UTC"), "cannot read"),
        (["yes"], pa.bool_(), "neither t nor f"),
        (["12x"], pa.int32(), "no int32"),
        (["00ff"], pa.binary(), "hex form"),
        (["\\x0g"], pa.binary(), "hex form|no hex digit"),
        (["\\x0"], pa.binary(), "hex form"),
    ],
)
def test_values_without_an_exact_arrow_value_are_refused(
    values: list[str], kind: pa.DataType, message: str
) -> None:
    with pytest.raises(DataError, match=message) as caught:
        convert(values, kind)
    assert str(caught.value).startswith("column 'c' of s.t ")


def test_text_that_is_not_utf8_is_refused() -> None:
    raw = pa.array([b"ok", b"\xff\xfe"], pa.binary())
    with pytest.raises(DataError, match="not valid UTF-8"):
        text_to_arrow(raw, pa.string(), "column 'c' of s.t")
    # a server whose encoding is not SQL_ASCII converts to UTF-8: not checked again
    assert len(text_to_arrow(raw, pa.string(), "c", check_utf8=False)) == 2


def test_messages_must_fit_their_buffer() -> None:
    with pytest.raises(ProtocolError):
        Messages(bytearray(b"I" + bytes(PADDING)), np.array([0]), np.array([20]))
    with pytest.raises(ProtocolError):
        Messages(bytearray(bytes(PADDING)), np.array([0]), np.array([0]))
