"""`abaco demo`: what `make demo` runs."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import handle_errors, human_bytes, state
from abaco_cli.cli.export import _ProgressRenderer
from abaco_cli.errors import UsageError
from abaco_cli.services.demo import DEMO_THROUGH, run_demo


@handle_errors
def demo_command(
    ctx: typer.Context,
    loans: Annotated[int, typer.Option("--loans", help="Synthetic loans to seed.")] = 20_000,
    as_of: Annotated[
        str, typer.Option("--as-of", help="As-of date of the exports.")
    ] = DEMO_THROUGH.isoformat(),
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the server running and print its DSN.")
    ] = False,
) -> None:
    """Start a private PostgreSQL, seed a synthetic portfolio, export, show what was written."""
    if loans < 1 or loans > 2_000_000:
        raise UsageError(f"--loans must be between 1 and 2,000,000, not {loans}")
    try:
        day = date.fromisoformat(as_of)
    except ValueError:
        raise UsageError(f"--as-of {as_of!r} is not a date; use YYYY-MM-DD") from None
    settings = state(ctx).settings()
    with console.progress_bar() as bar:
        result = run_demo(
            settings,
            loans=loans,
            as_of=day,
            keep=keep,
            step=console.info,
            progress=_ProgressRenderer(bar),
        )
    rows = [
        (f"{settings.exports_dir}/{f.path}", f.format, f"{f.rows:,}", human_bytes(f.bytes))
        for export in result.exports
        for f in export.files
    ]
    console.table(
        f"demo: {result.loans:,} loans, exports as of {day}",
        ["file", "format", "rows", "size"],
        rows,
    )
    for export in result.exports:
        console.info(f"{export.dataset}: manifest {export.manifest_path}")
    if result.dsn:
        console.info("the server is still running; use it with:")
        console.stdout.print(
            f"export ABACO_DATABASE_URL='{result.dsn}'", highlight=False, markup=False
        )
