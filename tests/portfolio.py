"""Hand-built portfolios for dataset tests: plain INSERTs into the default source contract.

Usage::

    with Portfolio(db_conninfo) as book:
        book.loan("L1", disbursed=date(2024, 1, 1), principal="1000.00",
                  schedule=[(date(2024, 2, 1), "1000.00")],
                  payments=[(date(2024, 1, 20), "400.00")])

Customers are created on first use (every loan needs one: customer_id is a foreign key).
Money is given as strings (or Decimals) so nothing passes through a binary float.

A schedule item is ``(due_date, principal_due)`` (interest_due 10.00, as the dpd tests assume)
or a ``Due`` with every component; a payment is ``(paid_on, principal_paid)`` (interest_paid
5.00) or a ``Pay`` with every component.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from types import TracebackType
from typing import Any

import psycopg

Money = str | Decimal


@dataclass(frozen=True)
class Due:
    """One installment with all its components."""

    due_date: date
    principal: Money
    interest: Money = "0.00"
    fee: Money = "0.00"
    other: Money = "0.00"
    tax: Money = "0.00"


@dataclass(frozen=True)
class Pay:
    """One payment with all its components."""

    paid_on: date
    principal: Money
    interest: Money = "0.00"
    fee: Money = "0.00"
    other: Money = "0.00"
    tax: Money = "0.00"
    fee_tax: Money = "0.00"
    rebates: Money = "0.00"


def _due(item: Due | tuple[date, Money]) -> Due:
    if isinstance(item, Due):
        return item
    due_date, principal = item
    return Due(due_date, principal, interest="10.00")


def _pay(item: Pay | tuple[date, Money]) -> Pay:
    if isinstance(item, Pay):
        return item
    paid_on, principal = item
    return Pay(paid_on, principal, interest="5.00")


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

    def customer(
        self,
        customer_id: str,
        *,
        segment: str | None = None,
        industry: str | None = None,
    ) -> None:
        if customer_id in self._customers:
            return
        self.conn.execute(
            "INSERT INTO core_banking.customers (customer_id, customer_type, segment, industry,"
            " country) VALUES (%s, 'business', %s, %s, 'SLV') ON CONFLICT DO NOTHING",
            (customer_id, segment, industry),
        )
        self._customers.add(customer_id)

    def loan(
        self,
        loan_id: str,
        *,
        disbursed: date,
        principal: Money,
        schedule: Iterable[Due | tuple[date, Money]] = (),
        payments: Iterable[Pay | tuple[date, Money]] = (),
        customer_id: str = "C1",
        company: str = "ABT",
        written_off_date: date | None = None,
        apr: Money | None = "0.450000",
        fee: Money = "0.00",
        fee_taxes: Money = "0.00",
        risk_band: str | None = None,
        product_type: str = "factoring",
        term_days: int | None = None,
    ) -> None:
        """A loan, its installments numbered 1, 2, ... in the order given, and its payments.

        ``term_days`` defaults to the days from disbursement to the last due date."""
        self.customer(customer_id)
        installments = [_due(item) for item in schedule]
        maturity = max((d.due_date for d in installments), default=None)
        term = (
            term_days
            if term_days is not None
            else (maturity - disbursed).days
            if maturity
            else None
        )
        self.conn.execute(
            "INSERT INTO core_banking.loans (loan_id, customer_id, company, product_type,"
            " risk_band, disbursement_date, maturity_date, term_days, principal,"
            " interest_rate_apr, origination_fee, origination_fee_taxes, written_off_date)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                loan_id,
                customer_id,
                company,
                product_type,
                risk_band,
                disbursed,
                maturity,
                term,
                Decimal(principal),
                None if apr is None else Decimal(apr),
                Decimal(fee),
                Decimal(fee_taxes),
                written_off_date,
            ),
        )
        for number, d in enumerate(installments, start=1):
            self.conn.execute(
                "INSERT INTO core_banking.payment_schedule (loan_id, installment_no, due_date,"
                " principal_due, interest_due, fee_due, other_due, tax_due)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    loan_id,
                    number,
                    d.due_date,
                    *(Decimal(x) for x in (d.principal, d.interest, d.fee, d.other, d.tax)),
                ),
            )
        for item in payments:
            p = _pay(item)
            self._payments += 1
            self.conn.execute(
                "INSERT INTO core_banking.payments (payment_id, loan_id, paid_on,"
                " principal_paid, interest_paid, fee_paid, other_paid, tax_paid, fee_tax_paid,"
                " rebates, currency) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'USD')",
                (
                    f"P{self._payments:05d}-{loan_id}",  # unique across Portfolio instances
                    loan_id,
                    p.paid_on,
                    *(
                        Decimal(x)
                        for x in (
                            p.principal,
                            p.interest,
                            p.fee,
                            p.other,
                            p.tax,
                            p.fee_tax,
                            p.rebates,
                        )
                    ),
                ),
            )

    def rate_card(
        self,
        *,
        risk_band: str | None,
        tenor: tuple[int, int],
        ticket: tuple[Money, Money],
        apr: Money,
        fee_rate: Money = "0.000000",
        effective: tuple[date, date | None] = (date(2000, 1, 1), None),
        product_type: str = "factoring",
        rate_card_id: int | None = None,
    ) -> None:
        """One rate card band; ``tenor`` and ``ticket`` are inclusive (min, max) bounds."""
        self.conn.execute(
            "INSERT INTO commercial.rate_card (rate_card_id, product_type, risk_band,"
            " tenor_min_days, tenor_max_days, ticket_min, ticket_max, apr, fee_rate,"
            " effective_from, effective_to)"
            " OVERRIDING SYSTEM VALUE VALUES"
            " (coalesce(%s, nextval(pg_get_serial_sequence('commercial.rate_card',"
            " 'rate_card_id'))), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                rate_card_id,
                product_type,
                risk_band,
                tenor[0],
                tenor[1],
                Decimal(ticket[0]),
                Decimal(ticket[1]),
                Decimal(apr),
                Decimal(fee_rate),
                effective[0],
                effective[1],
            ),
        )


# ---------------------------------------------------------------------------------------------
# The June 2025 book: a dozen loans that exercise every KPI, worked out by hand in test_kpi.py,
# test_analytics.py and test_export_all.py. As of D = 2025-06-30 (a month-end):
#
# loan cust disbursed   principal apr  fee+tax     schedule (due: principal)   payments (principal)
# L1   C1   2025-06-10  10,000    0.36 200+26.00   08-09: 10,000               none
# L2   C1   2025-05-01   5,000    0.48 100+13.00   05-31: 5,000                06-05: 2,000
# L3   C2   2025-03-01   8,000    0.30 160+20.80   04-15: 8,000                none
# L4   C3   2025-01-10   4,000    0.40 0           02-09: 4,000                02-09: 1,000
# L5   C3   2024-11-02   2,000    0.50 40+5.20     2025-01-01: 2,000           none
# L6   C4   2024-10-01   3,000    0.45 0           2024-10-31: 3,000           2024-11-15: 500
# L7   C4   2024-03-01   1,500    0.45 0           2024-03-31: 1,500  written_off_date 2024-06-15
# L8   C5   2025-04-01   6,000    0.45 0           05-01: 6,000                04-28: 6,000
# L9   C5   2025-06-01   7,000    0.42 140+18.20   06-21: 7,000                07-02: 7,000 (> D)
# L10  C2   2025-05-15   9,000    0.33 180+23.40   06-14, 07-14, 08-13: 3,000  06-14: 3,000
# L11  C1   2025-06-02   2,500    0.45 0           06-17: 2,500                06-17: 2,500
# L12  C6   2025-07-05  50,000    0.45 0           08-04: 50,000 (disbursed after D: out of scope)
#
# Interest, fees, taxes and rebates of the installments and payments are listed with each loan.
# ---------------------------------------------------------------------------------------------

JUNE_END = date(2025, 6, 30)


def june_book(conninfo: str) -> None:
    """Insert the June 2025 book (see the table above)."""
    with Portfolio(conninfo) as book:
        for customer, segment, industry in (
            ("C1", "SME", "Retail"),
            ("C2", "Corporate", "Manufacturing"),
            ("C3", "SME", "Retail"),
            ("C4", "Micro", None),
            ("C5", "Corporate", "Logistics"),
            ("C6", "SME", "Retail"),
        ):
            book.customer(customer, segment=segment, industry=industry)
        book.loan(
            "L1",
            customer_id="C1",
            disbursed=date(2025, 6, 10),
            principal="10000.00",
            apr="0.360000",
            fee="200.00",
            fee_taxes="26.00",
            risk_band="A",
            schedule=[Due(date(2025, 8, 9), "10000.00", interest="600.00")],
        )
        book.loan(
            "L2",
            customer_id="C1",
            disbursed=date(2025, 5, 1),
            principal="5000.00",
            apr="0.480000",
            fee="100.00",
            fee_taxes="13.00",
            risk_band="B",
            schedule=[Due(date(2025, 5, 31), "5000.00", interest="200.00")],
            payments=[Pay(date(2025, 6, 5), "2000.00", interest="100.00")],
        )
        book.loan(
            "L3",
            customer_id="C2",
            disbursed=date(2025, 3, 1),
            principal="8000.00",
            apr="0.300000",
            fee="160.00",
            fee_taxes="20.80",
            risk_band="A",
            schedule=[Due(date(2025, 4, 15), "8000.00", interest="300.00")],
        )
        book.loan(
            "L4",
            customer_id="C3",
            disbursed=date(2025, 1, 10),
            principal="4000.00",
            apr="0.400000",
            risk_band="C",
            schedule=[Due(date(2025, 2, 9), "4000.00", interest="130.00")],
            payments=[Pay(date(2025, 2, 9), "1000.00", interest="30.00")],
        )
        book.loan(
            "L5",
            customer_id="C3",
            disbursed=date(2024, 11, 2),
            principal="2000.00",
            apr="0.500000",
            fee="40.00",
            fee_taxes="5.20",
            risk_band="C",
            schedule=[Due(date(2025, 1, 1), "2000.00", interest="160.00")],
        )
        book.loan(
            "L6",
            customer_id="C4",
            disbursed=date(2024, 10, 1),
            principal="3000.00",
            risk_band="D",
            schedule=[Due(date(2024, 10, 31), "3000.00", interest="110.00")],
            payments=[Pay(date(2024, 11, 15), "500.00", interest="20.00")],
        )
        book.loan(
            "L7",
            customer_id="C4",
            disbursed=date(2024, 3, 1),
            principal="1500.00",
            risk_band="D",
            written_off_date=date(2024, 6, 15),
            schedule=[Due(date(2024, 3, 31), "1500.00", interest="55.00")],
        )
        book.loan(
            "L8",
            customer_id="C5",
            disbursed=date(2025, 4, 1),
            principal="6000.00",
            risk_band="A",
            schedule=[Due(date(2025, 5, 1), "6000.00", interest="150.00")],
            payments=[
                Pay(date(2025, 4, 28), "6000.00", interest="150.00", fee="10.00", rebates="5.00")
            ],
        )
        book.loan(
            "L9",
            customer_id="C5",
            disbursed=date(2025, 6, 1),
            principal="7000.00",
            apr="0.420000",
            fee="140.00",
            fee_taxes="18.20",
            risk_band="B",
            schedule=[Due(date(2025, 6, 21), "7000.00", interest="100.00")],
            payments=[Pay(date(2025, 7, 2), "7000.00", interest="100.00")],
        )
        book.loan(
            "L10",
            customer_id="C2",
            disbursed=date(2025, 5, 15),
            principal="9000.00",
            apr="0.330000",
            fee="180.00",
            fee_taxes="23.40",
            risk_band="A",
            schedule=[
                Due(date(2025, 6, 14), "3000.00", interest="90.00", tax="11.70"),
                Due(date(2025, 7, 14), "3000.00", interest="90.00"),
                Due(date(2025, 8, 13), "3000.00", interest="90.00"),
            ],
            payments=[Pay(date(2025, 6, 14), "3000.00", interest="90.00", tax="11.70")],
        )
        book.loan(
            "L11",
            customer_id="C1",
            disbursed=date(2025, 6, 2),
            principal="2500.00",
            risk_band="B",
            schedule=[Due(date(2025, 6, 17), "2500.00", interest="50.00", fee="5.00", tax="6.50")],
            payments=[
                Pay(
                    date(2025, 6, 17),
                    "2500.00",
                    interest="50.00",
                    fee="5.00",
                    other="5.00",
                    tax="6.50",
                    fee_tax="0.65",
                    rebates="2.00",
                )
            ],
        )
        book.loan(
            "L12",
            customer_id="C6",
            disbursed=date(2025, 7, 5),
            principal="50000.00",
            schedule=[Due(date(2025, 8, 4), "50000.00", interest="900.00")],
        )


# ---------------------------------------------------------------------------------------------
# Credit-risk loans beside the June 2025 book (definitions version 2): customers C10, C11, C12
# (test_analytics.py's extra loans use C7, C8, C9).
#
# loan cust disbursed   principal schedule (due: principal)   payments (principal + interest)
# L17  C10  2024-07-01  2,000     2024-07-31: 2,000          2025-02-16: 2,000 + 60 (200 days
#                                                            late: written off on 2025-01-28,
#                                                            day 181; the payment is a recovery)
# L18  C11  2025-05-01  1,500     05-31: 1,500               05-31: 1,499.99 + 30 (0.01 left:
#                                                            settled, not active)
# L19  C12  2024-08-01  4,000     2024-08-31: 4,000          2024-09-15: 1,000 + 20;
#                                 written_off_date            2025-03-10: 500 + 40 (a recovery)
#                                 2024-12-15
# Day counts: 2024-07-31 + 90 = 2024-10-29 and + 181 = 2025-01-28; 2024-08-31 + 90 = 2024-11-29
# and + 181 = 2025-02-28 (later than its written_off_date); 2024-07-31 to 2025-02-16 is 200 days.
# ---------------------------------------------------------------------------------------------


def credit_risk_loans(conninfo: str) -> None:
    """Insert L17, L18 and L19 (see the table above)."""
    with Portfolio(conninfo) as book:
        book.loan(
            "L17",
            customer_id="C10",
            disbursed=date(2024, 7, 1),
            principal="2000.00",
            schedule=[Due(date(2024, 7, 31), "2000.00", interest="60.00")],
            payments=[Pay(date(2025, 2, 16), "2000.00", interest="60.00")],
        )
        book.loan(
            "L18",
            customer_id="C11",
            disbursed=date(2025, 5, 1),
            principal="1500.00",
            schedule=[Due(date(2025, 5, 31), "1500.00", interest="30.00")],
            payments=[Pay(date(2025, 5, 31), "1499.99", interest="30.00")],
        )
        book.loan(
            "L19",
            customer_id="C12",
            disbursed=date(2024, 8, 1),
            principal="4000.00",
            written_off_date=date(2024, 12, 15),
            schedule=[Due(date(2024, 8, 31), "4000.00", interest="120.00")],
            payments=[
                Pay(date(2024, 9, 15), "1000.00", interest="20.00"),
                Pay(date(2025, 3, 10), "500.00", interest="40.00"),
            ],
        )
