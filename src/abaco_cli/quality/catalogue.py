"""The data-quality checks: name, default severity, what each finds, and the SQL file that
finds it.

A SQL file (``sql/<query>.sql``) lists offending rows tagged with the check they break; most
files serve one check, ``by_loan.sql`` serves the six that compare a loan with its installments
and payments (one pass over the three tables instead of six). Only names and words here (no
settings, no database), so that the settings can validate ``dq.checks`` against the names
without importing the checks themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


BY_LOAN = "by_loan"


@dataclass(frozen=True)
class CheckSpec:
    """One check: a stable snake_case name, its default severity, one line on what it finds,
    the query that finds it (``sql/<query>.sql``; by default its own name) and, when a unique
    index of the source makes every finding impossible, that index's columns (the check then
    reads the catalogue instead of the table)."""

    name: str
    severity: Severity
    description: str
    query: str = ""
    unique_guard: tuple[str, tuple[str, ...]] | None = None  # (role, columns)

    @property
    def query_name(self) -> str:
        return self.query or self.name


CATALOGUE: tuple[CheckSpec, ...] = (
    CheckSpec(
        "null_required",
        "error",
        "NULL in a column the source contract requires (keys and NOT NULL columns)",
    ),
    CheckSpec(
        "non_finite_number",
        "error",
        "NaN, Infinity or -Infinity in a numeric column",
    ),
    CheckSpec(
        "non_positive_principal",
        "error",
        "loan principal zero or negative",
    ),
    CheckSpec(
        "negative_amount",
        "error",
        "negative amount in an installment or a payment",
    ),
    CheckSpec(
        "unknown_loan",
        "error",
        "installment or payment of a loan that does not exist",
        query=BY_LOAN,
    ),
    CheckSpec(
        "schedule_principal_mismatch",
        "error",
        "installments' principal_due does not add up to the loan's principal "
        "(beyond dpd.tolerance)",
        query=BY_LOAN,
    ),
    CheckSpec(
        "due_before_disbursement",
        "error",
        "installment due before the loan's disbursement date",
        query=BY_LOAN,
    ),
    CheckSpec(
        "payment_before_disbursement",
        "warning",
        "payment dated before the loan's disbursement date",
        query=BY_LOAN,
    ),
    CheckSpec(
        "overpayment",
        "warning",
        "principal paid above the loan's principal (beyond dpd.tolerance); amount = the excess",
        query=BY_LOAN,
    ),
    CheckSpec(
        "past_maturity_no_schedule",
        "warning",
        "loan past maturity (before the as-of date) without any installment",
        query=BY_LOAN,
    ),
    CheckSpec(
        "duplicate_installment",
        "warning",
        "two or more installments of one loan with the same installment_no",
        unique_guard=("payment_schedule", ("loan_id", "installment_no")),
    ),
)

CHECK_NAMES: tuple[str, ...] = tuple(spec.name for spec in CATALOGUE)
