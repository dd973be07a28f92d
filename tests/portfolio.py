"""Hand-built portfolios for dataset tests: plain INSERTs into the default source contract.

Usage::

    with Portfolio(db_conninfo) as book:
        book.loan("L1", disbursed=date(2024, 1, 1), principal="1000.00",
                  schedule=[(date(2024, 2, 1), "1000.00")],
                  payments=[(date(2024, 1, 20), "400.00")])

Customers are created on first use (every loan needs one: customer_id is a foreign key).
Money is given as strings (or Decimals) so nothing passes through a binary float.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal
from types import TracebackType
from typing import Any

import psycopg

Money = str | Decimal


class Portfolio:
    """One connection; everything inserted is committed when the ``with`` block ends."""

    def __init__(self, conninfo: str) -> None:
        self.conn: psycopg.Connection[Any] = psycopg.connect(conninfo)
        self._customers: set[str] = set()
        self._payments = 0

    def __enter__(self) -> Portfolio:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.conn.commit()
        else:
            self.conn.rollback()
        self.conn.close()

    def customer(self, customer_id: str) -> None:
        if customer_id in self._customers:
            return
        self.conn.execute(
            "INSERT INTO core_banking.customers (customer_id, customer_type, country)"
            " VALUES (%s, 'business', 'SLV')",
            (customer_id,),
        )
        self._customers.add(customer_id)

    def loan(
        self,
        loan_id: str,
        *,
        disbursed: date,
        principal: Money,
        schedule: Iterable[tuple[date, Money]] = (),
        payments: Iterable[tuple[date, Money]] = (),
        customer_id: str = "C1",
        company: str = "ABT",
        written_off_date: date | None = None,
    ) -> None:
        """A loan, its installments (due_date, principal_due) numbered 1, 2, ... in the order
        given, and its payments (paid_on, principal_paid)."""
        self.customer(customer_id)
        installments = list(schedule)
        maturity = max((due for due, _ in installments), default=None)
        term = (maturity - disbursed).days if maturity else None
        self.conn.execute(
            "INSERT INTO core_banking.loans (loan_id, customer_id, company, disbursement_date,"
            " maturity_date, term_days, principal, interest_rate_apr, written_off_date)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 0.450000, %s)",
            (
                loan_id,
                customer_id,
                company,
                disbursed,
                maturity,
                term,
                Decimal(principal),
                written_off_date,
            ),
        )
        for number, (due, amount) in enumerate(installments, start=1):
            self.conn.execute(
                "INSERT INTO core_banking.payment_schedule"
                " (loan_id, installment_no, due_date, principal_due, interest_due)"
                " VALUES (%s, %s, %s, %s, 10.00)",
                (loan_id, number, due, Decimal(amount)),
            )
        for paid_on, amount in payments:
            self._payments += 1
            self.conn.execute(
                "INSERT INTO core_banking.payments"
                " (payment_id, loan_id, paid_on, principal_paid, interest_paid, currency)"
                " VALUES (%s, %s, %s, %s, 5.00, 'USD')",
                (f"P{self._payments:05d}", loan_id, paid_on, Decimal(amount)),
            )
