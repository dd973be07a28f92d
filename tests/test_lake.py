"""`abaco lake`: change data capture into Delta Lake and a change log, end to end on a real
PostgreSQL (wal_level=logical) with real files, and the exactly-once protocol under faults."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from lakehelp import (
    KEYS,
    drop_slots,
    duckdb_rows,
    lake_files,
    lake_rows,
    manifests,
    new_slot_name,
    replay_change_log,
    run_cli,
    source_rows,
)
from tests.conftest import invoke

LOANS = "core_banking.loans"
CUSTOMERS = "core_banking.customers"
PAYMENTS = "core_banking.payments"
SCHEDULE = "core_banking.payment_schedule"
MAX_MONEY = Decimal("9999999999999999.99")  # the edge of numeric(18,2)


@dataclass
class LakeEnv:
    dsn: str
    dest: Path
    env: dict[str, str]
    runner: CliRunner

    def cli(self, *args: str) -> Any:
        return invoke(self.runner, "lake", *args)

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement, params)  # type: ignore[arg-type]


@pytest.fixture
def lake(
    db_conninfo: str, cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LakeEnv]:
    dest = tmp_path / "lakehouse"
    extra = {"ABACO_LAKE__DESTINATION": str(dest), "ABACO_LAKE__SLOT": new_slot_name()}
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    yield LakeEnv(db_conninfo, dest, {**cli_env, **extra}, CliRunner())
    drop_slots(db_conninfo)


# ------------------------------------------------------------------------------- a workload


class Book:
    """Writes to the source like a lender's systems do, and remembers nothing: the tests
    compare with the source itself."""

    def __init__(self, dsn: str, seed: int = 7) -> None:
        self.dsn = dsn
        self.random = random.Random(seed)
        self.next_id = 0

    def _id(self, prefix: str) -> str:
        self.next_id += 1
        return f"{prefix}{self.next_id:07d}"

    def customers_and_loans(self, conn: psycopg.Connection[Any], count: int) -> list[str]:
        loans = []
        for _ in range(count):
            customer = self._id("C")
            conn.execute(
                "INSERT INTO core_banking.customers (customer_id, segment, country, created_at) "
                "VALUES (%s, %s, %s, %s)",
                (customer, self.random.choice(["SME", "", None]), "SLV",
                 datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
            )  # fmt: skip
            loan = self._id("L")
            conn.execute(
                "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date, "
                "maturity_date, principal, interest_rate_apr, status, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    loan, customer, date(2025, 1, 1) + timedelta(days=self.random.randint(0, 300)),
                    self.random.choice([None, date(2040, 2, 29)]),
                    self.random.choice([Decimal("0.01"), MAX_MONEY, -MAX_MONEY,
                                        Decimal(self.random.randint(1, 10**8)) / 100]),
                    self.random.choice([None, Decimal("0.123456")]), "active",
                    datetime(2039, 1, 19, 3, 14, 8, 1, tzinfo=UTC),
                ),
            )  # fmt: skip
            loans.append(loan)
        return loans

    def payments(self, conn: psycopg.Connection[Any], loans: list[str], count: int) -> None:
        for _ in range(count):
            conn.execute(
                "INSERT INTO core_banking.payments (payment_id, loan_id, paid_on, principal_paid, "
                "currency) VALUES (%s, %s, %s, %s, %s)",
                (self._id("P"), self.random.choice(loans), date(2025, 6, 1),
                 Decimal(self.random.randint(0, 10**6)) / 100, self.random.choice(["USD", None])),
            )  # fmt: skip

    def random_round(self, loans: list[str]) -> None:
        """One round of mixed writes, each statement its own transaction or grouped."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            with conn.transaction():
                loans.extend(self.customers_and_loans(conn, 5))
                self.payments(conn, loans, 10)
            conn.execute(
                "UPDATE core_banking.loans SET principal = -principal, "
                "maturity_date = maturity_date + 1, status = 'late' WHERE loan_id = %s",
                (self.random.choice(loans),),
            )
            conn.execute(
                "UPDATE core_banking.payments SET principal_paid = %s WHERE payment_id IN "
                "(SELECT payment_id FROM core_banking.payments ORDER BY random() LIMIT 3)",
                (MAX_MONEY,),
            )
            conn.execute(
                "DELETE FROM core_banking.payments WHERE payment_id IN "
                "(SELECT payment_id FROM core_banking.payments ORDER BY random() LIMIT 2)"
            )
            # a primary-key update
            conn.execute(
                "UPDATE core_banking.payments SET payment_id = payment_id || 'X' "
                "WHERE payment_id = "
                "(SELECT payment_id FROM core_banking.payments ORDER BY random() LIMIT 1)"
            )
            conn.execute(
                "UPDATE core_banking.customers SET segment = NULL WHERE customer_id = "
                "(SELECT customer_id FROM core_banking.customers ORDER BY random() LIMIT 1)"
            )


def contract_columns(table: str) -> list[str]:
    from abaco_cli.db.contract import CONTRACT

    role = table.split(".")[1]
    return list(CONTRACT[role])


def assert_lake_matches_source(
    lake: LakeEnv, tables: list[str] | None = None, *, duckdb: bool = False
) -> None:
    for table in tables or list(KEYS):
        columns = contract_columns(table)
        expected = source_rows(lake.dsn, table, columns)
        assert lake_rows(lake.dest, table, columns) == expected, table
        assert replay_change_log(lake.dest, table, columns) == expected, f"{table} (replayed)"
        if duckdb:
            assert duckdb_rows(lake.dest, table, columns) == expected, f"{table} (DuckDB)"


def seed(lake: LakeEnv, loans: int = 20, payments: int = 40) -> tuple[Book, list[str]]:
    book = Book(lake.dsn)
    with psycopg.connect(lake.dsn, autocommit=True) as conn, conn.transaction():
        ids = book.customers_and_loans(conn, loans)
        book.payments(conn, ids, payments)
    return book, ids


# ----------------------------------------------------------------------------------- the tests


def test_init_loads_every_contract_table_and_sync_applies_changes(lake: LakeEnv) -> None:
    book, loans = seed(lake)
    result = lake.cli("init", "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["tables"][LOANS] == 20 and body["tables"][PAYMENTS] == 40
    assert_lake_matches_source(lake)

    book.random_round(loans)
    result = lake.cli("sync", "--json")
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["changes"] > 0 and body["batches"]
    assert_lake_matches_source(lake)
    # nothing new: a second sync writes no change. The server may have written WAL of its own
    # since (a standby snapshot every 15 s, another test's database): a batch of no change then
    # only moves the slot past it, as it must, so that WAL is not held.
    again = json.loads(lake.cli("sync", "--json").stdout)
    assert again["changes"] == 0
    assert all(not b["changes"] and b["files"] == 0 for b in again["batches"])
    # DuckDB reads the Delta tables too
    columns = contract_columns(LOANS)
    assert duckdb_rows(lake.dest, LOANS, columns) == source_rows(lake.dsn, LOANS, columns)


def test_a_randomized_workload_interleaved_with_syncs_ends_equal(lake: LakeEnv) -> None:
    book, loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    for round_no in range(6):
        book.random_round(loans)
        if round_no == 2:
            lake.sql("TRUNCATE core_banking.payments")
        if round_no == 3:  # a large transaction: several of the reader's chunks
            with psycopg.connect(lake.dsn, autocommit=True) as conn, conn.transaction():
                book.payments(conn, loans, 3000)
                conn.execute("UPDATE core_banking.payments SET rebates = 0.01")
        if round_no % 2 == 1:
            result = lake.cli("sync")
            assert result.exit_code == 0, result.stderr
    assert lake.cli("sync").exit_code == 0
    assert_lake_matches_source(lake, duckdb=True)
    verify = lake.cli("verify", "--deep", "--json")
    assert verify.exit_code == 0, verify.stdout
    assert set(json.loads(verify.stdout)["tables"].values()) == {"same"}


def test_small_batches_and_the_change_limit(lake: LakeEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    book, loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    for _ in range(4):
        book.random_round(loans)
    monkeypatch.setenv("ABACO_LAKE__BATCH_CHANGES", "10")
    first = json.loads(lake.cli("sync", "--max-changes", "30", "--json").stdout)
    assert len(first["batches"]) >= 2 and first["changes"] >= 30
    lsns = [(b["start"], b["end"]) for b in first["batches"]]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(lsns))
    assert lake.cli("sync").exit_code == 0
    assert_lake_matches_source(lake)


def test_names_outside_the_allow_list_never_reach_the_lake(lake: LakeEnv) -> None:
    lake.sql("ALTER TABLE core_banking.customers ADD COLUMN borrower_name text")
    _book, _loans = seed(lake)
    lake.sql("UPDATE core_banking.customers SET borrower_name = 'Maria Secreta Ochoa'")
    result = lake.cli("init", "--json")
    assert result.exit_code == 0, result.stderr
    assert "borrower_name" in json.loads(result.stdout)["skipped_columns"][CUSTOMERS]
    lake.sql(
        "INSERT INTO core_banking.customers (customer_id, borrower_name) "
        "VALUES ('CNEW', 'Maria Secreta Ochoa')"
    )
    lake.sql("UPDATE core_banking.customers SET borrower_name = 'Maria Secreta Ochoa 2'")
    assert lake.cli("sync").exit_code == 0
    for path in lake_files(lake.dest):
        assert b"Secreta" not in path.read_bytes(), path
    assert_lake_matches_source(lake, [CUSTOMERS])


def test_time_travel_maps_delta_versions_to_source_lsns(lake: LakeEnv) -> None:
    from abaco_cli.lake.delta import LakeTable

    _book, _loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    columns = contract_columns(LOANS)
    before = source_rows(lake.dsn, LOANS, columns)
    first = json.loads(lake.cli("sync", "--json").stdout)
    lake.sql("UPDATE core_banking.loans SET status = 'paid'")
    second = json.loads(lake.cli("sync", "--json").stdout)
    assert second["batches"], second
    table = LakeTable(str(lake.dest / "lake" / "tables" / LOANS), {})
    from abaco_cli.lake.lsn import parse_lsn

    version = table.version_at(lsn=parse_lsn(first["lsn"]))
    assert version is not None
    assert lake_rows(lake.dest, LOANS, columns, version=version) == before
    latest = table.version_at(lsn=parse_lsn(second["lsn"]))
    assert lake_rows(lake.dest, LOANS, columns, version=latest) == source_rows(
        lake.dsn, LOANS, columns
    )
    moment = datetime.now(UTC)
    assert table.version_at(moment=moment) == latest


def test_init_with_writes_running_during_the_load(lake: LakeEnv) -> None:
    _book, loans = seed(lake, loans=200, payments=2000)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        mine = Book(lake.dsn, seed=11)
        mine.next_id = 10_000_000
        try:
            while not stop.is_set():
                mine.random_round(list(loans))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.3)
        result = run_cli(lake.env, "lake", "init")
        assert result.returncode == 0, result.stderr
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert run_cli(lake.env, "lake", "sync").returncode == 0
    assert_lake_matches_source(lake)


@pytest.mark.parametrize("step", ["files", "manifest", "merge", "state", "advance"])
def test_a_sync_killed_after_each_step_is_repaired_by_the_next(lake: LakeEnv, step: str) -> None:
    book, loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    book.random_round(loans)
    book.random_round(loans)
    killed = run_cli({**lake.env, "ABACO_TEST_LAKE_KILL_AFTER": step}, "lake", "sync")
    assert killed.returncode == -9, killed.stderr
    book.random_round(loans)  # more changes arrive before the repair
    repaired = run_cli(lake.env, "lake", "sync", "--json")
    assert repaired.returncode == 0, repaired.stderr
    assert_lake_matches_source(lake)
    # every change file is in a manifest, with the bytes the manifest records
    verify = run_cli(lake.env, "lake", "verify", "--json")
    assert verify.returncode == 0, verify.stdout
    # the change log has each change once: the replay equals the source (above) and no
    # manifest overlaps another
    bounds = sorted((m["start"], m["end"]) for m in manifests(lake.dest) if m["kind"] == "changes")
    assert len(bounds) == len(set(bounds))


def test_two_syncs_at_once_one_waits_or_exits_4(lake: LakeEnv, tmp_path: Path) -> None:
    book, loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    for _ in range(3):
        book.random_round(loans)
    # another machine: its own runtime folder (its own local lock), the same lake and source
    other = {**lake.env, "ABACO_RUNTIME_DIR": str(tmp_path / "other_vm")}
    import subprocess
    import sys

    def start(env: dict[str, str]) -> subprocess.Popen[str]:
        import os

        return subprocess.Popen(
            [sys.executable, "-m", "abaco_cli", "lake", "sync"],
            env={**os.environ, **env, "ABACO_TEST_LAKE_PAUSE_LOCKED": "3"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first, second = start(lake.env), start(other)
    codes = sorted([first.wait(120), second.wait(120)])
    assert codes in ([0, 0], [0, 4]), (
        first.stderr and first.stderr.read(),
        second.stderr and second.stderr.read(),
    )
    assert run_cli(lake.env, "lake", "sync").returncode == 0
    assert_lake_matches_source(lake)


def test_resync_after_the_slot_was_dropped_by_hand(lake: LakeEnv) -> None:
    book, loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    book.random_round(loans)
    drop_slots(lake.dsn)
    failed = lake.cli("sync")
    assert failed.exit_code == 1
    assert "does not exist" in failed.stderr and "lake resync" in failed.stderr
    status = json.loads(lake.cli("status", "--json").stdout)
    assert status["slot_status"]["exists"] is False
    assert lake.cli("resync").exit_code == 0
    book.random_round(loans)
    assert lake.cli("sync").exit_code == 0
    assert_lake_matches_source(lake)


def test_an_added_column_evolves_the_table_and_a_dropped_one_stops_the_sync(
    lake: LakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    columns = {t: contract_columns(t) for t in KEYS}
    columns[LOANS] = [*columns[LOANS], "branch_code"]  # allowed before it exists
    monkeypatch.setenv("ABACO_LAKE__TABLES", json.dumps(columns))
    _book, loans = seed(lake)
    init = lake.cli("init", "--json")
    assert init.exit_code == 0, init.stderr
    assert json.loads(init.stdout)["absent_columns"] == {LOANS: ["branch_code"]}
    lake.sql("ALTER TABLE core_banking.loans ADD COLUMN branch_code numeric(6,2)")
    lake.sql("UPDATE core_banking.loans SET branch_code = 12.5 WHERE loan_id = %s", (loans[0],))
    result = lake.cli("sync")
    assert result.exit_code == 0, result.stderr
    with_column = [*contract_columns(LOANS), "branch_code"]
    assert lake_rows(lake.dest, LOANS, with_column) == source_rows(lake.dsn, LOANS, with_column)

    lake.sql("ALTER TABLE core_banking.loans DROP COLUMN status")
    lake.sql("UPDATE core_banking.loans SET principal = 1 WHERE loan_id = %s", (loans[1],))
    stopped = lake.cli("sync")
    assert stopped.exit_code == 1
    assert "core_banking.loans" in stopped.stderr and "status" in stopped.stderr
    assert "lake resync --table core_banking.loans" in stopped.stderr
    assert len(stopped.stderr.strip().splitlines()) <= 2  # the error and its hint


def test_a_renamed_column_stops_the_sync_and_resync_recovers(lake: LakeEnv) -> None:
    book, loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    lake.sql("ALTER TABLE core_banking.payments RENAME COLUMN rebates TO discounts")
    lake.sql("UPDATE core_banking.payments SET discounts = 2")
    stopped = lake.cli("sync")
    assert stopped.exit_code == 1
    assert "core_banking.payments" in stopped.stderr and "rebates" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    lake.sql("ALTER TABLE core_banking.payments RENAME COLUMN discounts TO rebates")
    resynced = lake.cli("resync", "--table", PAYMENTS)
    assert resynced.exit_code == 0, resynced.stderr
    book.random_round(loans)
    assert lake.cli("sync").exit_code == 0
    assert_lake_matches_source(lake)


def test_a_retyped_column_is_resynced_table_by_table(lake: LakeEnv) -> None:
    book, loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    lake.sql("ALTER TABLE core_banking.payments ALTER COLUMN rebates TYPE numeric(20,4)")
    lake.sql("UPDATE core_banking.payments SET rebates = 1.2345")
    book.random_round(loans)
    stopped = lake.cli("sync")
    assert stopped.exit_code == 1 and "rebates" in stopped.stderr
    result = lake.cli("resync", "--table", PAYMENTS, "--json")
    assert result.exit_code == 0, result.stderr
    assert list(json.loads(result.stdout)["reloaded"]) == [PAYMENTS]
    book.random_round(loans)
    assert lake.cli("sync").exit_code == 0
    assert_lake_matches_source(lake)


def test_an_edited_state_is_refused_with_one_line(lake: LakeEnv) -> None:
    seed(lake)
    assert lake.cli("init").exit_code == 0
    state_file = lake.dest / "lake" / "_state" / "lake.json"
    body = json.loads(state_file.read_text())
    for bad in ("../../etc", "zz/zz", "-1/0", "FFFFFFFFF/0"):
        state_file.write_text(json.dumps({**body, "lsn": bad}))
        result = lake.cli("sync")
        assert result.exit_code == 1, bad
        assert "Traceback" not in result.stderr and "lsn" in result.stderr
    state_file.write_text(json.dumps({**body, "tables": {"../x.y": body["tables"][LOANS]}}))
    assert lake.cli("sync").exit_code == 1


def test_drop_releases_the_slot_and_sync_then_says_so(lake: LakeEnv) -> None:
    seed(lake)
    assert lake.cli("init").exit_code == 0
    refused = lake.cli("drop")
    assert refused.exit_code == 2
    assert lake.cli("drop", "--yes").exit_code == 0
    with psycopg.connect(lake.dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
        ).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
    result = lake.cli("sync")
    assert result.exit_code == 2 and "lake drop" in result.stderr
    assert lake.cli("init").exit_code == 0  # starts again


def test_sync_without_a_lake_says_how_to_start(lake: LakeEnv) -> None:
    result = lake.cli("sync")
    assert result.exit_code == 2
    assert "no lake at" in result.stderr and "lake init" in result.stderr
    status = lake.cli("status")
    assert status.exit_code == 0 and "no lake" in status.stdout + status.stderr


def test_status_and_the_health_check_report_the_slot(lake: LakeEnv) -> None:
    seed(lake)
    assert lake.cli("init").exit_code == 0
    status = json.loads(lake.cli("status", "--json").stdout)
    assert status["slot_status"]["exists"] and status["slot_status"]["lag_bytes"] is not None
    health = invoke(lake.runner, "healthcheck", "--check", "lake", "--json")
    body = json.loads(health.stdout)
    check = next(c for c in body["checks"] if c["check"] == "lake")
    assert check["state"] == "OK", check
    drop_slots(lake.dsn)
    health = invoke(lake.runner, "healthcheck", "--check", "lake", "--json")
    check = next(c for c in json.loads(health.stdout)["checks"] if c["check"] == "lake")
    assert check["state"] == "CRITICAL" and "missing" in check["summary"]


def test_a_lake_on_s3_end_to_end(
    lake: LakeEnv, moto_process_endpoint: str, cloud_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    import pyarrow.parquet as pq

    from tests.conftest import CLOUD_BUCKET, FAKE_AWS_SECRET

    prefix = f"lake-e2e-{new_slot_name()}"
    monkeypatch.setenv("ABACO_UPLOAD__S3_ENDPOINT_URL", moto_process_endpoint)
    monkeypatch.setenv("ABACO_UPLOAD__S3_REGION", "us-east-1")
    monkeypatch.setenv("ABACO_LAKE__DESTINATION", f"s3://{CLOUD_BUCKET}/{prefix}")
    book, loans = seed(lake)
    result = lake.cli("init")
    assert result.exit_code == 0, result.stderr
    book.random_round(loans)
    result = lake.cli("sync", "--json")
    assert result.exit_code == 0, result.stderr
    assert FAKE_AWS_SECRET not in result.stdout + result.stderr
    # the Delta table, read from S3 by deltalake with the same options
    from abaco_cli.lake.delta import LakeTable

    options = {
        "AWS_ENDPOINT_URL": moto_process_endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "us-east-1",
    }
    uri = f"s3://{CLOUD_BUCKET}/{prefix}/lake/tables/{PAYMENTS}"
    columns = contract_columns(PAYMENTS)
    table = LakeTable(uri, options).read()
    rows = sorted(tuple(r[c] for c in columns) for r in table.to_pylist())
    assert rows == [tuple(r) for r in source_rows(lake.dsn, PAYMENTS, columns)]
    # the change log and the manifests are there too
    s3 = boto3.client("s3", endpoint_url=moto_process_endpoint, region_name="us-east-1")
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=CLOUD_BUCKET, Prefix=prefix)["Contents"]]
    assert any("/lake/_batches/" in n for n in names)
    changes = [n for n in names if "/lake/changes/core_banking.payments/" in n]
    assert changes and all(n.endswith(".parquet") for n in changes)
    body = s3.get_object(Bucket=CLOUD_BUCKET, Key=changes[-1])["Body"].read()
    import io

    assert pq.read_table(io.BytesIO(body)).column_names[:5] == [
        "_op", "_commit_lsn", "_xid", "_commit_time", "_seq",
    ]  # fmt: skip
    verify = lake.cli("verify", "--json")
    assert verify.exit_code == 0, verify.stdout


def test_verify_finds_a_missing_a_changed_and_a_stray_change_file(lake: LakeEnv) -> None:
    book, loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    book.random_round(loans)
    assert lake.cli("sync").exit_code == 0
    files = sorted((lake.dest / "lake" / "changes").rglob("*.parquet"))
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes() + b"tampered")
    stray = lake.dest / "lake" / "changes" / PAYMENTS / "commit_date=2026-01-01" / "x.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not ours")
    result = lake.cli("verify", "--json")
    assert result.exit_code == 1
    findings = "\n".join(json.loads(result.stdout)["findings"])
    assert "missing" in findings and "differs" in findings and "not a change file" in findings


def test_a_server_crash_that_rewinds_the_slot_loses_and_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server stopped without a checkpoint forgets the slot's last advance: the slot comes
    back behind the lake's state, and the next sync moves it up instead of reading twice."""
    from abaco_cli.db.contract import init_contract
    from abaco_cli.pgcluster import LocalCluster
    from abaco_cli.settings import SourceTables

    with LocalCluster() as cluster:
        with psycopg.connect(cluster.dsn) as conn:
            init_contract(conn, SourceTables())
        dest = tmp_path / "lakehouse"
        env = {
            "ABACO_DATABASE_URL": cluster.dsn,
            "ABACO_RUNTIME_DIR": str(tmp_path / "runtime"),
            "ABACO_LAKE__DESTINATION": str(dest),
        }
        lake = LakeEnv(cluster.dsn, dest, env, CliRunner())
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        book, loans = seed(lake)
        assert lake.cli("init").exit_code == 0
        with psycopg.connect(cluster.dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        book.random_round(loans)
        assert lake.cli("sync").exit_code == 0
        bindir = cluster._bindir
        assert bindir is not None

        def pg_ctl(*args: str) -> None:
            command = [str(bindir / "pg_ctl"), *args, "-D", str(cluster.data_dir), "-w"]
            cluster._run(command, f"pg_ctl {args[0]} failed")

        pg_ctl("stop", "-m", "immediate")
        pg_ctl("start", "-l", str(cluster.log_file))
        synced = lake.cli("sync", "--json")
        assert synced.exit_code == 0, synced.stderr
        assert json.loads(synced.stdout)["reconciled"] is not None  # the slot was behind
        book.random_round(loans)
        assert lake.cli("sync").exit_code == 0
        assert_lake_matches_source(lake)


def test_a_table_joins_the_lake_with_resync_table(lake: LakeEnv) -> None:
    book, loans = seed(lake)
    result = lake.cli("init", "--tables", f"{CUSTOMERS},{LOANS}", "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(json.loads(result.stdout)["tables"]) == [CUSTOMERS, LOANS]
    book.random_round(loans)
    joined = lake.cli("resync", "--table", PAYMENTS, "--json")
    assert joined.exit_code == 0, joined.stderr
    body = json.loads(joined.stdout)
    assert list(body["reloaded"]) == [PAYMENTS]
    assert body["caught_up"]["changes"] > 0  # the others' changes up to the new slot's start
    book.random_round(loans)
    assert lake.cli("sync").exit_code == 0
    assert_lake_matches_source(lake, [CUSTOMERS, LOANS, PAYMENTS])
    refused = lake.cli("resync", "--table", "public.secrets")
    assert refused.exit_code == 2 and "lake.tables" in refused.stderr


def test_a_role_that_owns_nothing_uses_a_publication_made_by_the_owner(
    lake: LakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/lake.md, 'Roles': REPLICATION and SELECT are enough when the tables' owner has
    created the publication; a role that could do neither gets one line saying what to run."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    role = f"lake_role_{new_slot_name()}"
    tables = ", ".join(KEYS)
    lake.sql(f"CREATE ROLE {role} LOGIN REPLICATION")
    lake.sql(f"GRANT USAGE ON SCHEMA core_banking, commercial TO {role}")
    lake.sql(f"GRANT SELECT ON {tables} TO {role}")
    seed(lake)
    # the lake's own role (lake.database_url; the exports keep database_url's, which could
    # create the publication: the refusal below shows the lake used the other)
    secret = "lake0secret0password0never0shown"
    params = {**conninfo_to_dict(lake.dsn), "user": role, "password": secret}
    monkeypatch.setenv("ABACO_LAKE__DATABASE_URL", make_conninfo(**params))
    try:
        refused = lake.cli("init")
        assert refused.exit_code == 1
        assert "CREATE PUBLICATION abaco_lake FOR TABLE" in refused.stderr
        lake.sql(f"CREATE PUBLICATION abaco_lake FOR TABLE {tables}")
        result = lake.cli("init", "--json")
        assert result.exit_code == 0, result.stderr
        lake.sql("UPDATE core_banking.loans SET status = 'paid'")
        synced = lake.cli("sync", "--json")
        assert synced.exit_code == 0
        assert_lake_matches_source(lake)
        shown = [refused.stdout, refused.stderr, result.stdout, result.stderr, synced.stdout]
        shown += [p.read_text() for p in Path(lake.env["ABACO_RUNTIME_DIR"]).rglob("*.jsonl")]
        shown += [invoke(lake.runner, "config", "show").stdout]
        assert not any(secret in text for text in shown)
    finally:
        drop_slots(lake.dsn)
        lake.sql("DROP PUBLICATION IF EXISTS abaco_lake")
        lake.sql(f"DROP OWNED BY {role}")
        lake.sql(f"DROP ROLE {role}")


def test_a_forged_note_or_state_from_the_future_never_skips_changes(lake: LakeEnv) -> None:
    book, loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    state_file = lake.dest / "lake" / "_state" / "lake.json"
    note_file = lake.dest / "lake" / "_state" / "batch.json"
    state = json.loads(state_file.read_text())
    # a note that claims a batch reaching far beyond the WAL: ignored, not replayed
    note_file.write_text(json.dumps({"start": state["lsn"], "end": "FF/0"}))
    book.random_round(loans)
    result = lake.cli("sync", "--json")
    assert result.exit_code == 0, result.stderr
    assert not json.loads(result.stdout)["batches"][0]["replayed"]
    assert_lake_matches_source(lake)
    # a state that claims LSNs the source has not written: refused, nothing skipped
    good = state_file.read_text()
    state_file.write_text(json.dumps({**json.loads(good), "lsn": "FF/0"}))
    refused = lake.cli("sync")
    assert refused.exit_code == 1 and "past the source's WAL" in refused.stderr
    state_file.write_text(good)


def test_a_transaction_larger_than_merge_rows_is_merged_in_parts_and_replayed_whole(
    lake: LakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lake.merge_rows bounds the keys one MERGE sends: a larger batch (one huge transaction)
    is merged in parts whose commits carry no LSN; a sync killed after a part is replayed
    whole by the next, and the table ends equal to the source."""
    from abaco_cli.lake.delta import LakeTable

    book, loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    with psycopg.connect(lake.dsn, autocommit=True) as conn, conn.transaction():
        book.payments(conn, loans, 500)
        conn.execute("UPDATE core_banking.payments SET rebates = 0.05")
        conn.execute("DELETE FROM core_banking.payments WHERE payment_id LIKE '%3'")
    env = {**lake.env, "ABACO_LAKE__MERGE_ROWS": "120"}
    killed = run_cli({**env, "ABACO_TEST_LAKE_KILL_AFTER": "part"}, "lake", "sync")
    assert killed.returncode == -9, killed.stderr
    done = run_cli(env, "lake", "sync", "--json")
    assert done.returncode == 0, done.stderr
    assert_lake_matches_source(lake)
    history = LakeTable(str(lake.dest / "lake" / "tables" / PAYMENTS), {}).history()
    parts = [h for h in history if "abaco.part" in json.dumps(h)]
    assert len(parts) >= 2  # the killed run's part, then the replay's
    assert verify_ok(lake)


def verify_ok(lake: LakeEnv) -> bool:
    result = lake.cli("verify", "--json")
    return result.exit_code == 0 and json.loads(result.stdout)["ok"] is True


def test_a_sync_compacts_the_tables_when_a_compaction_is_due(lake: LakeEnv) -> None:
    """lake.compact_every_days (7): no timer of its own; a sync does it when it is due."""
    book, loans = seed(lake)
    assert lake.cli("init").exit_code == 0
    book.random_round(loans)
    first = json.loads(lake.cli("sync", "--json").stdout)
    assert first["compacted"] == []
    state_file = lake.dest / "lake" / "_state" / "lake.json"
    state = json.loads(state_file.read_text())
    state["compacted"] = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    state_file.write_text(json.dumps(state))
    book.random_round(loans)
    due = lake.cli("sync", "--json")
    assert due.exit_code == 0, due.stderr
    assert sorted(json.loads(due.stdout)["compacted"]) == sorted(KEYS)
    compacted = datetime.fromisoformat(json.loads(state_file.read_text())["compacted"])
    assert datetime.now(UTC) - compacted < timedelta(minutes=5)
    log = lake.dest / "lake" / "tables" / PAYMENTS / "_delta_log"
    assert list(log.glob("*.checkpoint.parquet"))  # compaction ends with a checkpoint
    again = json.loads(lake.cli("sync", "--json").stdout)
    assert again["compacted"] == []  # the clock restarted
    assert_lake_matches_source(lake)
    assert verify_ok(lake)


def test_a_manifest_naming_a_file_outside_the_change_log_is_refused(lake: LakeEnv) -> None:
    seed(lake)
    assert lake.cli("init").exit_code == 0
    manifest = next((lake.dest / "lake" / "_batches").glob("*.json"))
    body = json.loads(manifest.read_text())
    body["files"][0]["name"] = "lake/_state/lake.json"
    manifest.write_text(json.dumps(body))
    result = lake.cli("verify")
    assert result.exit_code == 1
    assert "not the name of a change file" in result.stderr
    assert "Traceback" not in result.stderr
