"""The Run: one per command, owning what every job shares.

A Run has the run id and the start time, the runtime tree (resolved once), the one Redactor,
the audit recorder (START before anything happens, then COMPLETE or FAIL), the metrics, the
dataset locks (recovery of an interrupted publish runs first under each) and the handling of
Ctrl-C and SIGTERM (deferred while a publish runs). Services receive it and stay small.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any

from abaco_cli import metrics
from abaco_cli.audit.recorder import AuditedRun, AuditRecorder, exit_code_of
from abaco_cli.db.source import SourceIdentity
from abaco_cli.errors import AbacoError, InterruptedRun, UnsafePathError, WriteError
from abaco_cli.redaction import Redactor
from abaco_cli.runtime import files, journal
from abaco_cli.runtime.inventory import refresh_latest
from abaco_cli.runtime.journal import MIGRATE, PublishRecord
from abaco_cli.runtime.lock import dataset_lock
from abaco_cli.runtime.manifest import iso_time
from abaco_cli.runtime.migration import Migration, migrate_dataset
from abaco_cli.runtime.tree import Place, RuntimeTree
from abaco_cli.services.retyping import Retyped, retype_dataset
from abaco_cli.settings import Settings
from abaco_cli.signals import SignalGuard

log = logging.getLogger("abaco.run")

# Test-only: pause (and log "test pause at publish step N") at the Nth step of publishing, so
# that a test can kill the process there. Never set in production.
TEST_PAUSE_ENV = "ABACO_TEST_PAUSE_PUBLISH_AT"
TEST_PAUSE_SECONDS = 60.0


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return iso_time(moment)


def new_run_id(moment: datetime | None = None) -> str:
    """Sortable and unique: 20250630T120000Z-1a2b3c."""
    stamp = (moment or utc_now()).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


class Run:
    """One command's run: id, tree, redaction, audit, metrics, locks and signals."""

    def __init__(self, settings: Settings, command: str, *, now: datetime | None = None) -> None:
        self.settings = settings
        self.command = command
        self.started = now or utc_now()
        self.run_id = new_run_id(self.started)
        self.tree = RuntimeTree.at(settings.runtime_dir)
        self.redactor = Redactor.from_settings(settings)
        self.signals = SignalGuard()
        self.audit: AuditedRun | None = None
        self.published: list[str] = []  # what this run made live, for the exit message
        self.source: SourceIdentity | None = None  # what its connection reported (connected)
        self.migrated: list[Migration] = []  # runs moved to the one-format-a-folder layout
        self.retyped: list[Retyped] = []  # runs rewritten with this version's column types
        self._recorder: AuditRecorder | None = None
        self._held = ExitStack()  # dataset locks, released after the audit's end record
        self._locked: set[str] = set()
        self._committed: list[PublishRecord] = []  # journals removed after the end record
        self._steps = 0

    @property
    def recorder(self) -> AuditRecorder:
        if self._recorder is None:
            self._recorder = AuditRecorder(self.settings, self.redactor)
        return self._recorder

    def connected(self, identity: SourceIdentity) -> None:
        """A connection of this run reported where it is: manifests and audit records say so."""
        self.source = identity
        self.recorder.connected = identity

    # ------------------------------------------------------------------------------ the audit

    @contextmanager
    def audited(
        self,
        *,
        arguments: dict[str, Any],
        datasets: Sequence[str] = (),
        as_of_dates: Sequence[str] = (),
        reads_source: bool = True,
    ) -> Iterator[AuditedRun]:
        """START now (AuditLogError when the log cannot be written: then nothing runs), then
        COMPLETE or FAIL when the block ends, whatever ends it; locks taken with ``hold`` are
        released only after that record, and a signal stops the block cleanly."""
        recorder = self.recorder
        audit = AuditedRun(
            run_id=self.run_id,
            command=self.command,
            arguments=arguments,
            datasets=list(datasets),
            as_of_dates=list(as_of_dates),
            started=self.started,
            reads_source=reads_source,
        )
        recorder.append(recorder.record(audit, "START"))
        self.audit = audit
        clock = time.monotonic()
        try:
            with self.signals.installed():
                try:
                    yield audit
                except BaseException as exc:
                    if isinstance(exc, InterruptedRun):
                        exc.message = self.interrupted_message()
                    with self.signals.ignored():
                        self._end(audit, "FAIL", clock, exit_code_of(exc), _error_of(exc))
                        self._finish()
                    raise
                with self.signals.ignored():
                    if audit.exit_code:
                        self._end(audit, "FAIL", clock, audit.exit_code, audit.error)
                    else:
                        self._end(audit, "COMPLETE", clock, 0, None)
                    self._finish()
        finally:
            self._held.close()
            self.audit = None

    def _end(
        self,
        audit: AuditedRun,
        event: str,
        clock: float,
        exit_code: int,
        error: dict[str, str] | None,
    ) -> None:
        """The end record; a failure to write it is logged, never raised over the outcome."""
        fields = self.recorder.record(
            audit,
            event,
            outputs=audit.outputs,
            details=audit.details,
            duration_seconds=round(time.monotonic() - clock, 3),
            exit_code=exit_code,
            error=error,
        )
        try:
            self.recorder.append(fields)
        except AbacoError as exc:
            log.error("%s; run %s ended with exit code %d", exc.message, self.run_id, exit_code)

    def _finish(self) -> None:
        """After the end record: the journals of this run's complete publishes go."""
        for record in self._committed:
            try:
                journal.remove(self.tree, record)
            except (OSError, AbacoError) as exc:
                log.warning("could not remove the publish journal of %s: %s", record.as_of, exc)
        self._committed.clear()

    def interrupted_message(self) -> str:
        if self.published:
            return (
                f"published {'; '.join(self.published)} (complete); nothing after that was "
                "published"
            )
        return f"nothing of run {self.run_id} was published; the previous exports are unchanged"

    # -------------------------------------------------------------------- locks and recovery

    def hold(self, datasets: Iterable[str], on_wait: Callable[[str], None] | None = None) -> None:
        """Take the datasets' locks in name order, held until the audited block has ended."""
        for name in sorted(set(datasets)):
            if name not in self._locked:
                self._held.enter_context(self.lock(name, on_wait))

    @contextmanager
    def lock(self, dataset: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
        """One dataset's lock; an interrupted publish of the dataset is finished first."""
        path = files.make_folders(self.tree, self.tree.lock_path(dataset), Place.LOCK)
        with dataset_lock(
            path,
            run_id=self.run_id,
            command=self.command,
            timeout_seconds=self.settings.lock_timeout_seconds,
            on_wait=on_wait,
        ):
            self._locked.add(dataset)
            try:
                self.recover(dataset)
                yield
            finally:
                self._locked.discard(dataset)

    def recover(self, dataset: str) -> None:
        """Under the dataset's lock: finish interrupted publishes (audited as RECOVER), point
        latest.json at the newest run, remove temporary files of crashed runs."""
        with self.signals.deferred():
            try:
                finished = journal.recover(self.tree, dataset, self.checkpoint)
            except (OSError, journal.JournalError, UnsafePathError) as exc:
                raise WriteError(
                    f"an interrupted publish of {dataset} cannot be completed: {exc}",
                    hint="Nothing else was changed; see runbooks/export-failed.md "
                    '("an interrupted publish that cannot be completed").',
                ) from None
            for record in finished:
                self._record_recovery(record, dataset)
            migrated = migrate_dataset(self.tree, dataset, self.run_id, self.checkpoint)
            for retyped, record in retype_dataset(self.tree, dataset, self.run_id, self.checkpoint):
                self._record_migration(record, dataset)
                journal.remove(self.tree, record)
                self.retyped.append(retyped)
                log.info(
                    "rewrote %s as of %s with this version's column types (%s)",
                    dataset,
                    retyped.as_of_date,
                    ", ".join(retyped.columns),
                )
            refresh_latest(self.tree, dataset, self.run_id)
            swept = files.sweep_temps(self.tree, dataset)
        if swept:
            log.info("removed %d temporary file(s) of an interrupted %s run", len(swept), dataset)
        if migrated:
            self.migrated += migrated
            moved = sum(len(m.moves) for m in migrated)
            log.info(
                "moved %d CSV and JSON file(s) of %d %s run(s) to folders of their own "
                "(one format a folder)",
                moved,
                len(migrated),
                dataset,
            )
            if self.audit is not None:
                self.audit.details.setdefault("layout_migrated", []).extend(
                    m.to_json() for m in migrated
                )

    def _record_recovery(self, record: PublishRecord, dataset: str) -> None:
        part = record.part(dataset)
        assert part is not None
        if record.kind == MIGRATE:
            log.warning("finished the migration of %s as of %s", dataset, record.as_of)
            self._record_migration(record, dataset)
            return
        log.warning(
            "finished the publish of run %s (%s as of %s) that was interrupted",
            record.run_id,
            dataset,
            record.as_of,
        )
        if self.audit is None or self._recorded(record.run_id, dataset, record.as_of.isoformat()):
            return
        outputs = [output_record(dataset, record.as_of.isoformat(), f) for f in part.manifest.files]
        recovered = AuditedRun(
            run_id=record.run_id,
            command=self.command,
            arguments={},
            datasets=[dataset],
            as_of_dates=[record.as_of.isoformat()],
            started=self.started,
            reads_source=False,
        )
        fields = self.recorder.record(
            recovered,
            "RECOVER",
            outputs=outputs,
            details={"recovered_by": self.run_id, "dataset": dataset},
        )
        self.recorder.append(fields)

    def _record_migration(self, record: PublishRecord, dataset: str) -> None:
        """A MIGRATE record per run whose files a migration moved or rewrote: the audit trail
        then knows their new paths and checksums."""
        part = record.part(dataset)
        if part is None or self.audit is None:
            return
        moved = {m.target for m in part.moves}
        by_origin: dict[str, list[dict[str, Any]]] = {}
        for entry in part.manifest.files:
            if entry.path in moved:
                origin = entry.origin(part.manifest.run_id)
                by_origin.setdefault(origin, []).append(
                    output_record(dataset, record.as_of.isoformat(), entry)
                )
        for origin, outputs in sorted(by_origin.items()):
            migrated = AuditedRun(
                run_id=origin,
                command=self.command,
                arguments={},
                datasets=[dataset],
                as_of_dates=[record.as_of.isoformat()],
                started=self.started,
                reads_source=False,
            )
            self.recorder.append(
                self.recorder.record(
                    migrated,
                    "MIGRATE",
                    outputs=outputs,
                    details={"migrated_by": self.run_id, "dataset": dataset},
                )
            )

    def _recorded(self, run_id: str, dataset: str, as_of: str) -> bool:
        """Does the chain already say that this run published this dataset and date (its end
        record was written just before a crash)?"""
        for record in self.recorder.log.records():
            if record.get("run_id") != run_id or record.get("event") not in ("COMPLETE", "FAIL"):
                continue
            for output in record.get("outputs") or []:
                if output.get("dataset") == dataset and output.get("as_of_date") == as_of:
                    return True
        return False

    # ------------------------------------------------------------------------------ publishing

    @contextmanager
    def publishing(self, record: PublishRecord, description: str) -> Iterator[None]:
        """The publish of one date: signals wait until it is complete; its journal is removed
        after the run's end record."""
        with self.signals.deferred():
            yield
            self._committed.append(record)
            self.published.append(description)

    def checkpoint(self, step: str) -> None:
        """After each step of a publish; a test may pause here (TEST_PAUSE_ENV) to kill us."""
        self._steps += 1
        wanted = os.environ.get(TEST_PAUSE_ENV)
        if not wanted or not wanted.isdigit() or int(wanted) != self._steps:
            return
        log.warning("test pause at publish step %d (%s)", self._steps, step)
        deadline = time.monotonic() + TEST_PAUSE_SECONDS
        while time.monotonic() < deadline and self.signals.pending is None:
            time.sleep(0.02)

    # -------------------------------------------------------------------------------- metrics

    def metrics(self, update: metrics.MetricsUpdate) -> None:
        metrics.record(self.settings, update)


def output_record(dataset: str, as_of: str, entry: Any) -> dict[str, Any]:
    """One published file as audit records list it."""
    return {
        "dataset": dataset,
        "as_of_date": as_of,
        "table": entry.table,
        "format": entry.format,
        "path": entry.path,
        "rows": entry.rows,
        "bytes": entry.bytes,
        "sha256": entry.sha256,
    }


def _error_of(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, InterruptedRun):
        return {"type": "InterruptedRun", "message": f"{exc}; {exc.message}"}
    message = exc.message if isinstance(exc, AbacoError) else str(exc)
    return {"type": type(exc).__name__, "message": message or "interrupted"}
