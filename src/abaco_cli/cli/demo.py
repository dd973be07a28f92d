"""`abaco demo`: what `make demo` runs."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import AppState, human_bytes, state
from abaco_cli.cli.export import _ProgressRenderer
from abaco_cli.errors import UsageError
from abaco_cli.services.demo import (
    DEMO_RUNTIME_DIR,
    DEMO_THROUGH,
    check_demo_destination,
    check_demo_tree,
    demo_settings,
    run_demo,
)


def demo_command(
    ctx: typer.Context,
    loans: Annotated[int, typer.Option("--loans", help="Synthetic loans to seed.")] = 20_000,
    as_of: Annotated[
        str, typer.Option("--as-of", help="As-of date of the exports.")
    ] = DEMO_THROUGH.isoformat(),
    runtime_dir: Annotated[
        Path | None,
        typer.Option(
            "--runtime-dir",
            help="Where the demo writes its tree (default: ./abaco_runtime; never the "
            "configured runtime_dir).",
            show_default=False,
        ),
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="Leave the server running; print its DSN and the command that stops it.",
        ),
    ] = False,
    dest: Annotated[
        str | None,
        typer.Option(
            "--dest",
            help="Also upload the runs to this local folder, laid out as a bucket would be "
            "(exports/..., _control/manifests/..., _control/latest/...): no cloud account "
            "needed.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start a private PostgreSQL, seed a synthetic portfolio, export, show what was written.

    The demo writes into ./abaco_runtime (or --runtime-dir), never into the runtime_dir of
    ABACO_RUNTIME_DIR or abaco.toml, and refuses a tree that holds exports of a real source.
    """
    if loans < 1 or loans > 2_000_000:
        raise UsageError(f"--loans must be between 1 and 2,000,000, not {loans}")
    try:
        day = date.fromisoformat(as_of)
    except ValueError:
        raise UsageError(f"--as-of {as_of!r} is not a date; use YYYY-MM-DD") from None
    app_state = state(ctx)
    given = runtime_dir if runtime_dir is not None else app_state.overrides.get("runtime_dir")
    chosen = Path(given) if given is not None else DEMO_RUNTIME_DIR
    # The configuration without the global --runtime-dir: its runtime_dir is the one of
    # ABACO_RUNTIME_DIR or abaco.toml, which the demo ignores (and says so).
    others = {k: v for k, v in app_state.overrides.items() if k != "runtime_dir"}
    configured = AppState(app_state.config_file, others, app_state.debug).settings()
    check_demo_tree(chosen)  # before anything is said or started
    if dest is not None:
        check_demo_destination(dest)
    where = Path(os.path.realpath(chosen))
    if (
        "runtime_dir" in configured.model_fields_set
        and Path(os.path.realpath(configured.runtime_dir)) != where
    ):
        console.info(
            f"demo: writing into {where}; ignoring the configured runtime_dir "
            f"{configured.runtime_dir} (ABACO_RUNTIME_DIR or abaco.toml): the demo never "
            "writes there, and its audit log and metrics stay in its own tree"
        )
    settings = demo_settings(configured, chosen)
    with console.progress_bar() as bar:
        result = run_demo(
            settings,
            loans=loans,
            as_of=day,
            keep=keep,
            step=console.info,
            progress=_ProgressRenderer(bar),
            dest=dest,
        )
    rows = [
        (f"{result.runtime_dir}/exports/{f.path}", f.format, f"{f.rows:,}", human_bytes(f.bytes))
        for export in result.exports
        for f in export.files
    ]
    console.table(
        f"demo: {result.loans:,} loans, exports as of {day}",
        ["file", "format", "rows", "size"],
        rows,
    )
    if result.destination is not None:
        console.table(
            f"demo: uploaded to {result.destination} (the layout of a bucket)",
            ["object", "size"],
            [(f"{result.destination}/{name}", human_bytes(size)) for name, size in result.remote],
        )
    console.info(f"the demo's tree is kept in {result.runtime_dir} (remove it when done)")
    if result.dsn:
        console.info("the server is still running; use it with:")
        console.stdout.print(
            f"export ABACO_DATABASE_URL='{result.dsn}'", highlight=False, markup=False
        )
    if result.stop_command:
        console.info("stop it and remove its files with:")
        console.stdout.print(result.stop_command, highlight=False, markup=False, soft_wrap=True)
    if result.report is not None:
        console.info("the report of the exports (open it in a browser):")
        console.stdout.print(str(result.report), highlight=False, markup=False, soft_wrap=True)
