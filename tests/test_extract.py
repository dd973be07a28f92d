"""`abaco export table`: raw extracts of whole source tables as the dataset `tables`.

Through the same lock, audit and publish as every export: files under
exports/tables/<schema>.<table>/as_of_date=<D>/ (D: the snapshot's UTC date), CSV and JSON in
folders of their own, one manifest a date; only the allow-listed tables and columns
(extract.tables, by default the source contract's) ever leave the database.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from abaco_cli.db.contract import CONTRACT
from tests.conftest import invoke, read_parquet_export
from tests.ops import manifest_path, read_records, run_abaco

LOAN_TYPES = {
    "loan_id": pa.string(),
    "principal": pa.decimal128(18, 2),
    "interest_rate_apr": pa.decimal128(10, 6),
    "disbursement_date": pa.date32(),
    "term_days": pa.int32(),
    "created_at": pa.timestamp("us", tz="UTC"),
    "currency": pa.string(),
}


def seed(cli: CliRunner, loans: int = 200) -> None:
    result = invoke(cli, "db", "seed", "--loans", str(loans), "--seed", "3", "--through",
                    "2025-12-31")  # fmt: skip
    assert result.exit_code == 0, result.stderr


def extract(cli: CliRunner, *args: str) -> Any:
    return invoke(cli, "export", "table", *args)


def the_day(runtime_dir: Path) -> str:
    """The one as-of date of the tables dataset (the snapshot's UTC date)."""
    folder = runtime_dir / "exports" / "tables" / "_manifests"
    (name,) = [p.name for p in folder.iterdir() if p.name.endswith(".manifest.json")]
    return name.removeprefix("tables_").removesuffix(".manifest.json")


def count(dsn: str, query: str) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_export_table_writes_the_contract_columns_in_their_folders(
    cli: CliRunner, cli_env: dict[str, str], runtime_dir: Path
) -> None:
    seed(cli)
    before = datetime.now(UTC).date()
    result = extract(
        cli, "core_banking.loans", "core_banking.payments", "--format", "parquet,csv", "--json"
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    day = the_day(runtime_dir)
    assert payload["dataset"] == "tables" and payload["as_of_date"] == day
    assert before <= date.fromisoformat(day) <= datetime.now(UTC).date()
    manifest = json.loads(manifest_path(runtime_dir, "tables", day).read_text())
    assert date.fromisoformat(manifest["snapshot_at"][:10]) == date.fromisoformat(day)
    paths = sorted(f["path"] for f in manifest["files"])
    assert paths == [
        f"tables/core_banking.loans.csv/as_of_date={day}/tables_core_banking.loans_{day}.csv",
        f"tables/core_banking.loans/as_of_date={day}/tables_core_banking.loans_{day}.parquet",
        f"tables/core_banking.payments.csv/as_of_date={day}/tables_core_banking.payments_{day}.csv",
        f"tables/core_banking.payments/as_of_date={day}/tables_core_banking.payments_{day}.parquet",
    ]
    exports = runtime_dir / "exports"
    loans = read_parquet_export(exports / paths[1])
    dsn = cli_env["ABACO_DATABASE_URL"]
    assert loans.num_rows == count(dsn, "SELECT count(*) FROM core_banking.loans") > 100
    assert loans.column_names == ["as_of_date", *CONTRACT["loans"]]  # the contract's, in order
    for name, kind in LOAN_TYPES.items():
        assert loans.schema.field(name).type == kind, name
    assert sum(loans.column("principal").to_pylist()) == count(
        dsn, "SELECT sum(principal) FROM core_banking.loans"
    )
    meta = pq.read_schema(exports / paths[1]).metadata
    assert meta[b"abaco.dataset"] == b"tables"
    assert meta[b"abaco.table"] == b"core_banking.loans"
    with (exports / paths[0]).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["as_of_date", *CONTRACT["loans"]]
    assert len(rows) == loans.num_rows + 1 and {r[0] for r in rows[1:]} == {day}
    # the audit trail: one run, its four files, and verify ties them to it
    end = [r for r in read_records(runtime_dir) if r["event"] in ("COMPLETE", "FAIL")][-1]
    assert end["event"] == "COMPLETE" and end["command"] == "export table"
    assert end["datasets"] == ["tables"] and end["as_of_dates"] == [day]
    assert sorted(o["path"] for o in end["outputs"]) == paths
    verify = invoke(cli, "audit", "verify", "--json")
    assert verify.exit_code == 0, verify.stdout


def test_only_allow_listed_tables_and_columns_leave_the_database(
    cli: CliRunner,
    cli_env: dict[str, str],
    runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(cli, 60)
    # the default allow-list: the contract's tables only
    refused = extract(cli, "pg_catalog.pg_authid")
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1
    assert "pg_catalog.pg_authid is not on the allow-list" in refused.stderr
    assert "extract.tables" in refused.stderr
    monkeypatch.setenv(
        "ABACO_EXTRACT__TABLES", json.dumps({"core_banking.loans": ["principal", "loan_id"]})
    )
    ok = extract(cli, "core_banking.loans")
    assert ok.exit_code == 0, ok.stderr
    day = the_day(runtime_dir)
    path = f"core_banking.loans/as_of_date={day}/tables_core_banking.loans_{day}.parquet"
    table = read_parquet_export(runtime_dir / "exports" / "tables" / path)
    assert table.column_names == ["as_of_date", "loan_id", "principal"]
    not_listed = extract(cli, "core_banking.customers")
    assert not_listed.exit_code == 2
    assert "core_banking.customers is not on the allow-list" in not_listed.stderr
    assert not (runtime_dir / "exports" / "tables" / "core_banking.customers").exists()
    monkeypatch.setenv(
        "ABACO_EXTRACT__TABLES", json.dumps({"core_banking.loans": ["loan_id", "borrower_name"]})
    )
    missing = extract(cli, "core_banking.loans")
    assert missing.exit_code == 1
    assert "core_banking.loans has no column 'borrower_name'" in missing.stderr
    # every attempt is in the audit trail, the refused ones as FAIL with their exit code
    ends = [r for r in read_records(runtime_dir) if r["command"] == "export table"]
    assert [(r["event"], r["exit_code"]) for r in ends if r["event"] != "START"] == [
        ("FAIL", 2),
        ("COMPLETE", 0),
        ("FAIL", 2),
        ("FAIL", 1),
    ]


def test_text_formats_keep_null_empty_and_exact_values(
    cli: CliRunner,
    cli_env: dict[str, str],
    runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = cli_env["ABACO_DATABASE_URL"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA lab")
        conn.execute(
            "CREATE TABLE lab.sample (id int, note text, amount numeric(18,2), "
            "rate numeric(18,10), at timestamptz, raw bytea, doc jsonb, flag boolean)"
        )
        conn.execute(
            "INSERT INTO lab.sample VALUES "
            "(1, NULL, NULL, NULL, NULL, NULL, NULL, NULL), "
            "(2, '', 1234.50, 0.0795705030, '1999-12-31 23:59:59.5+00', '\\x00ff', "
            "'{\"a\": 1}', true), "
            "(3, 'say \"hi\", then go', -0.01, 1, '2040-02-29 12:00:00+00', '', '[]', false)"
        )
    allowed = ["id", "note", "amount", "rate", "at", "raw", "doc", "flag"]
    monkeypatch.setenv("ABACO_EXTRACT__TABLES", json.dumps({"lab.sample": allowed}))
    result = extract(cli, "lab.sample", "--format", "csv,json,parquet")
    assert result.exit_code == 0, result.stderr
    day = the_day(runtime_dir)
    base = runtime_dir / "exports" / "tables"
    text = (base / f"lab.sample.csv/as_of_date={day}/tables_lab.sample_{day}.csv").read_bytes()
    lines = text.decode("utf-8").split("\r\n")
    assert lines[0] == '"as_of_date","id","note","amount","rate","at","raw","doc","flag"'
    assert lines[1] == f"{day},1,,,,,,,"
    assert lines[2] == (
        f'{day},2,"",1234.50,0.079570503,"1999-12-31T23:59:59.500000Z","\\x00ff",'
        '"{""a"": 1}",true'
    )
    assert lines[3] == (
        f'{day},3,"say ""hi"", then go",-0.01,1,"2040-02-29T12:00:00.000000Z","\\x","[]",false'
    )
    document = json.loads(
        (base / f"lab.sample.json/as_of_date={day}/tables_lab.sample_{day}.json").read_text(),
        parse_float=Decimal,
    )
    assert document["dataset"] == "tables" and document["table"] == "lab.sample"
    assert document["rows"][0]["note"] is None and document["rows"][1]["note"] == ""
    assert document["rows"][1]["amount"] == Decimal("1234.50")
    assert document["rows"][1]["raw"] == "\\x00ff"
    parquet = read_parquet_export(
        base / f"lab.sample/as_of_date={day}/tables_lab.sample_{day}.parquet"
    )
    assert parquet.column("raw").to_pylist() == [None, b"\x00\xff", b""]
    assert parquet.column("rate").type == pa.decimal128(18, 10)


def test_one_manifest_a_day_keeps_the_other_tables(
    cli: CliRunner, cli_env: dict[str, str], runtime_dir: Path
) -> None:
    seed(cli, 40)
    assert extract(cli, "core_banking.loans").exit_code == 0
    day = the_day(runtime_dir)
    first = json.loads(manifest_path(runtime_dir, "tables", day).read_text())
    assert extract(cli, "core_banking.payments").exit_code == 0
    second = json.loads(manifest_path(runtime_dir, "tables", day).read_text())
    tables = {f["table"]: f["run_id"] for f in second["files"]}
    assert tables == {
        "core_banking.loans": first["run_id"],
        "core_banking.payments": second["run_id"],
    }
    assert extract(cli, "core_banking.loans").exit_code == 0
    third = json.loads(manifest_path(runtime_dir, "tables", day).read_text())
    assert sorted((f["table"], f["run_id"]) for f in third["files"]) == [
        ("core_banking.loans", third["run_id"]),
        ("core_banking.payments", second["run_id"]),
    ]
    parquet = sorted((runtime_dir / "exports" / "tables").glob("*/as_of_date=*/*.parquet"))
    assert len(parquet) == 2  # the loans file was replaced, not duplicated


def test_dry_run_reads_and_writes_nothing(cli: CliRunner, runtime_dir: Path) -> None:
    result = extract(cli, "core_banking.payments", "--format", "parquet,csv", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True
    assert plan["tables"] == {"core_banking.payments": list(CONTRACT["payments"])}
    assert [f["format"] for f in plan["files"]] == ["parquet", "csv"]
    assert "FORMAT binary" in plan["statements"]["core_banking.payments"]
    assert not (runtime_dir / "exports").exists()


def test_the_snapshot_option_reads_an_exported_snapshot(
    cli: CliRunner, cli_env: dict[str, str], runtime_dir: Path
) -> None:
    seed(cli, 40)
    dsn = cli_env["ABACO_DATABASE_URL"]
    loans = count(dsn, "SELECT count(*) FROM core_banking.loans")
    with psycopg.connect(dsn) as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = holder.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        with psycopg.connect(dsn, autocommit=True) as writer:
            writer.execute(
                "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date, "
                "principal) SELECT 'NEW' || g, customer_id, '2025-01-01', 1 "
                "FROM (SELECT min(customer_id) AS customer_id FROM core_banking.customers) AS c, "
                "generate_series(1, 5) AS g"
            )
        result = extract(cli, "core_banking.loans", "--snapshot", str(row[0]), "--json")
        holder.rollback()
    assert result.exit_code == 0, result.stderr
    (entry,) = json.loads(result.stdout)["files"]
    assert entry["rows"] == loans
    assert count(dsn, "SELECT count(*) FROM core_banking.loans") > loans


def test_a_value_without_an_exact_type_publishes_nothing(
    cli: CliRunner,
    cli_env: dict[str, str],
    runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = cli_env["ABACO_DATABASE_URL"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA lab")
        conn.execute("CREATE TABLE lab.t (id int, x numeric(12,2))")
        conn.execute("INSERT INTO lab.t SELECT g, g FROM generate_series(1, 1000) g")
        conn.execute("INSERT INTO lab.t VALUES (1001, 'NaN')")
    monkeypatch.setenv("ABACO_EXTRACT__TABLES", json.dumps({"lab.t": ["id", "x"]}))
    result = extract(cli, "lab.t", "--format", "parquet,csv")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("abaco: error")]
    assert len(errors) == 1 and "column 'x' of lab.t holds NaN" in errors[0]
    tables = runtime_dir / "exports" / "tables"
    assert not any(p.is_file() for p in tables.rglob("*")) if tables.exists() else True


def test_a_later_run_leaves_an_extract_s_types_alone(
    cli: CliRunner, cli_env: dict[str, str], runtime_dir: Path
) -> None:
    seed(cli, 20)
    assert extract(cli, "core_banking.loans").exit_code == 0
    day = the_day(runtime_dir)
    path = (
        runtime_dir / "exports" / "tables" / "core_banking.loans" / f"as_of_date={day}"
        / f"tables_core_banking.loans_{day}.parquet"
    )  # fmt: skip
    assert pq.read_schema(path).field("interest_rate_apr").type == pa.decimal128(10, 6)
    assert invoke(cli, "prune", "--retention", "52w", "--dataset", "tables").exit_code == 0
    assert pq.read_schema(path).field("interest_rate_apr").type == pa.decimal128(10, 6)


def test_an_extract_today_is_no_future_run(
    cli: CliRunner, cli_env: dict[str, str], runtime_dir: Path
) -> None:
    seed(cli, 20)
    assert extract(cli, "core_banking.loans").exit_code == 0
    result = invoke(cli, "healthcheck", "--check", "runtime,audit", "--json")
    report = json.loads(result.stdout)
    assert "future_run" not in json.dumps(report), report
    verify = invoke(cli, "audit", "verify", "--json")
    assert verify.exit_code == 0, verify.stdout
    assert "future_run" not in verify.stdout, verify.stdout


def test_extract_table_reads_with_the_reader_in_one_snapshot_for_every_table(
    cli: CliRunner, cli_env: dict[str, str], runtime_dir: Path
) -> None:
    """Three tables, one run: every file carries the same snapshot time."""
    seed(cli, 30)
    result = extract(
        cli, "core_banking.loans", "core_banking.payments", "core_banking.customers", "--json"
    )
    assert result.exit_code == 0, result.stderr
    day = the_day(runtime_dir)
    manifest = json.loads(manifest_path(runtime_dir, "tables", day).read_text())
    assert {f["snapshot_at"] for f in manifest["files"]} == {manifest["snapshot_at"]}
    assert len(manifest["files"]) == 3


def _csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def big_table(dsn: str, cli_env: dict[str, str]) -> dict[str, str]:
    """public.big, 1,500,000 rows (long enough to act while it is read), allow-listed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE public.big AS SELECT g::bigint AS id, (g % 1000)::numeric(18,2) AS "
            "amount, md5(g::text) AS note FROM generate_series(1, 1500000) g"
        )
        conn.execute("VACUUM ANALYZE public.big")
    return {
        **cli_env,
        "ABACO_EXTRACT__TABLES": json.dumps({"public.big": ["id", "amount", "note"]}),
    }


def extract_started(
    env: dict[str, str], cwd: Path, folder: Path
) -> tuple[subprocess.Popen[bytes], list[Path]]:
    """A real `export table public.big`, once it has written into its temporary file."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACO_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "abaco_cli", "export", "table", "public.big"],
        env={**clean, **env}, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    temps: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        temps = [p for p in folder.rglob(".*.tmp") if p.stat().st_size > 0]
        if temps:
            break
        time.sleep(0.005)
    assert temps and proc.poll() is None, "the extract finished before it could be stopped"
    return proc, temps


def test_an_extract_killed_mid_read_leaves_the_last_one_and_the_next_run_cleans_up(
    cli_env: dict[str, str], runtime_dir: Path, db_conninfo: str, tmp_path: Path
) -> None:
    """kill -9 while the reader streams into its temporary file: the date's published extract
    and manifest stay the previous run's (audit verify intact), and the next run of the
    dataset removes the temporary file the killed one left."""
    env = big_table(db_conninfo, cli_env)
    first = run_abaco(["export", "table", "public.big"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    day = the_day(runtime_dir)
    manifest = manifest_path(runtime_dir, "tables", day)
    before = manifest.read_bytes()
    folder = runtime_dir / "exports" / "tables" / "public.big"
    published = folder / f"as_of_date={day}" / f"tables_public.big_{day}.parquet"
    data_before = published.read_bytes()

    proc, temps = extract_started(env, tmp_path, folder)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    assert manifest.read_bytes() == before and published.read_bytes() == data_before
    verify = run_abaco(["audit", "verify", "--json"], env, tmp_path)
    assert verify.returncode == 0, verify.stdout
    assert any(p.exists() for p in temps)  # left by the killed run ...
    again = run_abaco(["export", "table", "public.big"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert not list((runtime_dir / "exports").rglob("*.tmp*"))  # ... and swept by the next
    assert pq.read_metadata(published).num_rows == 1_500_000
    assert run_abaco(["audit", "verify"], env, tmp_path).returncode == 0


def test_a_database_restart_under_an_extract_is_retried_in_a_new_snapshot(
    cli_env: dict[str, str], runtime_dir: Path, db_conninfo: str, tmp_path: Path
) -> None:
    """The server ends the reader's connections mid-read (what a restart does): the attempt's
    files are discarded, the extract is read again in a new snapshot and published whole."""
    env = big_table(db_conninfo, cli_env)
    folder = runtime_dir / "exports" / "tables" / "public.big"
    folder.mkdir(parents=True)
    proc, _ = extract_started(env, tmp_path, folder)
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND query LIKE 'COPY%'"
        ).fetchone()
    assert ended is not None and ended[0] >= 1
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert "retrying" in err.decode()
    day = the_day(runtime_dir)
    published = folder / f"as_of_date={day}" / f"tables_public.big_{day}.parquet"
    assert pq.read_metadata(published).num_rows == 1_500_000
    assert not list((runtime_dir / "exports").rglob("*.tmp*"))
    assert run_abaco(["audit", "verify"], env, tmp_path).returncode == 0
