"""Issue 10, part 5, in the export path: the data-quality checks run inside the export's own
snapshot, before any figure; errors stop the date (nothing published), warnings are recorded in
every manifest of the date, the audit record, the metrics and the health check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from tests.conftest import invoke
from tests.ops import add_loans, manifest_path, metric_samples, read_records, tree_snapshot

DAY = "2025-12-30"


def execute(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(statement)


def manifest(runtime_dir: Path, dataset: str) -> dict[str, Any]:
    return dict(json.loads(manifest_path(runtime_dir, dataset, DAY).read_text()))


def test_an_error_stops_the_date_and_publishes_nothing(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    assert invoke(cli, "export", "all", "--as-of", DAY).exit_code == 0
    before = tree_snapshot(runtime_dir / "exports")
    execute(
        db_conninfo,
        "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date, principal)"
        " VALUES ('BAD-1', 'C1', '2025-06-01', -5000.00)",
    )
    result = invoke(cli, "export", "all", "--as-of", DAY)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("abaco: error:")]
    assert len(errors) == 1
    assert "non_positive_principal" in errors[0] and "BAD-1" in errors[0]
    assert tree_snapshot(runtime_dir / "exports") == before  # the previous run stays whole
    fail = read_records(runtime_dir)[-1]
    assert (fail["event"], fail["exit_code"]) == ("FAIL", 1)
    assert fail["details"]["dq"][DAY]["outcome"] == "fail"
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    assert samples[("abaco_dq_last_status", ())] == 0


def test_a_warning_is_recorded_and_the_figures_go_out(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    execute(
        db_conninfo,
        "INSERT INTO core_banking.payments (payment_id, loan_id, paid_on, principal_paid)"
        " VALUES ('P-EARLY', 'L1', '2025-04-01', 10.00)",  # L1 was disbursed on 2025-05-01
    )
    result = invoke(cli, "export", "all", "--as-of", DAY)
    assert result.exit_code == 0, result.stderr
    assert "payment_before_disbursement" in result.stderr  # the warning, logged
    for dataset in ("dpd", "kpi", "pricing", "analytics"):
        dq = manifest(runtime_dir, dataset)["dq"]
        assert dq["outcome"] == "warn" and dq["warnings"] == 1 and dq["errors"] == 0
        early = next(c for c in dq["checks"] if c["name"] == "payment_before_disbursement")
        assert early["count"] == 1 and early["examples"][0]["key"] == {"payment_id": "P-EARLY"}
    health = invoke(cli, "healthcheck", "--check", "dq")
    assert health.exit_code == 1
    assert "payment_before_disbursement 1" in health.stdout
    assert invoke(cli, "audit", "verify").exit_code == 0


def test_the_policy_can_let_errors_through(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_loans(db_conninfo)
    execute(
        db_conninfo,
        "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date, principal)"
        " VALUES ('BAD-1', 'C1', '2025-06-01', 0.00)",
    )
    monkeypatch.setenv("ABACO_DQ__ON_ERROR", "warn")
    result = invoke(cli, "export", "dpd", "--as-of", DAY)
    assert result.exit_code == 0, result.stderr
    dq = manifest(runtime_dir, "dpd")["dq"]
    assert dq["outcome"] == "warn" and dq["errors"] == 1
    assert dq["policy"] == {"on_error": "warn", "on_warning": "warn"}


def test_a_clean_book_passes_and_the_health_check_says_so(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    assert invoke(cli, "export", "dpd", "--as-of", DAY).exit_code == 0
    assert manifest(runtime_dir, "dpd")["dq"]["outcome"] == "pass"
    health = invoke(cli, "healthcheck", "--check", "dq", "--json")
    assert health.exit_code == 0
    assert json.loads(health.stdout)["checks"][0]["summary"] == (
        "the newest exports passed their data-quality checks"
    )
