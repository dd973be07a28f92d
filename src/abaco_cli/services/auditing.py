"""The audit trail of every command that reads the source or changes the runtime tree.

``audited(...)`` wraps a job: a START record before any side effect, then COMPLETE, or FAIL
with the exit code and the error (on Ctrl-C too). Records go to the hash-chained local log and,
when ``audit.sink = "postgres"``, to a shared PostgreSQL table; that copy failing is logged and
never fails the job. ``list_runs``, ``show_run`` and ``verify_audit`` read the trail back.

A record (``record_version`` 1; JSON, one a line; keys sorted):
  time, event (START | COMPLETE | FAIL), run_id, command ("export dpd", "prune", "db seed"),
  arguments, datasets, as_of_dates, actor {user, uid, host, pid, started_by, systemd_unit},
  tool_version, config_hash (sha256 of the effective configuration, secrets redacted),
  source {host, port, database, user} (null for commands that never read it), outputs
  [{dataset, as_of_date, table, format, path, rows, bytes, sha256}], details (per command,
  e.g. what prune removed), duration_seconds, exit_code, error {type, message}, seq,
  prev_hash, hash. Passwords never appear: every secret is replaced by *** before hashing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from abaco_cli import __version__
from abaco_cli.audit import sink
from abaco_cli.audit.actor import current_actor
from abaco_cli.audit.chain import AuditLog, ChainProblem, check_chain
from abaco_cli.db.classify import scrub
from abaco_cli.db.connect import redacted_dsn, secrets_of, source_identity
from abaco_cli.errors import AbacoError, AuditLogError, ExitCode, LockedError, NotFoundError
from abaco_cli.runtime.atomic import sha256_of
from abaco_cli.runtime.inventory import (
    dataset_dirs,
    exported_runs,
    latest_manifest,
    parse_time,
    resolve_inside,
)
from abaco_cli.runtime.lock import dataset_lock
from abaco_cli.runtime.tree import RuntimeTree
from abaco_cli.services.runs import iso, utc_now
from abaco_cli.settings import Settings

log = logging.getLogger("abaco.audit")
RECORD_VERSION = 1
STATUSES = ("success", "failed", "incomplete")


# ------------------------------------------------------------------------ redaction and identity


def audit_log_path(settings: Settings) -> Path:
    return settings.audit.path or RuntimeTree(settings.runtime_dir).audit_log


def audit_log(settings: Settings) -> AuditLog:
    return AuditLog(audit_log_path(settings))


def _sink_conninfo(settings: Settings) -> str:
    url = settings.audit.database_url or settings.database_url
    return url.get_secret_value() if url is not None else ""


def redaction_secrets(settings: Settings) -> list[str]:
    """Every secret of the configuration: the source's and the audit copy's URL and password."""
    found = set(secrets_of(settings))
    if settings.audit.database_url is not None:
        raw = settings.audit.database_url.get_secret_value()
        found.add(raw)
        try:
            password = conninfo_to_dict(raw).get("password")
        except psycopg.ProgrammingError:
            password = None
        if password:
            found.add(str(password))
    return sorted((s for s in found if s), key=len, reverse=True)


def redact(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with every secret replaced by *** in every string it holds."""
    if isinstance(value, str):
        return scrub(value, list(secrets))
    if isinstance(value, dict):
        return {str(k): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value


def effective_configuration(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready data with both database URLs redacted."""
    data: dict[str, Any] = json.loads(settings.model_dump_json())
    data["database_url"] = redacted_dsn(settings)
    if settings.audit.database_url is not None:
        audit_only = settings.model_copy(update={"database_url": settings.audit.database_url})
        data["audit"]["database_url"] = redacted_dsn(audit_only)
    redacted: dict[str, Any] = redact(data, redaction_secrets(settings))
    return redacted


def config_hash(settings: Settings) -> str:
    """sha256 of the effective configuration (redacted): did two runs run with the same one?"""
    text = json.dumps(effective_configuration(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def exit_code_of(exc: BaseException) -> int:
    if isinstance(exc, AbacoError):
        return int(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.FAILED)


# ------------------------------------------------------------------------------------- writing


@dataclass
class AuditedRun:
    """A job being audited: the job adds its outputs and details before it returns."""

    run_id: str
    command: str
    arguments: dict[str, Any]
    datasets: list[str]
    as_of_dates: list[str]
    started: datetime
    reads_source: bool
    outputs: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0  # a job that completes but reports a failure (prune: a locked dataset)
    error: dict[str, str] | None = None


class Auditor:
    """Builds records for one configuration and appends them to the log (and the copy)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.log = audit_log(settings)
        self.secrets = redaction_secrets(settings)
        self._actor = current_actor()
        self._config_hash = config_hash(settings)

    def _source(self) -> dict[str, str]:
        identity = source_identity(self.settings)
        return {
            "host": identity.host,
            "port": identity.port,
            "database": identity.database,
            "user": identity.user,
        }

    def record(self, run: AuditedRun, event: str, **end: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "record_version": RECORD_VERSION,
            "time": iso(utc_now()),
            "event": event,
            "run_id": run.run_id,
            "command": run.command,
            "arguments": run.arguments,
            "datasets": run.datasets,
            "as_of_dates": run.as_of_dates,
            "actor": self._actor,
            "tool_version": __version__,
            "config_hash": self._config_hash,
            "source": self._source() if run.reads_source else None,
            "outputs": [],
            "details": {},
            "duration_seconds": None,
            "exit_code": None,
            "error": None,
        }
        fields.update(end)
        return dict(redact(fields, self.secrets))

    def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        try:
            stored = self.log.append(fields)
        except OSError as exc:
            raise AuditLogError(
                f"cannot append to the audit log {self.log.path}: {exc.strerror or exc}"
            ) from None
        self._copy(stored)
        return stored

    def _copy(self, record: dict[str, Any]) -> None:
        if self.settings.audit.sink != "postgres":
            return
        try:
            sink.send(
                _sink_conninfo(self.settings),
                self.settings.audit.table,
                record,
                timeout_seconds=self.settings.audit.sink_timeout_seconds,
            )
        except (psycopg.Error, OSError, ValueError) as exc:
            message = scrub(" ".join(str(exc).split()) or type(exc).__name__, self.secrets)
            log.warning(
                "the audit copy in PostgreSQL (%s) failed; the local audit log %s has the "
                "record: %s",
                self.settings.audit.table,
                self.log.path,
                message,
            )


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd stopping a unit, `timeout`) handled like Ctrl-C: cleaned up, audited."""

    def __str__(self) -> str:
        return "stopped by SIGTERM"


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def audited(
    settings: Settings,
    *,
    command: str,
    run_id: str,
    arguments: dict[str, Any],
    datasets: Sequence[str] = (),
    as_of_dates: Sequence[str] = (),
    reads_source: bool = True,
    started: datetime | None = None,
) -> Iterator[AuditedRun]:
    """START now (AuditLogError when the log cannot be written: then nothing runs), then
    COMPLETE or FAIL when the block ends, whatever ends it."""
    auditor = Auditor(settings)
    run = AuditedRun(
        run_id=run_id,
        command=command,
        arguments=arguments,
        datasets=list(datasets),
        as_of_dates=list(as_of_dates),
        started=started or utc_now(),
        reads_source=reads_source,
    )
    clock = time.monotonic()
    auditor.append(auditor.record(run, "START"))
    try:
        with _terminate_as_interrupt():
            yield run
    except BaseException as exc:
        message = exc.message if isinstance(exc, AbacoError) else str(exc)
        error = {"type": type(exc).__name__, "message": message or "interrupted"}
        _finish(auditor, run, "FAIL", clock, exit_code_of(exc), error)
        raise
    if run.exit_code:
        _finish(auditor, run, "FAIL", clock, run.exit_code, run.error)
    else:
        _finish(auditor, run, "COMPLETE", clock, 0, None)


def _finish(
    auditor: Auditor,
    run: AuditedRun,
    event: str,
    clock: float,
    exit_code: int,
    error: dict[str, str] | None,
) -> None:
    """The end record; a failure to write it is logged, never raised over the job's outcome."""
    fields = auditor.record(
        run,
        event,
        outputs=run.outputs,
        details=run.details,
        duration_seconds=round(time.monotonic() - clock, 3),
        exit_code=exit_code,
        error=error,
    )
    try:
        auditor.append(fields)
    except AuditLogError as exc:
        log.error("%s; run %s ended with exit code %d", exc.message, run.run_id, exit_code)


# ------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RunSummary:
    """A run as `audit list` shows it: its START joined with its end record."""

    run_id: str
    command: str
    status: str  # success | failed | incomplete (no end record: still running, or killed)
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
        end = next((r for r in reversed(items) if r.get("event") in ("COMPLETE", "FAIL")), None)
        status = "incomplete"
        if end is not None:
            status = "success" if end.get("event") == "COMPLETE" else "failed"
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


# ----------------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Finding:
    """One problem (or, for notes, one fact) that `audit verify` reports."""

    kind: str
    where: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "message": self.message}


@dataclass
class VerifyResult:
    log_path: Path
    records: int = 0
    manifests: int = 0
    files_checked: int = 0
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_audit_chain(settings: Settings) -> tuple[int, list[ChainProblem]]:
    """The number of records and every problem of the chain (the healthcheck's audit check)."""
    lines, head, exists = audit_log(settings).read()
    return len(lines), check_chain(lines, head, exists)


def _audited_hashes(records: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(run id, path) -> sha256, from the outputs of every successful export record."""
    hashes: dict[tuple[str, str], str] = {}
    for record in records:
        if record.get("event") != "COMPLETE":
            continue
        for output in record.get("outputs") or []:
            if isinstance(output, dict) and "path" in output and "sha256" in output:
                hashes[(str(record.get("run_id")), str(output["path"]))] = str(output["sha256"])
    return hashes


def _check_dataset(
    tree: RuntimeTree, dataset: str, audited_hashes: dict[tuple[str, str], str]
) -> tuple[int, int, list[Finding], list[Finding]]:
    """Manifests, files checked, problems and notes of one dataset's runs."""
    problems: list[Finding] = []
    notes: list[Finding] = []
    manifests = files_checked = 0
    for run in exported_runs(tree, dataset):
        where = tree.relative(run.manifest_path)
        if run.problem is not None:
            if run.marked:
                notes.append(Finding("prune_incomplete", where, run.problem))
            else:
                problems.append(Finding("unreadable_manifest", where, f"{where}: {run.problem}"))
            continue
        if run.marked:
            left = sum(
                1
                for f in run.files
                if (p := resolve_inside(tree, dataset, f.path)) is not None and p.exists()
            )
            notes.append(
                Finding(
                    "prune_incomplete",
                    where,
                    f"the removal of run {run.run_id} ({dataset} as of {run.as_of_date}) was "
                    f"interrupted; {left} of its {len(run.files)} files remain; the next "
                    "`abaco prune` finishes it",
                )
            )
            continue
        manifests += 1
        for entry in run.files:
            files_checked += 1
            path = resolve_inside(tree, dataset, entry.path)
            label = f"{entry.path} (run {run.run_id})"
            if path is None:
                problems.append(
                    Finding(
                        "bad_path",
                        entry.path,
                        f"{where} names {entry.path!r}, which is outside {dataset}/ or behind a "
                        "symbolic link",
                    )
                )
            elif path.is_symlink():
                problems.append(
                    Finding("symlinked_file", entry.path, f"{label} is a symbolic link")
                )
            elif not path.is_file():
                problems.append(Finding("missing_file", entry.path, f"{label} is missing"))
            elif path.stat().st_size != entry.bytes or sha256_of(path) != entry.sha256:
                problems.append(
                    Finding(
                        "modified_file",
                        entry.path,
                        f"{label} was modified: its size or sha256 no longer matches {where}",
                    )
                )
            audited = audited_hashes.get((run.run_id, entry.path))
            if audited is not None and audited != entry.sha256:
                problems.append(
                    Finding(
                        "manifest_edited",
                        where,
                        f"{where} was edited: the sha256 it gives {entry.path} differs from the "
                        "audit record of the run",
                    )
                )
    latest = latest_manifest(tree, dataset)
    if tree.latest_path(dataset).exists() and (latest is None or not latest.is_file()):
        problems.append(
            Finding(
                "dangling_latest",
                tree.relative(tree.latest_path(dataset)),
                f"{dataset}/latest.json points at a manifest that does not exist",
            )
        )
    return manifests, files_checked, problems, notes


def verify_audit(
    settings: Settings, *, progress: Callable[[str], None] | None = None
) -> VerifyResult:
    """Recompute the whole chain; re-hash every file still present against its manifest.

    Files are checked without a lock; a dataset that shows a problem is checked again under its
    lock, so an export publishing at that moment is not mistaken for damage.
    """
    log_file = audit_log(settings)
    result = VerifyResult(log_path=log_file.path)
    lines, head, exists = log_file.read()
    result.records = len(lines)
    if not exists and head is None:
        result.notes.append(Finding("no_audit_log", str(log_file.path), "no audit log yet"))
    for problem in check_chain(lines, head, exists):
        result.problems.append(Finding(problem.kind, problem.where, problem.message))
    hashes = _audited_hashes([line.record for line in lines if line.record is not None])
    tree = RuntimeTree(settings.runtime_dir)
    for folder in dataset_dirs(tree):
        dataset = folder.name
        if progress is not None:
            progress(f"checking {dataset}")
        outcome = _check_dataset(tree, dataset, hashes)
        if outcome[2]:
            try:
                with dataset_lock(
                    tree.lock_path(dataset),
                    run_id="audit-verify",
                    command="audit verify",
                    timeout_seconds=settings.lock_timeout_seconds,
                ):
                    outcome = _check_dataset(tree, dataset, hashes)
            except LockedError:
                pass  # report what the unlocked pass found
        manifests, checked, problems, notes = outcome
        result.manifests += manifests
        result.files_checked += checked
        result.problems += problems
        result.notes += notes
    return result
