"""The source contract (docs/domain.md): create it (`db init`) and compare a database with it."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import psycopg
from psycopg import sql

from abaco_cli.settings import SourceTables

# role -> column -> (accepted PostgreSQL types, required)
_MONEY = ("numeric",)  # and scale 2: see _money_columns
_DATE = ("date",)
_TEXT = ("text", "character varying", "character")
_TS = ("timestamp with time zone",)
_INT = ("integer", "bigint", "smallint")
_RATE = ("numeric",)

CONTRACT: dict[str, dict[str, tuple[str, ...]]] = {
    "customers": {
        "customer_id": _TEXT, "customer_type": _TEXT, "segment": _TEXT, "industry": _TEXT,
        "city": _TEXT, "state": _TEXT, "country": _TEXT, "created_at": _TS, "updated_at": _TS,
    },
    "loans": {
        "loan_id": _TEXT, "customer_id": _TEXT, "company": _TEXT, "product_type": _TEXT,
        "risk_band": _TEXT, "currency": _TEXT, "disbursement_date": _DATE,
        "maturity_date": _DATE, "term_days": _INT, "principal": _MONEY,
        "interest_rate_apr": _RATE, "origination_fee": _MONEY, "origination_fee_taxes": _MONEY,
        "status": _TEXT, "written_off_date": _DATE, "created_at": _TS, "updated_at": _TS,
    },
    "payment_schedule": {
        "loan_id": _TEXT, "installment_no": _INT, "due_date": _DATE, "principal_due": _MONEY,
        "interest_due": _MONEY, "fee_due": _MONEY, "other_due": _MONEY, "tax_due": _MONEY,
    },
    "payments": {
        "payment_id": _TEXT, "loan_id": _TEXT, "paid_on": _DATE, "principal_paid": _MONEY,
        "interest_paid": _MONEY, "fee_paid": _MONEY, "other_paid": _MONEY, "tax_paid": _MONEY,
        "fee_tax_paid": _MONEY, "rebates": _MONEY, "currency": _TEXT, "created_at": _TS,
        "updated_at": _TS,
    },
    "rate_card": {
        "rate_card_id": _INT, "product_type": _TEXT, "risk_band": _TEXT,
        "tenor_min_days": _INT, "tenor_max_days": _INT, "ticket_min": _MONEY,
        "ticket_max": _MONEY, "apr": _RATE, "fee_rate": _RATE, "effective_from": _DATE,
        "effective_to": _DATE,
    },
}  # fmt: skip


MONEY_COLUMNS: dict[str, frozenset[str]] = {
    "customers": frozenset(),
    "loans": frozenset({"principal", "origination_fee", "origination_fee_taxes"}),
    "payment_schedule": frozenset(
        {"principal_due", "interest_due", "fee_due", "other_due", "tax_due"}
    ),
    "payments": frozenset(
        {"principal_paid", "interest_paid", "fee_paid", "other_paid", "tax_paid", "fee_tax_paid",
         "rebates"}
    ),
    "rate_card": frozenset({"ticket_min", "ticket_max"}),
}  # fmt: skip


@dataclass(frozen=True)
class ContractProblem:
    """One way a database falls short of the contract."""

    table: str
    column: str | None
    problem: str

    def __str__(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        return f"{where}: {self.problem}"


def contract_ddl(tables: SourceTables) -> sql.Composed:
    """The DDL of contract.sql with the configured qualified names substituted."""
    text = files("abaco_cli.db").joinpath("sql/contract.sql").read_text(encoding="utf-8")
    names: dict[str, sql.Composable] = {}
    for role in tables.roles():
        schema, table = tables.split(role)
        names[role] = sql.Identifier(schema, table)
        names[f"{role}_schema"] = sql.Identifier(schema)
    return sql.SQL(text).format(**names)


def init_contract(conn: psycopg.Connection[Any], tables: SourceTables) -> list[str]:
    """Create every missing schema, table and index; safe to run again. Returns tables created."""
    before = {p.table for p in check_contract(conn, tables) if p.column is None}
    conn.execute(contract_ddl(tables))
    conn.commit()
    return sorted(before)


def check_contract(conn: psycopg.Connection[Any], tables: SourceTables) -> list[ContractProblem]:
    """Every missing table or column, and every column whose type is incompatible."""
    problems: list[ContractProblem] = []
    query = """
        SELECT column_name, data_type, numeric_scale
        FROM information_schema.columns
        WHERE table_schema = %s AND table_name = %s
    """
    for role, expected in CONTRACT.items():
        schema, table = tables.split(role)
        qualified = f"{schema}.{table}"
        rows = conn.execute(query, (schema, table)).fetchall()
        if not rows:
            problems.append(ContractProblem(qualified, None, "table is missing"))
            continue
        actual = {name: (dtype, scale) for name, dtype, scale in rows}
        for column, accepted in expected.items():
            if column not in actual:
                problems.append(ContractProblem(qualified, column, "column is missing"))
                continue
            dtype, scale = actual[column]
            if dtype not in accepted:
                want = " or ".join(accepted)
                problems.append(
                    ContractProblem(qualified, column, f"type is {dtype}, expected {want}")
                )
            elif column in MONEY_COLUMNS[role] and scale != 2:
                problems.append(
                    ContractProblem(
                        qualified, column, f"money must be numeric(18,2); scale is {scale}"
                    )
                )
    return problems
