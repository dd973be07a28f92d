"""`abaco config show`: the effective configuration, secrets redacted."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import state
from abaco_cli.db.source import describe
from abaco_cli.redaction import redacted_settings
from abaco_cli.settings import Settings, config_file_path

app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)


def effective(settings: Settings) -> dict[str, Any]:
    """Every setting as JSON-ready data, every secret as *** (both DSNs included)."""
    return redacted_settings(settings)


@app.command("show")
def show_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Print the effective configuration (defaults < abaco.toml < ABACO_* < flags) and which
    mechanism supplies the database connection (URL, service file, PG* variables, .pgpass)."""
    app_state = state(ctx)
    settings = app_state.settings()
    data = effective(settings)
    source = config_file_path(app_state.config_file)
    connection = describe(settings)
    if as_json:
        console.emit_json(
            {
                "config_file": str(source) if source else None,
                "connection": connection.to_json(),
                "settings": data,
            }
        )
        return
    console.info(f"configuration file: {source or 'none (defaults and environment)'}")
    rows = [("connection", str(connection))]
    for key, value in data.items():
        if key == "database_url" and value is None:
            rows.append((key, f"unset ({connection.description})"))
            continue
        rendered = json.dumps(value) if isinstance(value, dict | list) else str(value)
        rows.append((key, rendered))
    console.table("effective configuration", ["setting", "value"], rows)
