"""Credit-risk figures (definitions version 2) on seeded books: invariants, and the arrears
history checked against an independent day-by-day walk.

The invariants run on the demo book (``abaco demo``: 20,000 loans, seed 7, through 2025-12-31)
exported as of 2025-06-30 and as of 2025-12-31:

- roll rates: the rates of every from-bucket that holds loans add up to 1;
- vintages: every curve is monotone in the month on book and within [0, 1], except net loss,
  which falls when recoveries come in after a write-off (and may go below 0 when the cash
  recovered, interest included, exceeds the principal written off);
- nothing is restated: gross write-offs and recoveries of a month, each loan's write-off date
  and gross write-off, and every vintage observation before 2025-06-30 are the same in both
  exports;
- for every loan, principal = principal paid up to D - principal recovered after the write-off
  + gross write-off + outstanding (the settled cents included), to the cent; overpaid loans
  (principal paid above the principal) are the exception, counted and checked apart.

The independent walk (``daily_walk``) recomputes, in Python, each loan's days past due on
every day from the raw tables, exactly as docs/domain.md states the rule, and derives write-off
dates, gross write-offs, the first days at 30 and 90 days, the defaults and recoveries of the
LTM window; the exports must agree with it.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from abaco_cli.db.seed import seed_portfolio
from abaco_cli.services.exporting import export_dataset
from abaco_cli.settings import Settings, SourceTables
from portfolio import Pay, Portfolio
from tests.conftest import read_parquet_export

D0, D = date(2025, 6, 30), date(2025, 12, 31)
CENT = Decimal("0.01")
TOLERANCE = Decimal("0.01")

Rows = list[dict[str, Any]]


def export(settings: Settings, dataset: str, as_of: date) -> dict[str, Rows]:
    result = export_dataset(settings, dataset, as_of, ["parquet"])
    return {
        r.table: read_parquet_export(settings.exports_dir / r.path).to_pylist()
        for r in result.files
        if r.format == "parquet"
    }


def overpaid_loans(conninfo: str) -> None:
    """Two overpaid loans beside the seeded book (customers X1, X2)."""
    with Portfolio(conninfo) as book:
        # OVER1: 1,000 due 2025-03-01, 1,000.50 paid that day: 0.50 overpaid, not written off
        book.loan(
            "OVER1",
            customer_id="X1",
            disbursed=date(2025, 2, 1),
            principal="1000.00",
            schedule=[(date(2025, 3, 1), "1000.00")],
            payments=[Pay(date(2025, 3, 1), "1000.50")],
        )
        # OVER2: 1,000 due 2024-12-01, 400 paid 2024-12-20, written off by date 2025-02-01
        # (gross 600), then 700 recovered on 2025-04-01: 100 more than it owed
        book.loan(
            "OVER2",
            customer_id="X2",
            disbursed=date(2024, 11, 1),
            principal="1000.00",
            written_off_date=date(2025, 2, 1),
            schedule=[(date(2024, 12, 1), "1000.00")],
            payments=[Pay(date(2024, 12, 20), "400.00"), Pay(date(2025, 4, 1), "700.00")],
        )


@pytest.fixture(scope="module")
def demo_exports(pg_server: Any, template_db: str) -> dict[date, dict[str, dict[str, Rows]]]:
    """The demo book (and the two overpaid loans), exported as of D0 and D: dpd, kpi and
    analytics. One database and one export per date for every test of the module."""
    name = "abaco_credit_risk_demo"
    dsn = pg_server.create_database(name, template=template_db)
    try:
        with psycopg.connect(dsn) as conn:
            seed_portfolio(conn, SourceTables(), loans=20_000, seed=7, through=D)
        overpaid_loans(dsn)
        with TemporaryDirectory() as tmp:
            settings = Settings(database_url=SecretStr(dsn), runtime_dir=Path(tmp) / "rt")
            return {
                day: {name: export(settings, name, day) for name in ("dpd", "analytics", "kpi")}
                for day in (D0, D)
            }
    finally:
        pg_server.drop_database(name)


def test_roll_rate_rows_add_up_to_one(demo_exports: dict[date, Any]) -> None:
    rows = demo_exports[D]["analytics"]["roll_rates"]
    groups: dict[tuple[date, int], Rows] = defaultdict(list)
    for row in rows:
        groups[(row["to_date"], row["from_bucket_value"])].append(row)
    filled = [cells for cells in groups.values() if sum(c["loans"] for c in cells) > 0]
    assert len(filled) >= 12 * 5  # twelve transitions, most buckets hold loans
    for cells in filled:
        assert sum(c["loans_rate"] for c in cells) == pytest.approx(Decimal(1), abs=Decimal("1E-9"))
        assert sum(c["balance_rate"] for c in cells) == pytest.approx(
            Decimal(1), abs=Decimal("1E-9")
        )
    # settled loans are paid off: no loan in a bucket rolls to Current with a cent left
    cures = [r for r in rows if r["from_bucket_value"] > 0 and r["to_state"] == "Current"]
    assert all(r["to_balance"] == 0 or r["to_balance"] > CENT * r["loans"] for r in cures)


def test_vintage_curves_are_monotone_and_within_bounds(demo_exports: dict[date, Any]) -> None:
    rows = demo_exports[D]["analytics"]["vintages"]
    curves: dict[date, Rows] = defaultdict(list)
    for row in rows:
        curves[row["cohort_month"]].append(row)
    assert len(curves) == 24
    fell = 0
    for cohort, curve in curves.items():
        curve.sort(key=lambda r: r["months_on_book"])
        if curve[0]["cohort_loans"] == 0:
            continue
        for name in ("principal_collected_pct", "written_off_pct", "ever_30_pct", "ever_90_pct"):
            values = [Decimal(str(r[name])) for r in curve]
            assert values == sorted(values), (cohort, name)  # never falls
            assert all(0 <= v <= 1 for v in values), (cohort, name)
        for name in ("recoveries", "written_off_amount", "ever_30_amount"):
            values = [r[name] for r in curve]
            assert values == sorted(values), (cohort, name)
        for row in curve:
            # what reached 90 days reached 30 first; a net loss is at most the gross write-off
            assert row["ever_90_amount"] <= row["ever_30_amount"]
            assert row["net_loss"] == row["written_off_amount"] - row["recoveries"]
            assert row["net_loss_pct"] <= Decimal(str(row["written_off_pct"])) + CENT
        # net loss is the one curve that may fall: recoveries after the write-off
        losses = [r["net_loss"] for r in curve]
        fell += any(b < a for a, b in itertools.pairwise(losses))
    assert fell > 0  # the demo book has recoveries after write-offs


def test_nothing_is_restated_by_a_later_export(demo_exports: dict[date, Any]) -> None:
    early, late = demo_exports[D0], demo_exports[D]
    # gross write-offs and recoveries of each month January .. June 2025
    months_early = {r["month"]: r for r in early["analytics"]["portfolio_overview"]}
    months_late = {r["month"]: r for r in late["analytics"]["portfolio_overview"]}
    shared = sorted(set(months_early) & set(months_late))
    assert shared == [date(2025, m, 1) for m in range(1, 7)]
    for month in shared:
        for name in ("written_off_amount", "recoveries"):
            assert months_early[month][name] == months_late[month][name], (month, name)
    assert sum(months_late[m]["written_off_amount"] for m in shared) > 0
    # each loan written off by D0: the same write-off date and gross write-off at D
    loans_late = {r["loan_id"]: r for r in late["dpd"]["loans"]}
    written = [r for r in early["dpd"]["loans"] if r["is_written_off"]]
    assert len(written) > 100
    for row in written:
        later = loans_late[row["loan_id"]]
        assert later["is_written_off"], row["loan_id"]
        assert (later["write_off_date"], later["gross_write_off"]) == (
            row["write_off_date"],
            row["gross_write_off"],
        ), row["loan_id"]
    # every vintage observation up to D0 is the same when exported as of D
    columns = ("principal_collected", "written_off_amount", "recoveries", "net_loss",
               "ever_30_amount", "ever_90_amount")  # fmt: skip
    seen_early = {
        (r["cohort_month"], r["months_on_book"]): r for r in early["analytics"]["vintages"]
    }
    compared = 0
    for row in late["analytics"]["vintages"]:
        before = seen_early.get((row["cohort_month"], row["months_on_book"]))
        if before is not None and row["observation_date"] <= D0:
            assert [before[c] for c in columns] == [row[c] for c in columns], row["cohort_month"]
            compared += 1
    assert compared > 100


def test_every_loan_adds_up_to_its_principal(demo_exports: dict[date, Any]) -> None:
    for day in (D0, D):
        loans = demo_exports[day]["dpd"]["loans"]
        overpaid = [r for r in loans if r["principal_paid"] > r["principal"]]
        for row in loans:
            total = (
                row["principal_paid"] - row["principal_recovered"] + row["gross_write_off"]
                + row["outstanding"]
            )  # fmt: skip
            if row in overpaid and not row["is_written_off"]:
                continue  # checked below
            assert total == row["principal"], (day, row["loan_id"])
        # the overpaid loans: OVER1 (paid 1,000.50 on 1,000: outstanding 0, the identity
        # exceeds the principal by the 0.50 overpaid) and OVER2 at D (written off with 600 at
        # 2025-02-01, 700 recovered: 1,100 paid; 1,100 - 700 + 600 + 0 = 1,000, it holds)
        assert sorted(r["loan_id"] for r in overpaid) == ["OVER1", "OVER2"]
        over1 = next(r for r in overpaid if r["loan_id"] == "OVER1")
        assert over1["outstanding"] == 0
        assert over1["principal_paid"] - over1["principal"] == Decimal("0.50")
        over2 = next(r for r in overpaid if r["loan_id"] == "OVER2")
        assert (over2["gross_write_off"], over2["principal_recovered"]) == (
            Decimal("600.00"),
            Decimal("700.00"),
        )
        # the settled cents are part of the identity: loans left with 0.01 exist
        assert any(r["outstanding"] == CENT for r in loans)


# ---------------------------------------------------------------------------------------------
# The independent walk
# ---------------------------------------------------------------------------------------------


@dataclass
class Loan:
    loan_id: str
    principal: Decimal
    disbursed: date
    written_off_date: date | None
    due: list[tuple[date, int, Decimal]] = field(default_factory=list)  # (date, no, principal)
    paid: list[tuple[date, Decimal, Decimal]] = field(default_factory=list)  # (date, prin, cash)


def load_book(conninfo: str) -> list[Loan]:
    with psycopg.connect(conninfo) as conn:
        loans = {
            r[0]: Loan(r[0], r[1], r[2], r[3])
            for r in conn.execute(
                "SELECT loan_id, principal, disbursement_date, written_off_date"
                " FROM core_banking.loans"
            )
        }
        for loan_id, due_date, number, principal in conn.execute(
            "SELECT loan_id, due_date, installment_no, principal_due"
            " FROM core_banking.payment_schedule"
        ):
            loans[loan_id].due.append((due_date, number, principal))
        for loan_id, paid_on, principal, cash in conn.execute(
            "SELECT loan_id, paid_on, principal_paid, principal_paid + interest_paid + fee_paid"
            " + other_paid + tax_paid + fee_tax_paid - rebates FROM core_banking.payments"
        ):
            loans[loan_id].paid.append((paid_on, principal, cash))
    for loan in loans.values():
        loan.due.sort()
        loan.paid.sort()
    return list(loans.values())


@dataclass
class Walked:
    write_off_date: date | None
    gross_write_off: Decimal
    first_30: date | None
    first_90: date | None
    defaults: list[tuple[date, Decimal]]  # the days it went into default, owing


def daily_walk(loan: Loan, through: date) -> Walked:
    """Days past due on every day, by the rule: principal due on installments due before the
    day, principal paid by its end, the first installment (due date order) whose cumulative
    principal due exceeds paid + tolerance; written off from the earlier of written_off_date
    and the first day days past due exceed 180; in default when 90 or more days past due or
    written off."""
    due_dates = [d for d, _, _ in loan.due]
    cumulative: list[Decimal] = []
    for _, _, amount in loan.due:
        cumulative.append((cumulative[-1] if cumulative else Decimal(0)) + amount)
    paid_dates = [p for p, _, _ in loan.paid]
    paid_cumulative: list[Decimal] = []
    for _, amount, _ in loan.paid:
        paid_cumulative.append((paid_cumulative[-1] if paid_cumulative else Decimal(0)) + amount)

    def paid_by(day: date) -> Decimal:
        n = bisect_right(paid_dates, day)
        return paid_cumulative[n - 1] if n else Decimal(0)

    def days_past_due(day: date) -> int:
        n = bisect_left(due_dates, day)  # installments due before the day
        if n == 0:
            return 0
        paid = paid_by(day)
        if cumulative[n - 1] - paid <= TOLERANCE:
            return 0
        oldest = next(i for i in range(n) if cumulative[i] > paid + TOLERANCE)
        return (day - due_dates[oldest]).days

    over_limit = first_30 = first_90 = None
    late_days: list[date] = []  # the days 90 or more days past due
    day = loan.disbursed
    while day <= through:
        dpd = days_past_due(day)
        if dpd >= 30 and first_30 is None:
            first_30 = day
        if dpd >= 90:
            first_90 = first_90 or day
            late_days.append(day)
        if dpd > 180 and over_limit is None:
            over_limit = day
        day += timedelta(days=1)
    candidates = [d for d in (loan.written_off_date, over_limit) if d is not None and d <= through]
    write_off = max(min(candidates), loan.disbursed) if candidates else None
    gross = Decimal(0)
    if write_off is not None:
        gross = max(loan.principal - paid_by(write_off - timedelta(days=1)), Decimal(0))
    late = set(late_days)
    defaults = []
    previous = False
    day = loan.disbursed
    while day <= through:
        now = day in late or (write_off is not None and day >= write_off)
        if now and not previous:
            owing = max(loan.principal - paid_by(day - timedelta(days=1)), Decimal(0))
            defaults.append((day, owing))
        previous = now
        day += timedelta(days=1)
    return Walked(write_off, gross, first_30, first_90, defaults)


def months_between(first: date, later: date) -> int:
    return max((later.year - first.year) * 12 + later.month - first.month, 0)


def test_the_arrears_history_agrees_with_a_daily_walk(db_conninfo: str, settings: Settings) -> None:
    # the book holds a reversal (a negative payment), which the data-quality checks stop by
    # default (negative_amount): here the figures must go out with it
    settings = settings.model_copy(
        update={"dq": settings.dq.model_copy(update={"on_error": "warn"})}
    )
    with psycopg.connect(db_conninfo) as conn:
        seed_portfolio(conn, SourceTables(), loans=2_000, seed=5, through=D)
    with Portfolio(db_conninfo) as book:
        # a reversal 213 days after the due date: late again, written off that very day with
        # the 0 it owed the day before (the reversal itself is a negative recovery)
        book.loan(
            "REVERSED",
            customer_id="X3",
            disbursed=date(2024, 10, 1),
            principal="1000.00",
            schedule=[(date(2024, 11, 1), "1000.00")],
            payments=[Pay(date(2024, 11, 1), "1000.00"), Pay(date(2025, 6, 1), "-400.00")],
        )
        # three installments; the second is paid late, the third not at all
        book.loan(
            "THREE",
            customer_id="X4",
            disbursed=date(2024, 12, 1),
            principal="900.00",
            schedule=[
                (date(2025, 1, 1), "300.00"),
                (date(2025, 2, 1), "300.00"),
                (date(2025, 3, 1), "300.00"),
            ],
            payments=[Pay(date(2025, 1, 1), "300.00"), Pay(date(2025, 6, 15), "300.00")],
        )
    book_loans = load_book(db_conninfo)
    walked = {loan.loan_id: daily_walk(loan, D) for loan in book_loans}
    tables = {name: export(settings, name, D) for name in ("dpd", "kpi")}
    analytics = export_dataset(
        settings.model_copy(update={"analytics": settings.analytics.model_copy(
            update={"vintage_months": 36})}),
        "analytics", D, ["parquet"],
    )  # fmt: skip
    vintages = next(
        read_parquet_export(settings.exports_dir / r.path).to_pylist()
        for r in analytics.files
        if r.table == "vintages" and r.format == "parquet"
    )

    # write-off date and gross write-off of every loan
    rows = {r["loan_id"]: r for r in tables["dpd"]["loans"]}
    assert len(rows) == len(book_loans)
    mismatched = [
        loan_id
        for loan_id, w in walked.items()
        if (rows[loan_id]["write_off_date"], rows[loan_id]["gross_write_off"])
        != (w.write_off_date, w.gross_write_off.quantize(CENT))
    ]
    assert mismatched == []
    assert sum(1 for w in walked.values() if w.write_off_date) > 20
    assert walked["REVERSED"].write_off_date == date(2025, 6, 1)
    assert walked["REVERSED"].gross_write_off == 0

    # ever 30 / 90 days past due in the vintages, placed at the month of the first such day
    by_id = {loan.loan_id: loan for loan in book_loans}
    expected: dict[tuple[date, int], list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 2)
    for loan_id, w in walked.items():
        loan = by_id[loan_id]
        cohort = loan.disbursed.replace(day=1)
        for slot, first in enumerate((w.first_30, w.first_90)):
            if first is not None:
                expected[(cohort, months_between(cohort, first))][slot] += loan.principal
    for row in vintages:
        key = (row["cohort_month"], row["months_on_book"])
        cumulative = [
            sum((v[slot] for (c, m), v in expected.items() if c == key[0] and m <= key[1]),
                Decimal(0))
            for slot in (0, 1)
        ]  # fmt: skip
        assert [row["ever_30_amount"], row["ever_90_amount"]] == cumulative, key

    # defaults, write-offs and recoveries of the LTM window (2024-12-31, 2025-12-31]
    after = date(2024, 12, 31)
    first_in_window = {
        loan_id: next(((d, owed) for d, owed in w.defaults if after < d <= D), None)
        for loan_id, w in walked.items()
    }
    defaulted = [v for v in first_in_window.values() if v is not None]
    kpis = {r["kpi"]: r for r in tables["kpi"]["snapshot"]}
    assert kpis["default_rate_count"]["numerator"] == len(defaulted)
    assert kpis["default_rate_balance"]["numerator"] == sum(owed for _, owed in defaulted)
    written = sum(
        (w.gross_write_off for w in walked.values()
         if w.write_off_date is not None and after < w.write_off_date <= D),
        Decimal(0),
    )  # fmt: skip
    assert kpis["written_off_ltm"]["value"] == written
    recovered = Decimal(0)
    for loan in book_loans:
        write_off = walked[loan.loan_id].write_off_date
        for paid_on, _, cash in loan.paid:
            if write_off is not None and write_off <= paid_on and after < paid_on <= D:
                recovered += cash
    assert kpis["recoveries_ltm"]["value"] == recovered
    assert recovered != 0 and written > 0
