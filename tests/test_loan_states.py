"""datasets/states/loan_states.sql against dpd/delinquency.sql, loan by loan.

loan_states evaluates the delinquency rules at many dates in one pass (the kpi and analytics
datasets use it for month-end series, yields, roll rates). delinquency.sql is the reference:
at every date, every loan that owes principal must get exactly the row delinquency.sql gives
it, and no other loan may appear. The comparison runs inside PostgreSQL (EXCEPT ALL both ways)
on a seeded portfolio (on-time, early, late, partial, cured, written-off and multi-installment
loans) and on hand-built edge cases.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
from psycopg import sql

from abaco_cli.datasets.dpd import delinquency_params, delinquency_query
from abaco_cli.datasets.states import month_ends_until, states_with_history
from abaco_cli.db.seed import seed_portfolio
from abaco_cli.settings import Settings, SourceTables
from portfolio import Due, Pay, Portfolio

COLUMNS = (
    "as_of_date, loan_id, customer_id, principal, principal_paid, outstanding, past_due_amount, "
    "first_arrears_date, days_past_due, dpd_bucket_value, is_default, is_written_off, "
    "written_off_balance, last_payment_date, write_off_date"
)


def differences(conn: psycopg.Connection[Any], dates: list[date]) -> dict[date, int]:
    """Per date: rows in one result and not the other (0 everywhere when they agree)."""
    settings = Settings()
    conn.execute("SET jit = off")  # as an export's snapshot does: these plans compile slowly
    history = states_with_history(settings, "dates")
    reference = delinquency_query(settings)
    query = sql.SQL(
        "WITH {h}, h AS (SELECT {c} FROM states AS x WHERE x.as_of_date = %(as_of)s), "
        "d AS (SELECT {c} FROM ({d}) AS y WHERE y.principal - y.principal_paid > %(tolerance)s) "
        "SELECT (SELECT count(*) FROM (SELECT * FROM h EXCEPT ALL SELECT * FROM d) AS a) "
        "+ (SELECT count(*) FROM (SELECT * FROM d EXCEPT ALL SELECT * FROM h) AS b)"
    ).format(c=sql.SQL(COLUMNS), h=history, d=reference)
    found = {}
    for day in dates:
        row = conn.execute(query, {**delinquency_params(settings, day), "dates": dates}).fetchone()
        assert row is not None
        found[day] = int(row[0])
    return found


def test_equal_to_delinquency_on_a_seeded_portfolio(db_conninfo: str) -> None:
    with psycopg.connect(db_conninfo) as conn:
        seed_portfolio(conn, SourceTables(), loans=3000, seed=11, through=date(2025, 12, 31))
        dates = [*month_ends_until(date(2025, 11, 30), 11), date(2025, 12, 17)]
        assert differences(conn, dates) == {day: 0 for day in dates}
        # and it is not comparing two empty sets
        count = conn.execute(
            sql.SQL("WITH {} SELECT count(*) FROM states").format(
                states_with_history(Settings(), "dates")
            ),
            {**delinquency_params(Settings(), dates[-1]), "dates": dates},
        ).fetchone()
        assert count is not None and count[0] > 1000


def test_equal_to_delinquency_on_edge_cases(db_conninfo: str) -> None:
    with Portfolio(db_conninfo) as book:
        # paid in three parts between month-ends; the last part on a month-end
        book.loan(
            "PARTS",
            disbursed=date(2025, 1, 5),
            principal="900.00",
            schedule=[(date(2025, 2, 4), "900.00")],
            payments=[
                (date(2025, 2, 10), "300.00"),
                (date(2025, 3, 15), "300.00"),
                (date(2025, 4, 30), "300.00"),
            ],
        )
        # several installments, two due on the same day, numbered against the calendar
        book.loan(
            "MULTI",
            disbursed=date(2025, 1, 1),
            principal="1000.00",
            schedule=[
                Due(date(2025, 4, 30), "400.00"),
                Due(date(2025, 2, 28), "300.00"),
                Due(date(2025, 2, 28), "300.00"),
            ],
            payments=[Pay(date(2025, 3, 10), "350.00"), Pay(date(2025, 5, 20), "100.00")],
        )
        # overpaid, then a reversal makes it owe again
        book.loan(
            "REVERSED",
            disbursed=date(2025, 1, 10),
            principal="500.00",
            schedule=[(date(2025, 2, 9), "500.00")],
            payments=[(date(2025, 2, 9), "520.00"), (date(2025, 3, 20), "-100.00")],
        )
        # within the tolerance: counts as paid
        book.loan(
            "TOLERANCE",
            disbursed=date(2025, 1, 10),
            principal="500.00",
            schedule=[(date(2025, 2, 9), "500.00")],
            payments=[(date(2025, 2, 9), "499.99")],
        )
        # written off by date before it is 180 days late; another written off later
        book.loan(
            "WOD",
            disbursed=date(2025, 1, 1),
            principal="800.00",
            schedule=[(date(2025, 1, 31), "800.00")],
            written_off_date=date(2025, 3, 15),
        )
        book.loan(
            "LATE_WOD",
            disbursed=date(2024, 6, 1),
            principal="700.00",
            schedule=[(date(2024, 7, 1), "700.00")],
            written_off_date=date(2025, 6, 1),
        )
        # no schedule at all; a payment before its disbursement; disbursed on a month-end
        book.loan("NOSCHED", disbursed=date(2025, 2, 1), principal="100.00")
        book.loan(
            "EARLYPAY",
            disbursed=date(2025, 3, 5),
            principal="200.00",
            schedule=[(date(2025, 4, 4), "200.00")],
            payments=[(date(2025, 3, 1), "50.00")],
        )
        book.loan(
            "ON_ME",
            disbursed=date(2025, 3, 31),
            principal="300.00",
            schedule=[(date(2025, 4, 30), "300.00")],
        )
        book.loan("ZERO", disbursed=date(2025, 1, 1), principal="0.00")
    with psycopg.connect(db_conninfo) as conn:
        dates = [*month_ends_until(date(2025, 6, 30), 7), date(2025, 7, 4)]
        assert differences(conn, dates) == {day: 0 for day in dates}
        one = [date(2025, 3, 15)]
        assert differences(conn, one) == {one[0]: 0}


def test_no_dates_no_rows(db_conninfo: str) -> None:
    with Portfolio(db_conninfo) as book:
        book.loan("L1", disbursed=date(2025, 1, 1), principal="100.00")
    with psycopg.connect(db_conninfo) as conn:
        settings = Settings()
        query = sql.SQL("WITH {} SELECT count(*) FROM states").format(
            states_with_history(settings, "dates")
        )
        row = conn.execute(
            query, {**delinquency_params(settings, date(2025, 6, 30)), "dates": []}
        ).fetchone()
        assert row == (0,)
