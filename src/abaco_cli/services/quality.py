"""`db check --data`: the source contract, then the data-quality checks, in one snapshot.

The checks themselves live in ``abaco_cli.quality`` (the exports run the same ones inside
their own snapshot); this service opens the read-only snapshot, runs the contract check and,
when the contract is met, the data-quality checks, and writes the ``abaco_dq_*`` metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from abaco_cli import metrics
from abaco_cli.db.classify import classify
from abaco_cli.db.connect import connect, snapshot, source_identity, with_retries
from abaco_cli.db.contract import ContractProblem, check_contract
from abaco_cli.quality import CheckResult, QualityReport, run_checks
from abaco_cli.redaction import Redactor
from abaco_cli.settings import Settings


@dataclass(frozen=True)
class DataCheckResult:
    """The contract's problems (the data checks need the contract, so they run only when
    there are none) and the data-quality report."""

    source: str
    problems: list[ContractProblem]
    report: QualityReport | None

    @property
    def ok(self) -> bool:
        """False when the contract is not met or the policy says the figures must not go out."""
        return not self.problems and self.report is not None and not self.report.blocking


def check_data(
    settings: Settings,
    *,
    full: bool = False,
    progress: Callable[[CheckResult], None] | None = None,
) -> DataCheckResult:
    """Check the contract and, if it is met, the data (every finding with ``full``) inside
    one read-only REPEATABLE READ snapshot; record the result in the metrics."""
    redactor = Redactor.from_settings(settings)

    def attempt() -> tuple[list[ContractProblem], QualityReport | None]:
        conn = connect(settings, read_only=True)
        try:
            with snapshot(conn, settings):
                problems = check_contract(conn, settings.tables)
                if problems:
                    return problems, None
                return [], run_checks(conn, settings, full=full, progress=progress)
        except psycopg.Error as exc:
            raise classify(exc, redactor=redactor, during="checking data quality") from None
        finally:
            conn.close()

    problems, report = with_retries(settings, attempt)
    if report is not None:
        metrics.record(settings, metrics.dq_update(report, time.time()))
    return DataCheckResult(str(source_identity(settings)), problems, report)
