"""Export datasets for as-of dates: one snapshot per date, stream, write, publish, manifest.

The path of a run: lock every dataset (an interrupted publish is finished first) -> connect ->
per as-of date, one read-only REPEATABLE READ snapshot shared by up to ``parallel_queries``
connections (services/staging.py), in which every table of every dataset is streamed into
temporary files beside their targets and fsynced -> publish the date (runtime/journal.py: one
journal, then the renames, the removal of files the date no longer has, the manifests and the
latest pointers; signals wait until it is done). Nothing of a date is published unless every
dataset of it succeeded, and once its journal exists all of it is.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from abaco_cli import __version__, metrics
from abaco_cli.datasets import get_dataset
from abaco_cli.datasets.base import DatasetSpec
from abaco_cli.db.connect import Connection, source_identity, with_retries
from abaco_cli.errors import AbacoError, UploadPendingError, WriteError
from abaco_cli.quality import QualityReport, run_checks
from abaco_cli.runtime import files, journal
from abaco_cli.runtime.inventory import read_run
from abaco_cli.runtime.journal import DatasetPart, JournalError, Move, PublishRecord
from abaco_cli.runtime.manifest import Column, Manifest, ManifestFile
from abaco_cli.runtime.tree import DERIVED_FOLDERS, Place, RuntimeTree
from abaco_cli.services.run import Run, iso, output_record, utc_now
from abaco_cli.services.staging import (
    DatasetRun,
    ExportEvent,
    PlannedFile,
    ProgressCallback,
    Source,
    StagedFile,
    discard,
    notify,
    planned_files,
    stage_date,
)
from abaco_cli.services.uploading import UploadOutcome, pending_message, upload_published
from abaco_cli.settings import Settings
from abaco_cli.storage import Destination, open_destination
from abaco_cli.writers.base import FileContext

__all__ = [
    "ExportEvent",
    "ExportPlan",
    "ExportResult",
    "ProgressCallback",
    "export_dataset",
    "export_datasets",
    "plan_export",
]
log = logging.getLogger("abaco.export")


@dataclass(frozen=True)
class ExportPlan:
    dataset: str
    as_of: date
    formats: list[str]
    files: list[PlannedFile]
    manifest_path: Path
    queries: dict[str, str]
    exports: Path  # the exports folder the paths below are relative to
    kept: list[str] = field(default_factory=list)  # the date's files of other formats: stay
    replaced: list[str] = field(default_factory=list)  # the date's files this run replaces


@dataclass
class ExportResult:
    run_id: str
    dataset: str
    as_of: date
    status: str
    manifest_path: Path
    files: list[ManifestFile] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""
    upload: UploadOutcome | None = None  # with a destination: how the upload of the run ended


def plan_export(
    settings: Settings,
    dataset: str,
    as_of: date,
    formats: list[str],
    *,
    replace_formats: bool = False,
) -> ExportPlan:
    """What an export would read and write, and which of the date's files it would keep or
    replace; touches neither the database nor the disk."""
    spec = get_dataset(dataset)
    tree = RuntimeTree.at(settings.runtime_dir)
    planned = planned_files(tree, spec, as_of, formats)
    queries = {t.name: t.build_query(settings).as_string(None) for t in spec.tables}
    manifest_path = tree.manifest_path(spec.name, as_of)
    previous = read_run(tree, spec.name, manifest_path, marked=False).manifest
    written = {(p.table, p.format) for p in planned}
    if previous is not None:  # derived files (the dashboard's JSON) are always written again
        written |= {(f.table, f.format) for f in previous.files if _derived(tree, f.path)}
    kept, gone = kept_files(previous, written, replace_formats=replace_formats)
    return ExportPlan(
        spec.name,
        as_of,
        formats,
        planned,
        manifest_path,
        queries,
        tree.exports,
        kept=[f.path for f in kept],
        replaced=[f.path for f in gone],
    )


def _derived(tree: RuntimeTree, path: str) -> bool:
    place = tree.data_place(path)
    return place is not None and place.table in DERIVED_FOLDERS


def export_datasets(
    run: Run,
    datasets: Sequence[str],
    as_of_dates: Sequence[date],
    formats: list[str],
    *,
    replace_formats: bool = False,
    progress: ProgressCallback | None = None,
    upload_to: str | None = None,
    upload_progress: Callable[[str], None] | None = None,
) -> list[ExportResult]:
    """Export every dataset for every as-of date, one snapshot per date, one run id.

    The audit log gets START before anything else happens and COMPLETE or FAIL at the end
    (on Ctrl-C and SIGTERM too); the metrics file is updated after every run. With
    ``upload_to`` (a destination URL) the runs it published are then uploaded there; when that
    does not finish, they stay published and pending, and UploadPendingError (exit 5) is raised
    with the results.
    """
    specs = [get_dataset(name) for name in dict.fromkeys(datasets)]
    target = open_destination(upload_to, run.settings) if upload_to else None  # checked first
    clock = time.monotonic()
    results: list[ExportResult] = []
    succeeded = False
    outcome: UploadOutcome | None = None
    try:
        with run.audited(
            arguments={
                "datasets": [s.name for s in specs],
                "as_of_dates": [d.isoformat() for d in as_of_dates],
                "formats": list(formats),
                "replace_formats": replace_formats,
                **({"destination": target.url} if target is not None else {}),
            },
            datasets=[s.name for s in specs],
            as_of_dates=[d.isoformat() for d in as_of_dates],
        ):
            _export(run, specs, as_of_dates, formats, replace_formats, progress, results)
            if target is not None:
                outcome = upload_results(run, results, target, upload_progress)
        succeeded = True
    finally:
        run.metrics(_export_metrics(run.settings, specs, results, clock, succeeded))
        if target is not None:
            target.close()
    if outcome is not None and outcome.pending:
        raise UploadPendingError(pending_message(outcome), results=results)
    return results


def upload_results(
    run: Run,
    results: list[ExportResult],
    target: Destination,
    progress: Callable[[str], None] | None,
) -> UploadOutcome:
    """Upload what the run published; the export's end record says how it went (and FAIL
    with exit code 5 when it did not finish: the files stay published)."""
    outcome = upload_published(run, [(r.dataset, r.as_of) for r in results], target, progress)
    for result in results:
        result.upload = outcome
    if run.audit is not None:
        run.audit.details["upload"] = {
            "destination": outcome.destination,
            "status": outcome.status,
            "error": outcome.error,
        }
        if outcome.pending:
            run.audit.exit_code = int(UploadPendingError.exit_code)
            run.audit.error = {"type": "UploadPendingError", "message": pending_message(outcome)}
    return outcome


def export_dataset(
    settings: Settings,
    dataset: str,
    as_of: date,
    formats: list[str],
    *,
    command: str | None = None,
    replace_formats: bool = False,
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Export one dataset as of one date in a run of its own (the library's entry point);
    on any failure nothing is published."""
    run = Run(settings, command or f"export {dataset}")
    return export_datasets(
        run, [dataset], [as_of], formats, replace_formats=replace_formats, progress=progress
    )[0]


def _export(
    run: Run,
    specs: Sequence[DatasetSpec],
    as_of_dates: Sequence[date],
    formats: list[str],
    replace_formats: bool,
    progress: ProgressCallback | None,
    results: list[ExportResult],
) -> None:
    """The run itself: appends to ``results`` (and the audit's outputs) as each date publishes."""
    settings = run.settings
    run.hold(
        [s.name for s in specs],
        on_wait=lambda holder: notify(progress, ExportEvent("waiting", f"waiting for {holder}")),
    )
    context = FileContext(
        dataset="",
        table="",
        as_of_date="",
        run_id=run.run_id,
        tool_version=__version__,
        schema_version=1,
        generated_at=iso(run.started),
        partition_columns=("as_of_date",),
    )
    quality: dict[date, QualityReport] = {}
    source = Source(settings, on_connect=run.connected)
    try:
        for index, as_of in enumerate(as_of_dates, start=1):
            notify(
                progress,
                ExportEvent("date", f"as of {as_of}", done=index - 1, total=len(as_of_dates)),
            )
            date_context = replace(context, as_of_date=as_of.isoformat())

            def attempt(day: date = as_of, ctx: FileContext = date_context) -> list[DatasetRun]:
                def check(conn: Connection, on: date = day) -> None:
                    quality[on] = check_quality(run, conn, on, progress)

                return stage_date(
                    source, run.tree, settings, specs, day, formats, ctx, progress, check
                )

            try:
                staged = with_retries(
                    settings,
                    attempt,
                    on_retry=lambda n, exc, wait: notify(
                        progress,
                        ExportEvent(
                            "retry", f"attempt {n} failed ({exc}); retrying in {wait:.1f}s"
                        ),
                    ),
                )
            except OSError as exc:
                raise WriteError(f"could not write the export: {exc}") from None
            report = quality.get(as_of)
            results += publish_date(
                run,
                staged,
                as_of,
                replace_formats=replace_formats,
                dq=report.manifest_section() if report is not None else None,
            )
            notify(
                progress,
                ExportEvent("date", f"as of {as_of}", done=index, total=len(as_of_dates)),
            )
    finally:
        source.drop()
    count = sum(len(r.files) for r in results)
    notify(progress, ExportEvent("published", f"published {count} files"))


def _export_metrics(
    settings: Settings,
    specs: Sequence[DatasetSpec],
    results: list[ExportResult],
    clock: float,
    succeeded: bool,
) -> metrics.MetricsUpdate:
    """Per dataset: when the run ended and how, and the size of its newest as-of date."""
    finished = time.time()
    duration = time.monotonic() - clock
    runs: list[metrics.DatasetRun] = []
    for spec in specs:
        mine = [r for r in results if r.dataset == spec.name]
        newest = max(mine, key=lambda r: r.as_of, default=None)
        rows, size = metrics.newest_sizes(
            settings, spec.name, newest.as_of if newest else None, newest.files if newest else []
        )
        runs.append(
            metrics.DatasetRun(
                dataset=spec.name,
                success=succeeded,
                finished=finished,
                duration_seconds=duration,
                freshness_limit_seconds=settings.health.freshness_hours.hours(spec.name) * 3600,
                rows=rows,
                bytes=size,
            )
        )
    return metrics.export_update(runs)


def check_quality(
    run: Run, conn: Connection, as_of: date, progress: ProgressCallback | None
) -> QualityReport:
    """The data-quality checks, inside the date's snapshot before any figure is computed:
    recorded in the metrics and the audit record, a warning logged, the date stopped when the
    policy (dq.on_error, dq.on_warning) says the figures must not go out."""
    notify(progress, ExportEvent("table", "checking data quality", table="dq"))
    report = run_checks(conn, run.settings, as_of=as_of)
    notify(progress, ExportEvent("written", f"data quality: {report.summary()}", table="dq"))
    run.metrics(metrics.dq_update(report, time.time()))
    if run.audit is not None:
        run.audit.details.setdefault("dq", {})[as_of.isoformat()] = {
            "outcome": report.outcome,
            "summary": report.summary(),
        }
    if report.outcome == "warn":
        log.warning("data quality as of %s: %s (runbooks/data-quality.md)", as_of, report.summary())
    report.raise_if_blocking()
    return report


# ---------------------------------------------------------------------------------- publishing


def _describe(run: Run, item: StagedFile, snapshot_at: datetime | None) -> ManifestFile:
    """A staged file (fsynced by its writer) as its manifest entry will list it: its checksum
    as taken while it was written, or read from it when that is not known."""
    size, digest = files.checksum_of_staged(run.tree, item.temp, Place.TEMP, item.written)
    return ManifestFile(
        path=run.tree.relative(item.planned.path),
        table=item.planned.table,
        format=item.planned.format,
        rows=item.rows,
        bytes=size,
        sha256=digest,
        columns=tuple(Column(c["name"], c["type"]) for c in item.columns),
        run_id=run.run_id,
        snapshot_at=snapshot_at,
    )


def kept_files(
    previous: Manifest | None, written: set[tuple[str, str]], *, replace_formats: bool
) -> tuple[list[ManifestFile], list[ManifestFile]]:
    """Of the date's previous files: those this run keeps (a table and format it does not
    write, unless ``replace_formats``), with the run and snapshot they came from, and those it
    replaces or removes."""
    if previous is None:
        return [], []
    kept: list[ManifestFile] = []
    gone: list[ManifestFile] = []
    for entry in previous.files:
        if replace_formats or (entry.table, entry.format) in written:
            gone.append(entry)
        else:
            kept.append(
                replace(
                    entry,
                    run_id=entry.origin(previous.run_id),
                    snapshot_at=entry.snapshot_at or previous.snapshot_at,
                )
            )
    return kept, gone


def _part(
    run: Run,
    staged: DatasetRun,
    as_of: date,
    *,
    replace_formats: bool,
    dq: dict[str, Any] | None = None,
) -> DatasetPart:
    """One dataset's share of the date's journal: its renames, the files of the date's previous
    manifest it no longer names, and its new manifest (which keeps the previous files of other
    formats unless ``replace_formats``)."""
    tree = run.tree
    entries = [_describe(run, item, staged.snapshot_at) for item in staged.staged]
    manifest_path = tree.manifest_path(staged.spec.name, as_of)
    previous = read_run(tree, staged.spec.name, manifest_path, marked=False)
    written = {(e.table, e.format) for e in entries}
    kept, gone = kept_files(previous.manifest, written, replace_formats=replace_formats)
    named = {e.path for e in entries}
    obsolete = tuple(f.path for f in gone if f.path not in named)
    if previous.manifest is None and previous.problem is not None and files.exists(manifest_path):
        log.warning(
            "the previous manifest %s is not trusted (%s): the new one replaces it and none of "
            "the files it names is removed",
            tree.relative(manifest_path),
            previous.problem.message,
        )
    identity = run.source or source_identity(run.settings)
    manifest = Manifest(
        run_id=run.run_id,
        dataset=staged.spec.name,
        as_of_date=as_of,
        schema_version=staged.spec.schema_version,
        tool_version=__version__,
        started_at=run.started,
        finished_at=utc_now(),
        source=identity.to_json(),
        files=tuple(entries + kept),
        snapshot_at=staged.snapshot_at,
        dq=dq,
    )
    moves = tuple(
        Move(tree.relative(item.temp), tree.relative(item.planned.path), entry.bytes)
        for item, entry in zip(staged.staged, entries, strict=True)
    )
    return DatasetPart(staged.spec.name, moves, obsolete, manifest)


def publish_date(
    run: Run,
    staged: list[DatasetRun],
    as_of: date,
    *,
    replace_formats: bool = False,
    dq: dict[str, Any] | None = None,
) -> list[ExportResult]:
    """Publish every staged file of the date together: the journal first, then the renames,
    the manifests and the pointers. Signals wait until it is complete."""
    tree = run.tree
    try:
        parts = tuple(_part(run, s, as_of, replace_formats=replace_formats, dq=dq) for s in staged)
        record = PublishRecord(run.run_id, as_of, parts)
    except (OSError, AbacoError) as exc:
        for item in staged:
            discard(tree, item.staged)
        if isinstance(exc, AbacoError):
            raise
        raise WriteError(f"could not publish as of {as_of}: {exc}") from None
    names = ", ".join(sorted(p.dataset for p in record.parts))
    try:
        journal.write(tree, record)  # the commit point: before it nothing is published
    except OSError as exc:
        with contextlib.suppress(OSError, AbacoError):  # renamed but not synced: not committed
            files.remove(tree, tree.journal_path(run.run_id, as_of), Place.JOURNAL)
        for item in staged:
            discard(tree, item.staged)
        raise WriteError(
            f"could not publish {names} as of {as_of}: {exc}; nothing of it was published"
        ) from None
    try:
        with run.publishing(record, f"{names} as of {as_of}"):
            run.checkpoint("wrote the journal")
            for part in record.parts:
                journal.apply_moves(tree, part, run.checkpoint)
            for part in record.parts:
                journal.apply_rest(tree, record, part, run.checkpoint)
            if run.audit is not None:  # before a deferred signal ends the run
                run.audit.outputs += [
                    output_record(p.dataset, as_of.isoformat(), f)
                    for p in record.parts
                    for f in p.manifest.files
                ]
    except (OSError, JournalError) as exc:
        raise WriteError(
            f"publishing {names} as of {as_of} stopped half-way: {exc}; its journal is kept "
            "and the next run of the dataset completes it",
        ) from None
    return [
        ExportResult(
            run_id=run.run_id,
            dataset=part.dataset,
            as_of=as_of,
            status="success",
            manifest_path=tree.manifest_path(part.dataset, as_of),
            files=list(part.manifest.files),
            started_at=iso(part.manifest.started_at),
            finished_at=iso(part.manifest.finished_at),
        )
        for part in record.parts
    ]
