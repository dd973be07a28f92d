"""Queries of one as-of date run in parallel on connections that share one snapshot.

The first connection exports its snapshot and the others import it, so a change committed to
the source while a run is under way is invisible to every table of the run, whichever
connection ran it; and the files are the same whether the queries ran one at a time or side
by side.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr
from typer.testing import CliRunner

from abaco_cli.services import staging
from abaco_cli.services.exporting import export_datasets
from abaco_cli.services.run import Run
from abaco_cli.settings import Settings
from portfolio import Portfolio, june_book
from tests.conftest import invoke, read_parquet_export

DAY = "2025-06-30"
DATASETS = ["dpd", "kpi", "pricing", "analytics"]


def table_file(runtime_dir: Path, dataset: str, table: str, fmt: str = "parquet") -> Path:
    folder = runtime_dir / "exports" / dataset / table / f"as_of_date={DAY}"
    return folder / f"{dataset}_{table}_{DAY}.{fmt}"


def rows(runtime_dir: Path, dataset: str, table: str) -> list[dict[str, Any]]:
    return read_parquet_export(table_file(runtime_dir, dataset, table)).to_pylist()


def balances(runtime_dir: Path) -> dict[str, Decimal]:
    """The book's outstanding at the as-of date as four tables of the run state it."""
    kpis = {r["kpi"]: r for r in rows(runtime_dir, "kpi", "snapshot")}
    return {
        "dpd/loans": sum((r["outstanding"] for r in rows(runtime_dir, "dpd", "loans")), Decimal(0)),
        "dpd/aging": sum((r["outstanding"] for r in rows(runtime_dir, "dpd", "aging")), Decimal(0)),
        "kpi/snapshot": kpis["outstanding_balance"]["value"],
        "analytics/portfolio_overview": rows(runtime_dir, "analytics", "portfolio_overview")[-1][
            "outstanding_balance"
        ],
    }


def test_every_connection_reads_the_snapshot_of_the_first(
    settings: Settings, db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    june_book(db_conninfo)
    workers = 3
    # The first `workers` tables wait for one another before their queries start, so each runs
    # on its own connection; before any of them starts, a new loan is committed to the source.
    barrier = threading.Barrier(workers, timeout=30)
    lock = threading.Lock()
    backends: set[int] = set()
    committed: list[str] = []
    real_stage_table = staging._stage_table

    def commit_a_loan_then_stage(conn: psycopg.Connection[Any], *args: Any) -> Any:
        with lock:
            if not committed:
                with Portfolio(db_conninfo) as book:
                    book.loan(
                        "LATECOMER",
                        customer_id="C-LATE",
                        disbursed=date(2025, 6, 1),
                        principal="5000.00",
                        schedule=[(date(2025, 9, 1), "5000.00")],
                    )
                committed.append("LATECOMER")
            first_ones = len(backends) < workers
            backends.add(conn.info.backend_pid)
        if first_ones:
            barrier.wait()
        return real_stage_table(conn, *args)

    monkeypatch.setattr(staging, "_stage_table", commit_a_loan_then_stage)
    parallel = settings.model_copy(update={"parallel_queries": workers})
    export_datasets(Run(parallel, "export all"), DATASETS, [date(2025, 6, 30)], ["parquet"])

    assert committed and len(backends) == workers
    loan_ids = {r["loan_id"] for r in rows(runtime_dir, "dpd", "loans")}
    assert "LATECOMER" not in loan_ids
    assert set(balances(runtime_dir).values()) == {Decimal("39000.00")}

    # the loan was really there: the next run sees it in every table
    monkeypatch.setattr(staging, "_stage_table", real_stage_table)
    export_datasets(Run(parallel, "export all"), DATASETS, [date(2025, 6, 30)], ["parquet"])
    assert "LATECOMER" in {r["loan_id"] for r in rows(runtime_dir, "dpd", "loans")}
    assert set(balances(runtime_dir).values()) == {Decimal("44000.00")}


def csv_files(runtime_dir: Path) -> dict[str, bytes]:
    exports = runtime_dir / "exports"
    return {
        str(p.relative_to(exports)): p.read_bytes()
        for p in sorted(exports.rglob("*.csv"))
        if p.is_file()  # not the <table>.csv/ folders
    }


def test_the_files_do_not_depend_on_how_many_queries_run_at_once(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    june_book(db_conninfo)
    outputs = []
    for workers in ("1", "4"):
        monkeypatch.setenv("ABACO_PARALLEL_QUERIES", workers)
        result = invoke(cli, "export", "all", "--as-of", DAY, "--format", "csv")
        assert result.exit_code == 0, result.stderr
        outputs.append(csv_files(runtime_dir))
    assert len(outputs[0]) == 13  # every table of the four datasets
    assert outputs[0] == outputs[1]


def test_a_failing_query_cancels_the_others_and_stages_nothing(
    settings: Settings, db_conninfo: str, runtime_dir: Path
) -> None:
    june_book(db_conninfo)
    with psycopg.connect(db_conninfo) as conn:
        conn.execute("DROP TABLE commercial.rate_card")  # pricing/adherence fails
    parallel = settings.model_copy(update={"parallel_queries": 4})
    with pytest.raises(Exception, match="rate_card"):
        export_datasets(
            Run(parallel, "export all"), DATASETS, [date(2025, 6, 30)], ["parquet", "csv"]
        )
    exports = runtime_dir / "exports"
    assert not [p for p in exports.rglob("*") if p.is_file() and "_audit" not in str(p)]
    assert not list(exports.rglob(f"as_of_date={DAY}"))  # no empty partition folder either
    # the run let go of every connection it opened
    with psycopg.connect(db_conninfo) as conn:
        others = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert others == (0,)


def test_a_source_that_cannot_share_its_snapshot_runs_one_query_at_a_time(
    settings: Settings,
    db_conninfo: str,
    runtime_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    june_book(db_conninfo)
    role = f"abaco_reader_{os.getpid()}"
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL(
                "GRANT USAGE ON SCHEMA core_banking, commercial TO {role};"
                " GRANT SELECT ON ALL TABLES IN SCHEMA core_banking, commercial TO {role}"
            ).format(role=sql.Identifier(role))
        )
        # pg_proc belongs to the database: only this test database loses the function
        conn.execute("REVOKE EXECUTE ON FUNCTION pg_export_snapshot() FROM PUBLIC")
    try:
        reader = settings.model_copy(
            update={
                "database_url": SecretStr(make_conninfo(db_conninfo, user=role)),
                "parallel_queries": 4,
            }
        )
        with caplog.at_level(logging.WARNING):
            export_datasets(Run(reader, "export all"), DATASETS, [date(2025, 6, 30)], ["parquet"])
        assert "cannot share a snapshot between connections" in caplog.text
        assert set(balances(runtime_dir).values()) == {Decimal("39000.00")}
    finally:
        with psycopg.connect(db_conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_connection_lost_mid_date_retries_the_date_on_fresh_connections(
    settings: Settings, db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    june_book(db_conninfo)
    real_stage_table = staging._stage_table
    lock = threading.Lock()
    killed: list[int] = []

    def kill_the_first_backend(conn: psycopg.Connection[Any], *args: Any) -> Any:
        with lock:
            if not killed:
                killed.append(conn.info.backend_pid)
                with psycopg.connect(db_conninfo, autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (killed[0],))
        return real_stage_table(conn, *args)

    monkeypatch.setattr(staging, "_stage_table", kill_the_first_backend)
    events: list[str] = []
    fast_retries = settings.model_copy(
        update={
            "parallel_queries": 3,
            "retry": settings.retry.model_copy(update={"initial_wait_seconds": 0.1}),
        }
    )
    results = export_datasets(
        Run(fast_retries, "export all"),
        DATASETS,
        [date(2025, 6, 30)],
        ["parquet"],
        progress=lambda event: events.append(event.kind),
    )

    assert killed and events.count("retry") == 1
    assert {r.dataset for r in results} == set(DATASETS)
    assert set(balances(runtime_dir).values()) == {Decimal("39000.00")}
    assert not list((runtime_dir / "exports").rglob("*.tmp"))
