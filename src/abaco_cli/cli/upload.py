"""`abaco upload` and `abaco upload status`: send exported runs to the destination."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import human_bytes, state
from abaco_cli.durations import parse_duration
from abaco_cli.errors import ExitCode, LockedError, UsageError
from abaco_cli.runtime.inventory import dataset_dirs
from abaco_cli.runtime.tree import RuntimeTree
from abaco_cli.services.run import iso, utc_now
from abaco_cli.services.upload_state import dataset_status, destination_key
from abaco_cli.services.uploading import (
    NO_DESTINATION,
    UploadResult,
    destination_url,
    summary,
    upload,
)
from abaco_cli.storage import StorageError

app = typer.Typer(
    help="Upload exported runs to the destination (upload.destination or --dest): every "
    "successful run not yet uploaded, oldest first; `abaco upload status` shows what is "
    "pending.",
    invoke_without_command=True,
    no_args_is_help=False,
)
Dest = Annotated[
    str | None,
    typer.Option(
        "--dest",
        help="gs://bucket/prefix, s3://bucket/prefix, file:///path or a folder. Default: "
        "upload.destination (ABACO_UPLOAD__DESTINATION).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def _since(text: str | None) -> timedelta | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None


@app.callback()
def upload_command(
    ctx: typer.Context,
    dest: Dest = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only this dataset.", show_default=False)
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only runs exported within this window: Nh, Nd or Nw (e.g. 7d).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="List what would be uploaded; send and record nothing."),
    ] = False,
    again: Annotated[
        bool,
        typer.Option(
            "--again",
            help="Also the runs recorded as uploaded: what is missing or different at the "
            "destination is sent again (objects there with the same checksum are skipped), a "
            "missing manifest created, the pointer moved. For what `abaco audit verify "
            "--remote` reports (runbooks/upload-pending.md).",
        ),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Upload every successful run not yet uploaded (pending, or never recorded and missing
    from the destination), oldest first, and move the remote pointers to where the local
    ones are. Idempotent: a second run uploads nothing. Holds each dataset's upload lock
    (never its export lock); exit 4 when another upload holds one, 1 when a run could not be
    uploaded (it stays pending)."""
    if ctx.invoked_subcommand is not None:
        return
    window = _since(since)
    app_state = state(ctx)
    result = upload(
        app_state.run("upload"),
        destination=dest,
        dataset=dataset,
        since=window,
        dry_run=dry_run,
        again=again,
        progress=console.info,
    )
    if as_json:
        if result.destination is None:
            console.info(NO_DESTINATION)
        console.emit_json(result.to_json())
    else:
        _render(result)
    if result.locked and not result.errors:
        for message in result.locked:
            console.error(
                LockedError(message, hint="The upload holding it sends these runs; or retry.")
            )
    if result.exit_code == int(ExitCode.FAILED):
        console.error(
            StorageError(
                summary(result),
                hint="`abaco upload status` shows what is pending; runbooks/upload-pending.md.",
            )
        )
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _render(result: UploadResult) -> None:
    if result.destination is None:
        console.info(NO_DESTINATION)
        return
    for item in result.datasets:
        if item.state_problem:
            console.info(
                f"note: {item.state_problem}: "
                + ("it would be rebuilt" if result.dry_run else "rebuilt from the manifests")
            )
    if result.dry_run:
        planned = result.runs
        if planned:
            console.table(
                f"would upload to {result.destination} (dry run: nothing sent)",
                ["dataset", "as_of", "run_id", "files", "size", "what"],
                [
                    (
                        r.dataset,
                        r.as_of,
                        r.run_id,
                        r.files,
                        human_bytes(r.bytes),
                        "record only: its manifest is there"
                        if r.status == "found"
                        else "upload (files already there are skipped)",
                    )
                    for r in planned
                ],
            )
        already = sum(d.already for d in result.datasets)
        console.info(
            f"would upload {sum(1 for r in planned if r.status == 'planned')} run(s) to "
            f"{result.destination}; {already} already uploaded"
        )
        return
    if result.runs:
        console.table(
            f"upload to {result.destination}: run {result.run_id}",
            ["dataset", "as_of", "run_id", "status", "sent", "skipped", "deleted", "size", "s"],
            [
                (
                    r.dataset,
                    r.as_of,
                    r.run_id,
                    r.status,
                    r.files,
                    r.skipped,
                    len(r.deleted),
                    human_bytes(r.bytes),
                    f"{r.seconds:.1f}",
                )
                for r in result.runs
            ],
        )
    for item in result.datasets:
        if item.pointer_moved:
            console.info(f"{item.dataset}: the remote pointer now names run {item.pointer_moved}")
    already = sum(d.already for d in result.datasets)
    if not result.runs and not result.errors and not result.locked:
        console.info(
            f"nothing to upload: every run is already in {result.destination} ({already} run(s))"
        )
    elif not result.errors:
        console.info(
            f"uploaded {len(result.uploaded)} run(s), {human_bytes(result.bytes)}, to "
            f"{result.destination}; {already} were already there"
        )


@app.command(
    "status",
    help="Per dataset: the runs pending upload (and why), the last upload, and the lag (the "
    "age of the oldest pending run). Reads the local tree and the upload state only.",
)
def status_command(
    ctx: typer.Context,
    dest: Dest = None,
    as_json: AsJson = False,
) -> None:
    settings = state(ctx).settings()
    url = destination_url(settings, dest)
    if url is None:
        if as_json:
            console.emit_json({"destination": None, "configured": False, "datasets": []})
        else:
            console.info(NO_DESTINATION)
        return
    key = destination_key(url)
    tree = RuntimeTree.at(settings.runtime_dir)
    now = utc_now()
    statuses = [dataset_status(tree, folder.name, key) for folder in dataset_dirs(tree)]
    if as_json:
        console.emit_json(
            {
                "destination": key,
                "configured": True,
                "checked_at": iso(now),
                "datasets": [s.to_json(now) for s in statuses],
            }
        )
        return
    rows = []
    for item in statuses:
        lag = item.lag_seconds(now)
        last = item.last_upload
        rows.append(
            (
                item.dataset,
                len(item.pending),
                item.uploaded,
                f"{lag / 60:.0f} min" if lag is not None else "",
                f"{iso(last.at)} {last.status}" if last else "never",
                (last.error or "") if last else "",
            )
        )
    console.table(
        f"uploads to {key}",
        ["dataset", "pending", "uploaded", "lag", "last upload", "last error"],
        rows,
    )
    pending = [p for item in statuses for p in item.pending]
    if pending:
        console.table(
            "runs pending upload",
            ["dataset", "as_of", "run_id", "exported", "why"],
            [
                (
                    p.dataset,
                    p.as_of,
                    p.run_id,
                    iso(p.finished_at),
                    p.error or ("its upload did not finish" if p.recorded else "never uploaded"),
                )
                for p in pending
            ],
        )
    for item in statuses:
        if item.problem:
            console.info(f"note: {item.problem}; the next `abaco upload` rebuilds it")
