"""`abaco export table SCHEMA.TABLE ...`: raw extracts of whole source tables (the dataset
``tables``), registered on the `export` command group."""

from __future__ import annotations

from typing import Annotated

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import human_bytes, state
from abaco_cli.cli.export import (
    AsJson,
    Dest,
    DryRun,
    ReplaceFormats,
    _ProgressRenderer,
    app,
    format_option,
    print_upload,
    upload_payload,
)
from abaco_cli.cli.export import result_payload as export_payload
from abaco_cli.errors import ExitCode, UploadPendingError
from abaco_cli.services.exporting import ExportResult
from abaco_cli.services.extracting import ExtractPlan, extract_tables, plan_extract
from abaco_cli.services.upload_state import destination_key
from abaco_cli.writers.registry import parse_formats

DEFAULT_FORMATS = "parquet"

Tables = Annotated[
    list[str],
    typer.Argument(
        metavar="SCHEMA.TABLE",
        help="The source tables to extract, e.g. core_banking.payments (all in one snapshot); "
        "each must be on the allow-list extract.tables.",
        show_default=False,
    ),
]
TableFormats = Annotated[
    str | None, format_option("Comma-separated formats: parquet, csv, json. Default: parquet.")
]
Snapshot = Annotated[
    str | None,
    typer.Option(
        "--snapshot",
        help="Read inside this exported snapshot (the id pg_export_snapshot() returned in a "
        "transaction that is still open) instead of taking a new one; the as-of date is the "
        "UTC date on which abaco adopts it.",
        show_default=False,
    ),
]


def _print_plan(plan: ExtractPlan, as_json: bool) -> None:
    if as_json:
        console.emit_json(
            {
                "dataset": "tables",
                "dry_run": True,
                "as_of_date": plan.as_of.isoformat(),
                "tables": {t.key: list(t.columns) for t in plan.tables},
                "files": [
                    {"table": f.table, "format": f.format, "path": str(f.path)} for f in plan.files
                ],
                "statements": plan.statements,
            }
        )
        return
    for table, statement in plan.statements.items():
        console.stdout.print(f"-- {table}", highlight=False)
        console.stdout.print(statement + ";\n", highlight=False, markup=False)
    console.table(
        f"tables: {len(plan.tables)} table(s) as of the snapshot's UTC date "
        f"(today: {plan.as_of}; dry run: nothing read or written)",
        ["table", "format", "target"],
        [(f.table, f.format, f.path) for f in plan.files],
    )


@app.command(
    "table",
    help="Whole source tables, their allow-listed columns only (extract.tables; by default "
    "the source contract's), read in one snapshot by parallel binary COPY into "
    "exports/tables/<schema>.<table>/as_of_date=<D>/ (D: the snapshot's UTC date), with "
    "their exact types; one manifest a date, published all or nothing like every export.",
)
def export_table(
    ctx: typer.Context,
    tables: Tables,
    formats: TableFormats = None,
    snapshot: Snapshot = None,
    replace_formats: ReplaceFormats = False,
    dry_run: DryRun = False,
    as_json: AsJson = False,
    dest: Dest = None,
) -> None:
    app_state = state(ctx)
    settings = app_state.settings()
    chosen = parse_formats(formats if formats is not None else DEFAULT_FORMATS)
    target = dest if dest is not None else settings.upload.destination
    if dry_run:
        _print_plan(plan_extract(settings, tables, chosen), as_json)
        if target is not None and not as_json:
            console.info(f"then the run would be uploaded to {destination_key(target)}")
        return
    run = app_state.run("export table", settings)
    pending: UploadPendingError | None = None
    with console.progress_bar() as bar:
        try:
            result = extract_tables(
                run,
                tables,
                chosen,
                snapshot_id=snapshot,
                replace_formats=replace_formats,
                progress=_ProgressRenderer(bar),
                upload_to=target,
                upload_progress=console.info,
            )
        except UploadPendingError as exc:  # extracted and published; the upload is pending
            result, pending = exc.results[0], exc
    _render(result, str(settings.exports_dir), as_json)
    if pending is not None:
        console.error(pending)
        raise typer.Exit(int(ExitCode.UPLOAD_PENDING))


def _render(result: ExportResult, exports_root: str, as_json: bool) -> None:
    if as_json:
        console.emit_json(export_payload(result, exports_root) | upload_payload([result]))
        return
    console.table(
        f"tables as of {result.as_of}: run {result.run_id}",
        ["file", "format", "rows", "size", "sha256"],
        [
            (
                f"{exports_root}/{f.path}",
                f.format,
                f"{f.rows:,}",
                human_bytes(f.bytes),
                f.sha256[:12],
            )
            for f in result.files
            if f.run_id == result.run_id  # not the date's files of other tables, kept
        ],
    )
    console.info(f"manifest: {result.manifest_path}")
    print_upload([result])
