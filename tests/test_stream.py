"""QueryStream and the PostgreSQL-to-Arrow type map, against the real database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from abaco_cli.db import typemap
from abaco_cli.db.stream import QueryStream
from abaco_cli.errors import DataError


@pytest.fixture(scope="module")
def stream_db(pg_server: Any) -> Iterator[str]:
    """One database for the whole module: these queries read no tables and change nothing."""
    name = f"abaco_stream_{os.getpid()}"
    yield pg_server.create_database(name)
    pg_server.drop_database(name)


@pytest.fixture
def conn(stream_db: str) -> Iterator[psycopg.Connection[Any]]:
    """A fresh connection, prepared the way services/exporting.py prepares its own."""
    with psycopg.connect(stream_db) as connection:
        # older versions of the stream needed loaders that mark +/-infinity dates
        register = getattr(typemap, "register_infinity_markers", None)
        if register is not None:
            register(connection)
        yield connection


def run(
    conn: psycopg.Connection[Any],
    query: str,
    params: dict[str, Any] | None = None,
    *,
    batch_rows: int = 50_000,
) -> tuple[pa.Schema, list[pa.RecordBatch]]:
    """Stream a query the way services/exporting.py does: inside a transaction."""
    with conn.transaction():
        stream = QueryStream(conn, sql.SQL(query), params, batch_rows=batch_rows)
        return stream.schema, list(stream.batches())


def test_type_map_of_every_supported_type(conn: psycopg.Connection[Any]) -> None:
    schema, batches = run(
        conn,
        """
        SELECT 12345678901234.56::numeric(18,2) AS amount,
               0.123456::numeric(10,6)           AS rate,
               '2025-06-30 12:00:00+00'::timestamptz AS updated_at,
               '2025-06-30'::date                AS as_of_date,
               'San Salvador, Cuscatlán'::text   AS city,
               'abc'::varchar(10)                AS code,
               'US'::char(3)                     AS currency,
               1::int2                           AS small,
               2::int4                           AS medium,
               9000000000::int8                  AS big,
               0.5::numeric(18,10)               AS share,
               true                              AS flag
        """,
    )
    expected = {
        "amount": pa.decimal128(18, 2),
        "rate": pa.decimal128(10, 6),
        "updated_at": pa.timestamp("us", tz="UTC"),
        "as_of_date": pa.date32(),
        "city": pa.string(),
        "code": pa.string(),
        "currency": pa.string(),
        "small": pa.int16(),
        "medium": pa.int32(),
        "big": pa.int64(),
        "share": pa.decimal128(18, 10),
        "flag": pa.bool_(),
    }
    assert {f.name: f.type for f in schema} == expected
    assert len(batches) == 1
    assert batches[0].schema == schema
    row = batches[0].to_pylist()[0]
    assert row == {
        "amount": Decimal("12345678901234.56"),
        "rate": Decimal("0.123456"),
        "updated_at": datetime(2025, 6, 30, 12, 0, tzinfo=UTC),
        "as_of_date": date(2025, 6, 30),
        "city": "San Salvador, Cuscatlán",
        "code": "abc",
        "currency": "US ",  # char(3) is blank-padded by PostgreSQL
        "small": 1,
        "medium": 2,
        "big": 9000000000,
        "share": Decimal("0.5000000000"),
        "flag": True,
    }


def test_nulls_of_every_type(conn: psycopg.Connection[Any]) -> None:
    _, batches = run(
        conn,
        "SELECT NULL::numeric(18,2) AS a, NULL::date AS b, NULL::timestamptz AS c, "
        "NULL::text AS d, NULL::int4 AS e, NULL::bool AS f",
    )
    assert batches[0].to_pylist() == [dict.fromkeys("abcdef")]


def test_timestamptz_is_converted_to_utc_from_another_session_time_zone(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("SET TIME ZONE 'America/El_Salvador'")  # UTC-6, no daylight saving
    conn.commit()
    schema, batches = run(
        conn,
        # a local wall-clock time of the session, and an explicit offset
        "SELECT '2025-06-30 12:30:00'::timestamptz AS local_noon, "
        "'2025-01-01 00:00:00.000001+05:30'::timestamptz AS india",
    )
    assert schema.field("local_noon").type == pa.timestamp("us", tz="UTC")
    batch = batches[0]
    assert batch.column(0)[0].as_py() == datetime(2025, 6, 30, 18, 30, tzinfo=UTC)
    assert batch.column(1)[0].as_py() == datetime(2024, 12, 31, 18, 30, 0, 1, tzinfo=UTC)
    # the stored integer is microseconds since the epoch in UTC, worked out by hand:
    # 2025-06-30 is day 20269 since 1970-01-01; 18:30 is 66600 s into it
    assert batch.column(0).cast(pa.int64())[0].as_py() == (20269 * 86400 + 66600) * 1_000_000


def test_unconstrained_numeric_is_refused_naming_the_column(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(DataError, match="loose_amount"):
        run(conn, "SELECT 1::int4 AS ok, 1.5::numeric AS loose_amount")


def test_numeric_nan_is_refused_naming_the_column(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(DataError, match="bad_amount") as caught:
        run(
            conn,
            "SELECT v::numeric(18,2) AS bad_amount FROM (VALUES ('1.00'), ('NaN')) AS t (v)",
        )
    assert "NaN" in str(caught.value)


def test_numeric_infinity_is_refused_naming_the_column(conn: psycopg.Connection[Any]) -> None:
    # numeric(p,s) cannot hold an infinity in PostgreSQL itself, so only unconstrained
    # numeric can carry one; it is refused before any value is read.
    with pytest.raises(DataError, match="inf_amount"):
        run(conn, "SELECT 'Infinity'::numeric AS inf_amount")
    with pytest.raises(DataError, match="neg_inf"):
        run(conn, "SELECT '-Infinity'::numeric AS neg_inf")


def test_infinite_date_is_refused_naming_the_column(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(DataError, match="maturity_date"):
        run(
            conn,
            "SELECT 1::int4 AS n, v::date AS maturity_date "
            "FROM (VALUES ('2025-06-30'), ('infinity')) AS t (v)",
        )


def test_minus_infinity_timestamptz_is_refused_naming_the_column(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(DataError, match="created_at"):
        run(
            conn,
            "SELECT '2025-06-30'::date AS as_of_date, '-infinity'::timestamptz AS created_at",
        )


def test_infinite_value_in_a_later_batch_names_the_right_column(
    conn: psycopg.Connection[Any],
) -> None:
    seen: list[int] = []
    with pytest.raises(DataError, match="due_date") as caught, conn.transaction():
        stream = QueryStream(
            conn,
            sql.SQL(
                "SELECT g::int4 AS n, '2025-06-30'::date AS as_of_date, "
                "CASE WHEN g = 150 THEN 'infinity'::date ELSE '2025-01-01'::date END AS due_date "
                "FROM generate_series(1, 300) AS g ORDER BY g"
            ),
            batch_rows=100,
        )
        for batch in stream.batches():
            seen.append(batch.num_rows)
    # Arrow parses the COPY stream in blocks of megabytes, so the failure may come before any
    # batch of this small result is yielded; what matters is that no bad row gets through.
    assert sum(seen) < 150
    assert "as_of_date" not in str(caught.value)


@pytest.mark.parametrize("pg_type", ["jsonb", "uuid", "interval", "bytea"])
def test_unmapped_type_is_refused_naming_the_column(
    conn: psycopg.Connection[Any], pg_type: str
) -> None:
    literal = {
        "jsonb": "'{}'",
        "uuid": "'00000000-0000-0000-0000-000000000000'",
        "interval": "'1 day'",
        "bytea": "'\\x00'",
    }[pg_type]
    with pytest.raises(DataError, match="odd_column"):
        run(conn, f"SELECT 1::int4 AS fine, {literal}::{pg_type} AS odd_column")


def test_batches_are_bounded(conn: psycopg.Connection[Any]) -> None:
    schema, batches = run(
        conn,
        "SELECT g::int8 AS n, (g / 100.0)::numeric(18,2) AS amount "
        "FROM generate_series(1, %(rows)s) AS g ORDER BY g",
        {"rows": 1050},
        batch_rows=100,
    )
    assert len(batches) == 11
    assert all(b.num_rows <= 100 for b in batches)
    assert [b.num_rows for b in batches] == [100] * 10 + [50]
    numbers = [n for b in batches for n in b.column("n").to_pylist()]
    assert numbers == list(range(1, 1051))
    assert batches[-1].column("amount")[-1].as_py() == Decimal("10.50")
    assert all(b.schema == schema for b in batches)


def test_empty_result_has_a_schema_and_no_batches(conn: psycopg.Connection[Any]) -> None:
    schema, batches = run(conn, "SELECT 1::numeric(18,2) AS amount WHERE false")
    assert schema.field("amount").type == pa.decimal128(18, 2)
    assert batches == []


def test_a_binary_float_never_reaches_a_writer(conn: psycopg.Connection[Any]) -> None:
    """Exports carry exact decimals: a float8 column is refused, naming the column and the fix."""
    with pytest.raises(DataError, match=r"'share' is a binary float .* numeric\(18,10\)"):
        run(conn, "SELECT 0.5::float8 AS share")
