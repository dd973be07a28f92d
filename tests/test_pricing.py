"""The pricing dataset: the realized grid and rate-card adherence, worked out by hand.

D = 2025-06-30; the pricing window is the LTM, (2024-06-30, 2025-06-30]. Default bands: tenor
0-30, 31-60, 61-90, 91-180, 181+ days; ticket under 1K, 1K-5K, 5K-25K, 25K-100K, 100K+ (each
from its minimum up to the next band's). Effective rate = apr + fee / principal x 360 / tenor.

Rate card (factoring unless said otherwise; tenor and ticket inclusive):
  R1 band A  tenor 0-60   ticket 0-50,000        apr .30 fee .02   2024-01-01..2024-12-31
  R2 band A  tenor 0-60   ticket 0-50,000        apr .32 fee .02   2025-01-01..
  R3 band A  tenor 31-45  ticket 1,000-9,999.99  apr .28 fee .015  2025-01-01..
  R4 band A  tenor 0-60   ticket 1,000-1,999.99  apr .27 fee .02   2025-01-01..
  R5 no band tenor 0-90   ticket 0-100,000       apr .40 fee .025  2024-01-01..
  R6 band B  tenor 0-30   ticket 0-100,000       apr .45 fee .025  2025-01-01..
  R7 band B  the same band as R6                 apr .46 fee .025  2025-01-01..

Loans (apr, fee; state at D):
  P1  A 2024-09-10 term 30  2,000  .31  40   repaid 2024-10-10
  P2  A 2025-02-01 term 40  1,000  .285 15   unpaid, due 03-13: dpd 109
  P3  A 2025-03-01 term 20  1,200  .29  24   repaid 03-21
  P4  B 2025-04-10 term 25 10,000  .45  250  unpaid, due 05-05: dpd 56
  P5  C 2025-05-01 term 60 20,000  .41  500  due 06-30 = D: not late
  P6  A 2025-05-20 term 120 3,000  .35  0    current (due 09-17)
  P7  - 2025-06-01 term 10    800  .50  16   unpaid, due 06-11: dpd 19
  P8  A 2024-05-01 term 30  2,500  .30  50   disbursed before the window: not in either table
  P9  A 2025-06-10 term 30  5,000  .33  0    reverse_factoring, current
  P10 C 2024-07-15 term 30  4,000  .45  80   unpaid since 2024-08-14: dpd 320, written off
  P11 A 2024-12-31 term 30  3,000  .30  60   unpaid since 2025-01-30: dpd 151
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from abaco_cli.services.exporting import export_dataset
from abaco_cli.settings import PricingPolicy, Settings, TenorBand, TicketBand
from portfolio import Portfolio
from tests.conftest import read_parquet_export

D = date(2025, 6, 30)
OPEN = None


def build_book(conninfo: str) -> None:
    with Portfolio(conninfo) as book:
        for card_id, band, tenor, ticket, apr, fee, start, end in (
            (1, "A", (0, 60), ("0", "50000"), ".30", ".02", date(2024, 1, 1), date(2024, 12, 31)),
            (2, "A", (0, 60), ("0", "50000"), ".32", ".02", date(2025, 1, 1), OPEN),
            (3, "A", (31, 45), ("1000", "9999.99"), ".28", ".015", date(2025, 1, 1), OPEN),
            (4, "A", (0, 60), ("1000", "1999.99"), ".27", ".02", date(2025, 1, 1), OPEN),
            (5, None, (0, 90), ("0", "100000"), ".40", ".025", date(2024, 1, 1), OPEN),
            (6, "B", (0, 30), ("0", "100000"), ".45", ".025", date(2025, 1, 1), OPEN),
            (7, "B", (0, 30), ("0", "100000"), ".46", ".025", date(2025, 1, 1), OPEN),
        ):  # fmt: skip
            book.rate_card(
                rate_card_id=card_id,
                risk_band=band,
                tenor=tenor,
                ticket=ticket,
                apr=apr,
                fee_rate=fee,
                effective=(start, end),
            )
        loans: list[tuple[Any, ...]] = [
            # id, band, disbursed, term, principal, apr, fee, repaid on, product
            ("P1", "A", date(2024, 9, 10), 30, "2000.00", ".31", "40.00", date(2024, 10, 10)),
            ("P2", "A", date(2025, 2, 1), 40, "1000.00", ".285", "15.00", None),
            ("P3", "A", date(2025, 3, 1), 20, "1200.00", ".29", "24.00", date(2025, 3, 21)),
            ("P4", "B", date(2025, 4, 10), 25, "10000.00", ".45", "250.00", None),
            ("P5", "C", date(2025, 5, 1), 60, "20000.00", ".41", "500.00", None),
            ("P6", "A", date(2025, 5, 20), 120, "3000.00", ".35", "0.00", None),
            ("P7", None, date(2025, 6, 1), 10, "800.00", ".50", "16.00", None),
            ("P8", "A", date(2024, 5, 1), 30, "2500.00", ".30", "50.00", None),
            ("P9", "A", date(2025, 6, 10), 30, "5000.00", ".33", "0.00", None,
             "reverse_factoring"),
            ("P10", "C", date(2024, 7, 15), 30, "4000.00", ".45", "80.00", None),
            ("P11", "A", date(2024, 12, 31), 30, "3000.00", ".30", "60.00", None),
        ]  # fmt: skip
        for loan_id, band, disbursed, term, principal, apr, fee, repaid, *product in loans:
            due = date.fromordinal(disbursed.toordinal() + term)
            book.loan(
                loan_id,
                customer_id=f"C{loan_id}",
                disbursed=disbursed,
                principal=principal,
                apr=apr,
                fee=fee,
                risk_band=band,
                product_type=product[0] if product else "factoring",
                schedule=[(due, principal)],
                payments=[(repaid, principal)] if repaid else [],
            )


def export_pricing(settings: Settings) -> dict[str, pa.Table]:
    result = export_dataset(settings, "pricing", D, ["parquet"])
    return {
        record.table: read_parquet_export(settings.exports_dir / record.path)
        for record in result.files
    }


def approx(value: float) -> Any:
    """A ratio worked out by hand, against the exact decimal(18,10) the export holds: equal to
    the tenth decimal place."""
    return pytest.approx(Decimal(repr(value)), abs=Decimal("1E-10"))


def test_grid_cells(db_conninfo: str, settings: Settings) -> None:
    build_book(db_conninfo)
    grid = export_pricing(settings)["grid"].to_pylist()
    keys = [(r["product_type"], r["risk_band"], r["tenor_band"], r["ticket_band"]) for r in grid]
    # ordered by product, risk band (no band last), tenor band, ticket band; P8 is before the
    # window; every other loan is in exactly one cell
    assert keys == [
        ("factoring", "A", "0-30", "1K-5K"),  # P1 (2,000 / 30 d), P3 (1,200 / 20), P11 (3,000 / 30)
        ("factoring", "A", "31-60", "1K-5K"),  # P2: 1,000.00 is in 1K-5K (from its minimum)
        ("factoring", "A", "91-180", "1K-5K"),  # P6
        ("factoring", "B", "0-30", "5K-25K"),  # P4
        ("factoring", "C", "0-30", "1K-5K"),  # P10
        ("factoring", "C", "31-60", "5K-25K"),  # P5
        ("factoring", None, "0-30", "under 1K"),  # P7
        ("reverse_factoring", "A", "0-30", "5K-25K"),  # P9
    ]
    cells = {key: row for key, row in zip(keys, grid, strict=True)}
    assert all(r["as_of_date"] == D and r["window_from"] == date(2024, 7, 1) for r in grid)

    first = cells[("factoring", "A", "0-30", "1K-5K")]
    assert first["tenor_band_value"] == 0 and first["ticket_band_value"] == 1
    assert first["loans"] == 3
    assert first["disbursed"] == Decimal("6200.00")  # 2,000 + 1,200 + 3,000
    # (2,000 x .31 + 1,200 x .29 + 3,000 x .30) / 6,200 = (620 + 348 + 900) / 6,200
    assert first["weighted_apr"] == approx(1868 / 6200)
    # fees (40 + 24 + 60) / 6,200
    assert first["weighted_fee_rate"] == approx(124 / 6200)
    # effective: P1 .31 + .02 x 360/30 = .55; P3 .29 + .02 x 360/20 = .65;
    # P11 .30 + .02 x 12 = .54 -> (2,000 x .55 + 1,200 x .65 + 3,000 x .54) / 6,200
    assert first["weighted_effective_rate"] == approx((1100 + 780 + 1620) / 6200)
    # P1 and P3 repaid; P11 owes 3,000, 151 days past due
    assert first["outstanding"] == Decimal("3000.00")
    assert first["par_30_amount"] == Decimal("3000.00")
    assert first["par_30"] == approx(1.0)
    assert first["written_off_balance"] == Decimal("0.00")
    assert first["written_off_share"] == approx(0.0)

    p2 = cells[("factoring", "A", "31-60", "1K-5K")]
    assert (p2["loans"], p2["disbursed"]) == (1, Decimal("1000.00"))
    assert p2["weighted_apr"] == approx(0.285)
    assert p2["weighted_fee_rate"] == approx(0.015)
    assert p2["weighted_effective_rate"] == approx(0.285 + 0.015 * 360 / 40)  # .42
    assert p2["par_30"] == approx(1.0)  # 109 days past due

    p6 = cells[("factoring", "A", "91-180", "1K-5K")]
    assert p6["weighted_effective_rate"] == approx(0.35)  # no fee
    assert p6["par_30"] == approx(0.0)

    p4 = cells[("factoring", "B", "0-30", "5K-25K")]
    assert p4["weighted_effective_rate"] == approx(0.45 + 0.025 * 360 / 25)  # .81
    assert p4["par_30_amount"] == Decimal("10000.00")  # 56 days past due

    p10 = cells[("factoring", "C", "0-30", "1K-5K")]
    # written off (320 days past due; on 2024-08-14 + 181 = 2025-02-11 with nothing paid):
    # outstanding 0, so PAR30 is 0 / 0
    assert p10["outstanding"] == Decimal("0.00")
    assert p10["par_30"] is None
    assert p10["written_off_balance"] == Decimal("4000.00")
    assert p10["gross_write_off"] == Decimal("4000.00")
    assert p10["written_off_share"] == approx(1.0)  # 4,000 / 4,000 disbursed

    p5 = cells[("factoring", "C", "31-60", "5K-25K")]
    assert p5["weighted_effective_rate"] == approx(0.41 + 0.025 * 360 / 60)  # .56
    assert p5["par_30"] == approx(0.0)  # due on D: not late

    p7 = cells[("factoring", None, "0-30", "under 1K")]
    assert p7["weighted_effective_rate"] == approx(0.50 + 0.02 * 360 / 10)  # 1.22
    assert p7["par_30"] == approx(0.0)  # 19 days past due


def test_adherence_card_of_the_narrowest_band(db_conninfo: str, settings: Settings) -> None:
    build_book(db_conninfo)
    rows = {r["loan_id"]: r for r in export_pricing(settings)["adherence"].to_pylist()}
    assert list(rows) == ["P1", "P10", "P11", "P2", "P3", "P4", "P5", "P6", "P7", "P9"]  # no P8

    def card(loan_id: str) -> tuple[Any, ...]:
        r = rows[loan_id]
        return (r["band_matched"], r["rate_card_id"], r["card_apr"], r["apr_deviation"])

    # P1 (2024-09-10): the 2024 card R1 is in effect; it names band A, so it beats R5
    assert card("P1") == (True, 1, Decimal(".300000"), Decimal(".010000"))
    assert rows["P1"]["is_adherent"] is True  # |0.01| <= apr_tolerance 0.01
    # P11 on R1's last day (effective_to is inclusive)
    assert card("P11") == (True, 1, Decimal(".300000"), Decimal("0.000000"))
    # P2: R2, R3 and R4 all hold it; R3's tenor span (14 days) is the narrowest
    assert card("P2") == (True, 3, Decimal(".280000"), Decimal(".005000"))
    assert rows["P2"]["fee_rate_deviation"] == approx(0.0)  # 15 / 1,000 - .015
    # P3 (20 days): R2 and R4 span 60 days each; R4's ticket span (999.99) is narrower
    assert card("P3") == (True, 4, Decimal(".270000"), Decimal(".020000"))
    assert rows["P3"]["is_adherent"] is False
    # P4: R6 and R7 are the same band: the lower rate_card_id wins
    assert card("P4") == (True, 6, Decimal(".450000"), Decimal("0.000000"))
    # P5 and P10 (band C) and P7 (no band): only the card without a band, R5
    assert card("P5") == (True, 5, Decimal(".400000"), Decimal(".010000"))
    assert card("P10") == (True, 5, Decimal(".400000"), Decimal(".050000"))
    assert rows["P10"]["fee_rate_deviation"] == approx(80 / 4000 - 0.025)
    assert card("P7") == (True, 5, Decimal(".400000"), Decimal(".100000"))
    assert rows["P7"]["risk_band"] is None
    # P6 (120 days) fits no band; P9's product has no card: kept, flagged, nulls
    for loan_id in ("P6", "P9"):
        r = rows[loan_id]
        assert card(loan_id) == (False, None, None, None)
        assert r["card_fee_rate"] is None and r["is_adherent"] is None
        assert r["apr"] is not None and r["principal"] is not None
    assert rows["P6"]["tenor_band"] == "91-180"
    assert rows["P4"]["tenor_days"] == 25 and rows["P4"]["ticket_band"] == "5K-25K"
    assert rows["P4"]["fee_rate"] == approx(0.025)


def test_money_is_exact_and_bands_are_configurable(db_conninfo: str, settings: Settings) -> None:
    build_book(db_conninfo)
    policy = PricingPolicy(
        window_months=3,
        tenor_bands=[TenorBand(label="short", min_days=0), TenorBand(label="long", min_days=45)],
        ticket_bands=[TicketBand(label="any", min_amount=Decimal(0))],
    )
    tables = export_pricing(settings.model_copy(update={"pricing": policy}))
    grid = tables["grid"]
    assert grid.schema.field("disbursed").type == pa.decimal128(18, 2)
    assert tables["adherence"].schema.field("apr_deviation").type == pa.decimal128(18, 10)
    # window (2025-03-30, 2025-06-30]: P4, P5, P6, P7, P9
    rows = grid.to_pylist()
    assert [(r["product_type"], r["risk_band"], r["tenor_band"], r["loans"]) for r in rows] == [
        ("factoring", "A", "long", 1),  # P6 (120 days)
        ("factoring", "B", "short", 1),  # P4 (25)
        ("factoring", "C", "long", 1),  # P5 (60)
        ("factoring", None, "short", 1),  # P7 (10)
        ("reverse_factoring", "A", "short", 1),  # P9 (30)
    ]
    assert rows[0]["window_from"] == date(2025, 3, 31)


def test_grid_leaves_settled_cents_out_and_keeps_write_offs(
    db_conninfo: str, settings: Settings
) -> None:
    # three band E loans of the 0-30 / 1K-5K cell (definitions version 2):
    #   Q1 2,000 due 2025-01-31, 1,999.99 paid that day: 0.01 left, settled, not outstanding
    #   Q2 3,000 due 2024-10-01, 500 paid 2024-11-01, written off on 2024-10-01 + 181 =
    #      2025-03-31 (30 days to 10-31, 60 to 11-30, 91 to 12-31, 122 to 01-31, 150 to 02-28,
    #      181 to 03-31) with 2,500, then repaid 2,500 on 2025-05-01 (a recovery): it stays
    #      written off
    #   Q3 1,000 due 2025-07-10, current
    with Portfolio(db_conninfo) as book:
        for loan_id, disbursed, due, principal, payments in (
            ("Q1", date(2025, 1, 1), date(2025, 1, 31), "2000.00",
             [(date(2025, 1, 31), "1999.99")]),
            ("Q2", date(2024, 9, 1), date(2024, 10, 1), "3000.00",
             [(date(2024, 11, 1), "500.00"), (date(2025, 5, 1), "2500.00")]),
            ("Q3", date(2025, 6, 10), date(2025, 7, 10), "1000.00", []),
        ):  # fmt: skip
            book.loan(
                loan_id,
                customer_id=f"C{loan_id}",
                disbursed=disbursed,
                principal=principal,
                risk_band="E",
                schedule=[(due, principal)],
                payments=payments,
            )
    [cell] = export_pricing(settings)["grid"].to_pylist()
    assert (cell["risk_band"], cell["tenor_band"], cell["ticket_band"]) == ("E", "0-30", "1K-5K")
    assert (cell["loans"], cell["disbursed"]) == (3, Decimal("6000.00"))
    # outstanding: Q3's 1,000 only (Q1's cent is settled, Q2 is written off)
    assert cell["outstanding"] == Decimal("1000.00")
    assert (cell["par_30_amount"], cell["par_30"]) == (Decimal("0.00"), approx(0.0))
    # Q2: nothing left to recover at D, but its gross write-off of 2,500 stays
    assert cell["written_off_balance"] == Decimal("0.00")
    assert cell["gross_write_off"] == Decimal("2500.00")
    assert cell["written_off_share"] == approx(2500 / 6000)


def test_empty_book_gives_empty_tables(settings: Settings) -> None:
    tables = export_pricing(settings)
    assert tables["grid"].num_rows == 0
    assert tables["adherence"].num_rows == 0
