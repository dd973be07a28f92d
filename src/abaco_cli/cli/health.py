"""`abaco healthcheck`: a monitoring plugin (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)."""

from __future__ import annotations

from typing import Annotated

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import state
from abaco_cli.cli.params import complete_each, metavar
from abaco_cli.errors import AbacoError, ConfigurationError
from abaco_cli.services.health import CHECKS, State, parse_checks, run_healthcheck

HEALTHCHECK_HELP = (
    "Check configuration, database, contract, freshness, data quality, runtime tree, disk, "
    "audit trail, audit sink, locks and uploads.\n\n"
    "A terminal gets a table, --json a report, anything else one line such as "
    "`ABACO OK - ...`. Exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
)


def healthcheck_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    check: Annotated[
        str | None,
        typer.Option(
            "--check",
            help=f"Comma-separated checks to run (default: all): {', '.join(CHECKS)}.",
            metavar=metavar("check"),
            autocompletion=complete_each(CHECKS),
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check configuration, database, contract, freshness, data quality, runtime tree, disk,
    audit trail, audit sink, locks and uploads (the help text is HEALTHCHECK_HELP)."""
    try:
        chosen = parse_checks(check)
    except ValueError as exc:  # the plugin convention: UNKNOWN (3), not a usage error (2)
        console.failed(f"--check: {exc}", exit_code=int(State.UNKNOWN))
        raise typer.Exit(int(State.UNKNOWN)) from None
    settings = None
    config_error = None
    try:
        settings = state(ctx).settings()
    except ConfigurationError as exc:
        config_error = exc.message
    try:
        report = run_healthcheck(settings, checks=chosen, config_error=config_error)
    except AbacoError as exc:  # not expected: every check reports its own failure
        console.stdout.print(f"ABACO UNKNOWN - {exc.message}", highlight=False, markup=False)
        raise typer.Exit(int(State.UNKNOWN)) from None
    if as_json:
        console.emit_json(report.to_json())
    elif console.stdout.is_terminal:
        console.table(
            f"abaco healthcheck: {report.state.name}",
            ["check", "state", "summary"],
            [(c.name, c.state.name, c.summary) for c in report.checks],
        )
        console.stdout.print(report.line(), highlight=False, markup=False)
    else:
        console.stdout.print(report.line(), highlight=False, markup=False)
    if report.state != State.OK:
        raise typer.Exit(int(report.state))
