"""Export one dataset for one as-of date: snapshot, stream, write, publish, manifest."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, Literal

import psycopg

from abaco_cli import __version__
from abaco_cli.datasets import get_dataset
from abaco_cli.datasets.base import DatasetSpec
from abaco_cli.db.classify import classify
from abaco_cli.db.connect import (
    Connection,
    connect,
    secrets_of,
    snapshot,
    source_identity,
    with_retries,
)
from abaco_cli.db.stream import QueryStream
from abaco_cli.errors import WriteError
from abaco_cli.runtime.atomic import (
    fsync_path,
    publish,
    remove_stale_temps,
    sha256_of,
    temp_path_for,
    write_text_atomic,
)
from abaco_cli.runtime.lock import dataset_lock
from abaco_cli.runtime.tree import RuntimeTree
from abaco_cli.services.runs import iso, new_run_id, utc_now
from abaco_cli.settings import Settings
from abaco_cli.writers.base import BatchWriter, FileContext, open_sink
from abaco_cli.writers.manifest import FileRecord, Manifest, previous_files, update_latest
from abaco_cli.writers.registry import WRITERS

EventKind = Literal["waiting", "retry", "table", "rows", "published"]


@dataclass(frozen=True)
class ExportEvent:
    """Progress of a run, for the CLI to render; services never print."""

    kind: EventKind
    message: str
    table: str = ""
    rows: int = 0


ProgressCallback = Callable[[ExportEvent], None]


@dataclass(frozen=True)
class PlannedFile:
    table: str
    format: str
    path: Path


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


@dataclass
class _Staged:
    planned: PlannedFile
    temp: Path
    rows: int = 0
    columns: list[dict[str, str]] = field(default_factory=list)


def plan_export(settings: Settings, dataset: str, as_of: date, formats: list[str]) -> ExportPlan:
    """What an export would read and write; touches neither the database nor the disk."""
    spec = get_dataset(dataset)
    tree = RuntimeTree(settings.runtime_dir)
    files = [
        PlannedFile(t.name, fmt, tree.table_file(spec.name, t.name, as_of, fmt))
        for t in spec.tables
        for fmt in formats
    ]
    queries = {t.name: t.build_query(settings).as_string(None) for t in spec.tables}
    return ExportPlan(
        spec.name, as_of, formats, files, tree.manifest_path(spec.name, as_of), queries
    )


def _notify(progress: ProgressCallback | None, event: ExportEvent) -> None:
    if progress is not None:
        progress(event)


def _stage_table(
    conn: Connection,
    settings: Settings,
    spec: DatasetSpec,
    table: str,
    params: dict[str, Any],
    staged: list[_Staged],
    context: FileContext,
    progress: ProgressCallback | None,
) -> None:
    """Stream one table's query into a temporary file per format."""
    query = spec.table(table).build_query(settings)
    stream = QueryStream(conn, query, params, batch_rows=settings.batch_rows)
    columns = [{"name": f.name, "type": str(f.type)} for f in stream.schema]
    _notify(progress, ExportEvent("table", f"exporting {spec.name}/{table}", table=table))
    mine = [s for s in staged if s.planned.table == table]
    with ExitStack() as stack:
        writers: list[tuple[_Staged, BatchWriter]] = []
        for item in mine:
            item.temp.parent.mkdir(parents=True, exist_ok=True)
            sink = stack.enter_context(open_sink(item.temp))
            writer = WRITERS[item.planned.format](sink, stream.schema, context)
            stack.callback(writer.abort)  # runs before the sink closes, on success a no-op
            writers.append((item, writer))
        rows = 0
        for batch in stream.batches():
            for _, writer in writers:
                writer.write(batch)
            rows += batch.num_rows
            _notify(progress, ExportEvent("rows", f"{rows} rows", table=table, rows=rows))
        for item, writer in writers:
            writer.close()
            writer.sink.flush()
            os.fsync(writer.sink.fileno())
            item.rows = writer.rows
            item.columns = columns


def _stage_all(
    settings: Settings,
    spec: DatasetSpec,
    as_of: date,
    staged: list[_Staged],
    context: FileContext,
    progress: ProgressCallback | None,
) -> None:
    """One connection, one read-only snapshot, every table of the dataset."""
    secrets = secrets_of(settings)
    conn = connect(settings)
    try:
        params = spec.build_params(settings, as_of)
        with snapshot(conn, settings):
            for table in spec.tables:
                table_context = replace(context, table=table.name)
                _stage_table(
                    conn, settings, spec, table.name, params, staged, table_context, progress
                )
    except psycopg.Error as exc:
        raise classify(exc, secrets=secrets, during=f"exporting {spec.name}") from None
    finally:
        conn.close()


def _discard(staged: list[_Staged]) -> None:
    for item in staged:
        item.temp.unlink(missing_ok=True)


def export_dataset(
    settings: Settings,
    dataset: str,
    as_of: date,
    formats: list[str],
    *,
    command: str = "export",
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Export ``dataset`` as of ``as_of``; on any failure nothing is published."""
    spec = get_dataset(dataset)
    plan = plan_export(settings, dataset, as_of, formats)
    tree = RuntimeTree(settings.runtime_dir)
    started = utc_now()
    run_id = new_run_id(started)
    context = FileContext(
        dataset=spec.name,
        table="",
        as_of_date=as_of.isoformat(),
        run_id=run_id,
        tool_version=__version__,
        schema_version=spec.schema_version,
        generated_at=iso(started),
    )
    with dataset_lock(
        tree.lock_path(spec.name),
        run_id=run_id,
        command=command,
        timeout_seconds=settings.lock_timeout_seconds,
        on_wait=lambda holder: _notify(progress, ExportEvent("waiting", f"waiting for {holder}")),
    ):
        stale = remove_stale_temps(tree.dataset_dir(spec.name))
        staged = [_Staged(p, temp_path_for(p.path, run_id)) for p in plan.files]

        def attempt() -> None:
            try:
                _stage_all(settings, spec, as_of, staged, context, progress)
            except BaseException:
                _discard(staged)
                raise

        try:
            with_retries(
                settings,
                attempt,
                on_retry=lambda n, exc, wait: _notify(
                    progress,
                    ExportEvent("retry", f"attempt {n} failed ({exc}); retrying in {wait:.1f}s"),
                ),
            )
        except OSError as exc:
            raise WriteError(f"could not write the {spec.name} export: {exc}") from None
        records = _publish(tree, staged)
        manifest_path = plan.manifest_path
        obsolete = previous_files(manifest_path) - {r.path for r in records}
        finished = utc_now()
        identity = source_identity(settings)
        manifest = Manifest(
            run_id=run_id,
            dataset=spec.name,
            as_of_date=as_of.isoformat(),
            schema_version=spec.schema_version,
            tool_version=__version__,
            started_at=iso(started),
            finished_at=iso(finished),
            source={"host": identity.host, "database": identity.database},
            files=records,
        )
        write_text_atomic(manifest_path, manifest.to_json(), run_id)
        for relative in obsolete:
            (tree.exports / relative).unlink(missing_ok=True)
        update_latest(tree, manifest, manifest_path)
    _notify(progress, ExportEvent("published", f"published {len(records)} files"))
    return ExportResult(
        run_id=run_id,
        dataset=spec.name,
        as_of=as_of,
        status="success",
        manifest_path=manifest_path,
        files=records,
        started_at=manifest.started_at,
        finished_at=manifest.finished_at,
        removed_stale=[str(p) for p in stale],
        source=str(identity),
    )


def _publish(tree: RuntimeTree, staged: list[_Staged]) -> list[FileRecord]:
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
        _discard(staged)
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
