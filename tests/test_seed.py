"""The synthetic portfolio generator against a real PostgreSQL (`db_conninfo` from conftest)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from abaco_cli.db.contract import init_contract
from abaco_cli.db.seed import SeedResult, seed_portfolio
from abaco_cli.errors import UsageError
from abaco_cli.settings import SourceTables

LOANS = 2_000
THROUGH = date(2025, 12, 31)
DEFAULT = SourceTables()
TWIN = SourceTables(
    customers="seed_twin.customers",
    loans="seed_twin.loans",
    payment_schedule="seed_twin.payment_schedule",
    payments="seed_twin.payments",
    rate_card="seed_twin_commercial.rate_card",
)
MONEY = {
    "loans": ("principal", "origination_fee", "origination_fee_taxes"),
    "payment_schedule": ("principal_due", "interest_due", "fee_due", "other_due", "tax_due"),
    "payments": ("principal_paid", "interest_paid", "fee_paid", "other_paid", "tax_paid",
                 "fee_tax_paid", "rebates"),
    "rate_card": ("ticket_min", "ticket_max"),
}  # fmt: skip
# Days past due of bullet loans at :asof, computed independently of the generator.
BUCKETS_SQL = """
    WITH bullet AS (
        SELECT l.loan_id, l.principal, s.due_date
        FROM core_banking.loans l JOIN core_banking.payment_schedule s USING (loan_id)
        WHERE l.disbursement_date <= %(asof)s
          AND (SELECT count(*) FROM core_banking.payment_schedule x WHERE x.loan_id = l.loan_id) = 1
    ), state AS (
        SELECT b.*, b.principal - coalesce(
            (SELECT sum(p.principal_paid) FROM core_banking.payments p
             WHERE p.loan_id = b.loan_id AND p.paid_on <= %(asof)s), 0) AS unpaid
        FROM bullet b
    )
    SELECT DISTINCT CASE
        WHEN unpaid <= 0.01 OR due_date >= %(asof)s THEN 0
        WHEN %(asof)s - due_date <= 30 THEN 1
        WHEN %(asof)s - due_date <= 60 THEN 2
        WHEN %(asof)s - due_date <= 90 THEN 3
        WHEN %(asof)s - due_date <= 120 THEN 4
        WHEN %(asof)s - due_date <= 180 THEN 5
        ELSE 6 END
    FROM state WHERE unpaid > 0.01
"""


def seed(dsn: str, tables: SourceTables = DEFAULT, **options: Any) -> SeedResult:
    options = {"loans": LOANS, "seed": 7, **options}
    with psycopg.connect(dsn) as conn:
        return seed_portfolio(conn, tables, **options)


def fingerprints(conn: psycopg.Connection[Any], tables: SourceTables) -> dict[str, str]:
    result = {}
    for role in tables.roles():
        query = sql.SQL("SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} t")
        row = conn.execute(query.format(sql.Identifier(*tables.split(role)))).fetchone()
        assert row is not None and row[0] is not None
        result[role] = row[0]
    return result


def scalar(conn: psycopg.Connection[Any], query: str | sql.Composed, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def test_same_seed_gives_identical_tables_and_another_seed_differs(db_conninfo: str) -> None:
    with psycopg.connect(db_conninfo) as conn:
        init_contract(conn, TWIN)  # a second, fresh set of the five tables
    first = seed(db_conninfo)
    second = seed(db_conninfo, TWIN)
    assert first == second
    with psycopg.connect(db_conninfo) as conn:
        same = fingerprints(conn, DEFAULT)
        assert fingerprints(conn, TWIN) == same
    seed(db_conninfo, TWIN, seed=8, replace=True)
    with psycopg.connect(db_conninfo) as conn:
        other = fingerprints(conn, TWIN)
    for role in ("customers", "loans", "payment_schedule", "payments"):
        assert other[role] != same[role], role
    assert other["rate_card"] == same["rate_card"]  # the card depends on `through` only


def test_refuses_tables_with_data_unless_replace(db_conninfo: str) -> None:
    seed(db_conninfo, loans=300)
    with pytest.raises(UsageError, match="already holds data; pass --replace"):
        seed(db_conninfo, loans=500)
    with psycopg.connect(db_conninfo) as conn:
        assert scalar(conn, "SELECT count(*) FROM core_banking.loans") == 300
    result = seed(db_conninfo, loans=500, replace=True)
    with psycopg.connect(db_conninfo) as conn:
        assert scalar(conn, "SELECT count(*) FROM core_banking.loans") == result.loans == 500
        assert scalar(conn, "SELECT min(rate_card_id) FROM commercial.rate_card") == 1


def test_refuses_when_only_one_table_has_rows(db_conninfo: str) -> None:
    with psycopg.connect(db_conninfo) as conn:
        conn.execute(
            "INSERT INTO commercial.rate_card (product_type, tenor_min_days, tenor_max_days,"
            " ticket_min, ticket_max, apr, effective_from) VALUES ('factoring', 0, 30, 0, 1, 0.3,"
            " '2024-01-01')"
        )
    with pytest.raises(UsageError, match=r"commercial\.rate_card already holds data"):
        seed(db_conninfo, loans=100)


def test_counts_and_schedules(db_conninfo: str) -> None:
    stages: list[tuple[str, int, int]] = []
    result = seed(db_conninfo, progress=lambda *event: stages.append(event))
    assert stages[-1] == ("loans", LOANS, LOANS)
    assert {stage for stage, _, _ in stages} == {"rate_card", "customers", "loans"}
    with psycopg.connect(db_conninfo) as conn:
        counts = {
            role: scalar(
                conn,
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*DEFAULT.split(role))),
            )
            for role in DEFAULT.roles()
        }
        assert counts == {
            "customers": result.customers,
            "loans": LOANS,
            "payment_schedule": result.installments,
            "payments": result.payments,
            "rate_card": result.rate_cards,
        }
        assert result.customers == round(LOANS / 60)
        assert (
            scalar(conn, "SELECT count(DISTINCT customer_id) FROM core_banking.loans")
            == result.customers
        )
        per_loan = conn.execute(
            "SELECT count(s.loan_id), min(s.installment_no), max(s.installment_no), l.principal,"
            " sum(s.principal_due), max(s.due_date) = l.maturity_date"
            " FROM core_banking.loans l LEFT JOIN core_banking.payment_schedule s USING (loan_id)"
            " GROUP BY l.loan_id"
        ).fetchall()
        assert all(n >= 1 and lo == 1 and hi == n for n, lo, hi, *_ in per_loan)
        assert all(principal == due and last for *_, principal, due, last in per_loan)
        multi = sum(1 for n, *_ in per_loan if n > 1)
        assert 0.01 * LOANS < multi < 0.06 * LOANS and max(n for n, *_ in per_loan) <= 4
        bad_bullets = scalar(conn, """
            SELECT count(*)
            FROM core_banking.loans l JOIN core_banking.payment_schedule s USING (loan_id)
            WHERE NOT EXISTS (SELECT FROM core_banking.payment_schedule x
                              WHERE x.loan_id = l.loan_id AND x.installment_no = 2)
              AND (s.due_date <> l.disbursement_date + l.term_days OR s.due_date <> l.maturity_date
                   OR s.principal_due <> l.principal
                   OR s.interest_due
                      <> round(l.principal * l.interest_rate_apr * l.term_days / 360, 2)
                   OR s.fee_due <> 0 OR s.other_due <> 0 OR s.tax_due <> 0)
        """)  # fmt: skip
        assert bad_bullets == 0
        loans = conn.execute(
            "SELECT min(term_days), max(term_days), min(principal), max(principal),"
            " min(interest_rate_apr), max(interest_rate_apr),"
            " array_agg(DISTINCT company ORDER BY company),"
            " array_agg(DISTINCT risk_band ORDER BY risk_band), array_agg(DISTINCT currency),"
            " array_agg(DISTINCT product_type), array_agg(DISTINCT status ORDER BY status),"
            " bool_and(origination_fee_taxes = round(origination_fee * 0.13, 2)),"
            " bool_and(origination_fee BETWEEN round(principal * 0.01, 2)"
            "                              AND round(principal * 0.03, 2))"
            " FROM core_banking.loans"
        ).fetchone()
    assert loans is not None
    assert loans[0] >= 10 and loans[1] <= 180
    assert Decimal("300") <= loans[2] and loans[3] <= Decimal("250000")
    assert Decimal("0.15") < loans[4] and loans[5] < Decimal("0.65")
    assert list(loans[6:11]) == [["ABF", "ABT"], list("ABCDE"), ["USD"], ["factoring"],
                           ["complete", "current", "default", "written_off"]]  # fmt: skip
    assert loans[11] and loans[12]


def test_nothing_after_through_and_history_is_consistent(db_conninfo: str) -> None:
    through = date(2024, 6, 30)
    seed(db_conninfo, through=through)
    with psycopg.connect(db_conninfo) as conn:
        assert scalar(conn, "SELECT max(paid_on) FROM core_banking.payments") <= through
        assert scalar(conn, "SELECT max(disbursement_date) FROM core_banking.loans") <= through
        assert scalar(conn, "SELECT min(disbursement_date) FROM core_banking.loans") > date(
            2021, 6, 30
        )
        assert scalar(conn, "SELECT max(written_off_date) FROM core_banking.loans") <= through
        assert (
            scalar(conn, "SELECT max(maturity_date) FROM core_banking.loans") > through
        )  # still open
        assert scalar(conn, """
            SELECT count(*) FROM core_banking.payments p JOIN core_banking.loans l USING (loan_id)
            WHERE p.paid_on < l.disbursement_date OR p.currency <> 'USD'
        """) == 0  # fmt: skip
        assert scalar(conn, """
            SELECT count(*)
            FROM core_banking.loans l JOIN core_banking.payment_schedule s USING (loan_id)
            WHERE s.installment_no = 1 AND l.written_off_date <= s.due_date + 180
        """) == 0  # fmt: skip
        overpaid = scalar(conn, """
            SELECT count(*) FROM (SELECT l.loan_id FROM core_banking.loans l
                                  JOIN core_banking.payments p USING (loan_id)
                                  GROUP BY l.loan_id, l.principal
                                  HAVING sum(p.principal_paid) > l.principal) x
        """)  # fmt: skip
        assert overpaid == 0
        assert scalar(conn, "SELECT count(*) FROM core_banking.payments WHERE rebates > 0") > 0
        assert scalar(conn, "SELECT count(*) FROM core_banking.payments WHERE fee_paid > 0") > 0


@pytest.mark.parametrize("asof", [THROUGH, date(2025, 6, 30)])
def test_every_delinquency_bucket_is_populated(db_conninfo: str, asof: date) -> None:
    seed(db_conninfo)
    with psycopg.connect(db_conninfo) as conn:
        buckets = {row[0] for row in conn.execute(BUCKETS_SQL, {"asof": asof})}
    assert buckets == {0, 1, 2, 3, 4, 5, 6}


def test_money_has_exactly_two_decimals_and_rates_six(db_conninfo: str) -> None:
    seed(db_conninfo)
    with psycopg.connect(db_conninfo) as conn:
        for role, columns in MONEY.items():
            for column in columns:
                query = sql.SQL("SELECT count(*) FROM {} WHERE scale({}) <> 2 OR {} < 0").format(
                    sql.Identifier(*DEFAULT.split(role)),
                    sql.Identifier(column),
                    sql.Identifier(column),
                )
                assert scalar(conn, query) == 0, f"{role}.{column}"
        assert (
            scalar(
                conn, "SELECT count(*) FROM core_banking.loans WHERE scale(interest_rate_apr) <> 6"
            )
            == 0
        )


def test_rate_card_has_two_periods_and_narrower_bands(db_conninfo: str) -> None:
    seed(db_conninfo)
    with psycopg.connect(db_conninfo) as conn:
        periods = conn.execute(
            "SELECT effective_from, effective_to, count(*) FROM commercial.rate_card"
            " GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
        assert [(start, end) for start, end, _ in periods] == [
            (date(2022, 12, 31), date(2024, 6, 30)),
            (date(2024, 7, 1), None),
        ]
        assert periods[0][2] == periods[1][2] > 100
        overlapping = scalar(conn, """
            SELECT count(*) FROM commercial.rate_card a JOIN commercial.rate_card b
              ON a.rate_card_id <> b.rate_card_id AND a.effective_from = b.effective_from
             AND a.risk_band = b.risk_band
             AND a.tenor_min_days >= b.tenor_min_days AND a.tenor_max_days <= b.tenor_max_days
             AND a.ticket_min >= b.ticket_min AND a.ticket_max <= b.ticket_max
        """)  # fmt: skip
        assert overlapping >= 4  # narrower bands inside grid cells, in both periods
        deviation = scalar(conn, """
            SELECT max(abs(l.interest_rate_apr - (
                SELECT r.apr FROM commercial.rate_card r
                WHERE r.risk_band = l.risk_band
                  AND l.term_days BETWEEN r.tenor_min_days AND r.tenor_max_days
                  AND l.principal BETWEEN r.ticket_min AND r.ticket_max
                  AND l.disbursement_date >= r.effective_from
                  AND (r.effective_to IS NULL OR l.disbursement_date <= r.effective_to)
                ORDER BY r.tenor_max_days - r.tenor_min_days, r.ticket_max - r.ticket_min LIMIT 1)))
            FROM core_banking.loans l
        """)  # fmt: skip
        assert deviation <= Decimal("0.02")


def test_no_personal_names(db_conninfo: str) -> None:
    seed(db_conninfo, loans=200)
    with psycopg.connect(db_conninfo) as conn:
        ids = conn.execute(
            "SELECT bool_and(customer_id ~ '^CUS-[0-9]{6}$'), array_agg(DISTINCT country)"
            " FROM core_banking.customers"
        ).fetchone()
        assert ids == (True, ["SLV"])
        assert scalar(
            conn, "SELECT bool_and(loan_id ~ '^AB[TF]-[0-9]{7}$') FROM core_banking.loans"
        )
        assert scalar(
            conn, "SELECT bool_and(payment_id ~ '^PAY-[0-9]{8}$') FROM core_banking.payments"
        )


def test_credit_risk_cases_are_in_the_book(db_conninfo: str) -> None:
    # the cases the credit-risk figures (definitions version 2) need, found by plain SQL
    seed(db_conninfo)
    with psycopg.connect(db_conninfo) as conn:
        paid = """
            SELECT l.loan_id, l.principal, l.written_off_date, s.due_date,
                   coalesce(sum(p.principal_paid), 0) AS paid, max(p.paid_on) AS last_paid_on
            FROM core_banking.loans l
            JOIN core_banking.payment_schedule s ON s.loan_id = l.loan_id
            LEFT JOIN core_banking.payments p ON p.loan_id = l.loan_id
            WHERE NOT EXISTS (SELECT FROM core_banking.payment_schedule x
                              WHERE x.loan_id = l.loan_id AND x.installment_no = 2)
            GROUP BY l.loan_id, l.principal, l.written_off_date, s.due_date
        """
        # settled with one cent left
        cents = scalar(conn, f"SELECT count(*) FROM ({paid}) t WHERE principal - paid = 0.01")
        # repaid in full more than 180 days after the due date (written off on day 181)
        very_late = scalar(
            conn,
            f"SELECT count(*) FROM ({paid}) t WHERE paid = principal"
            " AND last_paid_on > due_date + 180",
        )
        # cash received after the written_off_date: a recovery
        recovered = scalar(conn, """
            SELECT count(DISTINCT l.loan_id) FROM core_banking.loans l
            JOIN core_banking.payments p ON p.loan_id = l.loan_id
            WHERE p.paid_on >= l.written_off_date
        """)  # fmt: skip
    assert 5 <= cents <= 0.02 * LOANS
    assert 3 <= very_late <= 0.02 * LOANS
    assert recovered >= 3
