"""The parallel binary COPY reader (db/binary_copy.py, db/pgbinary.py) against a real PostgreSQL.

Every value is compared with PostgreSQL's own text output of the same rows (``COPY ... TO
STDOUT`` in text format, parsed here independently of the reader): every supported type, NULL
and the empty string, numeric at the limits of (18,2) and (38,10), timestamps before 2000 and
after 2038. Also: one snapshot (rows inserted after it are invisible, also in an adopted
snapshot), a table larger than its stale relpages, values Arrow cannot hold exactly, types the
reader refuses, and the Parquet file of ``copy_table_to_parquet``.

The COPY streams are read from the socket itself (``socket_reads``) unless TLS encrypts the
connection: both paths give the same rows and the same file (TLS through a real TLS front of
the test server); a server error or notices in the middle of a stream, rows wider than the read
buffer, values that look like the protocol's row headers, and the connection in step with libpq
after the socket reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from abaco_cli.db.binary_copy import READ_BYTES, TableReader, block_ranges, read_table
from abaco_cli.db.classify import TransientSourceError
from abaco_cli.db.pgbinary import (
    PADDING,
    RowDecoder,
    SourceColumn,
    bytea_text,
    keep_heap_memory,
    row_messages,
)
from abaco_cli.db.table_parquet import TableParquetWriter, copy_table_to_parquet
from abaco_cli.errors import DataError, SourceQueryError, UsageError
from abaco_cli.settings import Settings
from everytype import ALL_TYPES, every_type_rows


@pytest.fixture(scope="module")
def copy_db(pg_server: Any) -> Iterator[str]:
    """One database for the module; each test makes its own tables in schema x (dropped)."""
    name = f"abaco_copy_{os.getpid()}"
    yield pg_server.create_database(name)
    pg_server.drop_database(name)


@pytest.fixture
def dsn(copy_db: str) -> Iterator[str]:
    with psycopg.connect(copy_db, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS x CASCADE")
        conn.execute("CREATE SCHEMA x")
    yield copy_db
    with psycopg.connect(copy_db, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS x CASCADE")


@pytest.fixture
def settings(dsn: str, tmp_path: Path) -> Settings:
    return Settings(database_url=SecretStr(dsn), runtime_dir=tmp_path / "rt")


def execute(dsn: str, *statements: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement, params)


def read_all(settings: Settings, table: str, **options: Any) -> pa.Table:
    with TableReader(settings, table, **options) as reader:
        batches = list(reader.batches())
        return pa.Table.from_batches(batches, schema=reader.schema)


# ------------------------------------------------------------ PostgreSQL's text output, parsed

_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _unescape(field: str) -> str:
    """One field of COPY's text format: backslash sequences as COPY TO writes them."""
    out: list[str] = []
    index = 0
    while index < len(field):
        char = field[index]
        if char == "\\" and index + 1 < len(field):
            out.append(_ESCAPES[field[index + 1]])
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def pg_text_rows(dsn: str, query: str) -> list[list[str | None]]:
    """``COPY (query) TO STDOUT`` in text format (DateStyle ISO, UTC), field by field."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET DateStyle = ISO")
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET bytea_output = hex")
        conn.execute("SET extra_float_digits = 1")
        data = bytearray()
        with conn.cursor().copy(f"COPY ({query}) TO STDOUT") as copy:
            for chunk in copy:
                data += chunk
    rows = []
    for line in data.decode("utf-8").split("\n")[:-1]:
        rows.append([None if f == "\\N" else _unescape(f) for f in line.split("\t")])
    return rows


def _as_text(value: Any, kind: pa.DataType, pg: str) -> Any:
    """Our value and PostgreSQL's text of it, each in the form they are compared in."""
    if pa.types.is_boolean(kind):
        return ("t" if value else "f"), pg
    if pa.types.is_integer(kind):
        return value, int(pg)
    if pa.types.is_float32(kind):
        return np.float32(value), np.float32(pg)
    if pa.types.is_floating(kind):
        return value, float(pg)
    if pa.types.is_decimal(kind):
        return value, Decimal(pg)
    if pa.types.is_date(kind):
        return value, date.fromisoformat(pg)
    if pa.types.is_timestamp(kind):
        parsed = datetime.fromisoformat(pg)
        if kind.tz is None:
            return value, parsed
        return value, parsed.astimezone(UTC)
    if pa.types.is_binary(kind):
        return "\\x" + value.hex(), pg
    return value, pg


def assert_same_as_postgres(dsn: str, table: pa.Table, query: str) -> int:
    """Every value of ``table`` equals PostgreSQL's text output of ``query`` (same row order);
    the number of values compared."""
    expected = pg_text_rows(dsn, query)
    assert table.num_rows == len(expected)
    compared = 0
    for index, field in enumerate(table.schema):
        ours = table.column(index).to_pylist()
        for row, (value, pg_row) in enumerate(zip(ours, expected, strict=True)):
            pg = pg_row[index]
            if pg is None or value is None:
                assert value is None and pg is None, (field.name, row, value, pg)
                continue
            mine, theirs = _as_text(value, field.type, pg)
            assert mine == theirs, (field.name, row, value, pg)
            compared += 1
    return compared


def insert_every_type(dsn: str, rows: int) -> None:
    """``rows`` rows of varied values (NULLs, empty strings, limits) in x.every."""
    execute(dsn, every_type_rows(rows))


# --------------------------------------------------------------------------------- the values


def test_every_type_equals_postgres_text_output(dsn: str, settings: Settings) -> None:
    execute(dsn, ALL_TYPES)
    insert_every_type(dsn, 4000)
    # small ranges and batches: many COPYs, several batches each, two workers, in order
    table = read_all(settings, "x.every", range_blocks=16, batch_rows=333, workers=2)
    expected_types = {
        "flag": pa.bool_(),
        "small": pa.int16(),
        "medium": pa.int32(),
        "big": pa.int64(),
        "real4": pa.float32(),
        "double8": pa.float64(),
        "money": pa.decimal128(18, 2),
        "wide": pa.decimal128(38, 10),
        "open": pa.decimal128(38, 3),  # the largest scale among its values: g/8 - 100
        "words": pa.string(),
        "code": pa.string(),
        "padded": pa.string(),
        "day": pa.date32(),
        "at_local": pa.timestamp("us"),
        "at_utc": pa.timestamp("us", tz="UTC"),
        "ident": pa.string(),
        "doc_json": pa.string(),
        "doc": pa.string(),
        "raw": pa.binary(),
        "feeling": pa.string(),
        "price": pa.decimal128(12, 2),
    }
    for name, kind in expected_types.items():
        assert table.schema.field(name).type == kind, name
    compared = assert_same_as_postgres(dsn, table, "SELECT * FROM x.every ORDER BY ctid")
    assert compared > 60_000


def test_null_is_not_the_empty_string(dsn: str, settings: Settings) -> None:
    execute(
        dsn,
        "CREATE TABLE x.t (id int, s text, c char(2), b bytea, j jsonb)",
        "INSERT INTO x.t VALUES (1, NULL, NULL, NULL, NULL), (2, '', '', '', '\"\"'), "
        "(3, ' ', 'a', '\\x00', 'null')",
    )
    table = read_all(settings, "x.t")
    assert table.column("s").to_pylist() == [None, "", " "]
    assert table.column("c").to_pylist() == [None, "  ", "a "]  # char(n) keeps its padding
    assert table.column("b").to_pylist() == [None, b"", b"\x00"]
    assert table.column("j").to_pylist() == [None, '""', "null"]  # JSON null is no SQL NULL
    assert table.column("s").null_count == 1


def test_numeric_at_the_limits_of_18_2_and_38_10(dsn: str, settings: Settings) -> None:
    money = ["9999999999999999.99", "-9999999999999999.99", "0.01", "-0.01", "0.00",
             "1234567890123456.78", "-0.10", "10000.00", "100000000.00", "0.50"]  # fmt: skip
    wide = ["9999999999999999999999999999.9999999999", "-9999999999999999999999999999.9999999999",
            "0.0000000001", "-0.0000000001", "0E-10", "1.0000000000",
            "18446744073709551616.0000000001", "-170141183460469231.7315873110",
            "12345678901234567890123456.7890123456", "-1.5000000000"]  # fmt: skip
    execute(dsn, "CREATE TABLE x.t (id int, money numeric(18,2), wide numeric(38,10))")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for index, (m, w) in enumerate(zip(money, wide, strict=True)):
            conn.execute("INSERT INTO x.t VALUES (%s, %s, %s)", (index, Decimal(m), Decimal(w)))
    table = read_all(settings, "x.t")
    assert table.schema.field("money").type == pa.decimal128(18, 2)
    assert table.schema.field("wide").type == pa.decimal128(38, 10)
    assert [str(v) for v in table.column("money").to_pylist()] == money
    assert table.column("wide").to_pylist() == [Decimal(w) for w in wide]
    assert assert_same_as_postgres(dsn, table, "SELECT * FROM x.t ORDER BY ctid") == 30


def test_timestamps_before_2000_and_after_2038(dsn: str, settings: Settings) -> None:
    stamps = [
        datetime(1901, 12, 13, 20, 45, 52, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
        datetime(2262, 4, 11, 23, 47, 16, 854776, tzinfo=UTC),  # past int64 nanoseconds
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
    ]
    execute(dsn, "CREATE TABLE x.t (id int, at timestamptz, wall timestamp, day date)")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for index, stamp in enumerate(stamps):
            conn.execute(
                "INSERT INTO x.t VALUES (%s, %s, %s, %s)",
                (index, stamp, stamp.replace(tzinfo=None), stamp.date()),
            )
    table = read_all(settings, "x.t")
    assert table.column("at").to_pylist() == stamps
    assert table.column("wall").to_pylist() == [s.replace(tzinfo=None) for s in stamps]
    assert table.column("day").to_pylist() == [s.date() for s in stamps]
    assert assert_same_as_postgres(dsn, table, "SELECT * FROM x.t ORDER BY ctid") == 32


def test_numbers_of_every_width_and_sign(dsn: str, settings: Settings) -> None:
    """Numeric values of 0 to 8 base-10,000 digits, weights below and above the point."""
    execute(
        dsn,
        "CREATE TABLE x.t (id int, a numeric(18,6), b numeric(30,0), c numeric(10,4))",
        """
        INSERT INTO x.t
        SELECT g,
               round(((g * 7919) % 1000000000000)::numeric / 10::numeric ^ (g % 13), 6)
                   * (1 - 2 * (g % 2)),
               trunc(((g * 7919) % 1000000007)::numeric * 10::numeric ^ (g % 21))
                   * (1 - 2 * (g % 3 = 0)::int),
               ((g * 31) % 999999999)::numeric / 10000 * (1 - 2 * (g % 5 = 0)::int)
        FROM generate_series(1, 3000) AS g
        """,
    )
    table = read_all(settings, "x.t", batch_rows=100)
    assert table.num_rows == 3000
    assert assert_same_as_postgres(dsn, table, "SELECT * FROM x.t ORDER BY ctid") == 12000


# ---------------------------------------------------------------------------- the snapshot


def test_rows_inserted_after_the_snapshot_are_invisible(dsn: str, settings: Settings) -> None:
    execute(
        dsn,
        "CREATE TABLE x.t (id int, v text)",
        "INSERT INTO x.t SELECT g, 'before' FROM generate_series(1, 3000) AS g",
    )
    with TableReader(settings, "x.t", range_blocks=2, workers=2) as reader:
        # after the snapshot, before any row is read: new rows, changed rows, deleted rows
        execute(
            dsn,
            "INSERT INTO x.t SELECT g, 'after' FROM generate_series(3001, 9000) AS g",
            "UPDATE x.t SET v = 'changed' WHERE id <= 100",
            "DELETE FROM x.t WHERE id > 2900 AND id <= 3000",
        )
        table = pa.Table.from_batches(list(reader.batches()), schema=reader.schema)
    assert table.num_rows == 3000
    assert set(table.column("v").to_pylist()) == {"before"}
    assert sorted(table.column("id").to_pylist()) == list(range(1, 3001))
    assert read_all(settings, "x.t").num_rows == 8900  # a new snapshot sees them


def test_an_adopted_snapshot_is_the_instant_read(dsn: str, settings: Settings) -> None:
    execute(dsn, "CREATE TABLE x.t (id int)", "INSERT INTO x.t SELECT generate_series(1, 500)")
    with psycopg.connect(dsn) as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot_id = holder.execute("SELECT pg_export_snapshot()").fetchone()[0]  # type: ignore[index]
        execute(dsn, "INSERT INTO x.t SELECT generate_series(501, 800)")
        rows = sum(b.num_rows for b in read_table(settings, "x.t", snapshot=snapshot_id))
        holder.rollback()
    assert rows == 500


def test_a_table_larger_than_its_stale_relpages(dsn: str, settings: Settings) -> None:
    execute(
        dsn,
        "CREATE TABLE x.t (id int, pad text) WITH (autovacuum_enabled = off)",
        "INSERT INTO x.t SELECT g, repeat('p', 200) FROM generate_series(1, 20) AS g",
        "ANALYZE x.t",
        "INSERT INTO x.t SELECT g, repeat('p', 200) FROM generate_series(21, 20000) AS g",
    )
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT relpages, pg_relation_size('x.t') / current_setting('block_size')::int "
            "FROM pg_class WHERE oid = 'x.t'::regclass"
        ).fetchone()
    assert row is not None
    stale, actual = row
    assert stale <= 1 < 100 < actual  # the statistics say one page; there are hundreds
    table = read_all(settings, "x.t", range_blocks=32)
    ids = table.column("id").to_pylist()
    assert len(ids) == 20000 and sorted(ids) == list(range(1, 20001))


def test_the_ranges_cover_the_table_shrink_toward_its_end_and_the_last_is_open_ended() -> None:
    for blocks in (0, 1, 255, 5000, 88_020, 1_000_000):
        ranges = block_ranges(blocks, 2048)
        assert ranges[0].first == 0 and ranges[-1].end is None
        assert all(a.end == b.first for a, b in itertools.pairwise(ranges))
        sizes = [r.end - r.first for r in ranges if r.end is not None]
        assert all(0 < size <= 2048 for size in sizes)
        assert sizes == sorted(sizes, reverse=True)
        if blocks >= 2 * 2048:
            assert ranges[-1].first < blocks and len(ranges) <= blocks // 2048 + 16
            assert sizes[-1] == 256  # the last ones an eighth of a range
        if blocks == 88_020:  # the benchmark's table: whole ranges, then 12 smaller ones
            assert sizes.count(2048) == 39 and len(ranges) == 51
    assert [(r.first, r.end) for r in block_ranges(0, 2048)] == [(0, None)]
    assert [(r.first, r.end) for r in block_ranges(5000, 2048)][:2] == [(0, 1250), (1250, 2188)]


def test_two_workers_and_one_give_the_same_rows_in_the_same_order(
    dsn: str, settings: Settings
) -> None:
    execute(dsn, ALL_TYPES)
    insert_every_type(dsn, 1500)
    one = read_all(settings, "x.every", workers=1, range_blocks=8)
    two = read_all(settings, "x.every", workers=2, range_blocks=8, batch_rows=100)
    assert one.equals(two)


def test_partitioned_tables_and_views(dsn: str, settings: Settings) -> None:
    execute(
        dsn,
        "CREATE TABLE x.p (id int, day date) PARTITION BY RANGE (day)",
        "CREATE TABLE x.p1 PARTITION OF x.p FOR VALUES FROM ('2020-01-01') TO ('2021-01-01')",
        "CREATE TABLE x.p2 PARTITION OF x.p FOR VALUES FROM ('2021-01-01') TO ('2022-01-01')",
        "INSERT INTO x.p SELECT g, date '2020-01-01' + g % 700 FROM generate_series(1, 5000) g",
        "CREATE VIEW x.v AS SELECT id, day FROM x.p WHERE id % 2 = 0",
    )
    partitioned = read_all(settings, "x.p", range_blocks=4)
    assert sorted(partitioned.column("id").to_pylist()) == list(range(1, 5001))
    view = read_all(settings, "x.v")
    assert sorted(view.column("id").to_pylist()) == list(range(2, 5001, 2))


def test_chosen_columns_in_table_order(dsn: str, settings: Settings) -> None:
    execute(
        dsn, "CREATE TABLE x.t (a int, b text, c date)", "INSERT INTO x.t VALUES (1, 'x', NULL)"
    )
    table = read_all(settings, "x.t", columns=["c", "a"])
    assert table.column_names == ["a", "c"]
    with pytest.raises(SourceQueryError, match=r"x\.t has no column 'name'"):
        read_all(settings, "x.t", columns=["a", "name"])
    with pytest.raises(SourceQueryError, match=r"table x\.missing does not exist"):
        read_all(settings, "x.missing")
    with pytest.raises(UsageError, match="not a table name"):
        read_all(settings, "Public.Thing")


def test_an_empty_table(dsn: str, settings: Settings) -> None:
    execute(dsn, "CREATE TABLE x.t (a int, b numeric)")
    table = read_all(settings, "x.t")
    assert table.num_rows == 0
    assert table.schema.field("b").type == pa.decimal128(38, 0)


# ----------------------------------------------------------------- values Arrow cannot hold


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("numeric(18,2)", "'NaN'", "holds NaN"),
        ("numeric", "'Infinity'", "holds Infinity"),
        ("numeric(10,4)", "'NaN'", "holds NaN"),
        ("numeric", "'-Infinity'", "holds -Infinity"),
        ("double precision", "'NaN'", "holds NaN"),
        ("real", "'-Infinity'", "holds -Infinity"),
        ("timestamptz", "'infinity'", "holds an infinite timestamp"),
        ("timestamp", "'-infinity'", "holds an infinite timestamp"),
        ("date", "'infinity'", "holds an infinite date"),
    ],
)
def test_values_arrow_cannot_hold_stop_the_read_naming_the_column(
    dsn: str, settings: Settings, column: str, value: str, problem: str
) -> None:
    execute(
        dsn,
        f"CREATE TABLE x.t (id int, amount {column})",
        "INSERT INTO x.t SELECT g, NULL FROM generate_series(1, 100) AS g",
        f"INSERT INTO x.t VALUES (101, {value})",
    )
    with pytest.raises(DataError, match=f"column 'amount' of x.t {problem}"):
        read_all(settings, "x.t")


def test_an_unconstrained_numeric_beyond_38_digits_is_refused(dsn: str, settings: Settings) -> None:
    execute(
        dsn,
        "CREATE TABLE x.t (id int, n numeric)",
        "INSERT INTO x.t VALUES (1, 1e30), (2, 0.000000000001)",  # 31 + 12 digits
    )
    with pytest.raises(DataError, match=r"column 'n' of x\.t is numeric without precision"):
        read_all(settings, "x.t")


@pytest.mark.parametrize(
    ("declared", "shown"),
    [
        ("int[]", "integer[]"),
        ("interval", "interval"),
        ("point", "point"),
        ("numeric(3,5)", "numeric(3,5)"),
    ],
)
def test_types_without_an_exact_arrow_type_are_named(
    dsn: str, settings: Settings, declared: str, shown: str
) -> None:
    execute(dsn, f"CREATE TABLE x.t (id int, odd {declared})")
    with pytest.raises(DataError, match=rf"column 'odd' of x.t .*{re.escape(shown)}"):
        read_all(settings, "x.t")
    assert read_all(settings, "x.t", columns=["id"]).num_rows == 0  # without it, it reads


def test_a_broken_stream_is_an_error_not_a_crash() -> None:
    decoder = RowDecoder("x.t", [SourceColumn("a", "int4"), SourceColumn("b", "text")])
    count, a, b = b"\x00\x02", b"\x00\x00\x00\x04\x00\x00\x00\x07", b"\x00\x00\x00\x02hi"
    row = count + a + b
    good = decoder.decode(bytearray(row + bytes(PADDING)), np.array([len(row)]))
    assert good.to_pylist() == [{"a": 7, "b": "hi"}]
    broken = {
        row[:-1]: "lost its framing",  # a field longer than its row
        row + b"x": "lost its framing",  # a row longer than its fields
        b"\x00\x03" + a + b: "has rows of 3 fields, not 2",
        count + a + b"\x00\x00\x00\x09hi": "lost its framing",
        count + b"\x00\x00\x00\x02\x00\x07" + b: "not 4 bytes long",
    }
    for data, problem in broken.items():
        with pytest.raises(DataError, match=problem):
            decoder.decode(bytearray(data + bytes(PADDING)), np.array([len(data)]))


def test_bytea_as_postgres_prints_it() -> None:
    values = pa.array([b"\x00\xff", None, b"", b"abc"], pa.binary())
    assert bytea_text(values).to_pylist() == ["\\x00ff", None, "\\x", "\\x616263"]
    assert bytea_text(values.slice(1)).to_pylist() == [None, "\\x", "\\x616263"]


# ------------------------------------------------------------------------ the Parquet file


def test_copy_table_to_parquet_keeps_the_exact_types(
    dsn: str, settings: Settings, tmp_path: Path
) -> None:
    execute(dsn, ALL_TYPES)
    insert_every_type(dsn, 3000)
    target = tmp_path / "every.parquet"
    copied = copy_table_to_parquet(settings, "x.every", target, metadata={"k": "v"})
    assert copied.rows == 3000
    assert copied.snapshot_at is not None
    assert copied.snapshot_at > datetime.now(UTC) - timedelta(minutes=5)
    back = pq.read_table(target)
    assert back.equals(read_all(settings, "x.every"))
    meta = pq.ParquetFile(target).metadata
    column = meta.row_group(0).column(back.schema.get_field_index("money"))
    assert column.compression == "ZSTD"
    assert column.physical_type == "INT64"  # decimal(18,2) stored as an integer
    assert pq.read_schema(target).metadata[b"k"] == b"v"
    uuids = back.column("ident").drop_null().to_pylist()
    assert all(str(uuid.UUID(u)) == u for u in uuids)


def test_statistics_only_where_a_reader_can_use_them(tmp_path: Path) -> None:
    """Min/max statistics for numbers, dates and text in ascending order (ids in table order);
    none for text whose min and max span every row group (free text, a few codes)."""
    count = 200_000
    batch = pa.RecordBatch.from_pydict(
        {
            "loan_id": [f"L{i // 3:09d}" for i in range(count)],
            "reference": [f"{(i * 7919) % 1000:03d}-ref" for i in range(count)],
            "channel": [("cash", "card", "transfer")[i % 3] for i in range(count)],
            "amount": pa.array([Decimal(i) / 100 for i in range(count)], pa.decimal128(18, 2)),
            "day": pa.array([date(2020, 1, 1) + timedelta(days=i // 1000) for i in range(count)]),
        }
    )
    target = tmp_path / "stats.parquet"
    with target.open("wb") as sink:
        writer = TableParquetWriter(sink, batch.schema)
        for first in range(0, count, 25_000):
            writer.write(batch.slice(first, 25_000))
        writer.close()
    meta = pq.ParquetFile(target).metadata
    assert meta.num_row_groups == 3  # at least 65,536 rows each (75,000), the last one shorter
    group = meta.row_group(1)
    with_statistics = {
        group.column(i).path_in_schema: group.column(i).is_stats_set
        for i in range(group.num_columns)
    }
    assert with_statistics == {
        "loan_id": True, "reference": False, "channel": False, "amount": True, "day": True,
    }  # fmt: skip
    assert group.column(0).statistics.min == f"L{75_000 // 3:09d}"
    assert pq.read_table(target).equals(pa.Table.from_batches([batch]))


def test_read_table_can_stop_early(dsn: str, settings: Settings) -> None:
    execute(dsn, "CREATE TABLE x.t (id int)", "INSERT INTO x.t SELECT generate_series(1, 50000)")
    batches = read_table(settings, "x.t", batch_rows=1000)
    first = next(batches)
    assert first.num_rows > 0
    batches.close()  # cancels the COPYs in flight and closes the connections
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:  # type: ignore[union-attr]
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'abaco' "
            "AND datname = current_database()"
        ).fetchone()
    assert left is not None and left[0] == 0


# ----------------------------------------------------------- the COPY stream from the socket


def write_parquet(settings: Settings, table: str, path: Path, **options: Any) -> bool:
    """``table`` through the reader into ``path``; whether the reader read the socket."""
    with TableReader(settings, table, **options) as reader, path.open("wb") as sink:
        writer = TableParquetWriter(sink, reader.schema)
        for batch in reader.batches():
            writer.write(batch)
        writer.close()
        return reader.socket_reads


def test_the_socket_and_libpq_paths_write_identical_files(
    dsn: str, settings: Settings, tmp_path: Path
) -> None:
    execute(dsn, ALL_TYPES)
    insert_every_type(dsn, 5000)
    options: dict[str, Any] = {"range_blocks": 8, "batch_rows": 700, "workers": 2}
    socket_file, libpq_file = tmp_path / "socket.parquet", tmp_path / "libpq.parquet"
    assert write_parquet(settings, "x.every", socket_file, **options) is True
    assert write_parquet(settings, "x.every", libpq_file, read_socket=False, **options) is False
    assert socket_file.read_bytes() == libpq_file.read_bytes()
    back = pq.read_table(socket_file)
    assert back.num_rows == 5000
    assert assert_same_as_postgres(dsn, back, "SELECT * FROM x.every ORDER BY ctid") > 70_000


def test_a_server_error_in_the_middle_of_the_stream(dsn: str, settings: Settings) -> None:
    """The server fails after sending thousands of rows: the server's own message, on both
    paths, and the next read on a fresh reader works."""
    execute(
        dsn,
        """CREATE FUNCTION x.checked(i int) RETURNS int LANGUAGE plpgsql AS $$
           BEGIN
             IF i = 40000 THEN RAISE EXCEPTION 'payment % is corrupt', i; END IF;
             RETURN i;
           END $$""",
        "CREATE TABLE x.t (id int, v text)",
        "INSERT INTO x.t SELECT g, repeat('v', g % 50) FROM generate_series(1, 50000) AS g",
        "CREATE VIEW x.checked_t AS SELECT x.checked(id) AS id, v FROM x.t",
    )
    for read_socket in (True, False):
        with pytest.raises(SourceQueryError, match="payment 40000 is corrupt"):
            read_all(settings, "x.checked_t", read_socket=read_socket, batch_rows=1000)
    assert read_all(settings, "x.t").num_rows == 50000


def test_notices_in_the_stream_are_passed_over(dsn: str, settings: Settings) -> None:
    execute(
        dsn,
        """CREATE FUNCTION x.loud(i int) RETURNS int LANGUAGE plpgsql AS $$
           BEGIN
             IF i % 500 = 0 THEN RAISE NOTICE 'row % of the loud view', i; END IF;
             RETURN i;
           END $$""",
        "CREATE VIEW x.loud_v AS SELECT x.loud(g) AS id, g::text AS s "
        "FROM generate_series(1, 20000) AS g",
    )
    with TableReader(settings, "x.loud_v") as reader:
        table = pa.Table.from_batches(list(reader.batches()), schema=reader.schema)
        assert reader.socket_reads
    assert table.column("id").to_pylist() == list(range(1, 20001))
    assert table.column("s").to_pylist() == [str(g) for g in range(1, 20001)]


def test_rows_wider_than_the_read_buffer(dsn: str, settings: Settings) -> None:
    """Rows of several times the read buffer among small ones, on both paths."""
    big = READ_BYTES * 2 + 12345
    execute(
        dsn,
        "CREATE TABLE x.t (id int, doc text, raw bytea)",
        "ALTER TABLE x.t ALTER COLUMN doc SET STORAGE EXTERNAL",
        f"""INSERT INTO x.t
            SELECT g,
                   CASE WHEN g % 5 = 2 THEN repeat(md5(g::text), {big} / 32) ELSE 's' || g END,
                   CASE WHEN g % 7 = 3 THEN decode(repeat('00ff64', {big} / 3), 'hex')
                        ELSE '\\x01'::bytea END
            FROM generate_series(1, 12) AS g""",
    )
    expected = pg_text_rows(
        dsn, "SELECT id, md5(doc), length(doc), md5(raw) FROM x.t ORDER BY ctid"
    )
    for read_socket in (True, False):
        table = read_all(settings, "x.t", read_socket=read_socket, range_blocks=1)
        got = [
            [str(i), md5_of(d.encode()), str(len(d)), md5_of(r)]
            for i, d, r in zip(
                *(table.column(c).to_pylist() for c in ("id", "doc", "raw")), strict=True
            )
        ]
        assert got == expected
    assert max(len(d) for d in table.column("doc").to_pylist()) > READ_BYTES * 2


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # compared with PostgreSQL's md5()


def test_values_that_look_like_row_headers(dsn: str, settings: Settings) -> None:
    """bytea and text values full of the bytes that begin a CopyData message of a row of
    this table (``d``, a length, the field count 2): every value exact."""
    execute(dsn, "CREATE TABLE x.t (id int, raw bytea)")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for g in range(3000):
            length = 6 + (g * 7) % 40
            header = b"d" + length.to_bytes(4, "big") + b"\x00\x02"
            value = (header * (1 + g % 9))[: 3 + (g * 13) % 60]
            conn.execute("INSERT INTO x.t VALUES (%s, %s)", (g, value))
    for read_socket in (True, False):
        table = read_all(settings, "x.t", read_socket=read_socket)
        assert assert_same_as_postgres(dsn, table, "SELECT * FROM x.t ORDER BY ctid") == 6000


def test_row_messages_skip_lookalikes_and_stop_at_other_messages() -> None:
    def row(payload: bytes) -> bytes:
        body = b"\x00\x01" + len(payload).to_bytes(4, "big") + payload
        return b"d" + (len(body) + 4).to_bytes(4, "big") + body

    lookalike = b"d\x00\x00\x00\x07\x00\x01"  # a header of a 1-field row, inside a value
    stream = row(b"ab") + row(lookalike * 3) + row(b"") + row(lookalike) + b"c\x00\x00\x00\x04"
    buffer = bytearray(stream + bytes(PADDING))
    begins, ends = row_messages(buffer, 0, len(stream), 1)
    expected, at = [], 0
    for payload in (b"ab", lookalike * 3, b"", lookalike):
        expected.append(at)
        at += len(row(payload))
    assert begins.tolist() == expected
    assert ends.tolist() == [*expected[1:], at]  # the CopyDone after them is no row
    half = row_messages(buffer, 0, expected[3] + 3, 1)  # the last row not all there yet
    assert half[0].tolist() == expected[:3]
    assert row_messages(buffer, at, len(stream), 1)[0].tolist() == []
    assert row_messages(buffer, 0, len(stream), 2)[0].tolist() == []  # other field counts


def test_a_record_of_fixed_columns_longer_than_the_last_row(dsn: str, settings: Settings) -> None:
    """Thirty bigint columns, the last row all NULL (much shorter than the record the fixed
    columns are gathered in): read, not a framing error."""
    columns = ", ".join(f"c{i} bigint" for i in range(30))
    execute(
        dsn,
        f"CREATE TABLE x.t ({columns})",
        "INSERT INTO x.t (c0, c29) SELECT g, -g FROM generate_series(1, 100) AS g",
        "INSERT INTO x.t (c1) VALUES (NULL)",
    )
    for read_socket in (True, False):
        table = read_all(settings, "x.t", read_socket=read_socket)
        assert table.column("c0").to_pylist() == [*range(1, 101), None]
        assert table.column("c29").to_pylist() == [*range(-1, -101, -1), None]


def test_the_connection_stays_in_step_with_libpq(dsn: str, settings: Settings) -> None:
    """libpq never sees the COPYs read from the socket: after them (and after one that
    failed) its connection still runs queries and ends its transaction."""
    execute(
        dsn,
        "CREATE TABLE x.t (id int)",
        "INSERT INTO x.t SELECT generate_series(1, 30000)",
        "CREATE VIEW x.bad AS SELECT 1 / (id - 20000) AS id FROM x.t",
    )
    with TableReader(settings, "x.t", workers=1, range_blocks=4) as reader:
        assert sum(b.num_rows for b in reader.batches()) == 30000
        conn = reader._connections[0]
        assert conn.execute("SELECT count(*) FROM x.t").fetchone() == (30000,)
        assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    with TableReader(settings, "x.bad", workers=1) as reader:
        with pytest.raises(SourceQueryError, match="division by zero"):
            list(reader.batches())
        conn = reader._connections[0]
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):  # the server's answer
            conn.execute("SELECT 42")


def terminate_reader_sessions(dsn: str, state: str) -> int:
    """End the reader's sessions once they are all in ``state`` (as a restart would)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(200):
            states = conn.execute(
                "SELECT state FROM pg_stat_activity WHERE application_name = 'abaco' "
                "AND datname = current_database()"
            ).fetchall()
            if states and all(row[0] == state for row in states):
                break
            time.sleep(0.05)
        ended = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'abaco' AND datname = current_database()"
        ).fetchone()
    assert ended is not None
    return int(ended[0])


def test_a_session_ended_between_two_copies(dsn: str, settings: Settings) -> None:
    """The server ends the session while the worker waits for the caller: the next COPY's
    query cannot be sent; the server's own reason, a transient error (an extract retries)."""
    execute(dsn, "CREATE TABLE x.t (id int)", "INSERT INTO x.t SELECT generate_series(1, 100000)")
    with TableReader(settings, "x.t", workers=1, range_blocks=8, batch_rows=500) as reader:
        assert reader.socket_reads
        batches = reader.batches()
        next(batches)  # the worker reads two ranges ahead, then waits for the caller
        assert terminate_reader_sessions(dsn, "idle in transaction") == 1
        with pytest.raises(TransientSourceError, match="terminating connection due to admin"):
            for _ in batches:
                pass


def test_a_session_ended_in_the_middle_of_a_copy(dsn: str, settings: Settings) -> None:
    execute(
        dsn,
        """CREATE FUNCTION x.slow(i int) RETURNS int LANGUAGE plpgsql AS $$
           BEGIN
             IF i = 30000 THEN PERFORM pg_sleep(30); END IF;
             RETURN i;
           END $$""",
        "CREATE VIEW x.slow_v AS SELECT x.slow(g) AS id FROM generate_series(1, 50000) AS g",
    )
    with TableReader(settings, "x.slow_v", batch_rows=1000) as reader:
        batches = reader.batches()
        next(batches)
        assert terminate_reader_sessions(dsn, "active") == 1
        with pytest.raises(TransientSourceError, match="terminating connection due to admin"):
            for _ in batches:
                pass


# ------------------------------------------------------------------ TLS: the libpq path


class TlsFront:
    """A TLS front of the test server on 127.0.0.1 (what stunnel or a pooler with TLS does):
    answers PostgreSQL's SSLRequest, then carries the decrypted bytes to the server."""

    def __init__(self, server_dsn: str, certificate: Path, key: Path) -> None:
        params = conninfo_to_dict(server_dsn)
        host, port = str(params.get("host") or "localhost"), int(params.get("port") or 5432)
        self.target: str | tuple[str, int] = (
            f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        )
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        request = client.recv(8)
        assert request == (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
        client.sendall(b"S")
        secure = self.context.wrap_socket(client, server_side=True)
        family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        server.connect(self.target)
        threading.Thread(target=self._pump, args=(server, secure), daemon=True).start()
        self._pump(secure, server)

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(1 << 16):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def tls_settings(dsn: str, tmp_path: Path) -> Iterator[Settings]:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make the TLS front's certificate")
    certificate, key = tmp_path / "front.crt", tmp_path / "front.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True,
    )  # fmt: skip
    front = TlsFront(dsn, certificate, key)
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    params.update(host="127.0.0.1", port=str(front.port), sslmode="require")
    params["gssencmode"] = "disable"
    yield Settings(database_url=SecretStr(make_conninfo(**params)), runtime_dir=tmp_path / "rt")
    front.close()


def test_a_tls_connection_is_read_through_libpq(
    dsn: str, settings: Settings, tls_settings: Settings, tmp_path: Path
) -> None:
    execute(dsn, ALL_TYPES)
    insert_every_type(dsn, 2000)
    with TableReader(tls_settings, "x.every", range_blocks=8, workers=2) as reader:
        assert reader._connections[0].pgconn.ssl_in_use
        assert not reader.socket_reads
        over_tls = pa.Table.from_batches(list(reader.batches()), schema=reader.schema)
    assert over_tls.equals(read_all(settings, "x.every", range_blocks=8, workers=2))


def test_malloc_keeps_the_readers_temporaries_on_its_heap() -> None:
    """glibc's mallopt takes both settings (the reader asks once per process)."""
    assert keep_heap_memory() is sys.platform.startswith("linux")
