"""`abaco lake ...`: change data capture of the source tables into Delta Lake and a change log
(docs/lake.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import human_bytes, state
from abaco_cli.errors import ExitCode, UsageError
from abaco_cli.services.run import Run

app = typer.Typer(
    help="Change data capture of the source tables into Delta Lake tables and an append-only "
    "change log, on a folder, gs:// or s3:// (docs/lake.md).",
    no_args_is_help=True,
)
Dest = Annotated[
    str | None,
    typer.Option(
        "--dest",
        help="Where lake/ lives: gs://bucket/prefix, s3://bucket/prefix or a folder. Default: "
        "lake.destination (ABACO_LAKE__DESTINATION), else runtime_dir.",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def _run(ctx: typer.Context, command: str) -> Run:
    """The command's Run, reaching the source as lake.database_url's role when it is set."""
    from abaco_cli.services.lake import lake_settings

    app_state = state(ctx)
    return app_state.run(command, lake_settings(app_state.settings()))


def _table_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError("--tables: name at least one table (schema.table)")
    return names


@app.command("init")
def init_command(
    ctx: typer.Context,
    tables: Annotated[
        str | None,
        typer.Option(
            "--tables",
            help="Comma-separated schema.table names to capture. Default: every table of "
            "lake.tables (the source contract's tables).",
            show_default=False,
        ),
    ] = None,
    dest: Dest = None,
    as_json: AsJson = False,
) -> None:
    """Create the publication and the replication slot, and load every table in the slot's
    snapshot into its Delta table and the change log."""
    from abaco_cli.services.lake import init_lake

    run = _run(ctx, "lake init")
    result = init_lake(run, dest=dest, tables=_table_list(tables), progress=console.info)
    if as_json:
        console.emit_json(result.to_json())
        return
    console.table(
        f"lake at {result.url} (slot {result.slot}, from {result.lsn})",
        ["table", "rows", "columns skipped (not on lake.tables)"],
        [
            [name, f"{rows:,}", ", ".join(result.skipped.get(name, [])) or "-"]
            for name, rows in sorted(result.tables.items())
        ],
    )
    for name, columns in sorted(result.absent.items()):
        console.info(f"{name}: {', '.join(columns)} not in the table yet; captured once added")
    console.info("next: `abaco lake sync` (the timer abaco-lake-sync runs it every 5 minutes)")


@app.command("sync")
def sync_command(
    ctx: typer.Context,
    max_changes: Annotated[
        int | None,
        typer.Option(
            "--max-changes",
            min=1,
            help="Start no new batch after this many changes. Default: lake.max_changes.",
            show_default=False,
        ),
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            "--max-seconds",
            min=1,
            help="Start no new batch after this many seconds. Default: lake.max_seconds.",
            show_default=False,
        ),
    ] = None,
    dest: Dest = None,
    as_json: AsJson = False,
) -> None:
    """Apply the source's changes since the last sync: change files, manifest, one MERGE per
    table and batch, the state, then the slot. Exit 4 when another sync holds the lake."""
    from abaco_cli.services.lake import sync_lake

    run = _run(ctx, "lake sync")
    result = sync_lake(
        run, dest=dest, max_changes=max_changes, max_seconds=max_seconds, progress=console.info
    )
    if as_json:
        console.emit_json(result.to_json())
        return
    if result.reconciled:
        console.info(result.reconciled)
    rows = [
        [
            b.start,
            b.end,
            f"{b.transactions:,}",
            f"{sum(sum(o.values()) for o in b.changes.values()):,}",
            b.files,
        ]
        for b in result.batches
    ]
    if rows:
        console.table("batches", ["from", "to", "transactions", "changes", "files"], rows)
    console.info(
        f"lake at {result.lsn} ({result.changes:,} changes in {len(result.batches)} batches, "
        f"{result.seconds:.1f}s)"
    )


@app.command("status")
def status_command(ctx: typer.Context, dest: Dest = None, as_json: AsJson = False) -> None:
    """The lake's tables (rows, last change), its position, and the slot on the source: lag,
    WAL retained against the limit at which the source drops it."""
    from abaco_cli.services.lake import lake_settings, lake_status

    result = lake_status(lake_settings(state(ctx).settings()), dest=dest)
    body = result.to_json()
    if as_json:
        console.emit_json(body)
        return
    if not body["initialised"]:
        console.info(f"no lake at {result.url}: `abaco lake init` starts one")
        return
    console.table(
        f"lake at {result.url}: {body['lsn']}, last sync {body['last_sync']}",
        ["table", "rows", "last change"],
        [[n, f"{t['rows']:,}", t["last_change"] or "-"] for n, t in body["tables"].items()],
    )
    slot: dict[str, Any] | None = body.get("slot_status")
    if body.get("source_error"):
        console.info(f"source: {body['source_error']}")
    elif slot is not None:
        if not slot["exists"]:
            console.info(f"slot {body['slot']}: MISSING (runbooks/lake-slot-lost.md)")
        else:
            limit = slot["wal_limit_bytes"]
            share = slot["wal_retained_share"]
            console.info(
                f"slot {body['slot']}: {slot['wal_status']}, lag "
                f"{human_bytes(slot['lag_bytes'] or 0)}, WAL retained "
                f"{human_bytes(slot['wal_retained_bytes'] or 0)}"
                + (
                    f" of {human_bytes(limit)} ({share:.0%})"
                    if limit
                    else " (no limit: max_slot_wal_keep_size = -1)"
                )
            )


@app.command("verify")
def verify_command(
    ctx: typer.Context,
    deep: Annotated[
        bool,
        typer.Option("--deep", help="Also compare every lake table with the source, row for row."),
    ] = False,
    dest: Dest = None,
    as_json: AsJson = False,
) -> None:
    """The change log against the batch manifests and the Delta tables against the lake's
    state; exit 1 on any finding."""
    from abaco_cli.services.lake import verify_lake

    run = _run(ctx, "lake verify")
    result = verify_lake(run, dest=dest, deep=deep, progress=None if as_json else console.info)
    if as_json:
        console.emit_json(result.to_json())
    else:
        for finding in result.findings:
            console.info(f"- {finding}")
        verdict = "intact" if result.ok else f"{len(result.findings)} findings"
        console.info(f"{verdict}: {result.manifests} manifests, {result.files} change files")
    if not result.ok:
        raise typer.Exit(int(ExitCode.FAILED))


@app.command("resync")
def resync_command(
    ctx: typer.Context,
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            help="Reload only this table (repeatable); the others keep following the source. "
            "Default, and always when the slot is lost: every table.",
            show_default=False,
        ),
    ] = None,
    dest: Dest = None,
    as_json: AsJson = False,
) -> None:
    """Reload tables from the source in a new slot's snapshot: after a lost slot or an
    incompatible schema change (runbooks/lake-slot-lost.md, lake-schema-change.md)."""
    from abaco_cli.services.lake import resync_lake

    run = _run(ctx, "lake resync")
    result = resync_lake(run, dest=dest, tables=table or None, progress=console.info)
    if as_json:
        console.emit_json(result.to_json())
        return
    for name, rows in sorted(result.reloaded.items()):
        console.info(f"{name}: reloaded, {rows:,} rows")
    console.info(f"lake at {result.lsn} on slot {result.slot}")


@app.command("compact")
def compact_command(
    ctx: typer.Context,
    retention_hours: Annotated[
        int,
        typer.Option(
            "--retention-hours",
            min=168,
            help="Files no version younger than this needs are removed (vacuum); at least 168 "
            "(7 days), so readers of older versions are safe.",
        ),
    ] = 168,
    dest: Dest = None,
    as_json: AsJson = False,
) -> None:
    """Delta optimize (compaction), vacuum and a checkpoint of every lake table."""
    from abaco_cli.services.lake import compact_lake

    run = _run(ctx, "lake compact")
    body = compact_lake(run, dest=dest, retention_hours=retention_hours, progress=console.info)
    if as_json:
        console.emit_json(body)


@app.command("drop")
def drop_command(
    ctx: typer.Context,
    yes: Annotated[
        bool, typer.Option("--yes", help="Really drop the slot and the publication.")
    ] = False,
    dest: Dest = None,
    as_json: AsJson = False,
) -> None:
    """Drop the replication slot and the publication, so that the source holds no WAL for a
    consumer that is gone. The lake's files stay; `abaco lake init` starts again."""
    if not yes:
        raise UsageError(
            "lake drop ends change capture: the source forgets the slot and the lake can only "
            "be reloaded",
            hint="Run `abaco lake drop --yes` to do it.",
        )
    from abaco_cli.services.lake import drop_lake

    run = _run(ctx, "lake drop")
    body = drop_lake(run, dest=dest, progress=console.info)
    if as_json:
        console.emit_json(body)
        return
    console.info(
        f"dropped: slots {', '.join(body['slots_dropped']) or '(none)'}; publication "
        f"{body['publication_dropped'] or '(none)'}"
    )
