"""The kpi dataset against DOMAIN.md's KPI table, worked out by hand on the June 2025 book.

The book is described in tests/portfolio.py (``june_book``). Every expected figure below is
computed by hand in the comments from that table; the test only does the final division
(``ratio``), never calls the code under test for an expectation. D = 2025-06-30, so
MTD = 2025-06-01..06-30 and LTM = (2024-06-30, 2025-06-30].

The state of each loan at D (days past due = D - oldest unpaid due date):
  L1 10,000 current        L2 3,000 (5,000 - 2,000) dpd 30 (due 05-31)
  L3 8,000 dpd 76 (04-15)  L4 3,000 (4,000 - 1,000) dpd 141 (02-09)
  L5 2,000 dpd 180 (01-01): is_default (>= 180), not written off (180 is not > 180)
  L6 written off: dpd 242 > 180 (due 2024-10-31), written_off_balance 3,000 - 500 = 2,500
  L7 written off by its written_off_date 2024-06-15, balance 1,500
  L8 and L11 repaid; L9 7,000 dpd 9 (06-21; its payment of 07-02 is after D)
  L10 6,000 current (installment of 06-14 paid on time); L12 disbursed after D: out of scope
Active loans: L1, L2, L3, L4, L5, L9, L10.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from abaco_cli.datasets.kpi.dashboard import payload_schema
from abaco_cli.services.exporting import export_dataset
from abaco_cli.settings import KpiPolicy, KpiThreshold, Settings
from portfolio import JUNE_END, Portfolio, june_book
from tests.conftest import invoke, read_parquet_export

D = JUNE_END
TEN = Decimal("1E-10")
KPI_KEYS = [
    "outstanding_balance", "active_loans", "active_customers", "disbursed_mtd",
    "disbursed_ltm", "collections_mtd", "par_7", "par_7_amount", "par_30", "par_30_amount",
    "par_60", "par_60_amount", "par_90", "par_90_amount", "npl_ratio", "default_rate_count",
    "default_rate_balance", "written_off_ltm", "collection_rate_mtd", "weighted_apr",
    "weighted_fee_rate", "weighted_term_days", "average_ticket_ltm", "top10_concentration",
    "largest_customer_share", "revenue_mtd", "revenue_ltm", "yield_ltm",
]  # fmt: skip


def dec(text: str | int) -> Decimal:
    return Decimal(text)


def ratio(numerator: str | int, denominator: str | int) -> Decimal:
    """A fraction rounded as the kpi table stores it (10 decimals, half up)."""
    return (Decimal(numerator) / Decimal(denominator)).quantize(TEN, rounding=ROUND_HALF_UP)


def strict_json(text: str) -> Any:
    """json.loads that keeps decimals exact and refuses NaN and Infinity."""

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} in JSON")

    return json.loads(text, parse_float=Decimal, parse_constant=refuse)


@dataclass
class KpiExport:
    rows: dict[str, dict[str, Any]]
    series: list[dict[str, Any]]
    payload: dict[str, Any]
    latest: dict[str, Any]
    snapshot: pa.Table


def export_kpi(settings: Settings, as_of: date = D) -> KpiExport:
    """Run the real export (Parquet) and read the tables and the dashboard JSON back."""
    result = export_dataset(settings, "kpi", as_of, ["parquet"])
    tables = {
        record.table: read_parquet_export(settings.exports_dir / record.path)
        for record in result.files
        if record.format == "parquet"
    }
    json_dir = settings.exports_dir / "kpi" / "json"
    payload = strict_json((json_dir / f"kpi_{as_of.isoformat()}.json").read_text())
    latest = strict_json((json_dir / "kpi_latest.json").read_text())
    for document in (payload, latest):
        validate(document)
    rows = {row["kpi"]: row for row in tables["snapshot"].to_pylist()}
    assert [row["kpi"] for row in tables["snapshot"].to_pylist()] == KPI_KEYS
    return KpiExport(rows, tables["series"].to_pylist(), payload, latest, tables["snapshot"])


def validate(document: dict[str, Any]) -> None:
    """The payload satisfies the shipped JSON Schema (numbers read back as floats for it)."""
    as_floats = json.loads(json.dumps(document, default=float))
    errors = list(Draft202012Validator(payload_schema()).iter_errors(as_floats))
    assert not errors, [e.message for e in errors]


# (value, numerator, denominator) worked out by hand; None where the column is null
EXPECTED: dict[str, tuple[Decimal | None, Decimal | None, Decimal | None]] = {
    # 10,000 + 3,000 + 8,000 + 3,000 + 2,000 + 7,000 + 6,000
    "outstanding_balance": (dec("39000.00"), None, None),
    "active_loans": (dec(7), None, None),
    # C1 (L1, L2), C2 (L3, L10), C3 (L4, L5), C5 (L9)
    "active_customers": (dec(4), None, None),
    # June: L1 10,000 + L9 7,000 + L11 2,500
    "disbursed_mtd": (dec("19500.00"), None, None),
    # after 2024-06-30: every loan but L7 (2024-03-01) and L12 (after D):
    # 10,000 + 5,000 + 8,000 + 4,000 + 2,000 + 3,000 + 6,000 + 7,000 + 9,000 + 2,500
    "disbursed_ltm": (dec("56500.00"), None, None),
    # cash in June: L2 2,000 + 100; L10 3,000 + 90 + 11.70 tax;
    # L11 2,500 + 50 + 5 fee + 5 other + 6.50 tax + 0.65 fee tax - 2 rebates = 2,565.15
    # (L9's payment of 07-02 is after D): 2,100 + 3,101.70 + 2,565.15
    "collections_mtd": (dec("7766.85"), None, None),
    # dpd >= 7: L2 3,000 (30), L3 8,000 (76), L4 3,000 (141), L5 2,000 (180), L9 7,000 (9)
    "par_7": (ratio(23000, 39000), dec(23000), dec(39000)),
    "par_7_amount": (dec("23000.00"), None, None),
    # dpd >= 30: L2, L3, L4, L5
    "par_30": (ratio(16000, 39000), dec(16000), dec(39000)),
    "par_30_amount": (dec("16000.00"), None, None),
    # dpd >= 60: L3, L4, L5
    "par_60": (ratio(13000, 39000), dec(13000), dec(39000)),
    "par_60_amount": (dec("13000.00"), None, None),
    # dpd >= 90: L4, L5
    "par_90": (ratio(5000, 39000), dec(5000), dec(39000)),
    "par_90_amount": (dec("5000.00"), None, None),
    # npl_threshold_days 90: the same loans as PAR90
    "npl_ratio": (ratio(5000, 39000), dec(5000), dec(39000)),
    # is_default among active loans: L5 only (dpd 180 >= 180)
    "default_rate_count": (ratio(1, 7), dec(1), dec(7)),
    "default_rate_balance": (ratio(2000, 39000), dec(2000), dec(39000)),
    # L6: write-off date = first arrears 2024-10-31 + 180 + 1 = 2025-04-30, in LTM: 2,500.
    # L7: written_off_date 2024-06-15 is before the LTM window: not counted.
    "written_off_ltm": (dec("2500.00"), None, None),
    # due in June, all components: L10 3,000 + 90 + 11.70 tax; L11 2,500 + 50 + 5 fee +
    # 6.50 tax; L9 7,000 + 100 = 3,101.70 + 2,561.50 + 7,100.00 = 12,763.20
    "collection_rate_mtd": (ratio("7766.85", "12763.20"), dec("7766.85"), dec("12763.20")),
    # outstanding x apr: 10,000 x .36 + 3,000 x .48 + 8,000 x .30 + 3,000 x .40 +
    # 2,000 x .50 + 7,000 x .42 + 6,000 x .33 = 3,600 + 1,440 + 2,400 + 1,200 + 1,000 +
    # 2,940 + 1,980 = 14,560
    "weighted_apr": (ratio(14560, 39000), dec(14560), dec(39000)),
    # (fee + taxes) / principal is 2.26 % for all but L4 (no fee): outstanding x 0.0226 =
    # 226 + 67.8 + 180.8 + 0 + 45.2 + 158.2 + 135.6 = 813.6
    "weighted_fee_rate": (ratio("813.6", 39000), dec("813.6"), dec(39000)),
    # outstanding x term: 10,000 x 60 + 3,000 x 30 + 8,000 x 45 + 3,000 x 30 + 2,000 x 60 +
    # 7,000 x 20 + 6,000 x 90 = 600,000 + 90,000 + 360,000 + 90,000 + 120,000 + 140,000 +
    # 540,000 = 1,940,000
    "weighted_term_days": (ratio(1940000, 39000), dec(1940000), dec(39000)),
    # 56,500 / 10 loans
    "average_ticket_ltm": (dec("5650.00"), dec("56500.00"), dec(10)),
    # four customers (fewer than 10): all of it
    "top10_concentration": (dec(1), dec(39000), dec(39000)),
    # largest: C2 with 8,000 + 6,000 = 14,000 (C1 13,000, C3 5,000, C5 7,000)
    "largest_customer_share": (ratio(14000, 39000), dec(14000), dec(39000)),
    # interest + fee + other - rebates in June: L2 100 + L10 90 + L11 (50 + 5 + 5 - 2)
    "revenue_mtd": (dec("248.00"), None, None),
    # plus LTM before June: L4 30 (02-09), L6 20 (2024-11-15), L8 150 + 10 - 5 = 155
    "revenue_ltm": (dec("453.00"), None, None),
    # mean outstanding_balance at the 12 month-ends 2024-07-31 .. 2025-06-30:
    #   Jul, Aug, Sep 0 | Oct 3,000 (L6) | Nov 2,500 (L6) + 2,000 (L5) | Dec 4,500 |
    #   Jan 2,500 + 2,000 + 4,000 (L4) = 8,500 | Feb 2,500 + 2,000 + 3,000 = 7,500 |
    #   Mar 7,500 + 8,000 (L3) = 15,500 | Apr: L6 written off (dpd 181 > 180), L8 repaid:
    #   2,000 + 3,000 + 8,000 = 13,000 | May 13,000 + 5,000 (L2) + 9,000 (L10) = 27,000 |
    #   Jun 39,000; sum 122,500, mean 122,500 / 12
    "yield_ltm": (ratio(453 * 12, 122500), dec(453), Decimal(122500) / 12),
}
UNITS = {
    "active_loans": "count", "active_customers": "count", "weighted_term_days": "days",
    **{k: "usd" for k in ("outstanding_balance", "disbursed_mtd", "disbursed_ltm",
                          "collections_mtd", "written_off_ltm", "average_ticket_ltm",
                          "revenue_mtd", "revenue_ltm", "par_7_amount", "par_30_amount",
                          "par_60_amount", "par_90_amount")},
}  # fmt: skip


def test_every_kpi_of_the_june_book(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    out = export_kpi(settings)

    assert set(out.rows) == set(EXPECTED)
    for kpi, (value, numerator, denominator) in EXPECTED.items():
        row = out.rows[kpi]
        assert row["as_of_date"] == D
        assert row["value"] == value, kpi
        assert row["unit"] == UNITS.get(kpi, "ratio"), kpi
        assert row["definition_version"] == 1
        if numerator is not None:
            assert row["numerator"] == numerator, kpi
            assert row["denominator"] == denominator.quantize(TEN, ROUND_HALF_UP), kpi
        else:
            assert row["numerator"] is None and row["denominator"] is None, kpi


def test_money_and_ratios_keep_their_types(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    schema = export_kpi(settings).snapshot.schema
    for column in ("value", "numerator", "denominator"):
        assert schema.field(column).type == pa.decimal128(38, 10)  # exact, never a float
    assert schema.field("definition_version").type == pa.int32()
    assert schema.field("as_of_date").type == pa.date32()


def test_default_thresholds_give_statuses(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    rows = export_kpi(settings).rows
    # default bounds (settings.py): every one of these ratios is past its amber bound, e.g.
    # par_30 0.41 > 0.08, collection_rate 0.61 < 0.85, yield 0.044 < 0.20
    for kpi in ("par_7", "par_30", "par_60", "par_90", "npl_ratio", "default_rate_count",
                "default_rate_balance", "collection_rate_mtd", "top10_concentration",
                "largest_customer_share", "yield_ltm"):  # fmt: skip
        assert rows[kpi]["status"] == "red", kpi
    # no thresholds by default: no status
    for kpi in ("outstanding_balance", "active_loans", "weighted_apr", "revenue_ltm"):
        assert rows[kpi]["status"] is None, kpi


def test_configured_thresholds_green_amber_red_and_bounds(
    db_conninfo: str, settings: Settings
) -> None:
    june_book(db_conninfo)
    lower, higher = "lower_is_better", "higher_is_better"
    thresholds: dict[str, Any] = {
        "par_30": KpiThreshold(direction=lower, green=0.45, amber=0.5),  # 0.41 <= 0.45: green
        "par_90": KpiThreshold(direction=lower, green=0.10, amber=0.15),  # 0.128: amber
        "collection_rate_mtd": KpiThreshold(direction=higher, green=0.9, amber=0.6),  # .609
        "yield_ltm": KpiThreshold(direction=higher, green=0.04, amber=0.03),  # 0.044: green
        "top10_concentration": KpiThreshold(direction=lower, green=1.0, amber=1.0),  # = green
        "active_loans": KpiThreshold(direction=higher, green=10, amber=7),  # 7 = amber bound
        "largest_customer_share": None,  # removes the default: no status
    }
    configured = settings.model_copy(update={"kpi": KpiPolicy(thresholds=thresholds)})
    rows = export_kpi(configured).rows
    assert rows["par_30"]["status"] == "green"
    assert rows["par_90"]["status"] == "amber"
    assert rows["collection_rate_mtd"]["status"] == "amber"
    assert rows["yield_ltm"]["status"] == "green"
    assert rows["top10_concentration"]["status"] == "green"
    assert rows["active_loans"]["status"] == "amber"
    assert rows["largest_customer_share"]["status"] is None
    assert rows["par_60"]["status"] == "red"  # defaults still apply to the others


def test_dashboard_json_matches_the_table(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    out = export_kpi(settings)
    payload = out.payload
    assert payload == out.latest  # the stable path holds the newest snapshot
    assert payload["schema_version"] == 1
    assert payload["as_of_date"] == "2025-06-30"
    assert payload["generated_at"].endswith("Z")
    assert list(payload["kpis"]) == KPI_KEYS
    kpis = payload["kpis"]
    # money keeps its cents, counts are integers, ratios exact decimals
    assert kpis["outstanding_balance"]["value"] == dec("39000.00")
    assert kpis["active_loans"]["value"] == 7 and isinstance(kpis["active_loans"]["value"], int)
    assert kpis["par_30"]["value"] == ratio(16000, 39000)
    assert kpis["par_30"]["numerator"] == 16000 and kpis["par_30"]["denominator"] == 39000
    assert kpis["par_30"]["status"] == "red"
    assert kpis["outstanding_balance"]["status"] is None
    for kpi, row in out.rows.items():
        assert kpis[kpi]["value"] == row["value"], kpi
        assert kpis[kpi]["unit"] == row["unit"]
        assert kpis[kpi]["definition_version"] == 1
    assert payload["series_months"] == 0
    assert payload["series"] == []
    text = (settings.exports_dir / "kpi" / "json" / "kpi_2025-06-30.json").read_text()
    assert '"value": 39000.00,' in text  # written as an exact decimal literal


def test_series_over_trailing_month_ends(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    three = settings.model_copy(update={"kpi": KpiPolicy(series_months=3)})
    out = export_kpi(three)
    series: dict[tuple[date, str], dict[str, Any]] = {
        (row["month_end"], row["kpi"]): row for row in out.series
    }
    months = [date(2025, 4, 30), date(2025, 5, 31), date(2025, 6, 30)]
    assert sorted({m for m, _ in series}) == months
    assert len(out.series) == 3 * len(KPI_KEYS)
    assert all(row["as_of_date"] == D for row in out.series)
    # 04-30: L5 2,000 (dpd 119), L4 3,000 (80), L3 8,000 (15); L6 written off that day
    # 05-31: + L2 5,000 (due that day: not late) + L10 9,000; L5 150, L4 111, L3 46
    # 06-30: the snapshot
    for month, balance, loans, par_30 in (
        (months[0], 13000, 3, 5000),
        (months[1], 27000, 5, 13000),
        (months[2], 39000, 7, 16000),
    ):
        assert series[(month, "outstanding_balance")]["value"] == balance
        assert series[(month, "active_loans")]["value"] == loans
        assert series[(month, "par_30")]["value"] == ratio(par_30, balance)
    # yield at 05-31: revenue in (2024-05-31, 2025-05-31]: L4 30 + L6 20 + L8 155 = 205; month-
    # ends 2024-06-30 .. 2025-05-31: 0 x 4, 3,000, 4,500, 4,500, 8,500, 7,500, 15,500, 13,000,
    # 27,000 = 83,500
    assert series[(months[1], "yield_ltm")]["value"] == ratio(205 * 12, 83500)
    # collections in May: none (L8 paid 04-28, L2 06-05)
    assert series[(months[1], "collections_mtd")]["value"] == 0
    # the same figures as the snapshot at 06-30
    for kpi, row in out.rows.items():
        assert series[(months[2], kpi)]["value"] == row["value"], kpi

    points = out.payload["series"]
    assert [p["month_end"] for p in points] == ["2025-04-30", "2025-05-31", "2025-06-30"]
    assert points[0]["kpis"]["outstanding_balance"] == dec("13000.00")
    assert points[1]["kpis"]["active_loans"] == 5
    assert out.payload["series_months"] == 3


def test_month_with_nothing_scheduled_has_no_collection_rate(
    db_conninfo: str, settings: Settings
) -> None:
    june_book(db_conninfo)
    rows = export_kpi(settings, date(2025, 3, 31)).rows
    # no installment falls due in March 2025 (L4 02-09, L3 04-15) and nothing is paid in it
    assert rows["collection_rate_mtd"]["value"] is None
    assert rows["collection_rate_mtd"]["numerator"] == 0
    assert rows["collection_rate_mtd"]["denominator"] == 0
    assert rows["collection_rate_mtd"]["status"] is None
    # at 03-31: L6 2,500 (dpd 151), L5 2,000 (89), L4 3,000 (50), L3 8,000 (current)
    assert rows["outstanding_balance"]["value"] == dec("15500.00")
    assert rows["par_90"]["value"] == ratio(2500, 15500)


def test_empty_portfolio_has_null_ratios_and_valid_files(settings: Settings) -> None:
    out = export_kpi(settings)
    for kpi, row in out.rows.items():
        if row["unit"] in ("ratio", "days") or kpi == "average_ticket_ltm":  # 0 / 0 loans
            assert row["value"] is None, kpi
            assert row["status"] is None, kpi
        else:
            assert row["value"] == 0, kpi
    assert out.payload["kpis"]["par_30"]["value"] is None
    assert out.payload["kpis"]["outstanding_balance"]["value"] == dec("0.00")
    assert out.payload["kpis"]["active_loans"]["value"] == 0


def test_top10_concentration_with_more_than_ten_customers(
    db_conninfo: str, settings: Settings
) -> None:
    # twelve customers, one current loan each of 1,000 x i (i = 1 .. 12): 78,000 in all;
    # the ten largest hold 78,000 - 1,000 - 2,000 = 75,000; the largest 12,000
    with Portfolio(db_conninfo) as book:
        for i in range(1, 13):
            book.loan(
                f"T{i:02d}",
                customer_id=f"K{i:02d}",
                disbursed=date(2025, 6, 1),
                principal=f"{1000 * i}.00",
                schedule=[(date(2025, 7, 31), f"{1000 * i}.00")],
            )
    rows = export_kpi(settings).rows
    assert rows["top10_concentration"]["value"] == ratio(75000, 78000)
    assert rows["top10_concentration"]["numerator"] == 75000
    assert rows["largest_customer_share"]["value"] == ratio(12000, 78000)
    assert rows["active_customers"]["value"] == 12


def test_kpi_definitions_lists_the_catalogue(cli: CliRunner) -> None:
    result = invoke(cli, "kpi", "definitions", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [k["kpi"] for k in payload["kpis"]] == KPI_KEYS
    par_30 = next(k for k in payload["kpis"] if k["kpi"] == "par_30")
    assert par_30["unit"] == "ratio"
    assert par_30["definition_version"] == 1
    assert par_30["thresholds"] == {"direction": "lower_is_better", "green": 0.05, "amber": 0.08}
    assert ">= 30" in par_30["formula"]
    balance = next(k for k in payload["kpis"] if k["kpi"] == "outstanding_balance")
    assert balance["thresholds"] is None
    text = invoke(cli, "kpi", "definitions")
    assert text.exit_code == 0
    assert "yield_ltm" in text.stdout and "green >= 0.3" in text.stdout


@pytest.fixture
def restore_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--config` sets a class attribute of Settings; put it back so later tests' Settings()
    do not read this test's file."""
    monkeypatch.setattr(Settings, "_config_file", None)


@pytest.mark.usefixtures("restore_config_file")
def test_kpi_definitions_follow_the_configuration(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "kpi.toml"
    config.write_text(
        "[dpd]\npar_thresholds = [15, 45]\nnpl_threshold_days = 120\n"
        "[kpi.thresholds.par_15]\ndirection = 'lower_is_better'\ngreen = 0.1\namber = 0.2\n"
    )
    result = invoke(cli, "--config", str(config), "kpi", "definitions", "--json")
    assert result.exit_code == 0, result.stderr
    kpis = {k["kpi"]: k for k in json.loads(result.stdout)["kpis"]}
    assert {"par_15", "par_15_amount", "par_45", "par_45_amount"} <= set(kpis)
    assert "par_30" not in kpis
    assert kpis["par_15"]["thresholds"]["green"] == 0.1
    assert ">= 120" in kpis["npl_ratio"]["formula"]


@pytest.mark.usefixtures("restore_config_file")
def test_bad_threshold_configuration_exits_2(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        "[kpi.thresholds.par_30]\ndirection = 'lower_is_better'\ngreen = 0.2\namber = 0.1\n"
    )
    result = invoke(cli, "--config", str(config), "kpi", "definitions")
    assert result.exit_code == 2
    assert "amber must be at or above green" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
