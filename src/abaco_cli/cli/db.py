"""`abaco db init | seed | check [--data]`: the source database and the quality of its data."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import state
from abaco_cli.db.contract import ContractProblem
from abaco_cli.errors import ExitCode, UsageError
from abaco_cli.quality import CheckResult
from abaco_cli.quality.checks import RUNBOOK
from abaco_cli.services.database import check_database, init_database, seed_database
from abaco_cli.services.quality import check_data

app = typer.Typer(help="Create, seed and check the source database.", no_args_is_help=True)
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


@app.command("init")
def init_command(
    ctx: typer.Context,
    audit: Annotated[
        bool,
        typer.Option(
            "--audit",
            help="Also create the shared audit table (audit.table, in audit.database_url "
            "or else the source database) that audit.sink = 'postgres' writes to.",
        ),
    ] = False,
    audit_writer: Annotated[
        str | None,
        typer.Option(
            "--audit-writer",
            help="With --audit: the role abaco writes audit records with; it gets INSERT and "
            "SELECT on the table and nothing else (run this as the table's owner, another role).",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Create the source contract's tables (docs/domain.md, "The data abaco reads"; safe to run
    again)."""
    if audit_writer is not None and not audit:
        raise UsageError("--audit-writer goes with --audit")
    result = init_database(state(ctx).run("db init"), audit=audit, audit_writer=audit_writer)
    if as_json:
        payload: dict[str, object] = {
            "source": result.source,
            "created": result.created,
            "tables": result.tables,
        }
        if audit:
            payload["audit_table"] = {
                "table": result.audit_table,
                "database": result.audit_database,
                "created": result.audit_created,
            }
        console.emit_json(payload)
        return
    created = ", ".join(result.created) if result.created else "nothing (already there)"
    console.info(f"source contract ready on {result.source}; created: {created}")
    if audit:
        state_text = "created" if result.audit_created else "already there"
        console.info(f"audit table {result.audit_table} on {result.audit_database}: {state_text}")
    if audit and audit_writer is None:
        console.log.warning(
            "the audit table is owned by the role that ran this; if abaco also writes with that "
            "role, it can delete rows and disable the triggers: create it as an owner role with "
            "--audit-writer ROLE (docs/audit.md)"
        )


@app.command("seed")
def seed_command(
    ctx: typer.Context,
    loans: Annotated[int, typer.Option("--loans", help="Number of loans to generate.")] = 20_000,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed: the same seed gives the same data.")
    ] = 7,
    through: Annotated[
        str, typer.Option("--through", help="Last day of the synthetic history (YYYY-MM-DD).")
    ] = "2025-12-31",
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Empty the five source tables first (a demo's own database only, unless "
            "--yes-destroy-data names the database).",
        ),
    ] = False,
    destroy: Annotated[
        str | None,
        typer.Option(
            "--yes-destroy-data",
            metavar="DBNAME",
            help="With --replace: the name of the database whose source tables will be emptied.",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Write a deterministic synthetic factoring portfolio (no personal names)."""
    if loans < 1 or loans > 10_000_000:
        raise UsageError(f"--loans must be between 1 and 10,000,000, not {loans}")
    try:
        last_day = date.fromisoformat(through)
    except ValueError:
        raise UsageError(f"--through {through!r} is not a date; use YYYY-MM-DD") from None
    if destroy is not None and not replace:
        raise UsageError("--yes-destroy-data goes with --replace")
    run = state(ctx).run("db seed")
    with console.progress_bar(total=None) as bar:
        tasks: dict[str, object] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if bar is None:
                if done == total:
                    console.log.info("seeded %s: %d", stage, total)
                return
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"seeding {stage}", total=None, detail="")
            bar.update(tasks[stage], detail=f"{done:,} / {total:,}")  # type: ignore[arg-type]

        result = seed_database(
            run,
            loans=loans,
            seed=seed,
            through=last_day,
            replace=replace,
            destroy=destroy,
            progress=progress,
        )
    if as_json:
        console.emit_json(
            {
                "customers": result.customers,
                "loans": result.loans,
                "installments": result.installments,
                "payments": result.payments,
                "rate_cards": result.rate_cards,
                "through": result.through.isoformat(),
            }
        )
        return
    console.table(
        f"synthetic portfolio (seed {seed}, through {result.through})",
        ["table", "rows"],
        [
            ("customers", f"{result.customers:,}"),
            ("loans", f"{result.loans:,}"),
            ("payment_schedule", f"{result.installments:,}"),
            ("payments", f"{result.payments:,}"),
            ("rate_card", f"{result.rate_cards:,}"),
        ],
    )


@app.command("check")
def check_command(
    ctx: typer.Context,
    data: Annotated[
        bool,
        typer.Option(
            "--data",
            help="Also run the data-quality checks (NULLs, NaN, negative or zero amounts, "
            "orphans, schedules that do not add up, dates before disbursement, overpayments, "
            "...) inside one read-only snapshot; with --json every offending key.",
        ),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Does this database satisfy the source contract (and, with --data, the data-quality
    checks)? Exits 1 when it does not."""
    if data:
        _check_data(ctx, as_json=as_json)
        return
    result = check_database(state(ctx).settings())
    if as_json:
        console.emit_json(
            {
                "source": result.source,
                "ok": result.ok,
                "problems": [_problem_json(p) for p in result.problems],
            }
        )
    elif result.ok:
        console.info(f"source contract satisfied on {result.source}")
    else:
        _contract_failed(result.source, result.problems)
    if not result.ok:
        raise typer.Exit(int(ExitCode.FAILED))


def _problem_json(problem: ContractProblem) -> dict[str, str | None]:
    return {"table": problem.table, "column": problem.column, "problem": problem.problem}


def _contract_failed(source: str, problems: list[ContractProblem]) -> None:
    console.stderr.print(
        f"abaco: the source contract is NOT satisfied on {source}: {len(problems)} problem(s)",
        highlight=False,
    )
    console.table(
        f"source contract NOT satisfied on {source}",
        ["table", "column", "problem"],
        [(p.table, p.column or "", p.problem) for p in problems],
    )


def _examples_text(check: CheckResult) -> str:
    if check.guaranteed_by:
        return f"none possible: unique index {check.guaranteed_by}"
    shown = "; ".join(f.label() for f in check.examples)
    more = check.count - len(check.examples)
    return f"{shown}; and {more:,} more" if more > 0 else shown


def _check_data(ctx: typer.Context, *, as_json: bool) -> None:
    """`db check --data`: the contract, then every data-quality check, in one snapshot."""

    def progress(check: CheckResult) -> None:
        console.log.debug(
            "data-quality check %s: %d row(s) in %.2fs", check.name, check.count, check.seconds
        )

    result = check_data(state(ctx).settings(), full=as_json, progress=progress)
    report = result.report
    if as_json:
        console.emit_json(
            {
                "source": result.source,
                "ok": result.ok,
                "problems": [_problem_json(p) for p in result.problems],
                "dq": None if report is None else report.to_json(full=True),
            }
        )
    elif report is None:
        _contract_failed(result.source, result.problems)
        console.stderr.print(
            "abaco: the data-quality checks need the contract: fix it first", highlight=False
        )
    else:
        console.table(
            f"data quality on {result.source}: {report.outcome.upper()} "
            f"({report.seconds:.1f} s, past maturity judged at {report.as_of})",
            ["check", "severity", "rows", "examples"],
            [(c.name, c.severity, f"{c.count:,}", _examples_text(c)) for c in report.checks],
        )
        line = f"data quality on {result.source}: {report.outcome}: {report.summary()}"
        if report.blocking:
            console.stderr.print(
                f"abaco: {line} (policy: dq.on_error = {report.on_error}, "
                f"dq.on_warning = {report.on_warning}; what to do: {RUNBOOK}; "
                "--json lists every key)",
                highlight=False,
            )
        elif report.outcome == "warn":
            console.log.warning("%s (what to do: %s)", line, RUNBOOK)
        else:
            console.info(line)
    if not result.ok:
        raise typer.Exit(int(ExitCode.FAILED))
