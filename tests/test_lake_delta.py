"""The lake's Delta tables (abaco_cli.lake.delta): exact types, one MERGE per batch, the LSN in
every commit, time travel, compaction, other engines reading the tables, and S3 (moto).

Expected rows are written out by hand; the tables are read back by delta-rs, and by DuckDB's
delta extension and polars as independent readers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from abaco_cli.errors import NotFoundError, UsageError, WriteError
from abaco_cli.lake.delta import (
    COMMIT_TIME_KEY,
    LSN_INT_KEY,
    LSN_KEY,
    LakeCommit,
    LakeTable,
    MergeOutcome,
    storage_options,
    table_uri,
)
from abaco_cli.settings import Settings, UploadSettings
from abaco_cli.storage.url import parse_destination
from tests.conftest import CLOUD_BUCKET, FAKE_AWS_KEY_ID, FAKE_AWS_SECRET

D18_MAX = Decimal("9999999999999999.99")
D38_MAX = Decimal("9999999999999999999999999999.9999999999")  # 38 digits
D38_MIN = Decimal("-9999999999999999999999999999.9999999999")  # (not -D38_MAX: 28-digit context)

PAYMENTS = pa.schema(
    [
        pa.field("payment_id", pa.int64(), nullable=False),
        pa.field("loan_id", pa.int64()),
        pa.field("amount", pa.decimal128(18, 2)),
        pa.field("paid_at", pa.timestamp("us", tz="UTC")),
        pa.field("reference", pa.string()),
    ]
)
SCHEDULE = pa.schema(
    [
        pa.field("loan_id", pa.int64(), nullable=False),
        pa.field("installment_no", pa.int16(), nullable=False),
        pa.field("due_date", pa.date32()),
        pa.field("amount_due", pa.decimal128(18, 2)),
    ]
)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def reader(schema: pa.Schema, rows: Sequence[dict[str, Any]]) -> pa.RecordBatchReader:
    table = pa.Table.from_pylist(list(rows), schema=schema)
    return pa.RecordBatchReader.from_batches(schema, table.to_batches())


def net(schema: pa.Schema, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """apply()'s input: the table's columns plus _op (a delete carries only its key)."""
    full = [{name: row.get(name) for name in [*schema.names, "_op"]} for row in rows]
    fields = [pa.field(f.name, f.type) for f in schema]
    return pa.Table.from_pylist(full, schema=pa.schema([*fields, pa.field("_op", pa.string())]))


def rows_of(table: pa.Table, key: Sequence[str]) -> list[dict[str, Any]]:
    return table.sort_by([(name, "ascending") for name in key]).to_pylist()


def payment(pid: int, amount: str, reference: str | None = "r", loan: int = 7) -> dict[str, Any]:
    return {
        "payment_id": pid,
        "loan_id": loan,
        "amount": Decimal(amount),
        "paid_at": ts("2026-03-02T10:00:00"),
        "reference": reference,
    }


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    return tmp_path / "dest"


@pytest.fixture
def payments(lake_dir: Path) -> LakeTable:
    """core_banking.payments created at LSN 0/100 with payments 1, 2 and 3."""
    table = LakeTable(table_uri(str(lake_dir), "core_banking.payments"), {})
    version = table.create(
        reader(PAYMENTS, [payment(1, "10.00"), payment(2, "20.00"), payment(3, "30.00")]),
        LakeCommit(0x100, ts("2026-03-01T00:00:00")),
    )
    assert version == 0
    return table


# ------------------------------------------------------------------ places and options


def test_table_uri_for_each_kind_of_destination(tmp_path: Path) -> None:
    assert table_uri(str(tmp_path), "core_banking.loans") == str(
        tmp_path / "lake" / "tables" / "core_banking.loans"
    )
    assert table_uri(f"file://{tmp_path}/", "core_banking.loans") == str(
        tmp_path / "lake" / "tables" / "core_banking.loans"
    )
    assert (
        table_uri("s3://bucket-a/prod/x", "core_banking.loans")
        == "s3://bucket-a/prod/x/lake/tables/core_banking.loans"
    )
    assert (
        table_uri(parse_destination("gs://bucket-b"), "core_banking.rate_card")
        == "gs://bucket-b/lake/tables/core_banking.rate_card"
    )
    for bad in ("loans", "../core_banking.loans", "core_banking.loans/x", "Core.Loans"):
        with pytest.raises(ValueError, match=r"schema\.table"):
            table_uri(str(tmp_path), bad)


def test_storage_options_hold_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_AWS_SECRET)
    local = Settings(upload=UploadSettings(s3_endpoint_url="http://127.0.0.1:9000"))
    assert storage_options(local, "s3://bucket-a/lake") == {
        "aws_conditional_put": "etag",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
    }
    aws = Settings(upload=UploadSettings(s3_region="eu-west-1"))
    assert storage_options(aws, "s3://bucket-a") == {
        "aws_conditional_put": "etag",
        "AWS_REGION": "eu-west-1",
    }
    assert storage_options(aws, "gs://bucket-b/lake") == {}
    assert storage_options(aws, "/srv/lake") == {}
    shown = f"{storage_options(local, 's3://bucket-a')} {LakeTable('s3://bucket-a/t', {})!r}"
    assert FAKE_AWS_SECRET not in shown and FAKE_AWS_KEY_ID not in shown


# ------------------------------------------------------------------ exact types

EDGES = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("small", pa.int16()),
        pa.field("medium", pa.int32()),
        pa.field("big", pa.int64()),
        pa.field("money", pa.decimal128(18, 2)),
        pa.field("rate", pa.decimal128(38, 10)),
        pa.field("at", pa.timestamp("us", tz="UTC")),
        pa.field("day", pa.date32()),
        pa.field("flag", pa.bool_()),
        pa.field("text", pa.string()),
        pa.field("blob", pa.binary()),
        pa.field("ratio", pa.float64()),
        pa.field("apr", pa.decimal128(10, 6)),  # the contract's rates
    ]
)
EDGE_ROWS = [
    {
        "id": 1,
        "small": -32768,
        "medium": -(2**31),
        "big": -(2**63),
        "money": -D18_MAX,
        "rate": D38_MIN,
        "at": datetime(1969, 7, 20, 20, 17, 40, 1, tzinfo=UTC),
        "day": date(1900, 1, 1),
        "flag": False,
        "text": "",
        "blob": b"",
        "ratio": -0.0,
        "apr": Decimal("-9999.999999"),
    },
    {
        "id": 2,
        "small": 32767,
        "medium": 2**31 - 1,
        "big": 2**63 - 1,
        "money": D18_MAX,
        "rate": D38_MAX,
        "at": datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "day": date(2262, 4, 11),
        "flag": True,
        "text": "ñandú 💸",
        "blob": b"\x00\xff\x00",
        "ratio": 1e308,
        "apr": Decimal("9999.999999"),
    },
    {
        "id": 3,
        "small": None,
        "medium": None,
        "big": None,
        "money": Decimal("0.01"),
        "rate": Decimal("0.0000000001"),
        "at": datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
        "day": date(2038, 1, 20),
        "flag": None,
        "text": None,
        "blob": None,
        "ratio": None,
        "apr": None,
    },
]


def test_exact_types_survive_create_and_merge(lake_dir: Path) -> None:
    table = LakeTable(table_uri(str(lake_dir), "core_banking.edges"), {})
    table.create(reader(EDGES, EDGE_ROWS[:2]), LakeCommit(1))

    back = table.read()
    assert back.schema == EDGES  # the same Arrow types: nothing widened, nothing a float
    assert rows_of(back, ["id"]) == EDGE_ROWS[:2]
    assert back.column("text").to_pylist() == ["", "ñandú 💸"]  # "" is not NULL

    # How delta-rs stores them: Delta types in the log, Parquet physical types in the files.
    log = (Path(table.uri) / "_delta_log" / f"{0:020}.json").read_text().splitlines()
    metadata = next(json.loads(line)["metaData"] for line in log if '"metaData"' in line)
    fields = {f["name"]: f["type"] for f in json.loads(metadata["schemaString"])["fields"]}
    assert fields == {
        "id": "long",
        "small": "short",
        "medium": "integer",
        "big": "long",
        "money": "decimal(18,2)",
        "rate": "decimal(38,10)",
        "at": "timestamp",  # Delta's timestamp is UTC; timestamp_ntz would be the naive one
        "day": "date",
        "flag": "boolean",
        "text": "string",
        "blob": "binary",
        "ratio": "double",
        "apr": "decimal(10,6)",
    }
    parquet = pq.ParquetFile(next(Path(table.uri).glob("*.parquet"))).schema
    assert parquet.column(4).physical_type == "INT64"  # decimal(18,2) as an exact integer
    assert parquet.column(5).physical_type == "FIXED_LEN_BYTE_ARRAY"  # decimal(38,10), 16 bytes
    at = json.loads(parquet.column(6).logical_type.to_json())
    assert parquet.column(6).physical_type == "INT64"
    assert (at["isAdjustedToUTC"], at["timeUnit"]) == (True, "microseconds")

    # Through a MERGE too: row 3 inserted, row 1 updated to row 2's values.
    changed = {**EDGE_ROWS[1], "id": 1}
    outcome = table.apply(
        net(EDGES, [{**changed, "_op": "upsert"}, {**EDGE_ROWS[2], "_op": "upsert"}]),
        key=["id"],
        truncated=False,
        commit=LakeCommit(2),
    )
    assert (outcome.inserted, outcome.updated, outcome.deleted) == (1, 1, 0)
    back = table.read()
    assert back.schema == EDGES
    assert rows_of(back, ["id"]) == [changed, EDGE_ROWS[1], EDGE_ROWS[2]]


def test_a_timestamp_without_time_zone_is_kept_with_the_timestamp_ntz_feature(
    lake_dir: Path,
) -> None:
    """Not in the contract (its times are timestamptz), but a configured table may have one:
    Delta's timestamp_ntz, which needs reader version 3 and writer version 7."""
    naive = pa.schema([pa.field("id", pa.int64()), pa.field("at", pa.timestamp("us"))])
    rows = [{"id": 1, "at": datetime(1950, 1, 1, 12, 0, 0, 5)}]
    table = LakeTable(table_uri(str(lake_dir), "core_banking.naive"), {})
    table.create(reader(naive, rows), LakeCommit(1))
    assert table.read().schema == naive and table.read().to_pylist() == rows
    protocol = DeltaTable(table.uri).protocol()
    assert (protocol.min_reader_version, protocol.reader_features) == (3, ["timestampNtz"])


# ------------------------------------------------------------------ MERGE


def test_merge_upserts_and_deletes_in_one_commit(payments: LakeTable) -> None:
    outcome = payments.apply(
        net(
            PAYMENTS,
            [
                {**payment(2, "21.50", reference=""), "_op": "upsert"},  # exists: updated
                {"payment_id": 3, "_op": "delete"},
                {"payment_id": 99, "_op": "delete"},  # never there: fine
                {**payment(4, "40.00", reference=None), "_op": "upsert"},  # new: inserted
            ],
        ),
        key=["payment_id"],
        truncated=False,
        commit=LakeCommit(0x16B3748, ts("2026-03-02T10:00:05")),
    )
    assert outcome == MergeOutcome(version=1, inserted=1, updated=1, deleted=1)
    assert rows_of(payments.read(), ["payment_id"]) == [
        payment(1, "10.00"),
        payment(2, "21.50", reference=""),
        payment(4, "40.00", reference=None),
    ]
    assert payments.count_rows() == 3

    newest = payments.history()[0]
    assert newest["version"] == 1 and newest["operation"] == "MERGE"
    assert newest[LSN_KEY] == "0/16B3748"
    assert newest[LSN_INT_KEY] == str(0x16B3748)
    assert newest[COMMIT_TIME_KEY] == "2026-03-02T10:00:05.000000Z"


def test_upsert_of_an_existing_key_updates_and_never_duplicates(payments: LakeTable) -> None:
    for lsn, amount in ((0x200, "11.00"), (0x300, "12.00")):
        payments.apply(
            net(PAYMENTS, [{**payment(1, amount), "_op": "upsert"}]),
            key=["payment_id"],
            truncated=False,
            commit=LakeCommit(lsn),
        )
    back = payments.read()
    assert back.num_rows == 3
    assert back.column("payment_id").to_pylist().count(1) == 1
    assert rows_of(back, ["payment_id"])[0]["amount"] == Decimal("12.00")


def test_composite_key(lake_dir: Path) -> None:
    schedule = LakeTable(table_uri(str(lake_dir), "core_banking.payment_schedule"), {})

    def row(loan: int, no: int, due: str) -> dict[str, Any]:
        return {
            "loan_id": loan,
            "installment_no": no,
            "due_date": date.fromisoformat("2026-04-01"),
            "amount_due": Decimal(due),
        }

    schedule.create(
        reader(SCHEDULE, [row(1, 1, "100.00"), row(1, 2, "100.00"), row(2, 1, "50.00")]),
        LakeCommit(10),
    )
    outcome = schedule.apply(
        net(
            SCHEDULE,
            [
                {**row(1, 2, "90.00"), "_op": "upsert"},  # same loan, other installment
                {"loan_id": 2, "installment_no": 1, "_op": "delete"},
                {**row(2, 2, "55.00"), "_op": "upsert"},  # same installment_no, other loan
            ],
        ),
        key=["loan_id", "installment_no"],
        truncated=False,
        commit=LakeCommit(20),
    )
    assert (outcome.inserted, outcome.updated, outcome.deleted) == (1, 1, 1)
    assert rows_of(schedule.read(), ["loan_id", "installment_no"]) == [
        row(1, 1, "100.00"),
        row(1, 2, "90.00"),
        row(2, 2, "55.00"),
    ]


def test_truncated_batch_keeps_only_its_upserts_in_one_commit(payments: LakeTable) -> None:
    # Rows in several files (each apply writes its own), so that no file is skipped.
    payments.apply(
        net(PAYMENTS, [{**payment(500, "5.00"), "_op": "upsert"}]),
        key=["payment_id"],
        truncated=False,
        commit=LakeCommit(0x200),
    )
    assert len(DeltaTable(payments.uri).file_uris()) == 2
    before = payments.version()
    outcome = payments.apply(
        net(
            PAYMENTS,
            [
                {**payment(2, "22.00"), "_op": "upsert"},  # re-inserted after the truncate
                {**payment(7, "70.00"), "_op": "upsert"},
                {"payment_id": 1, "_op": "delete"},
            ],
        ),
        key=["payment_id"],
        truncated=True,
        commit=LakeCommit(0x300),
    )
    assert payments.version() == before + 1 == outcome.version  # one commit
    assert rows_of(payments.read(), ["payment_id"]) == [payment(2, "22.00"), payment(7, "70.00")]
    assert (outcome.inserted, outcome.updated, outcome.deleted) == (1, 1, 3)  # 1, 3 and 500

    emptied = payments.apply(
        net(PAYMENTS, []), key=["payment_id"], truncated=True, commit=LakeCommit(0x400)
    )
    assert emptied.version == before + 2 and emptied.deleted == 2
    assert payments.read().num_rows == 0 and payments.count_rows() == 0
    assert payments.covered_lsn() == 0x400
    versions = [entry["version"] for entry in payments.history()]
    assert versions == [3, 2, 1, 0]  # create, then one version per apply


def test_empty_batch_writes_nothing(payments: LakeTable) -> None:
    outcome = payments.apply(
        net(PAYMENTS, []), key=["payment_id"], truncated=False, commit=LakeCommit(0x200)
    )
    assert outcome == MergeOutcome(version=0, inserted=0, updated=0, deleted=0, committed=False)
    assert payments.version() == 0 and payments.covered_lsn() == 0x100


def test_apply_refuses_net_changes_it_cannot_merge_exactly(payments: LakeTable) -> None:
    def attempt(rows: list[dict[str, Any]], table: pa.Table | None = None) -> None:
        payments.apply(
            table if table is not None else net(PAYMENTS, rows),
            key=["payment_id"],
            truncated=False,
            commit=LakeCommit(0x200),
        )

    twice = [{**payment(1, "1.00"), "_op": "upsert"}, {"payment_id": 1, "_op": "delete"}]
    with pytest.raises(ValueError, match="more than once"):
        attempt(twice)
    with pytest.raises(ValueError, match="'upsert' or 'delete'"):
        attempt([{**payment(1, "1.00"), "_op": "insert"}])
    with pytest.raises(ValueError, match="NULL"):
        attempt([{"payment_id": None, "_op": "delete"}])
    without = net(PAYMENTS, [{**payment(1, "1.00"), "_op": "upsert"}]).drop_columns("reference")
    with pytest.raises(ValueError, match=r"missing \['reference'\]"):
        attempt([], without)
    assert payments.version() == 0


# ------------------------------------------------------------------ the LSN in the log


def test_covered_lsn_skips_commits_without_an_lsn(payments: LakeTable) -> None:
    assert LakeTable(payments.uri + "_absent", {}).covered_lsn() is None
    for lsn, pid in ((0x200, 10), (0x300, 11), (0x400, 12)):
        payments.apply(
            net(PAYMENTS, [{**payment(pid, "1.00"), "_op": "upsert"}]),
            key=["payment_id"],
            truncated=False,
            commit=LakeCommit(lsn),
        )
    assert payments.covered_lsn() == 0x400

    outcome = payments.compact()  # 4 small files into 1: a commit without an LSN
    assert (outcome.files_removed, outcome.files_added) == (4, 1)
    payments.add_columns([pa.field("channel", pa.string())])  # another
    plain = pa.table({"payment_id": pa.array([90], pa.int64())})
    write_deltalake(payments.uri, plain, mode="append", schema_mode="merge")  # not abaco's
    history = payments.history()
    assert [entry["operation"] for entry in history[:3]] == ["WRITE", "ADD COLUMN", "OPTIMIZE"]
    assert all(LSN_KEY not in entry for entry in history[:3])
    assert payments.covered_lsn() == 0x400
    newest_with_lsn = next(e for e in history if LSN_INT_KEY in e)
    assert int(newest_with_lsn[LSN_INT_KEY]) == payments.covered_lsn()

    # The log cleanup (30 days by default) deletes the commit files a checkpoint covers; the
    # LSN is kept in the checkpoint (a txn action), so it is still known.
    log = Path(payments.uri) / "_delta_log"
    checkpoint = json.loads((log / "_last_checkpoint").read_text())["version"]
    assert checkpoint == 4  # compact's: after the three applies of versions 1 to 3
    for version in range(checkpoint):
        (log / f"{version:020}.json").unlink()
    assert payments.covered_lsn() == 0x400
    assert payments.version_at(lsn=0x400) is None  # its commitInfo went with the files
    assert rows_of(payments.read(), ["payment_id"])[-1]["payment_id"] == 90

    untagged = LakeTable(payments.uri + "_plain", {})
    write_deltalake(untagged.uri, plain)
    assert untagged.covered_lsn() is None


def test_version_at_lsn_and_moment_reads_the_table_as_it_was(payments: LakeTable) -> None:
    # v0 at 0/100 (2026-03-01 00:00): payments 1, 2, 3
    payments.apply(  # v1 at 0/200, 09:00 on the 3rd: 2 changed, 3 deleted
        net(
            PAYMENTS, [{**payment(2, "25.00"), "_op": "upsert"}, {"payment_id": 3, "_op": "delete"}]
        ),
        key=["payment_id"],
        truncated=False,
        commit=LakeCommit(0x200, ts("2026-03-03T09:00:00")),
    )
    write_deltalake(payments.uri, PAYMENTS.empty_table(), mode="append")  # v2: no LSN
    payments.apply(  # v3 at 0/300, 12:00 on the 3rd: 4 added
        net(PAYMENTS, [{**payment(4, "40.00"), "_op": "upsert"}]),
        key=["payment_id"],
        truncated=False,
        commit=LakeCommit(0x300, ts("2026-03-03T12:00:00")),
    )
    assert payments.version() == 3 and LSN_KEY not in payments.history()[1]

    assert payments.version_at(lsn=0xFF) is None  # before the first
    assert payments.version_at(lsn=0x100) == 0
    assert payments.version_at(lsn=0x2FF) == 1
    assert payments.version_at(lsn=0x300) == 3
    assert payments.version_at(lsn=0x10_0000_0000) == 3

    assert payments.version_at(moment=ts("2026-02-28T23:59:59")) is None
    nine = payments.version_at(moment=ts("2026-03-03T09:00:00"))
    assert nine == 1
    assert payments.version_at(moment=ts("2026-03-03T11:59:59.999999")) == 1
    assert payments.version_at(moment=datetime(2026, 3, 3, 8, tzinfo=UTC) + timedelta(hours=4)) == 3

    assert rows_of(payments.read(nine), ["payment_id"]) == [
        payment(1, "10.00"),
        payment(2, "25.00"),
    ]
    assert rows_of(payments.read(0), ["payment_id"]) == [
        payment(1, "10.00"),
        payment(2, "20.00"),
        payment(3, "30.00"),
    ]
    with pytest.raises(ValueError, match="exactly one"):
        payments.version_at()
    with pytest.raises(NotFoundError):
        payments.read(17)


def test_a_replayed_batch_is_detected_and_harmless(payments: LakeTable) -> None:
    batch = net(
        PAYMENTS,
        [{**payment(2, "21.00"), "_op": "upsert"}, {"payment_id": 3, "_op": "delete"}],
    )
    commit = LakeCommit(0x250, ts("2026-03-02T11:00:00"))
    payments.apply(batch, key=["payment_id"], truncated=False, commit=commit)
    after_first = rows_of(payments.read(), ["payment_id"])

    covered = payments.covered_lsn()
    assert covered is not None and commit.lsn <= covered  # the caller skips the batch

    again = payments.apply(batch, key=["payment_id"], truncated=False, commit=commit)
    assert (again.inserted, again.updated, again.deleted) == (0, 1, 0)
    assert rows_of(payments.read(), ["payment_id"]) == after_first
    assert payments.covered_lsn() == 0x250


# ------------------------------------------------------------------ create, resync, evolve


def test_create_refuses_an_existing_table_and_replace_resyncs_in_one_commit(
    payments: LakeTable,
) -> None:
    with pytest.raises(WriteError, match="already"):
        payments.create(reader(PAYMENTS, [payment(9, "9.00")]), LakeCommit(0x500))

    retyped = pa.schema(  # an incompatible change at the source: amount now numeric(38,10)
        [pa.field("payment_id", pa.int64(), nullable=False), ("amount", pa.decimal128(38, 10))]
    )
    version = payments.create(
        reader(retyped, [{"payment_id": 9, "amount": Decimal("9.5")}]),
        LakeCommit(0x9000, ts("2026-03-05T00:00:00")),
        replace=True,
    )
    assert version == 1 and payments.covered_lsn() == 0x9000
    back = payments.read()
    assert back.schema == retyped
    assert back.to_pylist() == [{"payment_id": 9, "amount": Decimal("9.5000000000")}]
    assert payments.history()[0][LSN_KEY] == "0/9000"
    assert rows_of(payments.read(0), ["payment_id"])[0] == payment(1, "10.00")  # still there

    empty = LakeTable(table_uri(str(Path(payments.uri).parents[2]), "core_banking.rate_card"), {})
    assert empty.create(reader(PAYMENTS, []), LakeCommit(0x600)) == 0  # a source with no rows
    assert empty.exists() and empty.count_rows() == 0 and empty.read().schema == PAYMENTS


def test_add_columns_keeps_rows_with_null(payments: LakeTable) -> None:
    payments.add_columns([pa.field("fee", pa.decimal128(18, 2), nullable=False)])
    payments.add_columns([pa.field("fee", pa.decimal128(18, 2))])  # already there: nothing
    assert payments.version() == 1 and payments.covered_lsn() == 0x100
    wider = PAYMENTS.append(pa.field("fee", pa.decimal128(18, 2)))
    assert payments.read().column("fee").to_pylist() == [None, None, None]
    payments.apply(
        net(wider, [{**payment(4, "4.00"), "fee": Decimal("0.35"), "_op": "upsert"}]),
        key=["payment_id"],
        truncated=False,
        commit=LakeCommit(0x200),
    )
    back = payments.read()
    assert back.schema == wider
    assert rows_of(back, ["payment_id"])[3] == {**payment(4, "4.00"), "fee": Decimal("0.35")}


def test_compact_refuses_a_retention_below_seven_days(payments: LakeTable) -> None:
    with pytest.raises(UsageError, match="below 168") as refused:
        payments.compact(retention_hours=24)
    assert "7 days" in refused.value.hint
    outcome = payments.compact(retention_hours=168)
    assert outcome.files_vacuumed == 0  # nothing is older than a week here
    assert payments.covered_lsn() == 0x100


def test_a_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    absent = LakeTable(str(tmp_path / "nothing"), {})
    assert not absent.exists()
    with pytest.raises(NotFoundError, match="no Delta table at"):
        absent.read()
    with pytest.raises(NotFoundError):
        absent.apply(
            net(PAYMENTS, [{"payment_id": 1, "_op": "delete"}]),
            key=["payment_id"],
            truncated=False,
            commit=LakeCommit(1),
        )


# ------------------------------------------------------------------ memory

_STREAM_CREATE = """
import resource, sys
import pyarrow as pa, pyarrow.compute as pc
from abaco_cli.lake.delta import LakeCommit, LakeTable

ROWS, BATCH = int(sys.argv[2]), 50_000
schema = pa.schema([("payment_id", pa.int64()), ("loan_id", pa.int64()),
                    ("amount", pa.decimal128(18, 2)), ("paid_at", pa.timestamp("us", tz="UTC")),
                    ("reference", pa.string())])

def batches():
    for start in range(0, ROWS, BATCH):
        ids = pa.array(range(start, min(start + BATCH, ROWS)), pa.int64())
        yield pa.record_batch([
            ids, pc.divide(ids, 7), pc.cast(pc.cast(ids, pa.int32()), pa.decimal128(18, 2)),
            pc.cast(pc.multiply(ids, 1_000_000), pa.timestamp("us", tz="UTC")),
            pc.binary_join_element_wise("payment-reference-", pc.cast(ids, pa.string()), ""),
        ], schema=schema)

one = next(batches())
print("arrow_mb", one.nbytes * (ROWS / BATCH) / 2**20)
print("before_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
LakeTable(sys.argv[1], {}).create(pa.RecordBatchReader.from_batches(schema, batches()),
                                  LakeCommit(1))
print("peak_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


@pytest.mark.slow
def test_create_streams_two_million_rows(tmp_path: Path) -> None:
    """A 2,000,000-row load is written as it streams: the figures are printed, not asserted."""
    uri = str(tmp_path / "lake" / "tables" / "core_banking.payments")
    rows = 2_000_000
    done = subprocess.run(
        [sys.executable, "-c", _STREAM_CREATE, uri, str(rows)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = dict(line.split() for line in done.stdout.split("\n") if line)
    print(
        f"\ncreate() of {rows:,} rows: the rows in Arrow {float(figures['arrow_mb']):.0f} MB; "
        f"peak RSS {float(figures['before_mb']):.0f} MB before, "
        f"{float(figures['peak_mb']):.0f} MB after"
    )
    table = LakeTable(uri, {})
    assert table.count_rows() == rows
    ids = table.read(columns=["payment_id"]).column("payment_id")
    assert pa.compute.sum(ids).as_py() == rows * (rows - 1) // 2


# ------------------------------------------------------------------ other engines


@pytest.fixture
def lifecycle(payments: LakeTable) -> tuple[LakeTable, list[dict[str, Any]]]:
    """The payments table after a MERGE, a compaction and a checkpoint, with its rows."""
    payments.apply(
        net(
            PAYMENTS,
            [
                {**payment(2, "-9999999999999999.99", reference=""), "_op": "upsert"},
                {"payment_id": 3, "_op": "delete"},
                {**payment(4, "9999999999999999.99", reference=None), "_op": "upsert"},
            ],
        ),
        key=["payment_id"],
        truncated=False,
        commit=LakeCommit(0x200),
    )
    payments.compact()
    expected = [
        payment(1, "10.00"),
        payment(2, "-9999999999999999.99", reference=""),
        payment(4, "9999999999999999.99", reference=None),
    ]
    return payments, expected


def test_duckdb_reads_the_table_with_its_delta_extension(
    lifecycle: tuple[LakeTable, list[dict[str, Any]]],
) -> None:
    import duckdb
    import duckdb_extension_delta as wheel

    table, expected = lifecycle
    extension = Path(wheel.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{extension / 'delta.duckdb_extension'}'")
    con.execute("SET TimeZone = 'UTC'")
    query = f"SELECT * FROM delta_scan('{table.uri}') ORDER BY payment_id"
    types = [str(t) for t in con.execute(f"DESCRIBE {query}").fetchall()]
    assert [t.split("'")[3] for t in types] == [
        "BIGINT",
        "BIGINT",
        "DECIMAL(18,2)",
        "TIMESTAMP WITH TIME ZONE",
        "VARCHAR",
    ]
    read = con.execute(query).to_arrow_table()  # (fetchall would need pytz for timestamptz)
    assert [(f.name, f.type) for f in read.schema] == [(f.name, f.type) for f in PAYMENTS]
    assert read.to_pylist() == expected


def test_polars_reads_the_table(lifecycle: tuple[LakeTable, list[dict[str, Any]]]) -> None:
    import polars as pl

    table, expected = lifecycle
    frame = pl.read_delta(table.uri).sort("payment_id")
    assert frame.schema["amount"] == pl.Decimal(18, 2)
    assert frame.schema["paid_at"] == pl.Datetime("us", "UTC")
    assert frame.to_dicts() == expected


# ------------------------------------------------------------------ S3 (moto)


@pytest.fixture
def s3_lake(moto_process_endpoint: str, cloud_env: None) -> Iterator[tuple[str, dict[str, str]]]:
    settings = Settings(
        upload=UploadSettings(s3_endpoint_url=moto_process_endpoint, s3_region="us-east-1")
    )
    dest = f"s3://{CLOUD_BUCKET}/lake-delta-{uuid.uuid4().hex[:8]}"
    yield dest, storage_options(settings, dest)


def test_s3_end_to_end(s3_lake: tuple[str, dict[str, str]], moto_process_endpoint: str) -> None:
    import boto3

    dest, options = s3_lake
    assert FAKE_AWS_SECRET not in str(options) and "AWS_ALLOW_HTTP" in options
    table = LakeTable(table_uri(dest, "core_banking.payments"), options)
    assert table.uri.startswith(f"s3://{CLOUD_BUCKET}/lake-delta-")
    assert not table.exists() and table.covered_lsn() is None

    table.create(reader(PAYMENTS, [payment(1, "10.00"), payment(2, "20.00")]), LakeCommit(0x100))
    outcome = table.apply(
        net(
            PAYMENTS,
            [{**payment(1, "11.11"), "_op": "upsert"}, {"payment_id": 2, "_op": "delete"}],
        ),
        key=["payment_id"],
        truncated=False,
        commit=LakeCommit(0x200, ts("2026-03-02T10:00:00")),
    )
    assert outcome == MergeOutcome(version=1, inserted=0, updated=1, deleted=1)
    assert table.covered_lsn() == 0x200
    assert table.read().to_pylist() == [payment(1, "11.11")]
    assert table.read(0).num_rows == 2  # time travel by version
    assert table.count_rows() == 1 and table.exists()
    # (Not version_at here: delta-rs 1.6's history() keeps the GIL while it lists the log,
    # which stalls this in-process moto until delta-rs's 180 s retry timeout.)

    bucket = boto3.client(
        "s3",
        endpoint_url=moto_process_endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_AWS_KEY_ID,
        aws_secret_access_key=FAKE_AWS_SECRET,
    )
    prefix = dest.removeprefix(f"s3://{CLOUD_BUCKET}/") + "/lake/tables/core_banking.payments/"
    keys = [
        o["Key"] for o in bucket.list_objects_v2(Bucket=CLOUD_BUCKET, Prefix=prefix)["Contents"]
    ]
    assert prefix + "_delta_log/00000000000000000001.json" in keys


def test_s3_failure_is_one_line_without_secrets(cloud_env: None) -> None:
    settings = Settings(upload=UploadSettings(s3_endpoint_url="http://127.0.0.1:9"))
    dest = "s3://abaco-nowhere/lake"
    options = {**storage_options(settings, dest), "max_retries": "0"}  # no retries: fail fast
    table = LakeTable(table_uri(dest, "core_banking.loans"), options)
    with pytest.raises(WriteError) as failed:
        table.create(reader(PAYMENTS, [payment(1, "1.00")]), LakeCommit(1))
    message = str(failed.value)
    assert message.startswith("could not open the Delta table s3://abaco-nowhere/lake/lake/")
    assert "\n" not in message and "\x1b" not in message
    assert FAKE_AWS_SECRET not in message and FAKE_AWS_SECRET not in failed.value.hint
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == FAKE_AWS_SECRET
