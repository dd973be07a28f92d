"""`abaco report`: the self-contained HTML report of a date's exported datasets."""

from __future__ import annotations

import webbrowser
from typing import Annotated

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import human_bytes, state
from abaco_cli.dates import parse_date
from abaco_cli.services.reporting import ReportResult, write_report

REPORT_HELP = (
    "Write the HTML report of a date's exported datasets (kpi, dpd, analytics, pricing: read "
    "from their files through the manifests, never from the database) with its charts as PNG "
    "and SVG, into exports/reports/ (report_<D>.html, report_<D>_<chart>.png|svg, and "
    "report_latest.html for the newest date), published under a manifest of its own like "
    "every export. One self-contained file: it opens from disk or an e-mail attachment with "
    "no network. A dataset that was not exported for the date exits 1 naming the export "
    "command to run."
)


def payload(result: ReportResult) -> dict[str, object]:
    export = result.export
    return {
        "dataset": export.dataset,
        "as_of_date": export.as_of.isoformat(),
        "run_id": export.run_id,
        "status": export.status,
        "report": str(result.html),
        "latest": str(result.alias),
        "manifest": str(export.manifest_path),
        "inputs": result.input_runs,
        "seconds": round(result.seconds, 3),
        "files": [
            {"path": f.path, "format": f.format, "bytes": f.bytes, "sha256": f.sha256}
            for f in export.files
        ],
    }


def render(result: ReportResult, as_json: bool) -> None:
    """The report's path on stdout (or the JSON payload); what was written on stderr."""
    if as_json:
        console.emit_json(payload(result))
        return
    export = result.export
    console.info(
        f"report as of {export.as_of}: run {export.run_id}, {len(export.files)} files "
        f"({human_bytes(sum(f.bytes for f in export.files))}) in {result.seconds:.1f} s; "
        f"manifest {export.manifest_path}"
    )
    console.stdout.print(str(result.html), highlight=False, markup=False, soft_wrap=True)


def report_command(
    ctx: typer.Context,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="The as-of date (YYYY-MM-DD) whose exports the report reads. Default: the "
            "date of the newest kpi export.",
            show_default=False,
        ),
    ] = None,
    open_it: Annotated[
        bool, typer.Option("--open", help="Open the report in the default web browser.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the run, the report's path and its files as JSON."),
    ] = False,
) -> None:
    app_state = state(ctx)
    settings = app_state.settings()
    day = parse_date(as_of, "--as-of") if as_of is not None else None
    result = write_report(app_state.run("report", settings), day)
    render(result, as_json)
    if open_it:
        webbrowser.open(result.html.as_uri())
