"""Reading the audit trail back: `audit list`, `audit show`, and `audit record-restore`.

A run's status comes from its records: success (COMPLETE), failed (FAIL), recovered (killed
while it published; a later command finished the publish and wrote RECOVER), incomplete (no end
record: still running, or killed before it published anything), restored (a manifest copied
back by an operator, recorded with RESTORE).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from abaco_cli.audit.recorder import END_EVENTS, AuditedRun, audit_log, audit_log_path
from abaco_cli.errors import NotFoundError, UsageError
from abaco_cli.runtime import files
from abaco_cli.runtime.inventory import read_run
from abaco_cli.runtime.manifest import Manifest, parse_time
from abaco_cli.runtime.tree import NAME, Place
from abaco_cli.services.run import Run, output_record, utc_now
from abaco_cli.settings import Settings

STATUSES = ("success", "failed", "incomplete", "recovered", "restored")


@dataclass(frozen=True)
class RunSummary:
    """A run as `audit list` shows it: its START joined with its end record."""

    run_id: str
    command: str
    status: str  # success | failed | incomplete (no end record: running, or killed) | recovered
    started_at: str
    finished_at: str | None
    duration_seconds: float | None
    exit_code: int | None
    datasets: list[str]
    as_of_dates: list[str]
    user: str
    host: str
    started_by: str
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "command": self.command,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_seconds": self.duration_seconds,
            "exit_code": self.exit_code,
            "datasets": self.datasets,
            "as_of_dates": self.as_of_dates,
            "user": self.user,
            "host": self.host,
            "started_by": self.started_by,
            "error": self.error,
        }


def _summaries(records: list[dict[str, Any]]) -> list[RunSummary]:
    by_run: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_run.setdefault(str(record.get("run_id", "")), []).append(record)
    summaries: list[RunSummary] = []
    for run_id, items in by_run.items():
        start = next((r for r in items if r.get("event") == "START"), items[0])
        end = next((r for r in reversed(items) if r.get("event") in END_EVENTS), None)
        status = "incomplete"
        if end is not None:
            status = "success" if end.get("event") == "COMPLETE" else "failed"
        elif any(r.get("event") == "RECOVER" for r in items):
            status = "recovered"
        elif any(r.get("event") == "RESTORE" for r in items):
            status = "restored"
        actor = start.get("actor") or {}
        error = (end or {}).get("error") or None
        summaries.append(
            RunSummary(
                run_id=run_id,
                command=str(start.get("command", "")),
                status=status,
                started_at=str(start.get("time", "")),
                finished_at=str(end.get("time")) if end else None,
                duration_seconds=end.get("duration_seconds") if end else None,
                exit_code=end.get("exit_code") if end else None,
                datasets=list(start.get("datasets") or []),
                as_of_dates=list(start.get("as_of_dates") or []),
                user=str(actor.get("user", "")),
                host=str(actor.get("host", "")),
                started_by=str(actor.get("started_by", "")),
                error=f"{error.get('type')}: {error.get('message')}" if error else None,
            )
        )
    return sorted(summaries, key=lambda s: (s.started_at, s.run_id))


def list_runs(
    settings: Settings,
    *,
    since: timedelta | None = None,
    dataset: str | None = None,
    status: str | None = None,
    command: str | None = None,
    now: datetime | None = None,
) -> list[RunSummary]:
    """Runs that started within ``since``, filtered by dataset, status and command."""
    cutoff = (now or utc_now()) - since if since is not None else None
    chosen: list[RunSummary] = []
    for summary in _summaries(audit_log(settings).records()):
        started = parse_time(summary.started_at)
        if cutoff is not None and (started is None or started < cutoff):
            continue
        if dataset is not None and dataset not in summary.datasets:
            continue
        if status is not None and summary.status != status:
            continue
        if command is not None and not (
            summary.command == command or summary.command.startswith(command + " ")
        ):
            continue
        chosen.append(summary)
    return chosen


def show_run(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    """Every record of one run, in order; NotFoundError when the log has none."""
    found = [r for r in audit_log(settings).records() if r.get("run_id") == run_id]
    if not found:
        raise NotFoundError(f"no audit record of run {run_id!r} in {audit_log_path(settings)}")
    return found


def record_restore(run: Run, dataset: str, as_of: date, reason: str) -> Manifest:
    """Append a RESTORE record for a manifest an operator copied back (from the bucket): the
    run it describes then has a record in this host's chain. Its files must match it."""
    if not NAME.match(dataset):
        raise UsageError(f"{dataset!r} is not a dataset name")
    with run.audited(
        arguments={"dataset": dataset, "as_of_date": as_of.isoformat(), "reason": reason},
        datasets=[dataset],
        as_of_dates=[as_of.isoformat()],
        reads_source=False,
    ) as audit:
        run.hold([dataset])
        path = run.tree.manifest_path(dataset, as_of)
        found = read_run(run.tree, dataset, path, marked=False)
        if found.manifest is None:
            why = found.problem.message if found.problem else "unreadable"
            raise NotFoundError(
                f"no usable manifest of {dataset} as of {as_of} at {path} ({why})",
                hint="Copy the manifest back into _manifests/ first "
                "(runbooks/restore-after-prune.md).",
            )
        manifest = found.manifest
        for entry in manifest.files:
            target = run.tree.data_file(entry.path, dataset, as_of)
            try:
                size, digest = files.sha256_of(run.tree, target, Place.DATA)
            except FileNotFoundError:
                raise UsageError(
                    f"{entry.path} is missing: restore every file the manifest names first"
                ) from None
            if (size, digest) != (entry.bytes, entry.sha256):
                raise UsageError(
                    f"{entry.path} does not match its manifest (size or sha256): restore the "
                    "exact version the manifest names"
                )
        restored = AuditedRun(
            run_id=manifest.run_id,
            command=run.command,
            arguments={"reason": reason},
            datasets=[dataset],
            as_of_dates=[as_of.isoformat()],
            started=run.started,
            reads_source=False,
        )
        outputs = [output_record(dataset, as_of.isoformat(), f) for f in manifest.files]
        run.recorder.append(
            run.recorder.record(
                restored,
                "RESTORE",
                outputs=outputs,
                details={"restored_by": run.run_id, "reason": reason},
            )
        )
        audit.details |= {"restored_run": manifest.run_id, "files": len(manifest.files)}
    return manifest
