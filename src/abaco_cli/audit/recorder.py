"""Writing the audit trail: the records of one command, appended to the local chain and copied
to the optional PostgreSQL sink.

A record (``record_version`` 2; JSON, one a line; keys sorted): time, event (START | COMPLETE |
FAIL | RECOVER | RESTORE | MIGRATE), run_id, command ("export dpd", "prune", "db seed"),
arguments, datasets, as_of_dates, host_id, actor {user, uid, host, pid, started_by,
systemd_unit}, tool_version, config_hash (sha256 of the effective configuration, secrets
redacted), source {host, port, database, user} (null for commands that never read it), outputs
[{dataset, as_of_date, table, format, path, rows, bytes, sha256}], details (per command, e.g.
what prune removed), duration_seconds, exit_code, error {type, message}, seq, prev_hash, hash.
Secrets never appear: free text goes through the one Redactor.

RECOVER: a later command finished the publish of a run that was killed mid-publish (its outputs
are the files that publish made live). MIGRATE: a later version moved a run's files to its
layout or rewrote them with its column types (the outputs: their new paths and checksums).
RESTORE: an operator restored a run's manifest from a copy (`abaco audit record-restore`), so
that `audit verify` knows where the run comes from.
Version 1 records (no host_id) are read as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from abaco_cli import __version__
from abaco_cli.audit import sink
from abaco_cli.audit.actor import current_actor, host_id
from abaco_cli.audit.chain import AuditLog
from abaco_cli.db.source import SourceIdentity, source_identity
from abaco_cli.errors import AbacoError, AuditLogError, ExitCode, InterruptedRun
from abaco_cli.redaction import Redactor, redacted_settings
from abaco_cli.runtime.manifest import iso_time
from abaco_cli.runtime.tree import RuntimeTree
from abaco_cli.settings import Settings

log = logging.getLogger("abaco.audit")
RECORD_VERSION = 2
END_EVENTS = ("COMPLETE", "FAIL")


def audit_log_path(settings: Settings) -> Path:
    return settings.audit.path or RuntimeTree.at(settings.runtime_dir).audit_log


def audit_log(settings: Settings) -> AuditLog:
    return AuditLog(audit_log_path(settings))


def config_hash(settings: Settings) -> str:
    """sha256 of the effective configuration (redacted): did two runs run with the same one?"""
    text = json.dumps(redacted_settings(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def exit_code_of(exc: BaseException) -> int:
    if isinstance(exc, AbacoError):
        return int(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt | InterruptedRun):
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.FAILED)


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


class AuditRecorder:
    """Builds the records of one configuration and appends them to the log (and the sink)."""

    def __init__(self, settings: Settings, redactor: Redactor) -> None:
        self.settings = settings
        self.redactor = redactor
        self.log = audit_log(settings)
        self.host_id = host_id()
        self._actor = current_actor()
        self._config_hash = config_hash(settings)

    connected: SourceIdentity | None = None  # what the run's connection reported (Run sets it)

    def _source(self) -> dict[str, str]:
        """What the connection reported once the run connected (records from then on); before
        that, what the configuration resolves to (URL, service file, PG* variables, defaults)."""
        return (self.connected or source_identity(self.settings)).to_json()

    def record(self, run: AuditedRun, event: str, **end: Any) -> dict[str, Any]:
        """A record's fields (without seq and hashes); free text redacted."""
        fields: dict[str, Any] = {
            "record_version": RECORD_VERSION,
            "time": iso_time(datetime.now(UTC)),
            "event": event,
            "run_id": run.run_id,
            "command": run.command,
            "arguments": self.redactor.value(run.arguments),
            "datasets": run.datasets,
            "as_of_dates": run.as_of_dates,
            "host_id": self.host_id,
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
        for key in ("details", "error"):
            if key in end:
                end[key] = self.redactor.value(end[key])
        fields.update(end)
        return fields

    def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Chain the record to the local log (AuditLogError when it cannot be written), then
        copy it to the sink (a failure there is logged, never raised)."""
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
                sink_conninfo(self.settings),
                self.settings.audit.table,
                record,
                timeout_seconds=self.settings.audit.sink_timeout_seconds,
            )
        except (psycopg.Error, OSError, ValueError) as exc:
            message = self.redactor.text(" ".join(str(exc).split()) or type(exc).__name__)
            log.warning(
                "the audit copy in PostgreSQL (%s) failed; the local audit log %s has the "
                "record, and `audit verify --against-sink` will report it: %s",
                self.settings.audit.table,
                self.log.path,
                message,
            )


def sink_conninfo(settings: Settings) -> str:
    url = settings.audit.database_url or settings.database_url
    return url.get_secret_value() if url is not None else ""
