"""Run the data-quality checks of the source inside the caller's transaction.

Each SQL file in ``sql/`` is one SELECT listing offending rows as (check_name, source,
column_name, key, detail, amount); most serve one check, ``by_loan.sql`` six. ``run_checks``
runs them one after another on the connection it is given, inside whatever transaction is open
there: the export calls it inside its REPEATABLE READ READ ONLY snapshot, so every check sees
the instant the figures are computed from. The SQL only reads: no temporary tables, no COMMIT,
no session settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from psycopg import sql

from abaco_cli.datasets.base import load_sql, source_names
from abaco_cli.dates import last_complete_day
from abaco_cli.db.connect import Connection
from abaco_cli.errors import DataError
from abaco_cli.quality.catalogue import CATALOGUE, CheckSpec, Severity
from abaco_cli.settings import Settings, SourceTables

EXAMPLES = 5  # example keys per check in the summary (``--json`` and ``full`` give all)
RUNBOOK = "runbooks/data-quality.md"


@dataclass(frozen=True)
class Finding:
    """One offending row: the source column (qualified, ``core_banking.loans.principal``), the
    row's key (``{"loan_id": "L1"}``), what is wrong with it, and an amount where one applies
    (the value, the excess paid, the schedule's difference)."""

    column: str
    key: Mapping[str, Any]
    detail: str | None = None
    amount: Decimal | None = None

    def key_text(self) -> str:
        """The key's values, ``L1`` or ``L1/2`` (loan_id/installment_no)."""
        return "/".join("NULL" if v is None else str(v) for v in self.key.values())

    def label(self) -> str:
        """``core_banking.loans.principal L1: NaN``."""
        text = f"{self.column} {self.key_text()}"
        return f"{text}: {self.detail}" if self.detail else text

    def to_json(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "key": dict(self.key),
            "detail": self.detail,
            "amount": None if self.amount is None else str(self.amount),
        }


@dataclass(frozen=True)
class CheckResult:
    """What one check found: how many rows, up to five examples in key order, and every
    finding (in key order) when the checks ran with ``full=True`` (``findings`` is None
    otherwise). ``seconds`` is the time of its ``query``, shared by the checks of one file.
    ``guaranteed_by`` names the unique index that makes any finding impossible (the table was
    not read)."""

    name: str
    severity: Severity
    description: str
    count: int
    examples: tuple[Finding, ...]
    findings: tuple[Finding, ...] | None
    seconds: float  # of its query: the checks of one SQL file share it
    query: str = ""
    guaranteed_by: str | None = None

    @property
    def failed(self) -> bool:
        return self.count > 0

    def to_json(self, *, full: bool = False) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "name": self.name,
            "severity": self.severity,
            "description": self.description,
            "count": self.count,
            "query": self.query,
            "seconds": round(self.seconds, 3),
            "guaranteed_by": self.guaranteed_by,
            "examples": [f.to_json() for f in self.examples],
        }
        if full and self.findings is not None:
            payload["findings"] = [f.to_json() for f in self.findings]
        return payload


@dataclass(frozen=True)
class QualityReport:
    """Every check of one run, and what the policy (``dq.on_error``, ``dq.on_warning``) makes
    of them: ``outcome`` is ``fail`` (the figures must not go out), ``warn`` (rows were found,
    the policy lets the figures through) or ``pass`` (nothing found)."""

    checks: tuple[CheckResult, ...]
    on_error: str
    on_warning: str
    as_of: date
    checked_at: str
    seconds: float

    def failed(self, severity: Severity) -> list[CheckResult]:
        """The checks of ``severity`` that found rows."""
        return [c for c in self.checks if c.severity == severity and c.failed]

    @property
    def blocking(self) -> bool:
        """True when the policy says the run must fail."""
        return bool(
            (self.on_error == "fail" and self.failed("error"))
            or (self.on_warning == "fail" and self.failed("warning"))
        )

    @property
    def outcome(self) -> str:
        if self.blocking:
            return "fail"
        return "warn" if any(c.failed for c in self.checks) else "pass"

    def check(self, name: str) -> CheckResult:
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)

    def summary(self) -> str:
        """One line: ``2 error checks failed (null_required 1, non_positive_principal 1);
        1 warning check (overpayment 3)``, or ``all 11 checks passed``."""
        parts = []
        severities: tuple[Severity, ...] = ("error", "warning")
        for severity in severities:
            found = self.failed(severity)
            if found:
                listed = ", ".join(f"{c.name} {c.count:,}" for c in found)
                plural = "s" if len(found) > 1 else ""
                parts.append(f"{len(found)} {severity} check{plural} found rows ({listed})")
        if not parts:
            return f"all {len(self.checks)} checks passed"
        return "; ".join(parts)

    def to_json(self, *, full: bool = False) -> dict[str, Any]:
        """The report as JSON: with ``full``, every finding of every check; without, the counts
        and up to five examples each (the shape of the manifest's ``dq`` section)."""
        return {
            "outcome": self.outcome,
            "as_of": self.as_of.isoformat(),
            "checked_at": self.checked_at,
            "seconds": round(self.seconds, 3),
            "policy": {"on_error": self.on_error, "on_warning": self.on_warning},
            "errors": len(self.failed("error")),
            "warnings": len(self.failed("warning")),
            "checks": [c.to_json(full=full) for c in self.checks],
        }

    def manifest_section(self) -> dict[str, Any]:
        """What a manifest records under ``dq``: bounded (five examples per check at most)."""
        return self.to_json(full=False)

    def raise_if_blocking(self) -> None:
        """DataQualityError when the policy says the figures must not go out."""
        if self.blocking:
            raise DataQualityError(self)


class DataQualityError(DataError):
    """The source failed data-quality checks that the policy makes fatal (exit 1)."""

    def __init__(self, report: QualityReport) -> None:
        examples = [
            f"{c.name}: {', '.join(f.label() for f in c.examples[:2])}"
            for c in report.checks
            if c.failed and c.examples
        ]
        shown = f"; e.g. {' | '.join(examples[:2])}" if examples else ""
        super().__init__(
            f"data-quality checks failed: {report.summary()}{shown}",
            hint=f"`abaco db check --data` lists the rows; {RUNBOOK} says what to do. "
            "dq.on_error = 'warn' lets the figures go out anyway.",
        )
        self.report = report


# ------------------------------------------------------------------------------------ running


def _query(name: str, settings: Settings) -> sql.Composed:
    text = load_sql(__package__ or "abaco_cli.quality", f"sql/{name}.sql")
    return sql.SQL(text).format(**source_names(settings))


def _unique_index(
    conn: Connection, tables: SourceTables, role: str, columns: Sequence[str]
) -> str | None:
    """A valid unique index of ``role`` whose key columns are all in ``columns``, or None."""
    schema, table = tables.split(role)
    text = load_sql(__package__ or "abaco_cli.quality", "sql/unique_guard.sql")
    row = conn.execute(
        sql.SQL(text),
        {"schema": schema, "table": table, "columns": list(columns)},
    ).fetchone()
    return None if row is None else str(row[0])


def _finding(row: Sequence[Any], tables: SourceTables) -> Finding:
    source, column, key, detail, amount = row
    return Finding(f"{getattr(tables, str(source))}.{column}", dict(key or {}), detail, amount)


def _run_query(
    conn: Connection,
    name: str,
    checks: Sequence[tuple[CheckSpec, Severity]],
    settings: Settings,
    params: Mapping[str, Any],
    *,
    full: bool,
) -> list[CheckResult]:
    """Run one SQL file for the checks it serves; their results in the order given."""
    started = time.perf_counter()
    guarded: dict[str, str] = {}
    for spec, _ in checks:
        if spec.unique_guard is not None:
            index = _unique_index(conn, settings.tables, *spec.unique_guard)
            if index is not None:
                guarded[spec.name] = index
    wanted = [spec.name for spec, _ in checks if spec.name not in guarded]
    counts: dict[str, int] = dict.fromkeys(wanted, 0)
    rows_of: dict[str, list[Finding]] = {name: [] for name in wanted}
    if wanted:
        # MATERIALIZED: the check runs as written (its joins first); without it the planner
        # would push the outer ORDER BY into the check and sort a whole table by key first.
        head = sql.SQL("WITH f AS MATERIALIZED ({}) ").format(_query(name, settings))
        arguments = {**params, "dq_checks": wanted}
        if full:
            statement = head + sql.SQL(
                "SELECT f.check_name, f.source, f.column_name, f.key, f.detail, f.amount "
                "FROM f WHERE f.check_name = ANY(%(dq_checks)s) "
                "ORDER BY f.check_name, f.key, f.source, f.column_name"
            )
            for row in conn.execute(statement, arguments).fetchall():
                rows_of[str(row[0])].append(_finding(row[1:], settings.tables))
                counts[str(row[0])] += 1
        else:
            statement = head + sql.SQL(
                "SELECT r.total, r.check_name, r.source, r.column_name, r.key, r.detail, "
                "r.amount FROM ("
                "SELECT count(*) OVER (PARTITION BY f.check_name) AS total, "
                "row_number() OVER (PARTITION BY f.check_name "
                "ORDER BY f.key, f.source, f.column_name) AS rank, f.* "
                "FROM f WHERE f.check_name = ANY(%(dq_checks)s)) AS r "
                "WHERE r.rank <= {} ORDER BY r.check_name, r.rank"
            ).format(sql.Literal(EXAMPLES))
            for row in conn.execute(statement, arguments).fetchall():
                counts[str(row[1])] = int(row[0])
                rows_of[str(row[1])].append(_finding(row[2:], settings.tables))
    elapsed = time.perf_counter() - started
    results = []
    for spec, severity in checks:
        if spec.name in guarded:
            empty: tuple[Finding, ...] | None = () if full else None
            index = guarded[spec.name]
            results.append(
                CheckResult(
                    spec.name, severity, spec.description, 0, (), empty, elapsed, name, index
                )
            )
            continue
        found = tuple(rows_of[spec.name])
        results.append(
            CheckResult(
                spec.name,
                severity,
                spec.description,
                counts[spec.name],
                found[:EXAMPLES],
                found if full else None,
                elapsed,
                name,
            )
        )
    return results


def effective_severity(spec: CheckSpec, settings: Settings) -> Severity | None:
    """The check's severity under ``dq.checks`` (None: turned off)."""
    chosen = settings.dq.checks.get(spec.name, spec.severity)
    if chosen == "off":
        return None
    return "error" if chosen == "error" else "warning"


def run_checks(
    conn: Connection,
    settings: Settings,
    *,
    as_of: date | None = None,
    full: bool = False,
    progress: Callable[[CheckResult], None] | None = None,
) -> QualityReport:
    """Run every data-quality check (except those ``dq.checks`` turns off) on ``conn``,
    inside the transaction the caller has open, and judge them by ``dq.on_error`` and
    ``dq.on_warning``. ``as_of`` is the date "past maturity" is judged at (default: yesterday
    in ``business_timezone``); every other check looks at every row of the snapshot. With
    ``full``, each result keeps every finding (``--json``), not only five examples."""
    day = as_of if as_of is not None else last_complete_day(settings)
    params = {"tolerance": settings.dpd.tolerance, "as_of": day}
    started = time.perf_counter()
    checked_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    by_query: dict[str, list[tuple[CheckSpec, Severity]]] = {}
    for spec in CATALOGUE:
        severity = effective_severity(spec, settings)
        if severity is not None:
            by_query.setdefault(spec.query_name, []).append((spec, severity))
    results: dict[str, CheckResult] = {}
    for name, members in by_query.items():
        for result in _run_query(conn, name, members, settings, params, full=full):
            results[result.name] = result
            if progress is not None:
                progress(result)
    return QualityReport(
        checks=tuple(results[spec.name] for spec in CATALOGUE if spec.name in results),
        on_error=settings.dq.on_error,
        on_warning=settings.dq.on_warning,
        as_of=day,
        checked_at=checked_at,
        seconds=time.perf_counter() - started,
    )
