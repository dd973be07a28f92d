"""`abaco audit list | show | verify`: read and check the audit trail."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import state
from abaco_cli.dates import parse_date
from abaco_cli.durations import parse_duration
from abaco_cli.errors import ExitCode, UsageError
from abaco_cli.services.audit_trail import list_runs, record_restore, show_run
from abaco_cli.services.verifying import verify_audit

app = typer.Typer(
    help="Read and verify the audit trail (who ran what, when, with what outcome).",
    no_args_is_help=True,
)
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Status = Literal["success", "failed", "incomplete", "recovered", "restored"]  # STATUSES


@app.command("list")
def list_command(
    ctx: typer.Context,
    since: Annotated[
        str, typer.Option("--since", help="Runs started within this window: Nh, Nd or Nw.")
    ] = "7d",
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Only runs of this dataset.")
    ] = None,
    status: Annotated[
        Status | None,
        typer.Option("--status", help="Only runs with this outcome.", show_default=False),
    ] = None,
    command: Annotated[
        str | None,
        typer.Option("--command", help="Only this command: export, prune, 'db seed', ..."),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List runs from the audit log: one line per run, its outcome and exit code."""
    try:
        window = parse_duration(since)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    runs = list_runs(
        state(ctx).settings(), since=window, dataset=dataset, status=status, command=command
    )
    if as_json:
        console.emit_json({"since": since, "runs": [r.to_json() for r in runs]})
        return
    if not runs:
        console.info(f"no audited run in the last {since} matches")
        return
    console.table(
        f"audited runs, last {since}",
        ["started", "run_id", "command", "status", "exit", "seconds", "as_of", "actor", "error"],
        [
            (
                r.started_at,
                r.run_id,
                r.command,
                r.status,
                "" if r.exit_code is None else r.exit_code,
                "" if r.duration_seconds is None else f"{r.duration_seconds:.1f}",
                ",".join(r.as_of_dates),
                f"{r.user}@{r.host} ({r.started_by})",
                r.error or "",
            )
            for r in runs
        ],
    )


def _render_value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_render_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_render_value(v) for v in value)
    return "" if value is None else str(value)


@app.command("show")
def show_command(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run id, as `audit list` shows it.")],
    as_json: AsJson = False,
) -> None:
    """Every audit record of one run, in full."""
    records = show_run(state(ctx).settings(), run_id)
    if as_json:
        console.emit_json({"run_id": run_id, "records": records})
        return
    for record in records:
        outputs = record.get("outputs") or []
        rows = [
            (key, _render_value(record.get(key)))
            for key in sorted(record)
            if key not in ("outputs", "details")
        ]
        if record.get("details"):
            rows.append(("details", _render_value(record.get("details"))))
        console.table(f"{record.get('event')} record of run {run_id}", ["field", "value"], rows)
        if outputs:
            console.table(
                f"outputs of run {run_id}",
                ["path", "rows", "bytes", "sha256"],
                [(o.get("path"), o.get("rows"), o.get("bytes"), o.get("sha256")) for o in outputs],
            )


@app.command(
    "verify",
    help="Recompute the hash chain, re-hash every exported file, tie every manifest to the "
    "audit trail (with --remote: the destination's objects against the manifests); exit 1 on "
    "any problem.",
)
def verify_command(
    ctx: typer.Context,
    against_sink: Annotated[
        bool,
        typer.Option(
            "--against-sink",
            help="Also compare this host's chain with the rows of the PostgreSQL audit sink "
            "(audit.sink = postgres): missing, extra and different records are problems.",
        ),
    ] = False,
    remote: Annotated[
        bool,
        typer.Option(
            "--remote",
            help="Also check every run recorded as uploaded against the destination: each "
            "object's size (and md5 or sha256 where the store gives one), its manifest there "
            "and equal to the local one, the remote pointer naming a manifest that exists.",
        ),
    ] = False,
    dest: Annotated[
        str | None,
        typer.Option(
            "--dest",
            help="The destination for --remote (default: upload.destination).",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    if dest is not None and not remote:
        raise UsageError("--dest goes with --remote")
    result = verify_audit(
        state(ctx).settings(), against_sink=against_sink, remote=remote, destination=dest
    )
    if as_json:
        console.emit_json(result.to_json())
    else:
        for note in result.notes:
            console.info(f"note: {note.message}")
        if result.ok:
            sink = (
                f"; the sink's {result.sink_rows} rows match"
                if result.sink_rows is not None
                else ""
            )
            far = (
                f"; the {result.remote_objects} uploaded objects in {result.destination} match"
                if result.remote_objects is not None
                else ""
            )
            console.info(
                f"audit trail intact: {result.records} records in {result.log_path}; "
                f"{result.files_checked} files of {result.manifests} manifests match{sink}{far}"
            )
        else:
            console.stderr.print(
                f"abaco: audit verify found {len(result.problems)} problem(s)", highlight=False
            )
            console.table(
                f"audit verify: {len(result.problems)} problem(s)",
                ["kind", "where", "problem"],
                [(p.kind, p.where, p.message) for p in result.problems],
            )
    if not result.ok:
        raise typer.Exit(int(ExitCode.FAILED))


@app.command(
    "record-restore",
    help="Record in the audit trail that a run's manifest and files were restored by hand (the "
    "restore runbook), after checking that every file matches the manifest.",
)
def record_restore_command(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option("--dataset", help="The dataset of the restored run.")],
    as_of: Annotated[
        str, typer.Option("--as-of", help="The as-of date of the restored run (YYYY-MM-DD).")
    ],
    reason: Annotated[
        str, typer.Option("--reason", help="Why it was restored (kept in the record).")
    ] = "restored from the bucket",
) -> None:
    day = parse_date(as_of, "--as-of")
    manifest = record_restore(state(ctx).run("audit record-restore"), dataset, day, reason)
    console.info(
        f"recorded the restore of run {manifest.run_id} ({dataset} as of {day}, "
        f"{len(manifest.files)} files)"
    )
