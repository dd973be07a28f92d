"""The kpi dataset against the KPI definitions (docs/domain.md, version 2), worked out by hand on
the June 2025 book.

The book is described in tests/portfolio.py (``june_book``; ``credit_risk_loans`` adds L17 to
L19). Every expected figure below is computed by hand in the comments from that table; the test
only does the final division (``ratio``), never calls the code under test for an expectation.
D = 2025-06-30, so MTD = 2025-06-01..06-30 and LTM = (2024-06-30, 2025-06-30]; the LTM average
outstanding is the mean over the 13 month-ends 2024-06-30 .. 2025-06-30.

The state of each loan at D (days past due = D - oldest unpaid due date):
  L1 10,000 current        L2 3,000 (5,000 - 2,000) dpd 30 (due 05-31)
  L3 8,000 dpd 76 (04-15)  L4 3,000 (4,000 - 1,000) dpd 141 (02-09)
  L5 2,000 dpd 180 (01-01): not written off (180 is not > 180)
  L6 written off on 2025-04-30 (due 2024-10-31 + 181: days past due exceeded 180), gross
     write-off 3,000 - 500 = 2,500
  L7 written off by its written_off_date 2024-06-15, gross 1,500
  L8 and L11 repaid; L9 7,000 dpd 9 (06-21; its payment of 07-02 is after D)
  L10 6,000 current (installment of 06-14 paid on time); L12 disbursed after D: out of scope
Active loans: L1, L2, L3, L4, L5, L9, L10.

Defaults (days past due reached 90, the default threshold; or written off while not in default):
  L6 on 2024-10-31 + 90 = 2025-01-29 (30 days to 11-30, 61 to 12-31, 90 to 01-29), owing 2,500
  L5 on 2025-01-01 + 90 = 2025-04-01 (30 to 01-31, 58 to 02-28, 89 to 03-31), owing 2,000
  L4 on 2025-02-09 + 90 = 2025-05-10 (19 to 02-28, 50 to 03-31, 80 to 04-30), owing 3,000
  L7 on its write-off date 2024-06-15 (its installment of 2024-03-31 was 76 days late the day
     before: not in default), owing 1,500: before the LTM window
  L3 would reach 90 days on 07-14, L2 on 08-29: after D
Month-end balances (active outstanding): 2024-06-30 .. 09-30: 0 (L7 written off 06-15);
10-31 3,000 (L6); 11-30 4,500 (L6 2,500 + L5 2,000); 12-31 4,500; 2025-01-31 8,500 (+ L4
4,000); 02-28 7,500 (L4 3,000); 03-31 15,500 (+ L3 8,000); 04-30 13,000 (L6 written off, L8
repaid); 05-31 27,000 (+ L2 5,000 + L10 9,000); 06-30 39,000. Sum 122,500: the LTM average is
122,500 / 13.
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
from portfolio import JUNE_END, Portfolio, credit_risk_loans, june_book
from tests.conftest import invoke, read_parquet_export

D = JUNE_END
TEN = Decimal("1E-10")
KPI_KEYS = [
    "outstanding_balance", "active_loans", "active_customers", "disbursed_mtd",
    "disbursed_ltm", "collections_mtd", "par_7", "par_7_amount", "par_30", "par_30_amount",
    "par_60", "par_60_amount", "par_90", "par_90_amount", "npl_ratio", "customer_par_30",
    "customer_par_90", "par30_top10_share", "default_rate_count", "default_rate_balance",
    "written_off_ltm", "recoveries_ltm", "net_credit_loss_ltm", "net_loss_rate_ltm",
    "collection_rate_mtd", "repaid_on_time_ltm", "repaid_within_30d_ltm", "weighted_apr",
    "weighted_fee_rate", "weighted_term_days", "average_ticket_ltm", "top10_concentration",
    "largest_customer_share", "revenue_mtd", "revenue_ltm", "yield_ltm",
    "risk_adjusted_yield_ltm",
]  # fmt: skip
# the dashboard's keys of schema version 1, all kept in version 2
VERSION_1_KEYS = [
    "outstanding_balance", "active_loans", "active_customers", "disbursed_mtd",
    "disbursed_ltm", "collections_mtd", "par_7", "par_7_amount", "par_30", "par_30_amount",
    "par_60", "par_60_amount", "par_90", "par_90_amount", "npl_ratio", "default_rate_count",
    "default_rate_balance", "written_off_ltm", "collection_rate_mtd", "weighted_apr",
    "weighted_fee_rate", "weighted_term_days", "average_ticket_ltm", "top10_concentration",
    "largest_customer_share", "revenue_mtd", "revenue_ltm", "yield_ltm",
]  # fmt: skip
# the definitions version each KPI's meaning comes from: version 1 for the flows whose
# definition did not change; 2 for everything on active loans (settled cents are not active),
# the flow-based defaults, frozen write-offs, the 13-month-end average and the new KPIs
VERSION_1 = {
    "disbursed_mtd", "disbursed_ltm", "collections_mtd", "collection_rate_mtd",
    "average_ticket_ltm", "revenue_mtd", "revenue_ltm",
}  # fmt: skip
AVERAGE = Decimal(122500) / 13  # the LTM average outstanding of the June book


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
    # a customer's days past due is the most of its active loans': C1 30 (L2; L1 current:
    # all of C1's 13,000), C2 76 (L3; L10 current: 14,000), C3 180 (5,000), C5 9 (7,000)
    "customer_par_30": (ratio(32000, 39000), dec(32000), dec(39000)),
    "customer_par_90": (ratio(5000, 39000), dec(5000), dec(39000)),
    # PAR30 amount by customer: C1 3,000 (L2), C2 8,000 (L3), C3 5,000 (L4 + L5): three
    # customers, all of the 16,000 in the top 10
    "par30_top10_share": (dec(1), dec(16000), dec(16000)),
    # defaults in LTM: L6 (2,500), L5 (2,000), L4 (3,000); L7's was in 2024-06. Loans active at
    # a month-end of the window, disbursed in it or defaulted in it: the ten disbursed after
    # 2024-06-30 (L1 .. L6, L8 .. L11); L7 was written off before the first month-end
    "default_rate_count": (ratio(3, 10), dec(3), dec(10)),
    "default_rate_balance": (ratio(7500 * 13, 122500), dec(7500), AVERAGE),
    # L6: written off 2025-04-30, in LTM: gross 2,500. L7 (2024-06-15): before the window
    "written_off_ltm": (dec("2500.00"), None, None),
    # no payment on a written-off loan (L6's 500 came on 2024-11-15, before its write-off)
    "recoveries_ltm": (dec("0.00"), None, None),
    "net_credit_loss_ltm": (dec("2500.00"), None, None),
    "net_loss_rate_ltm": (ratio(2500 * 13, 122500), dec(2500), AVERAGE),
    # due in June, all components: L10 3,000 + 90 + 11.70 tax; L11 2,500 + 50 + 5 fee +
    # 6.50 tax; L9 7,000 + 100 = 3,101.70 + 2,561.50 + 7,100.00 = 12,763.20
    "collection_rate_mtd": (ratio("7766.85", "12763.20"), dec("7766.85"), dec("12763.20")),
    # principal due in LTM, and paid by the due date: L6 3,000 (0), L5 2,000 (0), L4 4,000
    # (1,000 on the due date), L3 8,000 (0), L8 6,000 (6,000 three days early), L2 5,000 (0:
    # paid 06-05), L10's first 3,000 (3,000 on the day), L11 2,500 (2,500), L9 7,000 (0: paid
    # 07-02): 40,500 due, 12,500 on time
    "repaid_on_time_ltm": (ratio(12500, 40500), dec(12500), dec(40500)),
    # due on or before 05-31 (due + 30 <= D): L6 (500 paid by 11-30), L5 (0), L4 (1,000 by
    # 03-11), L3 (0), L8 (6,000), L2 (2,000 by 06-30): 28,000 due, 9,500 within 30 days
    "repaid_within_30d_ltm": (ratio(9500, 28000), dec(9500), dec(28000)),
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
    # revenue_ltm / the LTM average (13 month-ends, 122,500 / 13)
    "yield_ltm": (ratio(453 * 13, 122500), dec(453), AVERAGE),
    # (453 - 2,500 net credit loss) / the LTM average: negative
    "risk_adjusted_yield_ltm": (ratio(-2047 * 13, 122500), dec(-2047), AVERAGE),
}
UNITS = {
    "active_loans": "count", "active_customers": "count", "weighted_term_days": "days",
    **{k: "usd" for k in ("outstanding_balance", "disbursed_mtd", "disbursed_ltm",
                          "collections_mtd", "written_off_ltm", "average_ticket_ltm",
                          "revenue_mtd", "revenue_ltm", "par_7_amount", "par_30_amount",
                          "par_60_amount", "par_90_amount", "recoveries_ltm",
                          "net_credit_loss_ltm")},
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
        assert row["definition_version"] == (1 if kpi in VERSION_1 else 2), kpi
        if numerator is not None:
            assert row["numerator"] == numerator, kpi
            assert row["denominator"] == denominator.quantize(TEN, ROUND_HALF_UP), kpi
        else:
            assert row["numerator"] is None and row["denominator"] is None, kpi


def test_credit_risk_kpis_with_a_late_repayment_cents_and_a_recovery(
    db_conninfo: str, settings: Settings
) -> None:
    june_book(db_conninfo)
    credit_risk_loans(db_conninfo)
    rows = export_kpi(settings).rows

    def value(kpi: str) -> Any:
        return rows[kpi]["value"]

    # none of L17 (repaid, written off), L18 (0.01 left: settled) and L19 (written off) is
    # active: the book at D is the June book's
    assert (value("outstanding_balance"), value("active_loans")) == (dec(39000), 7)
    assert value("active_customers") == 4
    # written off in LTM: L6 2,500; L17 on 2025-01-28 with 2,000 (nothing paid before);
    # L19 on its written_off_date 2024-12-15 with 4,000 - 1,000 = 3,000
    assert value("written_off_ltm") == dec("7500.00")
    # recoveries: L17's 2,000 + 60 on 2025-02-16 and L19's 500 + 40 on 2025-03-10
    assert value("recoveries_ltm") == dec("2600.00")
    assert value("net_credit_loss_ltm") == dec("4900.00")
    # month-ends: 2024-06-30 0; 07-31 2,000 (L17); 08-31 6,000 (+ L19 4,000, due that day);
    # 09-30 5,000 (L19 paid 1,000); 10-31 8,000 (+ L6 3,000); 11-30 9,500 (L6 2,500 + L5
    # 2,000); 12-31 6,500 (L19 written off); 2025-01-31 8,500 (L17 written off); 02-28 7,500;
    # 03-31 15,500; 04-30 13,000; 05-31 27,000 (L18 settled that day); 06-30 39,000:
    # 147,500 / 13
    average = Decimal(147500) / 13
    assert value("net_loss_rate_ltm") == ratio(4900 * 13, 147500)
    # revenue: 453 + L17 60 + L18 30 + L19 20 + 40 = 603
    assert value("revenue_ltm") == dec("603.00")
    assert value("yield_ltm") == ratio(603 * 13, 147500)
    assert value("risk_adjusted_yield_ltm") == ratio(-4297 * 13, 147500)
    assert rows["risk_adjusted_yield_ltm"]["denominator"] == average.quantize(TEN, ROUND_HALF_UP)
    # defaults: L6, L5, L4 and L17 (2024-07-31 + 90 = 2024-10-29, owing 2,000), L19
    # (2024-08-31 + 90 = 2024-11-29, owing 3,000; before its write-off): 5 of the 13 loans
    # disbursed in the window; 2,500 + 2,000 + 3,000 + 2,000 + 3,000 = 12,500
    assert value("default_rate_count") == ratio(5, 13)
    assert value("default_rate_balance") == ratio(12500 * 13, 147500)
    # on time: + L17 2,000 due (0 paid by 2024-07-31), L18 1,500 (1,499.99 on the due date),
    # L19 4,000 (0): 13,999.99 of 48,000; within 30 days: + L17 (0 by 08-30), L18 (1,499.99
    # by 06-30), L19 (1,000 by 09-30): 11,999.99 of 35,500
    assert value("repaid_on_time_ltm") == ratio("13999.99", 48000)
    assert value("repaid_within_30d_ltm") == ratio("11999.99", 35500)
    # disbursed in LTM: 56,500 + 2,000 + 1,500 + 4,000 over 13 loans
    assert value("disbursed_ltm") == dec("64000.00")
    assert value("average_ticket_ltm") == ratio(64000, 13)  # ten decimals in the table


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
    # par_30 0.41 > 0.08, collection_rate 0.61 < 0.85, yield 0.048 < 0.20, customer_par_30
    # 0.82 > 0.12, par30_top10_share 1 > 0.70, net_loss_rate 0.27 > 0.04, repaid_on_time
    # 0.31 < 0.50, repaid_within_30d 0.34 < 0.85, risk-adjusted yield below 0
    for kpi in ("par_7", "par_30", "par_60", "par_90", "npl_ratio", "default_rate_count",
                "default_rate_balance", "collection_rate_mtd", "top10_concentration",
                "largest_customer_share", "yield_ltm", "customer_par_30", "customer_par_90",
                "par30_top10_share", "net_loss_rate_ltm", "repaid_on_time_ltm",
                "repaid_within_30d_ltm", "risk_adjusted_yield_ltm"):  # fmt: skip
        assert rows[kpi]["status"] == "red", kpi
    # no thresholds by default: no status
    for kpi in ("outstanding_balance", "active_loans", "weighted_apr", "revenue_ltm",
                "recoveries_ltm", "net_credit_loss_ltm"):  # fmt: skip
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
        "yield_ltm": KpiThreshold(direction=higher, green=0.04, amber=0.03),  # 0.048: green
        "customer_par_90": KpiThreshold(direction=lower, green=0.1, amber=0.2),  # .128: amber
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
    assert rows["customer_par_90"]["status"] == "amber"
    assert rows["top10_concentration"]["status"] == "green"
    assert rows["active_loans"]["status"] == "amber"
    assert rows["largest_customer_share"]["status"] is None
    assert rows["par_60"]["status"] == "red"  # defaults still apply to the others


def test_dashboard_json_matches_the_table(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    out = export_kpi(settings.model_copy(update={"kpi": KpiPolicy(series_months=0)}))
    payload = out.payload
    assert payload == out.latest  # the stable path holds the newest snapshot
    assert payload["schema_version"] == 2
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
        assert kpis[kpi]["definition_version"] == row["definition_version"]
    # the new KPIs of version 2, and every key of schema version 1 kept
    assert kpis["recoveries_ltm"]["value"] == dec("0.00")
    assert kpis["net_credit_loss_ltm"]["value"] == dec("2500.00")
    assert kpis["customer_par_30"]["value"] == ratio(32000, 39000)
    assert kpis["repaid_on_time_ltm"]["definition_version"] == 2
    assert set(VERSION_1_KEYS) <= set(kpis)
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
    # yield at 05-31: revenue in (2024-05-31, 2025-05-31]: L4 30 + L6 20 + L8 155 = 205; the 13
    # month-ends 2024-05-31 .. 2025-05-31: 1,500 (L7, written off on 06-15), 0 x 4, 3,000,
    # 4,500, 4,500, 8,500, 7,500, 15,500, 13,000, 27,000 = 85,000
    assert series[(months[1], "yield_ltm")]["value"] == ratio(205 * 13, 85000)
    # defaults in (2024-05-31, 2025-05-31]: L7 on its write-off date 2024-06-15 (1,500), L6
    # (2,500), L5 (2,000), L4 (3,000): 9,000 over the 13-month-end average 85,000 / 13
    assert series[(months[1], "default_rate_balance")]["value"] == ratio(9000 * 13, 85000)
    # of the loans active at those month-ends (L7 at 2024-05-31) or disbursed in the window
    # (L6, L5, L4, L3, L8, L2, L10): 4 / 8
    assert series[(months[1], "default_rate_count")]["value"] == ratio(4, 8)
    # written off in the window: L7 (06-15, 1,500) and L6 (2025-04-30, 2,500)
    assert series[(months[1], "written_off_ltm")]["value"] == dec("4000.00")
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
    assert par_30["definition_version"] == 2  # active loans leave settled cents out
    assert par_30["thresholds"] == {"direction": "lower_is_better", "green": 0.05, "amber": 0.08}
    assert ">= 30" in par_30["formula"]
    balance = next(k for k in payload["kpis"] if k["kpi"] == "outstanding_balance")
    assert balance["thresholds"] is None
    # the new KPIs, with their default thresholds
    kpis = {k["kpi"]: k for k in payload["kpis"]}
    assert kpis["net_loss_rate_ltm"]["thresholds"] == {
        "direction": "lower_is_better", "green": 0.02, "amber": 0.04,
    }  # fmt: skip
    assert kpis["repaid_on_time_ltm"]["thresholds"]["direction"] == "higher_is_better"
    assert kpis["recoveries_ltm"]["unit"] == "usd" and kpis["recoveries_ltm"]["thresholds"] is None
    assert "13 most recent month-ends" in kpis["yield_ltm"]["formula"]
    assert "90" in kpis["default_rate_count"]["formula"]  # dpd.default_threshold_days
    assert {k["definition_version"] for k in payload["kpis"]} == {1, 2}
    assert "version 2" in payload["notes"]
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
