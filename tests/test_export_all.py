"""`abaco export all` and backfills (`--from/--to`), through the real command line.

The June 2025 book (tests/portfolio.py) is the source; its figures are worked out by hand in
test_kpi.py. Here: one run id and one manifest per dataset, figures that agree across datasets
of one snapshot, nothing published for a date when one dataset fails, every month-end of a
backfill as its own as-of date with only the payments dated on or before it.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from portfolio import june_book
from tests.conftest import invoke, read_parquet_export

DATASETS = ("analytics", "dpd", "kpi", "pricing")


def exports(runtime_dir: Path) -> Path:
    return runtime_dir / "exports"


def published(runtime_dir: Path, day: str) -> list[Path]:
    """Every file of one as-of date under the exports (data files, manifests, KPI JSON)."""
    return sorted(p for p in exports(runtime_dir).rglob(f"*{day}*") if p.is_file())


def kpi_rows(runtime_dir: Path, day: str) -> dict[str, dict[str, Any]]:
    path = (
        exports(runtime_dir)
        / "kpi"
        / "snapshot"
        / f"as_of_date={day}"
        / f"kpi_snapshot_{day}.parquet"
    )
    return {r["kpi"]: r for r in read_parquet_export(path).to_pylist()}


def test_export_all_one_snapshot_one_run(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    june_book(db_conninfo)
    result = invoke(cli, "export", "all", "--as-of", "2025-06-30", "--json")
    assert result.exit_code == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["status"] == "success"
    assert run["datasets"] == ["dpd", "kpi", "pricing", "analytics"]
    assert run["as_of_dates"] == ["2025-06-30"]
    assert {e["dataset"] for e in run["exports"]} == set(DATASETS)
    assert {e["run_id"] for e in run["exports"]} == {run["run_id"]}
    assert run["files"] == sum(len(e["files"]) for e in run["exports"])
    for dataset in DATASETS:
        manifest_path = (
            exports(runtime_dir) / dataset / "_manifests" / f"{dataset}_2025-06-30.manifest.json"
        )
        manifest = json.loads(manifest_path.read_text())
        assert manifest["run_id"] == run["run_id"]
        pointer = json.loads((exports(runtime_dir) / dataset / "latest.json").read_text())
        assert pointer["as_of_date"] == "2025-06-30"
    kpi_files = next(e for e in run["exports"] if e["dataset"] == "kpi")["files"]
    assert any(f["path"].endswith("kpi/json/kpi_2025-06-30.json") for f in kpi_files)
    latest = json.loads((exports(runtime_dir) / "kpi" / "json" / "kpi_latest.json").read_text())
    assert latest["run_id"] == run["run_id"]

    # the same snapshot: the KPI balance is the dpd aging total and June of the overview
    day = "2025-06-30"
    aging = read_parquet_export(
        exports(runtime_dir) / "dpd" / "aging" / f"as_of_date={day}" / f"dpd_aging_{day}.parquet"
    )
    total = sum(r["outstanding"] for r in aging.to_pylist())
    overview = read_parquet_export(
        exports(runtime_dir)
        / "analytics"
        / "portfolio_overview"
        / f"as_of_date={day}"
        / f"analytics_portfolio_overview_{day}.parquet"
    ).to_pylist()
    kpis = kpi_rows(runtime_dir, day)
    assert total == Decimal("39000.00")
    assert kpis["outstanding_balance"]["value"] == total
    assert overview[-1]["outstanding_balance"] == total
    assert kpis["active_loans"]["value"] == sum(r["loans"] for r in aging.to_pylist())


def test_a_failing_dataset_publishes_nothing_for_the_date(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    june_book(db_conninfo)
    first = invoke(cli, "export", "all", "--as-of", "2025-05-31")
    assert first.exit_code == 0, first.stderr
    before = {p: p.read_bytes() for p in published(runtime_dir, "2025-05-31")}
    assert len(before) > 20
    with psycopg.connect(db_conninfo) as conn:
        conn.execute("DROP TABLE commercial.rate_card")  # pricing/adherence will fail

    result = invoke(cli, "export", "all", "--as-of", "2025-06-30")
    assert result.exit_code == 1
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1  # one line (the others are progress log lines)
    assert "rate_card" in errors[0] and "Traceback" not in result.stderr
    # no dataset of 2025-06-30 was published, not even those before pricing in the run
    assert published(runtime_dir, "2025-06-30") == []
    for dataset in DATASETS:
        pointer = json.loads((exports(runtime_dir) / dataset / "latest.json").read_text())
        assert pointer["as_of_date"] == "2025-05-31"
    assert not [p for p in exports(runtime_dir).rglob("*.tmp")]
    # the earlier date is untouched, the KPI JSON's stable path too
    assert {p: p.read_bytes() for p in published(runtime_dir, "2025-05-31")} == before
    latest = json.loads((exports(runtime_dir) / "kpi" / "json" / "kpi_latest.json").read_text())
    assert latest["as_of_date"] == "2025-05-31"


def test_backfill_exports_each_month_end_as_it_was(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    june_book(db_conninfo)
    result = invoke(cli, "export", "kpi", "--from", "2025-04-01", "--to", "2025-06-30", "--json")
    assert result.exit_code == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["as_of_dates"] == ["2025-04-30", "2025-05-31", "2025-06-30"]
    assert len({e["run_id"] for e in run["exports"]}) == 1
    # hand-worked in test_kpi.py: outstanding at each month-end; cash of the month:
    # April L8 6,000 + 150 + 10 - 5; May nothing (L2 pays on 06-05); June 7,766.85
    for day, balance, collected, revenue in (
        ("2025-04-30", "13000", "6155", "155"),
        ("2025-05-31", "27000", "0", "0"),
        ("2025-06-30", "39000", "7766.85", "248"),
    ):
        rows = kpi_rows(runtime_dir, day)
        assert rows["outstanding_balance"]["value"] == Decimal(balance), day
        assert rows["collections_mtd"]["value"] == Decimal(collected), day
        assert rows["revenue_mtd"]["value"] == Decimal(revenue), day
    # at 05-31, L2's payment of 06-05 does not exist yet: L2 owes its 5,000 (due that day,
    # not late); at 06-30 L9's payment of 07-02 does not exist: 7,000 nine days late
    may = kpi_rows(runtime_dir, "2025-05-31")
    assert may["par_7_amount"]["value"] == Decimal("13000")  # L5, L4, L3 only
    june = kpi_rows(runtime_dir, "2025-06-30")
    assert june["par_7_amount"]["value"] == Decimal("23000")  # includes L9 (dpd 9)
    latest = json.loads((exports(runtime_dir) / "kpi" / "json" / "kpi_latest.json").read_text())
    assert latest["as_of_date"] == "2025-06-30"
    for day in ("2025-04-30", "2025-05-31"):
        dated = json.loads((exports(runtime_dir) / "kpi" / "json" / f"kpi_{day}.json").read_text())
        assert dated["as_of_date"] == day

    # backfilling an older month afterwards leaves the newest date where it is
    again = invoke(cli, "export", "kpi", "--from", "2025-04-01", "--to", "2025-04-30")
    assert again.exit_code == 0, again.stderr
    latest = json.loads((exports(runtime_dir) / "kpi" / "json" / "kpi_latest.json").read_text())
    assert latest["as_of_date"] == "2025-06-30"
    pointer = json.loads((exports(runtime_dir) / "kpi" / "latest.json").read_text())
    assert pointer["as_of_date"] == "2025-06-30"


def test_backfill_of_every_dataset_and_of_dpd_alone(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    june_book(db_conninfo)
    result = invoke(
        cli, "export", "all", "--from", "2025-05-15", "--to", "2025-06-30", "--months", "2",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["as_of_dates"] == ["2025-05-31", "2025-06-30"]
    assert sorted((e["dataset"], e["as_of_date"]) for e in run["exports"]) == sorted(
        (d, day) for d in DATASETS for day in ("2025-05-31", "2025-06-30")
    )
    series = json.loads((exports(runtime_dir) / "kpi" / "json" / "kpi_2025-06-30.json").read_text())
    assert [p["month_end"] for p in series["series"]] == ["2025-05-31", "2025-06-30"]

    dpd = invoke(cli, "export", "dpd", "--from", "2025-01-01", "--to", "2025-02-28", "--json")
    assert dpd.exit_code == 0, dpd.stderr
    assert json.loads(dpd.stdout)["as_of_dates"] == ["2025-01-31", "2025-02-28"]
    loans = read_parquet_export(
        exports(runtime_dir)
        / "dpd"
        / "loans"
        / "as_of_date=2025-01-31"
        / "dpd_loans_2025-01-31.parquet"
    ).to_pylist()
    # loans disbursed on or before 2025-01-31: L4, L5, L6, L7
    assert sorted(r["loan_id"] for r in loans) == ["L4", "L5", "L6", "L7"]
    assert date(2025, 1, 31) in {r["as_of_date"] for r in loans}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["all", "--from", "2025-06-30", "--to", "2025-01-31"], "is after --to"),
        (["all", "--from", "2025-02-30", "--to", "2025-03-31"], "'2025-02-30' is not a date"),
        (["kpi", "--from", "2025-01-01", "--to", "June"], "--to 'June' is not a date"),
        (["all", "--as-of", "2025-06-30", "--from", "2025-01-01", "--to", "2025-02-28"],
         "either --as-of or --from/--to"),
        (["pricing", "--from", "2025-01-01"], "--from and --to go together"),
        (["all", "--from", "2025-03-02", "--to", "2025-03-30"], "no month-end between"),
        (["kpi", "--as-of", "2025-06-30", "--months", "-1"], "--months must be between 0 and"),
        (["all", "--as-of", "2025-06-31"], "--as-of '2025-06-31' is not a date"),
    ],
)  # fmt: skip
def test_bad_dates_exit_2_with_one_line(
    cli: CliRunner, runtime_dir: Path, args: list[str], fragment: str
) -> None:
    result = invoke(cli, "export", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert fragment in lines[0]
    assert not exports(runtime_dir).exists()


def test_dry_run_of_all_writes_nothing(cli: CliRunner, runtime_dir: Path) -> None:
    result = invoke(
        cli, "export", "all", "--from", "2025-05-01", "--to", "2025-06-30", "--dry-run", "--json"
    )
    assert result.exit_code == 0, result.stderr
    plans = json.loads(result.stdout)
    assert len(plans) == 2 * len(DATASETS)
    assert {(p["dataset"], p["as_of_date"]) for p in plans} == {
        (d, day) for d in DATASETS for day in ("2025-05-31", "2025-06-30")
    }
    assert all("core_banking" in q for p in plans for q in p["queries"].values())
    assert not exports(runtime_dir).exists()


def test_new_commands_have_help(cli: CliRunner) -> None:
    for args in (["export", "all"], ["export", "kpi"], ["export", "pricing"],
                 ["export", "analytics"], ["kpi", "definitions"]):  # fmt: skip
        result = invoke(cli, *args, "--help")
        assert result.exit_code == 0
        assert "Usage" in result.stdout
        assert "--help" in result.stdout
    assert "--months" in invoke(cli, "export", "kpi", "--help").stdout
    assert "--from" in invoke(cli, "export", "dpd", "--help").stdout
    assert "--months" not in invoke(cli, "export", "dpd", "--help").stdout


def test_every_new_table_leaves_as_of_date_to_the_folder_in_parquet(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    june_book(db_conninfo)
    done = invoke(cli, "export", "all", "--as-of", "2025-06-30", "--format", "parquet,csv,json")
    assert done.exit_code == 0, done.stderr
    day = "2025-06-30"
    tables = {
        "kpi": ("snapshot", "series"),
        "pricing": ("grid", "adherence"),
        "analytics": ("portfolio_overview", "vintages", "roll_rates", "concentration",
                      "customer_types"),
    }  # fmt: skip
    for dataset, names in tables.items():
        for table in names:

            def folder(suffix: str, table: str = table, dataset: str = dataset) -> Path:
                return exports(runtime_dir) / dataset / f"{table}{suffix}" / f"as_of_date={day}"

            stem = f"{dataset}_{table}_{day}"
            schema = pq.read_schema(folder("") / f"{stem}.parquet")
            assert "as_of_date" not in schema.names, stem
            assert (schema.metadata or {}).get(b"abaco.as_of_date") == day.encode()
            header = (folder(".csv") / f"{stem}.csv").read_text().splitlines()[0]
            assert header.startswith('"as_of_date",'), stem
            document = json.loads(
                (folder(".json") / f"{stem}.json").read_text(), parse_float=Decimal
            )
            assert document["columns"][0]["name"] == "as_of_date"
