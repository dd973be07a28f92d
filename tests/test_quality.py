"""Data-quality checks (`abaco db check --data`, ``abaco_cli.quality.run_checks``): one test
per check with a bad row made by hand beside clean rows that must not be listed, the five
examples and the complete --json, the policy (dq.on_error / on_warning / checks), exit codes,
metrics, and the runbook's SQL. A real PostgreSQL, a fresh database per test."""

from __future__ import annotations

import json
import os
import re
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from typer.testing import CliRunner

from abaco_cli.db.connect import connect, snapshot
from abaco_cli.db.contract import check_contract
from abaco_cli.errors import ConfigurationError, ExitCode
from abaco_cli.quality import CHECK_NAMES, DataQualityError, QualityReport, run_checks
from abaco_cli.settings import Settings, load_settings
from tests.conftest import invoke
from tests.ops import metric_samples

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "runbooks" / "data-quality.md"
AS_OF = date(2025, 12, 31)

# A clean book: three USD bullet loans of 1,000.00 disbursed 2025-05-01, due 2025-06-01, the
# first repaid on the due date.
CLEAN = [
    "INSERT INTO core_banking.customers (customer_id) VALUES ('C1')",
    "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date, maturity_date,"
    " principal) SELECT 'L' || n, 'C1', '2025-05-01', '2025-06-01', 1000.00"
    " FROM generate_series(1, 3) AS n",
    "INSERT INTO core_banking.payment_schedule (loan_id, installment_no, due_date, principal_due)"
    " SELECT 'L' || n, 1, '2025-06-01', 1000.00 FROM generate_series(1, 3) AS n",
    "INSERT INTO core_banking.payments (payment_id, loan_id, paid_on, principal_paid)"
    " VALUES ('P1', 'L1', '2025-06-01', 1000.00)",
]


def sql_run(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def add_loan(
    dsn: str,
    loan_id: str,
    principal: str = "1000.00",
    *,
    disbursed: str = "2025-05-01",
    maturity: str | None = "2025-06-01",
    term_days: int | None = None,
    installments: list[tuple[int, str, str]] | None = None,
) -> None:
    """One loan and its installments ((installment_no, due_date, principal_due); by default
    one bullet installment of the whole principal on the maturity date)."""
    if installments is None:
        installments = [(1, maturity or disbursed, principal)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date,"
            " maturity_date, term_days, principal) VALUES (%s, 'C1', %s, %s, %s, %s)",
            (loan_id, disbursed, maturity, term_days, principal),
        )
        for number, due, amount in installments:
            conn.execute(
                "INSERT INTO core_banking.payment_schedule (loan_id, installment_no, due_date,"
                " principal_due) VALUES (%s, %s, %s, %s)",
                (loan_id, number, due, amount),
            )


def add_payment(dsn: str, payment_id: str, loan_id: str, paid_on: str, principal: str) -> None:
    sql_run(
        dsn,
        "INSERT INTO core_banking.payments (payment_id, loan_id, paid_on, principal_paid)"
        f" VALUES ('{payment_id}', '{loan_id}', '{paid_on}', {principal})",
    )


@pytest.fixture
def book(db_conninfo: str) -> str:
    sql_run(db_conninfo, *CLEAN)
    return db_conninfo


def checks(settings: Settings, *, full: bool = False, as_of: date = AS_OF) -> QualityReport:
    """Run the checks as an export does: inside a read-only REPEATABLE READ snapshot. They
    must leave that transaction open (no COMMIT) and write nothing."""
    conn = connect(settings)
    try:
        with snapshot(conn, settings):
            report = run_checks(conn, settings, as_of=as_of, full=full)
            assert conn.info.transaction_status == TransactionStatus.INTRANS
        return report
    finally:
        conn.close()


def found(report: QualityReport, name: str) -> list[tuple[str, dict[str, Any]]]:
    """(source column, key) of every finding of one check (run with full=True)."""
    result = report.check(name)
    assert result.findings is not None
    return [(f.column, dict(f.key)) for f in result.findings]


def only_failing(report: QualityReport) -> set[str]:
    return {c.name for c in report.checks if c.failed}


# --------------------------------------------------------------------------- the clean book


def test_a_clean_book_passes_every_check(book: str, settings: Settings) -> None:
    report = checks(settings, full=True)
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert report.outcome == "pass" and not report.blocking
    assert all(c.count == 0 and c.examples == () and c.findings == () for c in report.checks)
    assert report.summary() == "all 11 checks passed"
    # The contract's primary key makes duplicate installments impossible: the catalogue says so.
    assert report.check("duplicate_installment").guaranteed_by == (
        "core_banking.payment_schedule_pkey"
    )
    report.raise_if_blocking()


# ------------------------------------------------------------------------------ error checks


def test_null_principal_is_named_by_its_source_column(book: str, settings: Settings) -> None:
    sql_run(
        book,
        "ALTER TABLE core_banking.loans ALTER COLUMN principal DROP NOT NULL",
        "UPDATE core_banking.loans SET principal = NULL WHERE loan_id = 'L2'",
    )
    report = checks(settings, full=True)
    assert found(report, "null_required") == [("core_banking.loans.principal", {"loan_id": "L2"})]
    assert only_failing(report) == {"null_required"}
    assert report.blocking and report.outcome == "fail"


REQUIRED = {
    "customers": ["customer_id"],
    "loans": ["loan_id", "customer_id", "product_type", "currency", "disbursement_date",
              "principal"],
    "payment_schedule": ["loan_id", "installment_no", "due_date", "principal_due",
                         "interest_due", "fee_due", "other_due", "tax_due"],
    "payments": ["payment_id", "loan_id", "paid_on", "principal_paid", "interest_paid",
                 "fee_paid", "other_paid", "tax_paid", "fee_tax_paid", "rebates"],
    "rate_card": ["rate_card_id", "effective_from"],
}  # fmt: skip
VALID = {
    "customers": {"customer_id": "'C9'"},
    "loans": {"loan_id": "'X'", "customer_id": "'C1'", "product_type": "'factoring'",
              "currency": "'USD'", "disbursement_date": "'2025-05-01'", "principal": "1000"},
    "payment_schedule": {"loan_id": "'L1'", "installment_no": "9", "due_date": "'2025-06-01'",
                         "principal_due": "0", "interest_due": "0", "fee_due": "0",
                         "other_due": "0", "tax_due": "0"},
    "payments": {"payment_id": "'X'", "loan_id": "'L1'", "paid_on": "'2025-06-01'",
                 "principal_paid": "0", "interest_paid": "0", "fee_paid": "0", "other_paid": "0",
                 "tax_paid": "0", "fee_tax_paid": "0", "rebates": "0"},
    "rate_card": {"rate_card_id": "1", "effective_from": "'2025-01-01'", "product_type": "'f'",
                  "tenor_min_days": "0", "tenor_max_days": "9", "ticket_min": "0",
                  "ticket_max": "9", "apr": "0.1"},
}  # fmt: skip
SCHEMA = {"rate_card": "commercial"}


def test_null_required_covers_every_column_the_contract_requires(
    book: str, settings: Settings
) -> None:
    """A source whose schema allows NULL everywhere: one row per required column with only
    that column NULL; each is named, and nothing else is."""
    relax = [
        "ALTER TABLE core_banking.customers DROP CONSTRAINT customers_pkey CASCADE",
        "ALTER TABLE core_banking.loans DROP CONSTRAINT loans_pkey CASCADE",
        "ALTER TABLE core_banking.payment_schedule DROP CONSTRAINT payment_schedule_pkey",
        "ALTER TABLE core_banking.payments DROP CONSTRAINT payments_pkey",
        "ALTER TABLE commercial.rate_card DROP CONSTRAINT rate_card_pkey",
        "ALTER TABLE commercial.rate_card ALTER COLUMN rate_card_id DROP IDENTITY",
    ]
    rows = []
    for table, columns in REQUIRED.items():
        qualified = f"{SCHEMA.get(table, 'core_banking')}.{table}"
        for number, column in enumerate(columns):
            relax.append(f"ALTER TABLE {qualified} ALTER COLUMN {column} DROP NOT NULL")
            values = dict(VALID[table])
            key = next(iter(values))  # a key of its own for each row ...
            values[key] = str(100 + number) if table == "rate_card" else f"'{column}'"
            values[column] = "NULL"  # ... unless the key is the column left NULL
            rows.append(
                f"INSERT INTO {qualified} ({', '.join(values)})"
                f" VALUES ({', '.join(values.values())})"
            )
    sql_run(book, *relax, *rows)
    report = checks(settings, full=True)
    named = sorted(column for column, _ in found(report, "null_required"))
    expected = sorted(
        f"{SCHEMA.get(t, 'core_banking')}.{t}.{c}" for t, cs in REQUIRED.items() for c in cs
    )
    assert named == expected
    assert report.check("null_required").count == len(expected)


def test_nan_is_named_by_the_source_column_and_the_loan(book: str, settings: Settings) -> None:
    """numeric(18,2) holds 'NaN' in PostgreSQL 15; today's export would blame the derived
    output column `outstanding`. The check names core_banking.loans.principal and the loan,
    and only this check lists it (the schedule's sum is not also 'mismatched')."""
    sql_run(book, "UPDATE core_banking.loans SET principal = 'NaN' WHERE loan_id = 'L2'")
    report = checks(settings, full=True)
    result = report.check("non_finite_number")
    assert result.count == 1
    (finding,) = result.examples
    assert finding.column == "core_banking.loans.principal"
    assert dict(finding.key) == {"loan_id": "L2"} and finding.detail == "NaN"
    assert finding.label() == "core_banking.loans.principal L2: NaN"
    assert only_failing(report) == {"non_finite_number"}


def test_infinity_fits_only_a_plain_numeric_and_is_found_there(
    book: str, settings: Settings
) -> None:
    with psycopg.connect(book) as conn, pytest.raises(psycopg.errors.NumericValueOutOfRange):
        conn.execute("UPDATE core_banking.loans SET principal = 'Infinity'")
    sql_run(
        book,
        # A rate declared as plain numeric still satisfies the contract, and holds Infinity.
        "ALTER TABLE core_banking.loans ALTER COLUMN interest_rate_apr TYPE numeric",
        "UPDATE core_banking.loans SET interest_rate_apr = 'Infinity' WHERE loan_id = 'L3'",
        "UPDATE core_banking.payments SET rebates = 'NaN' WHERE payment_id = 'P1'",
    )
    with psycopg.connect(book) as conn:
        assert check_contract(conn, settings.tables) == []
    report = checks(settings, full=True)
    assert sorted(found(report, "non_finite_number"), key=str) == sorted(
        [
            ("core_banking.loans.interest_rate_apr", {"loan_id": "L3"}),
            ("core_banking.payments.rebates", {"payment_id": "P1"}),
        ],
        key=str,
    )
    assert {f.detail for f in report.check("non_finite_number").examples} == {"Infinity", "NaN"}


def test_negative_and_zero_principal(book: str, settings: Settings) -> None:
    """The issue's loan of -5000 (exported today as outstanding 0.00), and a loan of zero."""
    sql_run(
        book,
        "UPDATE core_banking.loans SET principal = -5000 WHERE loan_id = 'L2'",
        "UPDATE core_banking.loans SET principal = 0 WHERE loan_id = 'L3'",
    )
    report = checks(settings, full=True)
    result = report.check("non_positive_principal")
    assert result.count == 2 and result.severity == "error"
    assert [(dict(f.key), f.detail, f.amount) for f in result.examples] == [
        ({"loan_id": "L2"}, "-5000.00", Decimal("-5000.00")),
        ({"loan_id": "L3"}, "0.00", Decimal("0.00")),
    ]
    # Their schedules (1,000.00 each) are not also listed as not adding up: one cause, one check.
    assert only_failing(report) == {"non_positive_principal"}
    assert report.blocking


def test_negative_amounts_in_schedules_and_payments(book: str, settings: Settings) -> None:
    sql_run(
        book,
        "UPDATE core_banking.payment_schedule SET interest_due = -1.50 WHERE loan_id = 'L2'",
        "UPDATE core_banking.payments SET rebates = -2.00 WHERE payment_id = 'P1'",
    )
    report = checks(settings, full=True)
    assert sorted(found(report, "negative_amount"), key=str) == sorted(
        [
            ("core_banking.payment_schedule.interest_due", {"loan_id": "L2", "installment_no": 1}),
            ("core_banking.payments.rebates", {"payment_id": "P1"}),
        ],
        key=str,
    )
    amounts = sorted(f.amount for f in report.check("negative_amount").examples if f.amount)
    assert amounts == [Decimal("-2.00"), Decimal("-1.50")]
    assert only_failing(report) == {"negative_amount"}


def test_installments_and_payments_of_a_loan_that_does_not_exist(
    book: str, settings: Settings
) -> None:
    sql_run(
        book,
        "ALTER TABLE core_banking.payment_schedule DROP CONSTRAINT payment_schedule_loan_id_fkey",
        "ALTER TABLE core_banking.payments DROP CONSTRAINT payments_loan_id_fkey",
        "INSERT INTO core_banking.payment_schedule (loan_id, installment_no, due_date,"
        " principal_due) VALUES ('GHOST', 1, '2025-06-01', 10)",
        "INSERT INTO core_banking.payments (payment_id, loan_id, paid_on, principal_paid)"
        " VALUES ('PG', 'GHOST', '2025-06-01', 10)",
    )
    report = checks(settings, full=True)
    assert sorted(found(report, "unknown_loan"), key=str) == sorted(
        [
            ("core_banking.payment_schedule.loan_id", {"loan_id": "GHOST", "installment_no": 1}),
            ("core_banking.payments.loan_id", {"payment_id": "PG"}),
        ],
        key=str,
    )
    assert only_failing(report) == {"unknown_loan"}


def test_a_schedule_that_does_not_add_up_to_the_principal(book: str, settings: Settings) -> None:
    add_loan(book, "L4", installments=[(1, "2025-06-01", "600.00"), (2, "2025-07-01", "400.00")])
    add_loan(book, "L5", installments=[(1, "2025-06-01", "999.99")])  # within the tolerance
    add_loan(book, "L6", installments=[(1, "2025-06-01", "600.00"), (2, "2025-07-01", "300.00")])
    report = checks(settings, full=True)
    result = report.check("schedule_principal_mismatch")
    assert [dict(f.key) for f in result.examples] == [{"loan_id": "L6"}]
    (finding,) = result.examples
    assert finding.column == "core_banking.payment_schedule.principal_due"
    assert finding.amount == Decimal("-100.00")
    assert finding.detail == "scheduled 900.00, principal 1000.00"
    assert only_failing(report) == {"schedule_principal_mismatch"}


def test_an_installment_due_before_disbursement(book: str, settings: Settings) -> None:
    add_loan(book, "L4", installments=[(1, "2025-04-30", "1000.00")])  # a day before
    add_loan(book, "L5", installments=[(1, "2025-05-01", "1000.00")])  # on the day: fine
    report = checks(settings, full=True)
    assert found(report, "due_before_disbursement") == [
        ("core_banking.payment_schedule.due_date", {"loan_id": "L4", "installment_no": 1})
    ]
    assert report.check("due_before_disbursement").examples[0].detail == (
        "due 2025-04-30, disbursed 2025-05-01"
    )
    assert only_failing(report) == {"due_before_disbursement"}


# ---------------------------------------------------------------------------- warning checks


def test_a_payment_before_disbursement_is_a_warning(book: str, settings: Settings) -> None:
    add_payment(book, "P2", "L2", "2025-04-15", "100.00")
    add_payment(book, "P3", "L3", "2025-05-01", "100.00")  # on the day: fine
    report = checks(settings, full=True)
    assert found(report, "payment_before_disbursement") == [
        ("core_banking.payments.paid_on", {"payment_id": "P2"})
    ]
    assert report.check("payment_before_disbursement").severity == "warning"
    assert only_failing(report) == {"payment_before_disbursement"}
    assert report.outcome == "warn" and not report.blocking
    report.raise_if_blocking()


def test_an_overpayment_with_its_amount(book: str, settings: Settings) -> None:
    """The issue's payment of 100 times the principal; a cent over is within the tolerance."""
    add_payment(book, "P2", "L2", "2025-06-01", "1000.01")
    add_payment(book, "P3", "L3", "2025-06-01", "60000.00")
    add_payment(book, "P4", "L3", "2025-06-02", "40000.00")
    report = checks(settings, full=True)
    result = report.check("overpayment")
    assert result.count == 1 and result.severity == "warning"
    (finding,) = result.examples
    assert dict(finding.key) == {"loan_id": "L3"}
    assert finding.column == "core_banking.payments.principal_paid"
    assert finding.amount == Decimal("99000.00")
    assert finding.detail == "principal paid 100000.00, principal 1000.00"
    assert report.outcome == "warn"


def test_a_loan_past_maturity_without_a_schedule(book: str, settings: Settings) -> None:
    add_loan(book, "L4", maturity="2025-06-01", installments=[])
    add_loan(book, "L5", maturity="2026-03-01", installments=[])  # not matured at AS_OF
    add_loan(book, "L6", maturity=None, term_days=30, installments=[])  # 2025-05-31
    add_loan(book, "L7", maturity=None, installments=[])  # no maturity to judge
    add_loan(book, "L8", maturity="2025-12-31", installments=[])  # matures on AS_OF: not past
    report = checks(settings, full=True)
    assert found(report, "past_maturity_no_schedule") == [
        ("core_banking.loans.maturity_date", {"loan_id": "L4"}),
        ("core_banking.loans.maturity_date", {"loan_id": "L6"}),
    ]
    assert only_failing(report) == {"past_maturity_no_schedule"}
    # Judged at the as-of date: a backfill for mid-2025 sees none of them as matured.
    assert checks(settings, as_of=date(2025, 5, 15)).check("past_maturity_no_schedule").count == 0


def test_duplicate_installment_numbers(book: str, settings: Settings) -> None:
    sql_run(
        book,
        "ALTER TABLE core_banking.payment_schedule DROP CONSTRAINT payment_schedule_pkey",
        "INSERT INTO core_banking.payment_schedule (loan_id, installment_no, due_date,"
        " principal_due) VALUES ('L2', 1, '2025-06-01', 1000.00)",
    )
    report = checks(settings, full=True)
    result = report.check("duplicate_installment")
    assert result.guaranteed_by is None
    assert found(report, "duplicate_installment") == [
        ("core_banking.payment_schedule.installment_no", {"loan_id": "L2", "installment_no": 1})
    ]
    assert result.examples[0].detail == "2 rows"
    assert result.severity == "warning"


# ------------------------------------------------------------------ examples, policy, settings


def test_five_examples_in_key_order_and_every_key_in_full(
    db_conninfo: str, settings: Settings
) -> None:
    sql_run(db_conninfo, CLEAN[0])
    for n in range(7, 0, -1):
        add_loan(db_conninfo, f"L{n:02d}", "-1.00")
    summary = checks(settings).check("non_positive_principal")
    assert summary.count == 7 and summary.findings is None
    assert [f.key["loan_id"] for f in summary.examples] == ["L01", "L02", "L03", "L04", "L05"]
    complete = checks(settings, full=True).check("non_positive_principal")
    assert complete.findings is not None
    assert [f.key["loan_id"] for f in complete.findings] == [f"L{n:02d}" for n in range(1, 8)]
    payload = checks(settings, full=True).to_json(full=True)
    entry = next(c for c in payload["checks"] if c["name"] == "non_positive_principal")
    assert len(entry["examples"]) == 5 and len(entry["findings"]) == 7
    assert entry["findings"][6] == {
        "column": "core_banking.loans.principal",
        "key": {"loan_id": "L07"},
        "detail": "-1.00",
        "amount": "-1.00",
    }
    manifest = checks(settings).manifest_section()
    assert "findings" not in json.dumps(manifest)  # bounded: examples only


def test_the_policy_decides_what_blocks(book: str, settings: Settings) -> None:
    sql_run(book, "UPDATE core_banking.loans SET principal = -5000 WHERE loan_id = 'L2'")
    add_payment(book, "P2", "L3", "2025-04-01", "1.00")  # a warning too

    report = checks(settings)
    assert report.outcome == "fail" and report.blocking
    assert report.summary() == (
        "1 error check found rows (non_positive_principal 1); "
        "1 warning check found rows (payment_before_disbursement 1)"
    )
    with pytest.raises(DataQualityError) as caught:
        report.raise_if_blocking()
    assert caught.value.exit_code == ExitCode.FAILED
    assert "non_positive_principal" in caught.value.message
    assert "core_banking.loans.principal L2: -5000.00" in caught.value.message
    assert "abaco db check --data" in caught.value.hint

    lenient = settings.model_copy(
        update={"dq": settings.dq.model_copy(update={"on_error": "warn"})}
    )
    assert checks(lenient).outcome == "warn" and not checks(lenient).blocking

    off = settings.model_copy(
        update={"dq": settings.dq.model_copy(update={"checks": {"non_positive_principal": "off"}})}
    )
    report = checks(off)
    assert "non_positive_principal" not in [c.name for c in report.checks]
    assert report.outcome == "warn"

    strict = off.model_copy(update={"dq": off.dq.model_copy(update={"on_warning": "fail"})})
    assert checks(strict).blocking

    raised = off.model_copy(
        update={
            "dq": off.dq.model_copy(
                update={"checks": {"non_positive_principal": "off",
                                   "payment_before_disbursement": "error"}}
            )
        }
    )  # fmt: skip
    report = checks(raised)
    assert report.check("payment_before_disbursement").severity == "error" and report.blocking


def test_settings_refuse_unknown_checks_and_policies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("ABACO_")]:
        monkeypatch.delenv(key)
    assert load_settings().dq.on_error == "fail" and load_settings().dq.on_warning == "warn"
    with pytest.raises(ConfigurationError, match="unknown check nope"):
        load_settings(dq={"checks": {"nope": "error"}})
    with pytest.raises(ConfigurationError, match="not error, warning or off"):
        load_settings(dq={"checks": {"overpayment": "fatal"}})
    with pytest.raises(ConfigurationError, match=r"dq\.on_error"):
        load_settings(dq={"on_error": "ignore"})
    monkeypatch.setenv("ABACO_DQ__ON_ERROR", "warn")
    monkeypatch.setenv("ABACO_DQ__CHECKS", '{"overpayment": "error"}')
    loaded = load_settings()
    assert loaded.dq.on_error == "warn" and loaded.dq.checks == {"overpayment": "error"}


def test_the_checks_see_the_callers_snapshot(book: str, settings: Settings) -> None:
    """A bad row committed after the snapshot began is not seen: the checks read what the
    export reads, inside its transaction, and leave it open."""
    conn = connect(settings)
    try:
        with snapshot(conn, settings):
            conn.execute("SELECT count(*) FROM core_banking.loans").fetchone()  # snapshot taken
            sql_run(book, "UPDATE core_banking.loans SET principal = -1 WHERE loan_id = 'L2'")
            assert run_checks(conn, settings, as_of=AS_OF).outcome == "pass"
            assert conn.info.transaction_status == TransactionStatus.INTRANS
    finally:
        conn.close()
    assert checks(settings).outcome == "fail"


# ------------------------------------------------------------------------------------- CLI


def test_cli_clean_book_exits_0_and_writes_metrics(
    book: str, cli: CliRunner, runtime_dir: Path
) -> None:
    result = invoke(cli, "db", "check", "--data")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "check\tseverity\trows\texamples"
    assert [line.split("\t")[0] for line in lines[1:]] == list(CHECK_NAMES)
    assert "pass: all 11 checks passed" in result.stderr
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    assert samples[("abaco_dq_last_status", ())] == 1
    assert samples[("abaco_dq_failed_checks", (("severity", "error"),))] == 0
    assert samples[("abaco_dq_rows", (("check", "overpayment"), ("severity", "warning")))] == 0
    assert ("abaco_dq_last_run_timestamp_seconds", ()) in samples
    assert ("abaco_dq_duration_seconds", ()) in samples


def test_cli_an_error_exits_1_with_the_table_and_metrics(
    book: str, cli: CliRunner, runtime_dir: Path
) -> None:
    sql_run(book, "UPDATE core_banking.loans SET principal = -5000 WHERE loan_id = 'L2'")
    result = invoke(cli, "db", "check", "--data")
    assert result.exit_code == 1
    assert (
        "non_positive_principal\terror\t1\tcore_banking.loans.principal L2: -5000.00"
        in result.stdout.splitlines()
    )
    assert "data quality" in result.stderr and "fail" in result.stderr
    assert "runbooks/data-quality.md" in result.stderr
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    assert samples[("abaco_dq_last_status", ())] == 0
    assert samples[("abaco_dq_failed_checks", (("severity", "error"),))] == 1
    assert samples[("abaco_dq_failed_checks", (("severity", "warning"),))] == 0
    key = ("abaco_dq_rows", (("check", "non_positive_principal"), ("severity", "error")))
    assert samples[key] == 1


def test_cli_json_gives_every_key(book: str, cli: CliRunner) -> None:
    for n in range(1, 9):
        add_payment(book, f"PX{n}", "L2", "2025-04-01", "1.00")
    sql_run(book, "UPDATE core_banking.loans SET principal = 0 WHERE loan_id = 'L3'")
    result = invoke(cli, "db", "check", "--data", "--json")
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and payload["problems"] == []
    dq = payload["dq"]
    assert dq["outcome"] == "fail" and dq["errors"] == 1 and dq["warnings"] == 1
    assert dq["policy"] == {"on_error": "fail", "on_warning": "warn"}
    by_name = {c["name"]: c for c in dq["checks"]}
    early = by_name["payment_before_disbursement"]
    assert early["count"] == 8 and len(early["examples"]) == 5
    assert [f["key"]["payment_id"] for f in early["findings"]] == [f"PX{n}" for n in range(1, 9)]
    assert by_name["non_positive_principal"]["findings"][0]["column"] == (
        "core_banking.loans.principal"
    )


def test_cli_warnings_only_exit_0(book: str, cli: CliRunner) -> None:
    add_payment(book, "P2", "L2", "2025-06-01", "100000.00")
    result = invoke(cli, "db", "check", "--data")
    assert result.exit_code == 0
    assert "overpayment\twarning\t1\t" in result.stdout
    assert "principal paid 100000.00, principal 1000.00" in result.stdout
    assert "warn" in result.stderr


def test_cli_policy_from_the_environment(
    book: str, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql_run(book, "UPDATE core_banking.loans SET principal = -5000 WHERE loan_id = 'L2'")
    monkeypatch.setenv("ABACO_DQ__ON_ERROR", "warn")
    assert invoke(cli, "db", "check", "--data").exit_code == 0
    add_payment(book, "P2", "L3", "2025-06-01", "100000.00")
    monkeypatch.setenv("ABACO_DQ__ON_ERROR", "fail")
    monkeypatch.setenv(
        "ABACO_DQ__CHECKS", '{"overpayment": "error", "non_positive_principal": "off"}'
    )
    result = invoke(cli, "db", "check", "--data", "--json")
    assert result.exit_code == 1
    by_name = {c["name"]: c for c in json.loads(result.stdout)["dq"]["checks"]}
    assert by_name["overpayment"]["severity"] == "error" and by_name["overpayment"]["count"] == 1
    assert "non_positive_principal" not in by_name
    monkeypatch.setenv("ABACO_DQ__CHECKS", '{"overpay": "error"}')
    result = invoke(cli, "db", "check", "--data")
    assert result.exit_code == 2 and "unknown check overpay" in result.stderr


def test_cli_without_the_contract_the_data_is_not_checked(
    empty_db_conninfo: str, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABACO_DATABASE_URL", empty_db_conninfo)
    result = invoke(cli, "db", "check", "--data", "--json")
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["dq"] is None and payload["problems"]
    result = invoke(cli, "db", "check", "--data")
    assert result.exit_code == 1 and "need the contract" in result.stderr


def test_an_export_of_a_nan_principal_points_at_the_data_check(
    book: str, cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether the export stops at its own data-quality checks or (dq.on_error = warn) at the
    value it cannot write, the error leads to `abaco db check --data`, which names the source
    column and the loan."""
    sql_run(book, "UPDATE core_banking.loans SET principal = 'NaN' WHERE loan_id = 'L2'")
    monkeypatch.setenv("ABACO_DQ__ON_ERROR", "warn")
    result = invoke(cli, "export", "dpd", "--as-of", "2025-06-30")
    assert result.exit_code == 1
    assert "abaco db check --data" in result.stderr
    monkeypatch.delenv("ABACO_DQ__ON_ERROR")
    check = invoke(cli, "db", "check", "--data")
    assert "core_banking.loans.principal L2: NaN" in check.stdout


# ---------------------------------------------------------------------------------- runbook


def runbook_queries() -> dict[str, list[str]]:
    """check name -> the SQL statements of its section under "Listing the rows"."""
    text = RUNBOOK.read_text(encoding="utf-8")
    queries: dict[str, list[str]] = {}
    for name, block in re.findall(r"^### (\w+)\n.*?```sql\n(.*?)```", text, re.S | re.M):
        queries[name] = [s.strip() for s in block.split(";") if s.strip()]
    return queries


def make_everything_bad(dsn: str) -> None:
    """One row for every check."""
    sql_run(
        dsn,
        "ALTER TABLE core_banking.loans ALTER COLUMN principal DROP NOT NULL",
        "ALTER TABLE core_banking.payment_schedule DROP CONSTRAINT payment_schedule_loan_id_fkey",
        "ALTER TABLE core_banking.payments DROP CONSTRAINT payments_loan_id_fkey",
        "ALTER TABLE core_banking.payment_schedule DROP CONSTRAINT payment_schedule_pkey",
    )
    add_loan(dsn, "B_NULL")
    add_loan(dsn, "B_NAN")
    add_loan(dsn, "B_NEG", "-5000.00", installments=[])
    add_loan(dsn, "B_SCHED", installments=[(1, "2025-06-01", "900.00")])
    add_loan(dsn, "B_EARLY", installments=[(1, "2025-04-01", "1000.00")])
    add_loan(dsn, "B_DUP", installments=[(1, "2025-06-01", "500.00"), (1, "2025-06-01", "500.00")])
    sql_run(
        dsn,
        "UPDATE core_banking.loans SET principal = NULL WHERE loan_id = 'B_NULL'",
        "UPDATE core_banking.loans SET principal = 'NaN' WHERE loan_id = 'B_NAN'",
        "UPDATE core_banking.payment_schedule SET fee_due = -1 WHERE loan_id = 'L1'",
        "INSERT INTO core_banking.payments (payment_id, loan_id, paid_on, principal_paid)"
        " VALUES ('B_GHOST', 'GHOST', '2025-06-01', 1)",
    )
    add_payment(dsn, "B_BEFORE", "L2", "2025-04-01", "1.00")
    add_payment(dsn, "B_OVER", "L3", "2025-06-01", "100000.00")


def test_the_runbook_lists_the_rows_of_every_check(book: str, settings: Settings) -> None:
    make_everything_bad(book)
    report = checks(settings)
    assert only_failing(report) == set(CHECK_NAMES)
    queries = runbook_queries()
    assert sorted(queries) == sorted(CHECK_NAMES)
    with psycopg.connect(book) as conn:
        conn.read_only = True
        for name, statements in queries.items():
            rows = sum(len(conn.execute(s).fetchall()) for s in statements)  # type: ignore[arg-type]
            assert rows >= 1, f"the runbook's SQL for {name} lists nothing"
