"""The root of the `abaco` command line: global options and the command groups."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from abaco_cli import __version__
from abaco_cli.cli import audit, config, db, demo, export, health, kpi, prune
from abaco_cli.cli.common import AppState
from abaco_cli.cli.console import setup_logging

app = typer.Typer(
    name="abaco",
    help="Export ABACO's lending data (delinquency, KPIs, pricing, analytics) from PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(db.app, name="db")
app.add_typer(export.app, name="export")
app.add_typer(kpi.app, name="kpi")
app.add_typer(config.app, name="config")
app.command("demo")(demo.demo_command)
app.add_typer(audit.app, name="audit")
app.command("prune")(prune.prune_command)
app.command("healthcheck")(health.healthcheck_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"abaco {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Configuration file (default: $ABACO_CONFIG, else ./abaco.toml).",
            show_default=False,
        ),
    ] = None,
    runtime_dir: Annotated[
        Path | None,
        typer.Option(
            "--runtime-dir",
            help="Runtime tree (default: $ABACO_RUNTIME_DIR, else ./abaco_runtime).",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            help="Log lines on stderr: plain or json (default: plain).",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """abaco: exact money, one snapshot per run, nothing ever half-written."""
    os.umask(0o027)
    overrides: dict[str, object] = {}
    if runtime_dir is not None:
        overrides["runtime_dir"] = runtime_dir
    if log_format is not None and log_format not in ("plain", "json"):
        raise typer.BadParameter("choose plain or json", param_hint="--log-format")
    ctx.obj = AppState(config_file=config_file, overrides=overrides, debug=debug)
    chosen = log_format or os.environ.get("ABACO_LOG_FORMAT", "plain")
    setup_logging("json" if chosen == "json" else "plain", debug=debug)


def main() -> None:
    """Console-script entry point."""
    app()
