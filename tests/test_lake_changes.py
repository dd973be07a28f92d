"""read_changes (lake/changes.py) against a real PostgreSQL: a publication and a pgoutput slot in
the test database, real writes, the slot's changes decoded and compared.

Expected values come from elsewhere: the whole-table reader (db/binary_copy.py, itself checked
against PostgreSQL's text output) reading the same rows, the values written, or the server
(txid_current, the flush LSN before and after a transaction).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from abaco_cli.db.binary_copy import TableName, TableReader, describe_columns
from abaco_cli.errors import DataError
from abaco_cli.lake.changes import (
    CHANGE_COLUMNS,
    BatchEnd,
    CapturedTable,
    ChangeChunk,
    SchemaChanged,
    read_changes,
)
from abaco_cli.lake.lsn import format_lsn, parse_lsn
from abaco_cli.settings import Settings
from everytype import ALL_TYPES, every_type_rows

PAYMENTS = "core_banking.payments"
LOANS = "core_banking.loans"
CUSTOMERS = "core_banking.customers"
_names = itertools.count(1)

EVERY_TYPE = "CREATE SCHEMA x;" + ALL_TYPES


@dataclass
class Lake:
    """One test's publication and slot in its database, and a connection to read them."""

    dsn: str
    conn: psycopg.Connection[Any]
    settings: Settings
    slot: str = ""
    publication: str = ""

    def publish(self, *tables: str) -> None:
        name = f"lake_changes_{os.getpid()}_{next(_names)}"
        self.slot = self.publication = name
        self.conn.execute(f"CREATE PUBLICATION {name} FOR TABLE {', '.join(tables)}")
        self.conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))

    def execute(self, *statements: str, params: Any = None) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as writer:
            for statement in statements:
                writer.execute(statement, params)

    def flush_lsn(self) -> int:
        row = self.conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        assert row is not None
        return parse_lsn(row[0])

    def captured(
        self, table: str, allowed: tuple[str, ...] | None = None, key: tuple[str, ...] = ()
    ) -> CapturedTable:
        """The table as an initial load captures it: the whole-table reader's schema."""
        with TableReader(self.settings, table, allowed) as reader:
            schema = reader.schema
        rows = self.conn.execute(
            "SELECT attname, atttypid::int, atttypmod FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (table,),
        ).fetchall()
        types = {str(n): (int(t), int(m)) for n, t, m in rows if n in schema.names}
        if not key:
            key = tuple(
                str(r[0])
                for r in self.conn.execute(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY a.attnum",
                    (table,),
                ).fetchall()
            )
        return CapturedTable(table, allowed or tuple(schema.names), schema, types, key)

    def resolve_type(self, table: str) -> Any:
        """resolve_type for read_changes: the reader's type of a column, on a second
        connection (the first one is busy with the COPY)."""
        calls: list[tuple[int, int, str]] = []

        def resolve(type_oid: int, typmod: int, column: str) -> pa.DataType:
            calls.append((type_oid, typmod, column))
            with psycopg.connect(self.dsn) as side:
                row = side.execute("SELECT %s::regclass::oid", (table,)).fetchone()
                assert row is not None
                found = describe_columns(side, TableName.parse(table), int(row[0]), [column])
            return found[0].arrow_type

        resolve.calls = calls  # type: ignore[attr-defined]
        return resolve

    def read(
        self,
        tables: list[CapturedTable],
        *,
        upto: int | None = None,
        nchanges: int = 10**9,
        chunk: int = 50_000,
        resolve: Any = None,
    ) -> tuple[list[ChangeChunk], BatchEnd]:
        changes = read_changes(
            self.conn,
            slot=self.slot,
            publication=self.publication,
            upto_lsn=self.flush_lsn() if upto is None else upto,
            upto_nchanges=nchanges,
            tables={t.name: t for t in tables},
            resolve_type=resolve or (lambda *args: pytest.fail(f"no column expected: {args}")),
            chunk_changes=chunk,
        )
        chunks = []
        while True:
            try:
                chunks.append(next(changes))
            except StopIteration as stop:
                return chunks, stop.value

    def advance(self, lsn: int) -> None:
        self.conn.execute(
            "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, format_lsn(lsn))
        )


def joined(chunks: list[ChangeChunk], table: str) -> pa.Table:
    """A table's rows of every chunk (columns added on the way: NULL before)."""
    parts = [c.tables[table] for c in chunks if table in c.tables]
    return pa.concat_tables(parts, promote_options="default")


def rows_of(table: pa.Table, *columns: str) -> list[tuple[Any, ...]]:
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))


@pytest.fixture
def lake(db_conninfo: str, settings: Settings) -> Iterator[Lake]:
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        yield Lake(db_conninfo, conn, settings)
    with psycopg.connect(db_conninfo, autocommit=True) as conn:  # a slot keeps its database
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = current_database()"
        )


@pytest.fixture
def book(lake: Lake) -> Lake:
    """A customer and two loans to hang payments on (written before the slot exists)."""
    lake.execute(
        f"INSERT INTO {CUSTOMERS} (customer_id) VALUES ('C1')",
        f"INSERT INTO {LOANS} (loan_id, customer_id, disbursement_date, principal) "
        "VALUES ('L1', 'C1', '2024-01-01', 1000), ('L2', 'C1', '2024-02-01', 500)",
    )
    return lake


def pay(payment_id: str, amount: str = "1.00", loan: str = "L1") -> str:
    return (
        f"INSERT INTO {PAYMENTS} (payment_id, loan_id, paid_on, principal_paid) "
        f"VALUES ('{payment_id}', '{loan}', '2024-03-01', {amount})"
    )


# ---------------------------------------------------------------------------------- values


def test_every_type_equals_the_whole_table_reader(lake: Lake) -> None:
    """Every supported type, value for value, as the whole-table reader reads the same rows:
    NULL and the empty string, numeric at the limits of (18,2) and (38,10), an unconstrained
    numeric, timestamps before 2000 and after 2038 (and past 9999), uuid, json, jsonb, bytea,
    an enum, a domain; in small chunks."""
    lake.execute(EVERY_TYPE)
    lake.publish("x.every")
    lake.execute(
        every_type_rows(3000),
        """
        INSERT INTO x.every (id, money, wide, open, words, code, padded, day, at_local, at_utc,
                             raw, doc)
        VALUES (-1, 9999999999999999.99, 9999999999999999999999999999.9999999999, 0.001,
                '', '', '', '10000-01-01', '10000-01-01 00:00:00.5', '1900-01-01 00:00:00+00',
                '', '{}'),
               (-2, -9999999999999999.99, -9999999999999999999999999999.9999999999, -0.001,
                ' ', ' ', ' ', '0001-01-01', '0001-01-01 00:00:00', '2999-12-31 23:59:59.999999',
                '\\x00', '[]'),
               (-3, 0.01, 0.0000000001, 0, NULL, NULL, NULL, '1970-01-01',
                '1969-12-31 23:59:59.999999', '1999-12-31 23:59:59.999999+00', NULL, 'null'),
               (-4, -0.01, -0.0000000001, NULL, 'x', 'y', 'z', '2038-01-20',
                '2038-01-19 03:14:08', '2038-01-19 03:14:08+00', '\\xdeadbeef', '"x"')
        """,
    )
    captured = lake.captured("x.every")  # after the writes: the unconstrained scale measured
    assert captured.schema.field("open").type == pa.decimal128(38, 3)
    chunks, end = lake.read([captured], chunk=333)
    assert len(chunks) >= 5
    changes = joined(chunks, "x.every")
    assert changes.column_names == [*CHANGE_COLUMNS, *captured.schema.names]
    assert [changes.schema.field(n).type for n in captured.schema.names] == captured.schema.types
    assert set(changes.column("_op").to_pylist()) == {"insert"}
    assert changes.column("_seq").to_pylist() == list(range(3000)) + list(range(4))
    assert end.changes == {("x.every", "insert"): 3004}
    with TableReader(lake.settings, "x.every") as reader:
        expected = pa.Table.from_batches(list(reader.batches()), schema=reader.schema)
    ours = changes.select(captured.schema.names).sort_by("id")
    expected = expected.sort_by("id")
    assert ours.num_rows == expected.num_rows == 3004
    for name in captured.schema.names:
        assert ours.column(name).equals(expected.column(name)), name
    # a few values as written, NULL distinct from the empty string
    edges = ours.slice(0, 4)  # ids -4 .. -1
    assert edges.column("day").cast(pa.int32()).to_pylist()[3] == 2932897  # 10000-01-01
    late = edges.drop_columns(["day", "at_local"]).to_pylist()
    first = {r["id"]: r for r in late}
    assert first[-1]["money"] == Decimal("9999999999999999.99")
    assert first[-2]["wide"] == Decimal("-9999999999999999999999999999.9999999999")
    assert first[-1]["words"] == "" and first[-3]["words"] is None
    assert [first[i]["raw"] for i in (-1, -2, -3, -4)] == [b"", b"\x00", None, b"\xde\xad\xbe\xef"]
    assert first[-2]["padded"] == "     "
    assert first[-2]["at_utc"] == datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert edges.column("day")[2].as_py() == date(1, 1, 1)
    assert first[-3]["doc"] == "null"


def test_nan_numeric_is_refused_naming_the_column(book: Lake) -> None:
    book.publish(PAYMENTS)
    book.execute(pay("P1"), pay("P2", "'NaN'"))
    with pytest.raises(DataError) as caught:
        book.read([book.captured(PAYMENTS)])
    message = str(caught.value)
    assert "'principal_paid' of core_banking.payments" in message and "NaN" in message
    assert "decimal128(18, 2)" in message
    book.conn.execute("SELECT 1")  # the connection is usable again


# ------------------------------------------------------------------- the kinds of change


@pytest.mark.parametrize("chunk", [50_000, 1])
def test_inserts_updates_deletes_a_key_update_and_a_truncate(book: Lake, chunk: int) -> None:
    """Also in chunks of about one message: a chunk may end anywhere in a transaction."""
    book.publish(PAYMENTS, LOANS)
    lsns, xids = [book.flush_lsn()], []
    for statements in (
        [pay("P1", "10.00"), pay("P2", "20.00"), pay("P3", "30.00", "L2")],
        [
            f"UPDATE {PAYMENTS} SET principal_paid = 11.50 WHERE payment_id = 'P1'",
            f"DELETE FROM {PAYMENTS} WHERE payment_id = 'P2'",
            f"UPDATE {PAYMENTS} SET payment_id = 'P4', fee_paid = 1 WHERE payment_id = 'P3'",
        ],
        [f"TRUNCATE {LOANS} CASCADE"],
    ):
        with psycopg.connect(book.dsn) as writer:
            row = writer.execute("SELECT txid_current()").fetchone()
            assert row is not None
            xids.append(int(row[0]) % 2**32)
            for statement in statements:
                writer.execute(statement)
        lsns.append(book.flush_lsn())
    payments, loans = book.captured(PAYMENTS), book.captured(LOANS)
    chunks, end = book.read([payments, loans], chunk=chunk)
    table = joined(chunks, PAYMENTS)
    assert rows_of(table, "_op", "_seq", "payment_id", "loan_id", "principal_paid") == [
        ("insert", 0, "P1", "L1", Decimal("10.00")),
        ("insert", 1, "P2", "L1", Decimal("20.00")),
        ("insert", 2, "P3", "L2", Decimal("30.00")),
        ("update", 0, "P1", "L1", Decimal("11.50")),
        ("delete", 1, "P2", None, None),  # the key only
        ("delete", 2, "P3", None, None),  # a key update: the old key deleted ...
        ("update", 3, "P4", "L2", Decimal("30.00")),  # ... then the new row
        ("truncate", 1, None, None, None),  # TRUNCATE loans CASCADE: loans first, then payments
    ]
    assert table.column("fee_paid").to_pylist()[6] == Decimal("1.00")
    deleted = table.slice(4, 1).to_pylist()[0]
    assert [k for k, v in deleted.items() if v is not None] == [*CHANGE_COLUMNS, "payment_id"]
    # each transaction's LSN, xid and time, from the server
    commit_lsns = table.column("_commit_lsn").to_pylist()
    for rows, txn in ((range(0, 3), 0), (range(3, 7), 1), (range(7, 8), 2)):
        assert {commit_lsns[r] for r in rows} == {commit_lsns[rows[0]]}
        assert lsns[txn] < commit_lsns[rows[0]] < lsns[txn + 1]
        assert {table.column("_xid")[r].as_py() for r in rows} == {xids[txn]}
    assert table.schema.field("_commit_time").type == pa.timestamp("us", tz="UTC")
    times = table.column("_commit_time").to_pylist()
    assert times == sorted(times)
    truncated = joined(chunks, LOANS)
    assert rows_of(truncated, "_op", "_seq", "loan_id") == [("truncate", 0, None)]
    assert truncated.column("_commit_lsn").to_pylist() == [commit_lsns[7]]
    assert end.transactions == 3
    assert end.end_lsn is not None and commit_lsns[7] < end.end_lsn <= lsns[3]
    assert end.last_commit_time == times[7]
    assert end.changes == {
        (PAYMENTS, "insert"): 3,
        (PAYMENTS, "update"): 2,
        (PAYMENTS, "delete"): 2,
        (PAYMENTS, "truncate"): 1,
        (LOANS, "truncate"): 1,
    }
    assert end.complete


def test_advancing_to_the_end_lsn_consumes_the_batch(book: Lake) -> None:
    book.publish(PAYMENTS)
    book.execute(pay("P1"), pay("P2"), pay("P3"))  # three transactions
    payments = book.captured(PAYMENTS)
    chunks, end = book.read([payments])
    assert end.transactions == 3 and end.complete and end.end_lsn is not None
    assert joined(chunks, PAYMENTS).num_rows == 3
    again, same = book.read([payments])  # a peek consumes nothing
    assert joined(again, PAYMENTS).equals(joined(chunks, PAYMENTS)) and same == end
    book.advance(end.end_lsn)
    chunks, after = book.read([payments])
    assert chunks == [] and after.transactions == 0 and after.end_lsn is None
    assert after.complete and after.changes == {}
    # upto_nchanges stops after the first transaction that reaches it: not complete
    book.execute(
        f"BEGIN; {pay('P4')}; {pay('P5')}; COMMIT",
        f"BEGIN; {pay('P6')}; {pay('P7')}; COMMIT",
    )
    upto = book.flush_lsn()
    chunks, first = book.read([payments], upto=upto, nchanges=1)
    assert rows_of(joined(chunks, PAYMENTS), "payment_id") == [("P4",), ("P5",)]
    assert first.transactions == 1 and not first.complete
    assert first.end_lsn is not None
    book.advance(first.end_lsn)
    chunks, second = book.read([payments], upto=upto, nchanges=100)
    assert rows_of(joined(chunks, PAYMENTS), "payment_id") == [("P6",), ("P7",)]
    assert second.transactions == 1 and second.complete
    assert second.end_lsn is not None and first.end_lsn < second.end_lsn <= upto
    # upto_lsn before a transaction's commit: it is left for the next batch
    book.advance(second.end_lsn)
    book.execute(pay("P8"))
    chunks, none = book.read([payments], upto=second.end_lsn)
    assert chunks == [] and none.transactions == 0 and none.complete


def test_a_transaction_larger_than_several_chunks(book: Lake) -> None:
    book.publish(PAYMENTS)
    book.execute(
        f"INSERT INTO {PAYMENTS} (payment_id, loan_id, paid_on, principal_paid) "
        "SELECT 'P' || lpad(g::text, 5, '0'), 'L1', date '2024-01-01' + g % 365, g / 100.0 "
        "FROM generate_series(1, 6000) AS g"
    )
    chunks, end = book.read([book.captured(PAYMENTS)], chunk=1000)
    assert len(chunks) >= 4  # a chunk ends when about 1000 rows have arrived
    assert all(c.tables[PAYMENTS].num_rows < 6000 for c in chunks)
    table = joined(chunks, PAYMENTS)
    assert table.column("_seq").to_pylist() == list(range(6000))
    assert len(set(table.column("_commit_lsn").to_pylist())) == 1
    assert table.column("payment_id").to_pylist() == [f"P{g:05d}" for g in range(1, 6001)]
    assert table.column("principal_paid").to_pylist() == [Decimal(g) / 100 for g in range(1, 6001)]
    assert end.transactions == 1 and end.changes == {(PAYMENTS, "insert"): 6000}


def test_tables_not_captured_are_skipped(book: Lake) -> None:
    book.publish(PAYMENTS, LOANS)
    book.execute(
        f"UPDATE {LOANS} SET status = 'active'",
        pay("P1"),
        f"BEGIN; UPDATE {LOANS} SET status = 'closed' WHERE loan_id = 'L1'; {pay('P2')}; COMMIT",
    )
    chunks, end = book.read([book.captured(PAYMENTS)])
    assert all(set(c.tables) == {PAYMENTS} for c in chunks)
    assert rows_of(joined(chunks, PAYMENTS), "_seq", "payment_id") == [(0, "P1"), (0, "P2")]
    assert end.transactions == 3 and end.changes == {(PAYMENTS, "insert"): 2}


def test_a_column_not_allowed_never_appears(lake: Lake) -> None:
    """A borrower's name in the source: not in ``allowed``, so no chunk holds it, not even in
    an update that changes only the name."""
    lake.execute(f"ALTER TABLE {CUSTOMERS} ADD COLUMN full_name text")
    lake.publish(CUSTOMERS)
    lake.execute(
        f"INSERT INTO {CUSTOMERS} (customer_id, city, full_name) "
        "VALUES ('C2', 'Lima', 'Ana Prestataria Secreta')",
        f"UPDATE {CUSTOMERS} SET full_name = 'Beto Deudor Secreto' WHERE customer_id = 'C2'",
        f"INSERT INTO {CUSTOMERS} (customer_id, full_name) VALUES ('C3', 'Dora Secreta')",
        f"DELETE FROM {CUSTOMERS} WHERE customer_id = 'C3'",
    )
    allowed = ("customer_id", "customer_type", "city", "country", "created_at")
    customers = lake.captured(CUSTOMERS, allowed)
    chunks, _ = lake.read([customers])
    table = joined(chunks, CUSTOMERS)
    assert table.column_names == [*CHANGE_COLUMNS, *allowed]
    assert rows_of(table, "_op", "customer_id", "city") == [
        ("insert", "C2", "Lima"),
        ("update", "C2", "Lima"),
        ("insert", "C3", None),
        ("delete", "C3", None),
    ]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    serialized = sink.getvalue().to_pybytes()
    assert b"Secret" not in serialized and b"full_name" not in serialized


# ------------------------------------------------------------------------- schema changes


def test_an_allowed_column_that_appears_is_added(book: Lake) -> None:
    book.publish(PAYMENTS)
    payments = book.captured(PAYMENTS)
    allowed = (*payments.allowed, "channel")
    payments = CapturedTable(PAYMENTS, allowed, payments.schema, payments.types, payments.key)
    book.execute(
        pay("P1"),
        f"ALTER TABLE {PAYMENTS} ADD COLUMN channel varchar(8), ADD COLUMN payer_name text",
        f"INSERT INTO {PAYMENTS} (payment_id, loan_id, paid_on, channel, payer_name) "
        "VALUES ('P2', 'L1', '2024-03-02', 'web', 'Carla Pagadora')",
        pay("P3"),
        f"UPDATE {PAYMENTS} SET channel = 'branch' WHERE payment_id = 'P1'",
    )
    resolve = book.resolve_type(PAYMENTS)
    chunks, end = book.read([payments], resolve=resolve, chunk=1)
    added = [(t, f) for c in chunks for t, fields in c.added.items() for f in fields]
    assert added == [(PAYMENTS, pa.field("channel", pa.string()))]
    assert resolve.calls == [(1043, 8 + 4, "channel")]  # varchar(8): its oid and typmod
    table = joined(chunks, PAYMENTS)
    assert table.column_names[-1] == "channel"
    assert rows_of(table, "_op", "payment_id", "channel") == [
        ("insert", "P1", None),
        ("insert", "P2", "web"),
        ("insert", "P3", None),
        ("update", "P1", "branch"),
    ]
    assert "payer_name" not in table.column_names
    # the chunk where it appeared carries it; so does every later one
    appeared = next(i for i, c in enumerate(chunks) if c.added)
    later = [c.tables[PAYMENTS] for c in chunks[appeared:] if PAYMENTS in c.tables]
    assert later and all("channel" in t.column_names for t in later)
    assert end.changes == {(PAYMENTS, "insert"): 3, (PAYMENTS, "update"): 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("DROP COLUMN interest_paid", "column 'interest_paid' of core_banking.payments was "
         "dropped or renamed in the source"),
        ("RENAME COLUMN fee_paid TO fees", "column 'fee_paid' of core_banking.payments was "
         "dropped or renamed in the source"),
        ("ALTER COLUMN principal_paid TYPE numeric(20,4)", "column 'principal_paid' of "
         "core_banking.payments was retyped from numeric(18,2) to numeric(20,4) in the source"),
        ("ALTER COLUMN currency TYPE text", "column 'currency' of core_banking.payments was "
         "retyped from character(3) to text in the source"),
        ("ALTER COLUMN paid_on TYPE timestamp", "column 'paid_on' of core_banking.payments was "
         "retyped from date to timestamp without time zone in the source"),
    ],
)  # fmt: skip
def test_a_dropped_renamed_or_retyped_column_stops_the_batch(
    book: Lake, change: str, message: str
) -> None:
    book.publish(PAYMENTS)
    payments = book.captured(PAYMENTS)
    book.execute(pay("P1"), f"ALTER TABLE {PAYMENTS} {change}", pay("P2"))
    with pytest.raises(SchemaChanged) as caught:
        book.read([payments])
    assert str(caught.value) == message
    assert caught.value.hint == (
        "`abaco lake resync --table core_banking.payments` copies the table again as it is now."
    )
    book.conn.execute("SELECT 1")


def test_a_column_not_captured_may_change(book: Lake) -> None:
    book.publish(PAYMENTS)
    allowed = ("payment_id", "loan_id", "principal_paid")
    payments = book.captured(PAYMENTS, allowed)
    book.execute(f"ALTER TABLE {PAYMENTS} DROP COLUMN rebates", pay("P1"))
    chunks, _ = book.read([payments])
    assert rows_of(joined(chunks, PAYMENTS), "payment_id") == [("P1",)]


# ------------------------------------------------------------ TOAST and REPLICA IDENTITY FULL


def test_unchanged_toasted_values(lake: Lake) -> None:
    """An update that leaves a large out-of-line value alone sends it as 'u': an error with
    the default replica identity, the old tuple's value with REPLICA IDENTITY FULL (also for
    a key update, whose delete and update then share the value)."""
    lake.execute(
        "CREATE SCHEMA x",
        "CREATE TABLE x.docs (id int PRIMARY KEY, n int, body text)",
        "ALTER TABLE x.docs ALTER COLUMN body SET STORAGE EXTERNAL",
    )
    lake.publish("x.docs")
    big = "".join(f"{i:05d}" for i in range(4000))  # 20,000 bytes, stored out of line
    lake.execute("INSERT INTO x.docs VALUES (1, 0, %s)", params=(big,))
    lake.execute("UPDATE x.docs SET n = 1 WHERE id = 1")
    docs = lake.captured("x.docs")
    with pytest.raises(DataError) as caught:
        lake.read([docs])
    assert str(caught.value).startswith("column 'body' of x.docs: an update left its large")
    assert caught.value.hint.startswith("ALTER TABLE x.docs REPLICA IDENTITY FULL")
    lake.advance(lake.flush_lsn())
    lake.execute(
        "ALTER TABLE x.docs REPLICA IDENTITY FULL",
        "UPDATE x.docs SET n = 2 WHERE id = 1",
        "UPDATE x.docs SET id = 5, n = 3 WHERE id = 1",
    )
    chunks, _ = lake.read([docs])
    assert rows_of(joined(chunks, "x.docs"), "_op", "_seq", "id", "n", "body") == [
        ("update", 0, 1, 2, big),
        ("delete", 0, 1, 2, big),  # REPLICA IDENTITY FULL: the whole old row
        ("update", 1, 5, 3, big),
    ]


def test_replica_identity_full_without_a_key(lake: Lake) -> None:
    lake.execute(
        "CREATE SCHEMA x",
        "CREATE TABLE x.rates (band text, apr numeric(10,6))",
        "ALTER TABLE x.rates REPLICA IDENTITY FULL",
    )
    lake.publish("x.rates")
    lake.execute(
        "INSERT INTO x.rates VALUES ('A', 0.1), ('B', 0.2)",
        "UPDATE x.rates SET apr = 0.15 WHERE band = 'A'",
        "DELETE FROM x.rates WHERE band = 'B'",
    )
    rates = lake.captured("x.rates", key=("band", "apr"))
    chunks, _ = lake.read([rates])
    assert rows_of(joined(chunks, "x.rates"), "_op", "_seq", "band", "apr") == [
        ("insert", 0, "A", Decimal("0.100000")),
        ("insert", 1, "B", Decimal("0.200000")),
        ("delete", 0, "A", Decimal("0.100000")),  # every column is the key
        ("update", 1, "A", Decimal("0.150000")),
        ("delete", 0, "B", Decimal("0.200000")),
    ]


# ----------------------------------------------------------------------------- the stream


def test_leaving_early_cancels_the_copy(book: Lake) -> None:
    book.publish(PAYMENTS)
    book.execute(
        f"INSERT INTO {PAYMENTS} (payment_id, loan_id, paid_on) "
        "SELECT 'P' || g, 'L1', date '2024-01-01' FROM generate_series(1, 20000) AS g"
    )
    changes = read_changes(
        book.conn,
        slot=book.slot,
        publication=book.publication,
        upto_lsn=book.flush_lsn(),
        upto_nchanges=10**9,
        tables={PAYMENTS: book.captured(PAYMENTS)},
        resolve_type=lambda *args: pa.null(),
        chunk_changes=500,
    )
    first = next(changes)
    assert 0 < first.tables[PAYMENTS].num_rows < 20000
    changes.close()
    assert book.conn.execute("SELECT 41 + 1").fetchone() == (42,)
    chunks, end = book.read([book.captured(PAYMENTS)])  # nothing was consumed
    assert joined(chunks, PAYMENTS).num_rows == 20000 and end.transactions == 1


def test_a_missing_slot_is_the_servers_error(book: Lake) -> None:
    book.publish(PAYMENTS)
    book.slot = "no_such_slot"
    with pytest.raises(psycopg.errors.UndefinedObject, match="no_such_slot"):
        book.read([book.captured(PAYMENTS)])
    assert book.conn.execute("SELECT 1").fetchone() == (1,)
