"""Export datasets for as-of dates: one snapshot per date, stream, write, publish, manifest.

The path of a run: lock every dataset -> connect -> per as-of date, one read-only REPEATABLE
READ snapshot, shared by up to ``parallel_queries`` connections (services/staging.py), in
which every table of every dataset is streamed into temporary files beside their targets ->
fsync -> rename all into place (rolled back together on failure) -> one manifest per dataset
-> latest pointers. Nothing is published unless every dataset of the date succeeded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path

from abaco_cli import __version__, metrics
from abaco_cli.datasets import get_dataset
from abaco_cli.datasets.base import DatasetSpec
from abaco_cli.db.connect import source_identity, with_retries
from abaco_cli.errors import WriteError
from abaco_cli.runtime.atomic import (
    fsync_path,
    publish,
    remove_stale_temps,
    sha256_of,
    write_text_atomic,
)
from abaco_cli.runtime.lock import dataset_lock
from abaco_cli.runtime.tree import RuntimeTree
from abaco_cli.services.auditing import AuditedRun, audited
from abaco_cli.services.runs import iso, new_run_id, utc_now
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
from abaco_cli.settings import Settings
from abaco_cli.writers.base import FileContext
from abaco_cli.writers.manifest import FileRecord, Manifest, previous_files, update_latest

__all__ = [
    "ExportEvent",
    "ExportPlan",
    "ExportResult",
    "ProgressCallback",
    "export_dataset",
    "export_datasets",
    "plan_export",
]


@dataclass(frozen=True)
class ExportPlan:
    dataset: str
    as_of: date
    formats: list[str]
    files: list[PlannedFile]
    manifest_path: Path
    queries: dict[str, str]


@dataclass
class ExportResult:
    run_id: str
    dataset: str
    as_of: date
    status: str
    manifest_path: Path
    files: list[FileRecord] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""
    removed_stale: list[str] = field(default_factory=list)
    source: str = ""


def plan_export(settings: Settings, dataset: str, as_of: date, formats: list[str]) -> ExportPlan:
    """What an export would read and write; touches neither the database nor the disk."""
    spec = get_dataset(dataset)
    tree = RuntimeTree(settings.runtime_dir)
    files = planned_files(settings, spec, as_of, formats)
    queries = {t.name: t.build_query(settings).as_string(None) for t in spec.tables}
    return ExportPlan(
        spec.name, as_of, formats, files, tree.manifest_path(spec.name, as_of), queries
    )


def export_datasets(
    settings: Settings,
    datasets: Sequence[str],
    as_of_dates: Sequence[date],
    formats: list[str],
    *,
    command: str = "export",
    progress: ProgressCallback | None = None,
) -> list[ExportResult]:
    """Export every dataset for every as-of date, one snapshot per date, one run id.

    The audit log gets START before anything else happens and COMPLETE or FAIL at the end
    (on Ctrl-C too); the metrics file is updated after every run, successful or not.
    """
    specs = [get_dataset(name) for name in dict.fromkeys(datasets)]
    started = utc_now()
    run_id = new_run_id(started)
    clock = time.monotonic()
    results: list[ExportResult] = []
    succeeded = False
    try:
        with audited(
            settings,
            command=command,
            run_id=run_id,
            arguments={
                "datasets": [s.name for s in specs],
                "as_of_dates": [d.isoformat() for d in as_of_dates],
                "formats": list(formats),
            },
            datasets=[s.name for s in specs],
            as_of_dates=[d.isoformat() for d in as_of_dates],
            started=started,
        ) as audit:
            _export(
                settings,
                specs,
                as_of_dates,
                formats,
                run_id,
                started,
                command,
                progress,
                results,
                audit,
            )
        succeeded = True
    finally:
        metrics.record(settings, _export_metrics(settings, specs, results, clock, succeeded))
    return results


def _export(
    settings: Settings,
    specs: Sequence[DatasetSpec],
    as_of_dates: Sequence[date],
    formats: list[str],
    run_id: str,
    started: datetime,
    command: str,
    progress: ProgressCallback | None,
    results: list[ExportResult],
    audit: AuditedRun,
) -> None:
    """The run itself: appends to ``results`` (and the audit's outputs) as each date publishes."""
    tree = RuntimeTree(settings.runtime_dir)
    context = FileContext(
        dataset="",
        table="",
        as_of_date="",
        run_id=run_id,
        tool_version=__version__,
        schema_version=1,
        generated_at=iso(started),
        partition_columns=("as_of_date",),
    )
    with ExitStack() as stack:
        for spec in sorted(specs, key=lambda s: s.name):
            stack.enter_context(
                dataset_lock(
                    tree.lock_path(spec.name),
                    run_id=run_id,
                    command=command,
                    timeout_seconds=settings.lock_timeout_seconds,
                    on_wait=lambda holder: notify(
                        progress, ExportEvent("waiting", f"waiting for {holder}")
                    ),
                )
            )
        stale = [str(p) for spec in specs for p in remove_stale_temps(tree.dataset_dir(spec.name))]
        source = Source(settings)
        stack.callback(source.drop)
        for index, as_of in enumerate(as_of_dates, start=1):
            notify(
                progress,
                ExportEvent("date", f"as of {as_of}", done=index - 1, total=len(as_of_dates)),
            )
            date_context = replace(context, as_of_date=as_of.isoformat())

            def attempt(day: date = as_of, ctx: FileContext = date_context) -> list[DatasetRun]:
                return stage_date(source, settings, specs, day, formats, ctx, progress)

            try:
                runs = with_retries(
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
            published = _publish_date(tree, settings, runs, as_of, run_id, started, stale)
            results += published
            audit.outputs += [_output(result, f) for result in published for f in result.files]
            notify(
                progress,
                ExportEvent("date", f"as of {as_of}", done=index, total=len(as_of_dates)),
            )
    count = sum(len(r.files) for r in results)
    notify(progress, ExportEvent("published", f"published {count} files"))


def _output(result: ExportResult, record: FileRecord) -> dict[str, object]:
    """One published file as the audit record lists it."""
    return {
        "dataset": result.dataset,
        "as_of_date": result.as_of.isoformat(),
        "table": record.table,
        "format": record.format,
        "path": record.path,
        "rows": record.rows,
        "bytes": record.bytes,
        "sha256": record.sha256,
    }


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
        rows: dict[str, int] = {}
        for record in newest.files if newest else []:
            rows[record.table] = max(rows.get(record.table, 0), record.rows)
        runs.append(
            metrics.DatasetRun(
                dataset=spec.name,
                success=succeeded,
                finished=finished,
                duration_seconds=duration,
                freshness_limit_seconds=settings.health.freshness_hours.hours(spec.name) * 3600,
                rows=rows,
                bytes=sum(f.bytes for f in newest.files) if newest else 0,
            )
        )
    return metrics.export_update(runs)


def export_dataset(
    settings: Settings,
    dataset: str,
    as_of: date,
    formats: list[str],
    *,
    command: str = "export",
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Export one dataset as of one date; on any failure nothing is published."""
    results = export_datasets(
        settings, [dataset], [as_of], formats, command=command, progress=progress
    )
    return results[0]


def _publish_date(
    tree: RuntimeTree,
    settings: Settings,
    runs: list[DatasetRun],
    as_of: date,
    run_id: str,
    started: datetime,
    stale: list[str],
) -> list[ExportResult]:
    """Publish every staged file of the date together, then each dataset's manifest."""
    records = _publish(tree, [item for run in runs for item in run.staged])
    identity = source_identity(settings)
    results: list[ExportResult] = []
    for run in runs:
        mine = [r for r in records if r.path.startswith(f"{run.spec.name}/")]
        manifest_path = tree.manifest_path(run.spec.name, as_of)
        obsolete = previous_files(manifest_path) - {r.path for r in mine}
        finished = utc_now()
        manifest = Manifest(
            run_id=run_id,
            dataset=run.spec.name,
            as_of_date=as_of.isoformat(),
            schema_version=run.spec.schema_version,
            tool_version=__version__,
            started_at=iso(started),
            finished_at=iso(finished),
            source={"host": identity.host, "database": identity.database},
            files=mine,
        )
        write_text_atomic(manifest_path, manifest.to_json(), run_id)
        for relative in obsolete:
            (tree.exports / relative).unlink(missing_ok=True)
        if update_latest(tree, manifest, manifest_path):
            for alias, content in run.latest_aliases:
                write_text_atomic(alias, content.decode("utf-8"), run_id)
        results.append(
            ExportResult(
                run_id=run_id,
                dataset=run.spec.name,
                as_of=as_of,
                status="success",
                manifest_path=manifest_path,
                files=mine,
                started_at=manifest.started_at,
                finished_at=manifest.finished_at,
                removed_stale=stale,
                source=str(identity),
            )
        )
    return results


def _publish(tree: RuntimeTree, staged: list[StagedFile]) -> list[FileRecord]:
    """Checksum every staged file, then rename each into place.

    The files a run replaces are kept as hard links until every rename has succeeded, so that
    a failure half-way puts the previous files back: the set stays the previous run's.
    """
    records: list[FileRecord] = []
    backups: list[tuple[Path, Path]] = []
    published: list[Path] = []
    current = staged[0].planned.path if staged else Path()
    try:
        for item in staged:
            current = item.planned.path
            fsync_path(item.temp)
            records.append(
                FileRecord(
                    path=tree.relative(item.planned.path),
                    table=item.planned.table,
                    format=item.planned.format,
                    rows=item.rows,
                    bytes=item.temp.stat().st_size,
                    sha256=sha256_of(item.temp),
                    columns=item.columns,
                )
            )
        for item in staged:
            current = item.planned.path
            if item.planned.path.exists():
                backup = item.temp.with_name(item.temp.name + ".previous")
                os.link(item.planned.path, backup)
                backups.append((backup, item.planned.path))
            publish(item.temp, item.planned.path)
            published.append(item.planned.path)
    except BaseException as exc:
        _roll_back(published, backups)
        discard(staged)
        if isinstance(exc, OSError):
            raise WriteError(f"could not publish {current}: {exc}") from None
        raise
    for backup, _ in backups:
        backup.unlink(missing_ok=True)
    return records


def _roll_back(published: list[Path], backups: list[tuple[Path, Path]]) -> None:
    """Put back the previous files of a half-published run; remove files it added anew."""
    restored = {target for _, target in backups}
    for backup, target in backups:
        if target in published:
            os.replace(backup, target)
        else:
            backup.unlink(missing_ok=True)
    for target in published:
        if target not in restored:
            target.unlink(missing_ok=True)
