"""The analytics bundle, worked out by hand on the June 2025 book (tests/portfolio.py).

D = 2025-06-30 and analytics.months = 3: the months April, May and June 2025 (each ending on
its last day, D's month on D), roll-rate transitions 03-31 -> 04-30 -> 05-31 -> 06-30.

Loan states at the month-ends (outstanding, days past due -> bucket), from the book's table:
  03-31: L6 2,500 dpd 151 (121-180), L5 2,000 dpd 89 (61-90), L4 3,000 dpd 50 (31-60),
         L3 8,000 current
  04-30: L6 written off (dpd 181 > 180; write-off date 2024-10-31 + 181 = 2025-04-30),
         L5 dpd 119 (91-120), L4 80 (61-90), L3 15 (1-30); L8 disbursed 04-01, repaid 04-28
  05-31: L5 150 (121-180), L4 111 (91-120), L3 46 (31-60), L2 5,000 current (due that day),
         L10 9,000 current
  06-30: L5 180 (121-180), L4 141 (121-180), L3 76 (61-90), L2 3,000 dpd 30 (1-30),
         L10 6,000 current, L1 10,000, L9 7,000 dpd 9 (1-30)
Some tests add four loans (``extra_loans``) for the transitions and customer types the book
lacks: a loan paid off, a cure, a customer back after more than 180 days, a recovery.
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pyarrow as pa
import pytest

from abaco_cli.services.exporting import export_dataset
from abaco_cli.settings import AnalyticsPolicy, Settings
from portfolio import JUNE_END, Due, Pay, Portfolio, credit_risk_loans, june_book
from tests.conftest import read_parquet_export

D = JUNE_END
APRIL, MAY, JUNE = date(2025, 4, 1), date(2025, 5, 1), date(2025, 6, 1)


def extra_loans(conninfo: str) -> None:
    """Four loans beside the June book (customers C7, C8, C4 again, C9)."""
    with Portfolio(conninfo) as book:
        # L13 (C7): 4,000 due 05-20, paid 06-10 in full: 1-30 at 05-31, paid off by 06-30
        book.loan(
            "L13",
            customer_id="C7",
            disbursed=date(2025, 4, 20),
            principal="4000.00",
            schedule=[Due(date(2025, 5, 20), "4000.00")],
            payments=[Pay(date(2025, 6, 10), "4000.00")],
        )
        # L14 (C8): 1,000 due 05-01 and 1,000 due 07-01; the first paid 06-15: dpd 30 at
        # 05-31 (1-30), current at 06-30 with 1,000 outstanding: a cure
        book.loan(
            "L14",
            customer_id="C8",
            disbursed=date(2025, 4, 1),
            principal="2000.00",
            schedule=[Due(date(2025, 5, 1), "1000.00"), Due(date(2025, 7, 1), "1000.00")],
            payments=[Pay(date(2025, 6, 15), "1000.00")],
        )
        # L15 (C4): C4's loan before it was L6 on 2024-10-01, 262 days earlier: reactivated
        book.loan(
            "L15",
            customer_id="C4",
            disbursed=date(2025, 6, 20),
            principal="1000.00",
            schedule=[Due(date(2025, 7, 20), "1000.00")],
        )
        # L16 (C9): 1,000 due 2024-12-31, unpaid until 05-10: more than 90 days past due
        # from 2025-04-01 (12-31 + 91), dpd 90 at 03-31 (61-90), 120 at 04-30 (91-120), repaid
        # by 05-31: C9 recovers in May
        book.loan("L16", customer_id="C9", disbursed=date(2024, 12, 1), principal="1000.00",
                  schedule=[Due(date(2024, 12, 31), "1000.00")],
                  payments=[Pay(date(2025, 5, 10), "1000.00")])  # fmt: skip


def export_analytics(
    settings: Settings, as_of: date = D, **policy: Any
) -> dict[str, list[dict[str, Any]]]:
    configured = settings.model_copy(
        update={"analytics": AnalyticsPolicy(**{"months": 3, **policy})}
    )
    result = export_dataset(configured, "analytics", as_of, ["parquet"])
    assert {r.table for r in result.files} == {
        "portfolio_overview", "vintages", "roll_rates", "concentration", "customer_types",
        "repayment_curve", "provisions",
    }  # fmt: skip
    return {
        r.table: read_parquet_export(configured.exports_dir / r.path).to_pylist()
        for r in result.files
    }


def money(text: str | int) -> Decimal:
    return Decimal(text).quantize(Decimal("0.01"))


def ratio(numerator: str | int, denominator: str | int) -> Decimal:
    """A fraction as the new ratio columns hold it: numeric(18,10), rounded half up."""
    return (Decimal(numerator) / Decimal(denominator)).quantize(
        Decimal("1E-10"), rounding=ROUND_HALF_UP
    )


def approx(value: float) -> Any:
    """A ratio worked out by hand, against the exact decimal(18,10) the export holds: equal to
    the tenth decimal place."""
    return pytest.approx(Decimal(repr(value)), abs=Decimal("1E-10"))


def test_portfolio_overview(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    rows = export_analytics(settings)["portfolio_overview"]
    assert [(r["month"], r["period_end"], r["is_month_end"]) for r in rows] == [
        (APRIL, date(2025, 4, 30), True),
        (MAY, date(2025, 5, 31), True),
        (JUNE, date(2025, 6, 30), True),
    ]
    april, may, june = rows
    # April: L8 disbursed (6,000, C5) and repaid on 04-28: 6,000 + 150 + 10 fee - 5 rebates
    assert (april["loans_disbursed"], april["disbursed_amount"]) == (1, money(6000))
    assert april["customers_disbursed"] == 1
    assert april["collections"] == money("6155")
    assert april["revenue"] == money(155)  # 150 + 10 - 5
    # due in April: L3's installment of 04-15, 8,000 + 300 interest
    assert april["scheduled_due"] == money(8300)
    assert april["collection_rate"] == approx(6155 / 8300)
    # stocks at 04-30: L5 2,000 (119), L4 3,000 (80), L3 8,000 (15); customers C3, C2
    assert april["outstanding_balance"] == money(13000)
    assert (april["active_loans"], april["active_customers"]) == (3, 2)
    assert april["par_30_amount"] == money(5000)  # L5 + L4
    assert april["par_30"] == approx(5000 / 13000)
    assert april["par_90_amount"] == money(2000)  # L5
    assert april["npl_amount"] == money(2000)
    assert april["npl_ratio"] == approx(2000 / 13000)
    # L6 written off on 04-30 with 2,500 left
    assert april["written_off_amount"] == money(2500)
    # (2,000 x .50 + 3,000 x .40 + 8,000 x .30) / 13,000
    assert april["weighted_apr"] == approx(4600 / 13000)

    # May: L2 (5,000, C1) and L10 (9,000, C2); nothing paid in May; due: L8 6,000 + 150
    # (05-01) and L2 5,000 + 200 (05-31)
    assert (may["loans_disbursed"], may["disbursed_amount"]) == (2, money(14000))
    assert may["customers_disbursed"] == 2
    assert (may["collections"], may["revenue"]) == (money(0), money(0))
    assert may["scheduled_due"] == money(11350)
    assert may["collection_rate"] == approx(0.0)
    assert may["outstanding_balance"] == money(27000)
    assert (may["active_loans"], may["active_customers"]) == (5, 3)
    assert may["par_30_amount"] == money(13000)  # L5, L4, L3
    assert may["par_90_amount"] == money(5000)  # L5, L4
    assert may["written_off_amount"] == money(0)
    # 4,600 + 5,000 x .48 + 9,000 x .33 = 4,600 + 2,400 + 2,970
    assert may["weighted_apr"] == approx(9970 / 27000)

    # June: as the kpi snapshot (test_kpi.py)
    assert (june["loans_disbursed"], june["disbursed_amount"]) == (3, money(19500))
    assert june["customers_disbursed"] == 2  # C1 (L1, L11), C5 (L9)
    assert june["collections"] == money("7766.85")
    assert june["revenue"] == money(248)
    assert june["scheduled_due"] == money("12763.20")
    assert june["outstanding_balance"] == money(39000)
    assert (june["active_loans"], june["active_customers"]) == (7, 4)
    assert june["par_30_amount"] == money(16000)
    assert june["par_90"] == approx(5000 / 39000)
    assert june["weighted_apr"] == approx(14560 / 39000)


def test_overview_of_a_month_in_progress(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    rows = export_analytics(settings, date(2025, 6, 20), months=2)["portfolio_overview"]
    assert [(r["month"], r["period_end"], r["is_month_end"]) for r in rows] == [
        (MAY, date(2025, 5, 31), True),
        (JUNE, date(2025, 6, 20), False),
    ]
    june = rows[1]
    # through 06-20: the same disbursements and payments as the whole month (L9 is due 06-21)
    assert june["disbursed_amount"] == money(19500)
    assert june["collections"] == money("7766.85")
    # due through 06-20: L10 3,101.70 + L11 2,561.50 (L9's 7,100 is due 06-21)
    assert june["scheduled_due"] == money("5663.20")
    # at 06-20: L2 dpd 20, L3 66, L4 131, L5 170; L9 not yet due; par 30: L3 + L4 + L5
    assert june["outstanding_balance"] == money(39000)
    assert june["par_30_amount"] == money(13000)


def test_roll_rates_between_month_ends(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    extra_loans(db_conninfo)
    rows = export_analytics(settings)["roll_rates"]
    # 3 transitions x 7 buckets from x (7 buckets + written off + paid off)
    assert len(rows) == 3 * 7 * 9
    assert rows[0]["from_date"] == date(2025, 3, 31) and rows[0]["to_date"] == date(2025, 4, 30)
    states = [(r["to_state_value"], r["to_state"]) for r in rows[:9]]
    assert states == [(-1, "Paid off"), (0, "Current"), (1, "1-30"), (2, "31-60"),
                      (3, "61-90"), (4, "91-120"), (5, "121-180"), (6, "180+"),
                      (7, "Written off")]  # fmt: skip
    moved = {(r["to_date"], r["from_bucket"], r["to_state"]): r for r in rows if r["loans"] > 0}
    m1, m2, m3 = date(2025, 4, 30), date(2025, 5, 31), date(2025, 6, 30)

    def cell(to: date, src: str, dst: str) -> tuple[int, Decimal, Decimal]:
        r = moved[(to, src, dst)]
        return r["loans"], r["from_outstanding"], r["to_balance"]

    assert sorted((k[0], k[1], k[2]) for k in moved) == sorted([
        # 03-31 -> 04-30: L6 written off; L5 and L16 (dpd 90 -> 120) into 91-120; L4; L3
        (m1, "121-180", "Written off"), (m1, "61-90", "91-120"), (m1, "31-60", "61-90"),
        (m1, "Current", "1-30"),
        # 04-30 -> 05-31: L5; L16 repaid 05-10; L4; L3; L13 (dpd 11) and L14 (dpd 30)
        (m2, "91-120", "121-180"), (m2, "91-120", "Paid off"), (m2, "61-90", "91-120"),
        (m2, "1-30", "31-60"), (m2, "Current", "1-30"),
        # 05-31 -> 06-30: L5 stays; L4; L3; L2 (dpd 30); L10 stays current; L13 paid off;
        # L14 cured (its first installment paid 06-15)
        (m3, "121-180", "121-180"), (m3, "91-120", "121-180"), (m3, "31-60", "61-90"),
        (m3, "Current", "1-30"), (m3, "Current", "Current"), (m3, "1-30", "Paid off"),
        (m3, "1-30", "Current"),
    ])  # fmt: skip
    assert cell(m1, "121-180", "Written off") == (1, money(2500), money(2500))
    assert cell(m1, "61-90", "91-120") == (2, money(3000), money(3000))  # L5 2,000 + L16 1,000
    assert cell(m2, "91-120", "Paid off") == (1, money(1000), money(0))
    assert cell(m2, "Current", "1-30") == (2, money(6000), money(6000))  # L13 4,000, L14 2,000
    assert cell(m3, "Current", "1-30") == (1, money(5000), money(3000))  # L2 paid 2,000
    assert cell(m3, "Current", "Current") == (1, money(9000), money(6000))  # L10
    assert cell(m3, "1-30", "Paid off") == (1, money(4000), money(0))  # L13
    assert cell(m3, "1-30", "Current") == (1, money(2000), money(1000))  # L14

    def rates(to: date, src: str, dst: str) -> tuple[float, float]:
        r = next(
            x for x in rows if (x["to_date"], x["from_bucket"], x["to_state"]) == (to, src, dst)
        )
        return r["loans_rate"], r["balance_rate"]

    # from 1-30 at 05-31: L13 (4,000) and L14 (2,000)
    assert rates(m3, "1-30", "Paid off") == (approx(0.5), approx(4000 / 6000))
    assert rates(m3, "1-30", "Current") == (approx(0.5), approx(2000 / 6000))
    assert rates(m3, "1-30", "31-60") == (approx(0.0), approx(0.0))
    # from Current at 05-31: L2 (5,000) and L10 (9,000)
    assert rates(m3, "Current", "Current") == (approx(0.5), approx(9000 / 14000))
    # a bucket empty at the start: no rate
    assert rates(m3, "180+", "Written off") == (None, None)


def test_concentration_at_the_as_of_date(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    rows = export_analytics(settings, top_customers=2)["concentration"]
    by_dimension: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_dimension.setdefault(r["dimension"], []).append(r)
    assert list(by_dimension) == [
        "customer", "company", "product_type", "risk_band", "segment", "industry",
    ]  # fmt: skip
    # active at D: C2 14,000 (L3 8,000 + L10 6,000), C1 13,000 (L1 10,000 + L2 3,000),
    # C5 7,000, C3 5,000; total 39,000; only the top 2 customers are listed
    customers = by_dimension["customer"]
    assert [(r["rank"], r["key"], r["active_loans"], r["outstanding"]) for r in customers] == [
        (1, "C2", 2, money(14000)),
        (2, "C1", 2, money(13000)),
    ]
    assert customers[0]["share"] == approx(14000 / 39000)
    assert customers[1]["cumulative_share"] == approx(27000 / 39000)
    # HHI over all four customers: (14^2 + 13^2 + 7^2 + 5^2) / 39^2
    assert customers[0]["hhi"] == approx(439 / 1521)
    bands = by_dimension["risk_band"]
    # A: L1 + L3 + L10 = 24,000; B: L2 + L9 = 10,000; C: L4 + L5 = 5,000
    assert [(r["key"], r["outstanding"]) for r in bands] == [
        ("A", money(24000)), ("B", money(10000)), ("C", money(5000)),
    ]  # fmt: skip
    assert bands[2]["cumulative_share"] == approx(1.0)
    assert bands[0]["hhi"] == approx((24**2 + 10**2 + 5**2) / 39**2)
    # segments: Corporate C2 + C5 = 21,000; SME C1 + C3 = 18,000
    assert [(r["key"], r["outstanding"]) for r in by_dimension["segment"]] == [
        ("Corporate", money(21000)), ("SME", money(18000)),
    ]  # fmt: skip
    # industries: Retail C1 + C3 = 18,000; Manufacturing C2 14,000; Logistics C5 7,000
    assert [r["key"] for r in by_dimension["industry"]] == ["Retail", "Manufacturing", "Logistics"]
    company = by_dimension["company"]
    assert [(r["key"], r["share"], r["hhi"]) for r in company] == [("ABT", 1.0, 1.0)]


def test_vintages(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    rows = export_analytics(settings, vintage_months=9)["vintages"]
    cohorts = sorted({r["cohort_month"] for r in rows})
    assert cohorts == [date(2024, 10, 1), date(2024, 11, 1), date(2024, 12, 1)] + [
        date(2025, m, 1) for m in range(1, 7)
    ]
    # a cohort of month c has months on book 0 .. (June 2025 - c): 9 + 8 + ... + 1
    assert len(rows) == 45
    curve = {(r["cohort_month"], r["months_on_book"]): r for r in rows}

    october = [curve[(date(2024, 10, 1), m)] for m in range(9)]
    # L6 (3,000): 500 paid 2024-11-15 (month on book 1); written off at D with 2,500, its
    # write-off date 2025-04-30 falls in month on book 6
    assert [r["observation_date"] for r in october[:2]] == [date(2024, 10, 31), date(2024, 11, 30)]
    assert october[8]["observation_date"] == D
    assert [r["principal_collected"] for r in october] == [money(0)] + [money(500)] * 8
    assert [r["written_off_amount"] for r in october] == [money(0)] * 6 + [money(2500)] * 3
    assert october[8]["principal_collected_pct"] == approx(500 / 3000)
    assert october[8]["written_off_pct"] == approx(2500 / 3000)
    assert (october[0]["cohort_loans"], october[0]["cohort_disbursed"]) == (1, money(3000))

    # December 2024: no loans: zeros, no percentages
    december = curve[(date(2024, 12, 1), 0)]
    assert (december["cohort_loans"], december["cohort_disbursed"]) == (0, money(0))
    assert december["principal_collected_pct"] is None

    # January 2025 (L4, 4,000): 1,000 paid 02-09; not written off (dpd 141)
    january = [curve[(date(2025, 1, 1), m)] for m in range(6)]
    assert [r["principal_collected"] for r in january] == [money(0)] + [money(1000)] * 5
    assert january[5]["principal_collected_pct"] == approx(0.25)
    assert january[5]["written_off_pct"] == approx(0.0)
    # April (L8 6,000, repaid 04-28): all collected in its own month
    assert curve[(date(2025, 4, 1), 0)]["principal_collected_pct"] == approx(1.0)
    # May (L2 5,000 + L10 9,000): 2,000 + 3,000 paid in June
    may = [curve[(date(2025, 5, 1), m)] for m in range(2)]
    assert [r["principal_collected"] for r in may] == [money(0), money(5000)]
    assert may[1]["principal_collected_pct"] == approx(5000 / 14000)
    # June (L1, L9, L11 = 19,500): L11 paid 2,500; L9's payment of 07-02 is after D
    june = curve[(date(2025, 6, 1), 0)]
    assert june["principal_collected"] == money(2500)
    assert june["cohort_disbursed"] == money(19500)


def test_customer_types(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    extra_loans(db_conninfo)
    rows = export_analytics(settings)["customer_types"]
    assert [(r["month"], r["customer_type"]) for r in rows] == [
        (month, kind)
        for month in (APRIL, MAY, JUNE)
        for kind in ("new", "recurrent", "reactivated", "recovered")
    ]
    got = {
        (r["month"], r["customer_type"]): (
            r["customers"], r["loans_disbursed"], r["disbursed_amount"], r["outstanding"]
        )
        for r in rows
    }  # fmt: skip
    nothing = (0, 0, money(0), money(0))
    # April: first loans of C5 (L8 6,000, repaid), C7 (L13 4,000) and C8 (L14 2,000);
    # outstanding at 04-30: 0 + 4,000 + 2,000
    assert got[(APRIL, "new")] == (3, 3, money(12000), money(6000))
    assert got[(APRIL, "recurrent")] == nothing
    assert got[(APRIL, "reactivated")] == nothing
    # C9 is over 90 days past due since 04-01 but still 120 days late at 04-30: not yet
    assert got[(APRIL, "recovered")] == nothing
    # May: C1's first loan (L2 5,000); C2's L10 (9,000) 75 days after L3 (03-01)
    assert got[(MAY, "new")] == (1, 1, money(5000), money(5000))
    assert got[(MAY, "recurrent")] == (1, 1, money(9000), money(17000))  # L3 8,000 + L10 9,000
    assert got[(MAY, "reactivated")] == nothing
    # C9 repaid on 05-10: once more than 90 days past due, nothing late at 05-31
    assert got[(MAY, "recovered")] == (1, 0, money(0), money(0))
    # June: C1 (L11 06-02, 32 days after L2; then L1) and C5 (L9 06-01, 61 days after L8);
    # outstanding at 06-30: C1 10,000 + 3,000, C5 7,000
    assert got[(JUNE, "new")] == nothing  # C6's loan is disbursed after D
    assert got[(JUNE, "recurrent")] == (2, 3, money(19500), money(20000))
    # C4: L15 on 06-20, 262 days after L6 (2024-10-01)
    assert got[(JUNE, "reactivated")] == (1, 1, money(1000), money(1000))
    # C9 recovered in May, not again in June
    assert got[(JUNE, "recovered")] == nothing


def test_empty_book_gives_valid_tables(settings: Settings) -> None:
    tables = export_analytics(settings)
    overview = tables["portfolio_overview"]
    assert len(overview) == 3
    assert all(r["outstanding_balance"] == money(0) for r in overview)
    assert all(r["par_30"] is None and r["collection_rate"] is None for r in overview)
    assert len(tables["roll_rates"]) == 3 * 7 * 9
    assert all(r["loans_rate"] is None for r in tables["roll_rates"])
    assert tables["concentration"] == []
    assert len(tables["customer_types"]) == 12
    assert all(r["cohort_loans"] == 0 for r in tables["vintages"])


def test_money_columns_are_exact(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    result = export_dataset(settings, "analytics", D, ["parquet"])
    for record in result.files:
        table = read_parquet_export(settings.exports_dir / record.path)
        for name in ("outstanding_balance", "disbursed_amount", "from_outstanding",
                     "outstanding", "principal_collected"):  # fmt: skip
            if name in table.schema.names:
                assert table.schema.field(name).type == pa.decimal128(18, 2), (record.table, name)


def settle_and_write_off_loans(conninfo: str) -> None:
    """Two loans for the version 2 roll rates and overview (customers C13, C14)."""
    with Portfolio(conninfo) as book:
        # L20 (C13): 1,000 due 05-20, 999.99 paid 06-10: 1-30 (dpd 11) at 05-31, 0.01 left at
        # 06-30: settled, paid off (version 1 counted it a cure to Current)
        book.loan(
            "L20",
            customer_id="C13",
            disbursed=date(2025, 5, 1),
            principal="1000.00",
            schedule=[Due(date(2025, 5, 20), "1000.00")],
            payments=[Pay(date(2025, 6, 10), "999.99")],
        )
        # L21 (C14): 1,000 due 2024-11-30, never paid until 2025-05-31 (1,000 + 5): 121 days
        # late at 03-31 (31 to 12-31, 62 to 01-31, 90 to 02-28, 121 to 03-31), 151 at 04-30,
        # written off on 2025-05-30 (day 181), repaid the next day: a recovery, and it stays
        # written off (version 1 counted it paid off)
        book.loan(
            "L21",
            customer_id="C14",
            disbursed=date(2024, 11, 1),
            principal="1000.00",
            schedule=[Due(date(2024, 11, 30), "1000.00")],
            payments=[Pay(date(2025, 5, 31), "1000.00", interest="5.00")],
        )


def test_vintages_of_version_2(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    credit_risk_loans(db_conninfo)
    rows = export_analytics(settings, vintage_months=12)["vintages"]
    curve = {(r["cohort_month"], r["months_on_book"]): r for r in rows}

    def column(cohort: date, name: str, months: int) -> list[Any]:
        return [curve[(cohort, m)][name] for m in range(months)]

    # July 2024 (L17, 2,000, due 2024-07-31): 30 days late on 2024-08-30 (month on book 1),
    # 90 on 2024-10-29 (3), written off 2025-01-28 (6) with 2,000, repaid 2025-02-16 (7):
    # collected 2,000 and recovered 2,000 + 60 interest, so the net loss falls to -60
    july = date(2024, 7, 1)
    assert column(july, "ever_30_pct", 12) == [ratio(0, 1)] + [ratio(1, 1)] * 11
    assert column(july, "ever_90_pct", 12) == [ratio(0, 1)] * 3 + [ratio(1, 1)] * 9
    assert column(july, "written_off_amount", 12) == [money(0)] * 6 + [money(2000)] * 6
    assert column(july, "recoveries", 12) == [money(0)] * 7 + [money(2060)] * 5
    assert column(july, "net_loss", 12) == [money(0)] * 6 + [money(2000)] + [money(-60)] * 5
    assert curve[(july, 11)]["net_loss_pct"] == ratio(-60, 2000)
    assert column(july, "principal_collected", 12) == [money(0)] * 7 + [money(2000)] * 5
    # August 2024 (L19, 4,000, due 08-31, 1,000 paid 09-15): 3,000 still due on 09-30 (30
    # days: month on book 1); 90 days on 2024-11-29 (3); written off by date 2024-12-15 (4)
    # with 4,000 - 1,000; 500 + 40 recovered on 2025-03-10 (7)
    august = date(2024, 8, 1)
    assert column(august, "ever_30_amount", 11) == [money(0)] + [money(4000)] * 10
    assert column(august, "ever_90_amount", 11) == [money(0)] * 3 + [money(4000)] * 8
    assert column(august, "written_off_amount", 11) == [money(0)] * 4 + [money(3000)] * 7
    assert column(august, "recoveries", 11) == [money(0)] * 7 + [money(540)] * 4
    assert column(august, "net_loss", 11) == (
        [money(0)] * 4 + [money(3000)] * 3 + [money(2460)] * 4
    )
    assert column(august, "principal_collected", 11) == (
        [money(0)] + [money(1000)] * 6 + [money(1500)] * 4
    )
    assert curve[(august, 10)]["written_off_pct"] == pytest.approx(3000 / 4000)
    # November 2024 (L5, 2,000, due 2025-01-01, nothing paid): 30 days on 01-31 (2), 90 on
    # 04-01 (5); not written off (180 days at D)
    november = date(2024, 11, 1)
    assert column(november, "ever_30_amount", 8) == [money(0)] * 2 + [money(2000)] * 6
    assert column(november, "ever_90_amount", 8) == [money(0)] * 5 + [money(2000)] * 3
    assert curve[(november, 7)]["net_loss"] == money(0)
    # March 2025 (L3, 8,000, due 04-15): 30 days on 05-15 (2); 90 only on 07-14, after D
    march = date(2025, 3, 1)
    assert column(march, "ever_30_amount", 4) == [money(0)] * 2 + [money(8000)] * 2
    assert column(march, "ever_90_amount", 4) == [money(0)] * 4
    # May 2025 (L2 5,000, L10 9,000, L18 1,500 = 15,500): L2 is 30 days late on D itself
    # (5,000 due 05-31, 2,000 paid); L18's 0.01 is within the tolerance: never late
    may = date(2025, 5, 1)
    assert column(may, "ever_30_pct", 2) == [ratio(0, 1), ratio(5000, 15500)]
    assert curve[(may, 1)]["ever_90_pct"] == ratio(0, 1)
    # a cohort without loans: no shares
    assert curve[(date(2024, 9, 1), 0)]["ever_30_pct"] is None


def test_roll_rates_and_overview_of_version_2(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    credit_risk_loans(db_conninfo)
    settle_and_write_off_loans(db_conninfo)
    tables = export_analytics(settings)
    moved = {
        (r["to_date"], r["from_bucket"], r["to_state"]): r
        for r in tables["roll_rates"]
        if r["loans"] > 0
    }
    m1, m2, m3 = date(2025, 4, 30), date(2025, 5, 31), date(2025, 6, 30)
    # L21: 121-180 at 03-31 and 04-30; written off 05-30 and repaid 05-31: written off at its
    # gross write-off, 1,000
    assert (
        moved[(m1, "121-180", "121-180")]["loans"],
        moved[(m2, "121-180", "Written off")]["to_balance"],
    ) == (1, money(1000))
    assert moved[(m2, "121-180", "Written off")]["from_outstanding"] == money(1000)
    # L20: 1-30 at 05-31 (the only loan there), 0.01 left at 06-30: paid off, not a cure
    paid_off = moved[(m3, "1-30", "Paid off")]
    assert (paid_off["loans"], paid_off["from_outstanding"], paid_off["to_balance"]) == (
        1,
        money(1000),
        money(0),
    )
    assert paid_off["loans_rate"] == approx(1.0)
    assert (m3, "1-30", "Current") not in moved
    # every from-bucket with loans: its rates add up to 1
    for row in tables["roll_rates"]:
        if row["loans_rate"] is not None:
            same = [
                r for r in tables["roll_rates"]
                if (r["to_date"], r["from_bucket"]) == (row["to_date"], row["from_bucket"])
            ]  # fmt: skip
            assert sum(r["loans_rate"] for r in same) == approx(1.0)

    april, may, june = tables["portfolio_overview"]
    # gross write-offs by write-off month: April L6 2,500; May L21 1,000. Recoveries: May
    # L21's 1,000 + 5 (L17's and L19's came in February and March)
    assert [m["written_off_amount"] for m in (april, may, june)] == [
        money(2500), money(1000), money(0),
    ]  # fmt: skip
    assert [m["recoveries"] for m in (april, may, june)] == [money(0), money(1005), money(0)]
    # stocks: 04-30 the June book's 13,000 + L21 1,000 (dpd 151); 05-31 27,000 + L20 1,000
    # (L18 settled, L21 written off); 06-30 39,000 (L20 settled with its cent)
    assert (april["outstanding_balance"], april["active_loans"]) == (money(14000), 4)
    assert april["par_30_amount"] == money(6000)  # L5 2,000 + L4 3,000 + L21 1,000
    assert (may["outstanding_balance"], may["active_loans"]) == (money(28000), 6)
    assert (june["outstanding_balance"], june["active_loans"]) == (money(39000), 7)
    assert june["active_customers"] == 4


def repayment_loan(conninfo: str) -> None:
    with Portfolio(conninfo) as book:
        # L22 (C15): 2 x 1,000 due 05-10 and 06-10; 1,500 paid 05-10 (the first installment
        # and 500 of the second, early), 500 paid 06-20 (the rest, ten days late)
        book.loan(
            "L22",
            customer_id="C15",
            disbursed=date(2025, 4, 10),
            principal="2000.00",
            schedule=[Due(date(2025, 5, 10), "1000.00"), Due(date(2025, 6, 10), "1000.00")],
            payments=[Pay(date(2025, 5, 10), "1500.00"), Pay(date(2025, 6, 20), "500.00")],
        )


def test_repayment_curve(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    credit_risk_loans(db_conninfo)
    repayment_loan(db_conninfo)
    rows = export_analytics(settings)["repayment_curve"]
    # a row per month and k with the month's first day + k on or before D: April 0 .. 90
    # (04-01 + 90 = 06-30), May 0 .. 60, June 0 .. 15
    got = {(r["due_month"], r["days_after_due"]): r for r in rows}
    assert sorted(got) == sorted(
        [(APRIL, k) for k in (0, 7, 15, 30, 60, 90)]
        + [(MAY, k) for k in (0, 7, 15, 30, 60)]
        + [(JUNE, k) for k in (0, 7, 15)]
    )

    def cell(month: date, k: int) -> tuple[Any, ...]:
        r = got[(month, k)]
        return (
            r["principal_due"],
            r["principal_repaid"],
            r["loans"],
            r["loans_repaid"],
            r["is_complete"],
        )

    # April: L3's 8,000 due 04-15, never paid; k = 90 reaches 07-14, after D: nothing observed
    for k in (0, 7, 15, 30, 60):
        assert cell(APRIL, k) == (money(8000), money(0), 1, 0, True), k
    assert cell(APRIL, 90) == (money(0), money(0), 0, 0, False)
    assert got[(APRIL, 90)]["repaid_share"] is None
    # May, due date + 0: L8 6,000 (paid 04-28), L2 5,000 (0), L18 1,500 (1,499.99: repaid
    # within the tolerance), L22's first 1,000 (1,000 of the 1,500 paid 05-10)
    assert cell(MAY, 0) == (money(13500), money("8499.99"), 4, 3, True)
    assert got[(MAY, 0)]["repaid_share"] == ratio("8499.99", 13500)
    assert got[(MAY, 0)]["loans_repaid_share"] == ratio(3, 4)
    # + 7, 15, 30 days: L2 has 2,000 by 06-05
    for k in (7, 15, 30):
        assert cell(MAY, k) == (money(13500), money("10499.99"), 4, 3, True), k
    # + 60: only L8 (05-01 + 60 = 06-30) is observed; the month is not complete
    assert cell(MAY, 60) == (money(6000), money(6000), 1, 1, False)
    # June, + 0: L10's first 3,000 (paid on the day), L11 2,500 (on the day), L9 7,000 (paid
    # 07-02, after D), L22's second 1,000: 1,500 paid by 06-10 less the 1,000 of the first
    # installment leaves 500
    assert cell(JUNE, 0) == (money(13500), money(6000), 4, 2, True)
    assert cell(JUNE, 7) == (money(13500), money(6000), 4, 2, False)
    # + 15: L10 (06-29) and L22 (06-25: 2,000 paid, its second installment covered); L11
    # (07-02) and L9 (07-06) fall after D
    assert cell(JUNE, 15) == (money(4000), money(4000), 2, 2, False)


def test_provision_matrix_of_the_june_book(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    rows = export_analytics(settings)["provisions"]
    assert [r["stage"] for r in rows] == [1, 2, 3]
    one, two, three = rows
    assert [(r["min_days_past_due"], r["max_days_past_due"]) for r in rows] == [
        (0, 30), (31, 89), (90, None),
    ]  # fmt: skip
    # history: the month-ends 2023-06-30 .. 2024-06-30; the book starts with L7 (2024-03-01,
    # 1,500 due 03-31, written off by date 2024-06-15, nothing ever paid): 0 days late at
    # 03-31 and 30 at 04-30 (stage 1), 61 at 05-31 (stage 2); written off within 12 months of
    # each, 1,500 lost each time
    assert all(
        (r["history_from"], r["history_to"]) == (date(2023, 6, 30), date(2024, 6, 30)) for r in rows
    )
    assert (one["history_month_ends"], one["history_balance"], one["history_net_loss"]) == (
        2,
        money(3000),
        money(3000),
    )
    assert (two["history_month_ends"], two["history_balance"], two["history_net_loss"]) == (
        1,
        money(1500),
        money(1500),
    )
    assert one["loss_rate"] == ratio(3000, 3000) and two["loss_rate"] == ratio(1500, 1500)
    assert (
        one["loss_rate_note"] == "partial history: the book starts on 2024-03-01, after 2023-06-30"
    )
    # stage 3 never held a balance then: no loss rate, and it says why (never 0)
    assert three["loss_rate"] is None and three["expected_loss"] is None
    assert three["coverage"] is None
    assert three["loss_rate_note"] == (
        "no balance in stage 3 at the month-ends from 2023-06-30 to 2024-06-30"
    )
    # today, by customer days past due: C1 30 (L1 + L2 = 13,000) and C5 9 (L9 7,000) in stage
    # 1; C2 76 (L3 + L10 = 14,000) in stage 2; C3 180 (L4 + L5 = 5,000) in stage 3
    assert (one["loans"], one["customers"], one["exposure"]) == (3, 2, money(20000))
    assert (two["loans"], two["customers"], two["exposure"]) == (2, 1, money(14000))
    assert (three["loans"], three["customers"], three["exposure"]) == (2, 1, money(5000))
    assert (one["expected_loss"], one["coverage"]) == (money(20000), ratio(1, 1))
    assert two["expected_loss"] == money(14000)


def test_provision_matrix_without_history(db_conninfo: str, settings: Settings) -> None:
    june_book(db_conninfo)
    rows = export_analytics(settings, date(2024, 12, 31))["provisions"]
    # the month-ends 2022-12-31 .. 2023-12-31 are all before the book's first loan
    note = (
        "history too short: the book starts on 2024-03-01, after 2023-12-31 (loss rates need "
        "the month-ends from 2022-12-31 to 2023-12-31 and the 12 months after each)"
    )
    assert [(r["loss_rate"], r["expected_loss"], r["loss_rate_note"]) for r in rows] == [
        (None, None, note)
    ] * 3
    # the exposure is still there: at 2024-12-31 L5 2,000 (C3, not yet due) in stage 1, L6
    # 2,500 (C4, 61 days late) in stage 2
    assert [(r["loans"], r["exposure"]) for r in rows] == [
        (1, money(2000)), (1, money(2500)), (0, money(0)),
    ]  # fmt: skip


def provision_book(conninfo: str) -> None:
    """As of 2025-12-31: history at the month-ends 2023-12-31 .. 2024-12-31, exposure today."""
    with Portfolio(conninfo) as book:
        # P1 (K1): 10,000, due 2024-02-29, paid that day: stage 1 at 2023-12-31 and 01-31
        book.loan(
            "P1",
            customer_id="K1",
            disbursed=date(2023, 12, 1),
            principal="10000.00",
            schedule=[Due(date(2024, 2, 29), "10000.00")],
            payments=[Pay(date(2024, 2, 29), "10000.00")],
        )
        # P2 (K2): 4,000 due 2024-01-31, never paid: 0 days at 01-31, 29 at 02-29 (stage 1),
        # 60 at 03-31 (stage 2), 90, 121, 151 at 04-30, 05-31, 06-30 (stage 3); written off
        # 2024-07-30 (day 181) with 4,000; 1,000 recovered 2025-03-01: net loss 3,000
        book.loan(
            "P2",
            customer_id="K2",
            disbursed=date(2024, 1, 1),
            principal="4000.00",
            schedule=[Due(date(2024, 1, 31), "4000.00")],
            payments=[Pay(date(2025, 3, 1), "1000.00")],
        )
        # P3 (K3): 2,000 due 2024-10-31, repaid 2025-01-15: 0 and 30 days at 10-31 and 11-30
        # (stage 1), 61 at 12-31 (stage 2); never written off
        book.loan(
            "P3",
            customer_id="K3",
            disbursed=date(2024, 10, 1),
            principal="2000.00",
            schedule=[Due(date(2024, 10, 31), "2000.00")],
            payments=[Pay(date(2025, 1, 15), "2000.00")],
        )
        # today: P4 (K4) 5,000 current; P5 (K5) 3,000 due 2025-11-15, 46 days late, and P6
        # (K5) 1,000 current: K5 is 46 days late, both its loans in stage 2; P7 (K6) 2,000 due
        # 2025-09-01, 121 days late: stage 3
        book.loan(
            "P4",
            customer_id="K4",
            disbursed=date(2025, 12, 1),
            principal="5000.00",
            schedule=[Due(date(2026, 1, 30), "5000.00")],
        )
        book.loan(
            "P5",
            customer_id="K5",
            disbursed=date(2025, 10, 1),
            principal="3000.00",
            schedule=[Due(date(2025, 11, 15), "3000.00")],
        )
        book.loan(
            "P6",
            customer_id="K5",
            disbursed=date(2025, 12, 10),
            principal="1000.00",
            schedule=[Due(date(2026, 1, 9), "1000.00")],
        )
        book.loan(
            "P7",
            customer_id="K6",
            disbursed=date(2025, 8, 1),
            principal="2000.00",
            schedule=[Due(date(2025, 9, 1), "2000.00")],
        )


def test_provision_matrix_with_a_full_history(db_conninfo: str, settings: Settings) -> None:
    provision_book(db_conninfo)
    one, two, three = export_analytics(settings, date(2025, 12, 31))["provisions"]
    # stage 1: P1 10,000 x 2 + P2 4,000 x 2 + P3 2,000 x 2 = 32,000 at five month-ends
    # (2023-12-31, 2024-01-31, 02-29, 10-31, 11-30); P2's net loss 3,000 twice (written off
    # 2024-07-30, within 12 months of 01-31 and 02-29): 6,000 / 32,000
    assert (one["history_month_ends"], one["history_balance"], one["history_net_loss"]) == (
        5,
        money(32000),
        money(6000),
    )
    assert one["loss_rate"] == ratio(6000, 32000)
    # stage 2: P2 at 03-31 and P3 at 12-31: 6,000; 3,000 lost: 0.5
    assert (two["history_balance"], two["history_net_loss"]) == (money(6000), money(3000))
    assert two["loss_rate"] == ratio(1, 2)
    # stage 3: P2 at 04-30, 05-31, 06-30: 12,000; 9,000 lost: 0.75
    assert (three["history_balance"], three["history_net_loss"]) == (money(12000), money(9000))
    assert three["loss_rate"] == ratio(3, 4)
    # the book starts 2023-12-01, before the first month-end of the history: no note
    assert [r["loss_rate_note"] for r in (one, two, three)] == [None, None, None]
    # exposure x loss rate: 5,000 x 0.1875; 4,000 x 0.5 (K5's two loans); 2,000 x 0.75
    assert (one["loans"], one["exposure"], one["expected_loss"]) == (
        1,
        money(5000),
        money("937.50"),
    )
    assert (two["loans"], two["customers"], two["exposure"], two["expected_loss"]) == (
        2,
        1,
        money(4000),
        money(2000),
    )
    assert (three["exposure"], three["expected_loss"]) == (money(2000), money(1500))
    assert [r["coverage"] for r in (one, two, three)] == [
        ratio(3, 16), ratio(1, 2), ratio(3, 4),
    ]  # fmt: skip
