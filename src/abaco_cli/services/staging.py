"""Stage the files of one as-of date: every table of every dataset, inside one snapshot.

The first connection opens the read-only REPEATABLE READ transaction and, when more than one
query may run at once (``parallel_queries``), exports its snapshot with
``pg_export_snapshot()``; the other connections import it with ``SET TRANSACTION SNAPSHOT`` as
the first statement of their own transactions. Every query of the date, whichever connection
runs it, therefore sees the same instant of the source. The tables are written to temporary
files beside their targets; nothing here publishes, and on any failure (Ctrl-C included) the
queries still running are cancelled and every temporary file is removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import psycopg
import pyarrow as pa

from abaco_cli.datasets.base import DatasetSpec, DeriveContext, Params, TableSpec
from abaco_cli.db.classify import classify
from abaco_cli.db.connect import Connection, SourceIdentity, connect, snapshot
from abaco_cli.db.snapshot import export_snapshot, import_snapshot, snapshot_time
from abaco_cli.db.stream import QueryStream
from abaco_cli.errors import UnsafePathError
from abaco_cli.redaction import Redactor
from abaco_cli.runtime import files
from abaco_cli.runtime.tree import Place, RuntimeTree
from abaco_cli.settings import Settings
from abaco_cli.writers.base import BatchWriter, FileContext
from abaco_cli.writers.registry import WRITERS

log = logging.getLogger(__name__)

EventKind = Literal["waiting", "retry", "date", "table", "rows", "written", "published"]


@dataclass(frozen=True)
class ExportEvent:
    """Progress of a run, for the CLI to render; services never print.

    ``table`` is ``dataset/table`` for the events of one table: ``table`` when its query
    starts, ``rows`` as rows arrive, ``written`` when its files are complete. Tables of one
    date may be in progress at the same time.
    """

    kind: EventKind
    message: str
    table: str = ""
    rows: int = 0
    done: int = 0
    total: int = 0


ProgressCallback = Callable[[ExportEvent], None]


@dataclass(frozen=True)
class PlannedFile:
    table: str
    format: str
    path: Path


@dataclass
class StagedFile:
    """A file written under its temporary name, waiting to be published."""

    dataset: str
    planned: PlannedFile
    temp: Path
    rows: int = 0
    columns: list[dict[str, str]] = field(default_factory=list)
    written: tuple[int, str] | None = None  # size and sha256 taken as it was written


def seal(item: StagedFile, writer: BatchWriter) -> None:
    """Complete a staged file: the writer's end (a footer, closing brackets), the bytes on disk
    (fsync), and what its manifest entry lists: rows, columns, size and sha256."""
    writer.close()
    writer.sink.flush()
    os.fsync(writer.sink.fileno())
    item.rows = writer.rows
    item.columns = [{"name": f.name, "type": str(f.type)} for f in writer.file_schema]
    item.written = files.written_checksum(writer.sink)


@dataclass
class DatasetRun:
    """One dataset's staged files for one date, and the instant of the source they describe."""

    spec: DatasetSpec
    staged: list[StagedFile]
    snapshot_at: datetime | None = None


def planned_files(
    tree: RuntimeTree, spec: DatasetSpec, as_of: date, formats: list[str]
) -> list[PlannedFile]:
    """Every table file of a dataset for one date, in every format."""
    return [
        PlannedFile(t.name, fmt, tree.table_file(spec.name, t.name, as_of, fmt))
        for t in spec.tables
        for fmt in formats
    ]


def notify(progress: ProgressCallback | None, event: ExportEvent) -> None:
    if progress is not None:
        progress(event)


def discard(tree: RuntimeTree, staged: list[StagedFile]) -> None:
    """Remove the temporary files, and the partition folders they alone were in."""
    for item in staged:
        with contextlib.suppress(OSError, UnsafePathError):
            files.remove(tree, item.temp, Place.TEMP)
    for folder in {item.temp.parent for item in staged}:
        files.remove_empty_folder(tree, folder)  # only when empty


class Source:
    """The run's connections, reused across dates; dropped after a failure so a retry
    reconnects. The first one holds the snapshot; helpers join it for parallel queries."""

    def __init__(
        self, settings: Settings, on_connect: Callable[[SourceIdentity], None] | None = None
    ) -> None:
        self.settings = settings
        self.conn: Connection | None = None
        self.helpers: list[Connection] = []
        self.on_connect = on_connect  # told what the first connection reports (conn.info)

    def get(self) -> Connection:
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.settings)
            if self.on_connect is not None:
                self.on_connect(SourceIdentity.of(self.conn))
        return self.conn

    def get_helpers(self, count: int) -> list[Connection]:
        self.helpers = [c for c in self.helpers if not c.closed]
        while len(self.helpers) < count:
            self.helpers.append(connect(self.settings))
        return self.helpers[:count]

    def drop(self) -> None:
        for conn in [self.conn, *self.helpers]:
            if conn is not None:
                conn.close()
        self.conn = None
        self.helpers = []


class _DateFailedError(Exception):
    """A job not started because the date already failed."""


@dataclass(frozen=True)
class _Job:
    run: DatasetRun
    table: TableSpec
    params: Params


class _Progress:
    """Serializes the events of the worker threads into the caller's callback."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self.progress = progress
        self.lock = threading.Lock()

    def __call__(self, event: ExportEvent) -> None:
        if self.progress is not None:
            with self.lock:
                self.progress(event)


def _stage_table(
    conn: Connection,
    tree: RuntimeTree,
    settings: Settings,
    job: _Job,
    context: FileContext,
    progress: _Progress,
) -> pa.Table | None:
    """Stream one table's query into a temporary file per format; the table if collected."""
    spec, table_spec = job.run.spec, job.table
    key = f"{spec.name}/{table_spec.name}"
    stream = QueryStream(
        conn, table_spec.build_query(settings), job.params, batch_rows=settings.batch_rows
    )
    progress(ExportEvent("table", f"exporting {key}", table=key))
    mine = [s for s in job.run.staged if s.planned.table == table_spec.name]
    kept: list[pa.RecordBatch] = []
    with ExitStack() as stack:
        writers: list[tuple[StagedFile, BatchWriter]] = []
        for item in mine:
            sink = stack.enter_context(files.open_new(tree, item.temp, Place.TEMP))
            writer = WRITERS[item.planned.format](sink, stream.schema, context)
            stack.callback(writer.abort)  # before the sink closes; a no-op after close()
            writers.append((item, writer))
        rows = 0
        for batch in stream.batches():
            for _, writer in writers:
                writer.write(batch)
            if table_spec.collect:
                kept.append(batch)
            rows += batch.num_rows
            progress(ExportEvent("rows", f"{rows} rows", table=key, rows=rows))
        for item, writer in writers:
            seal(item, writer)
    progress(ExportEvent("written", f"{key}: {rows} rows", table=key, rows=rows))
    if not table_spec.collect:
        return None
    return pa.Table.from_batches(kept, schema=stream.schema)


def write_staged(tree: RuntimeTree, item: StagedFile, content: bytes) -> None:
    """Write a staged file whole from ``content`` (fsynced), its checksum taken as it goes."""
    with files.open_new(tree, item.temp, Place.TEMP) as sink:
        sink.write(content)
        sink.flush()
        os.fsync(sink.fileno())
        item.written = files.written_checksum(sink)


def _derive(
    tree: RuntimeTree,
    settings: Settings,
    run: DatasetRun,
    as_of: date,
    context: FileContext,
    collected: dict[str, pa.Table],
) -> None:
    """Build the dataset's derived files (e.g. the dashboard's JSON) from collected tables."""
    spec = run.spec
    if spec.derive is None:
        return
    derive_context = DeriveContext(
        settings=settings,
        as_of=as_of,
        run_id=context.run_id,
        generated_at=context.generated_at,
        tool_version=context.tool_version,
        tables=collected,
    )
    for derived in spec.derive(derive_context):
        target = tree.exports / derived.path
        item = StagedFile(
            spec.name,
            PlannedFile(derived.table, derived.format, target),
            RuntimeTree.temp_path(target, context.run_id),
            rows=derived.rows,
        )
        run.staged.append(item)
        write_staged(tree, item, derived.content)


def _run_jobs(
    tree: RuntimeTree,
    connections: list[Connection],
    jobs: list[_Job],
    settings: Settings,
    context: FileContext,
    progress: _Progress,
) -> dict[tuple[str, str], pa.Table]:
    """Run the jobs on the connections, one query per connection at a time; the collected
    tables by (dataset, table). The first failure cancels the queries still running and is
    raised once every worker has stopped, so no worker writes after this returns."""
    free: queue.SimpleQueue[Connection] = queue.SimpleQueue()
    for conn in connections:
        free.put(conn)
    stopping = threading.Event()

    def work(job: _Job) -> pa.Table | None:
        if stopping.is_set():
            raise _DateFailedError
        conn = free.get()
        try:
            table_context = replace(
                context,
                dataset=job.run.spec.name,
                table=job.table.name,
                schema_version=job.run.spec.schema_version,
            )
            return _stage_table(conn, tree, settings, job, table_context, progress)
        finally:
            free.put(conn)

    collected: dict[tuple[str, str], pa.Table] = {}
    with ThreadPoolExecutor(len(connections), thread_name_prefix="abaco-query") as pool:
        futures: dict[Future[pa.Table | None], _Job] = {pool.submit(work, j): j for j in jobs}
        try:
            for future in as_completed(futures):
                kept = future.result()
                if kept is not None:
                    job = futures[future]
                    collected[(job.run.spec.name, job.table.name)] = kept
        except BaseException:
            stopping.set()
            for future in futures:
                future.cancel()
            for conn in connections:
                _cancel_query(conn)
            raise  # leaving the pool waits for the running workers to stop
    return collected


def _cancel_query(conn: Connection) -> None:
    """Ask the server to stop the connection's running query, if any; never raises."""
    try:
        if not conn.closed:
            conn.cancel_safe(timeout=5.0)
    except Exception as exc:  # noqa: BLE001 - the run is failing already; this only speeds it up
        log.debug("could not cancel a running query: %s", exc)


def _open_snapshot(
    stack: ExitStack, conn: Connection, settings: Settings, share: bool
) -> str | None:
    """Open the date's transaction on ``conn``; when ``share``, export its snapshot and return
    the id for other connections to import. A source that cannot export snapshots (a
    subtransaction, some proxies) gets a warning, a fresh transaction and None: the date then
    runs on this connection alone."""
    if not share:
        stack.enter_context(snapshot(conn, settings))
        return None
    opened = snapshot(conn, settings)
    opened.__enter__()
    try:
        snapshot_id = export_snapshot(conn)
    except BaseException as exc:
        opened.__exit__(type(exc), exc, exc.__traceback__)  # rolls back
        if not isinstance(exc, psycopg.DatabaseError) or isinstance(exc, psycopg.OperationalError):
            raise
        log.warning(
            "the source cannot share a snapshot between connections (%s); "
            "running one query at a time",
            str(exc).strip(),
        )
        stack.enter_context(snapshot(conn, settings))
        return None
    stack.push(opened.__exit__)
    return snapshot_id


def _join_snapshot(
    stack: ExitStack, conn: Connection, settings: Settings, snapshot_id: str
) -> None:
    """Open a transaction on ``conn`` that sees the exported snapshot ``snapshot_id``."""
    stack.enter_context(snapshot(conn, settings))
    import_snapshot(conn, snapshot_id)


def stage_date(
    source: Source,
    tree: RuntimeTree,
    settings: Settings,
    specs: Sequence[DatasetSpec],
    as_of: date,
    formats: list[str],
    context: FileContext,
    progress: ProgressCallback | None,
    before: Callable[[Connection], None] | None = None,
) -> list[DatasetRun]:
    """Every table of every dataset of one as-of date inside one snapshot, up to
    ``parallel_queries`` at a time; ``before`` runs first on the snapshot's first connection
    (the data-quality checks) and may stop the date. On failure nothing stays staged."""
    runs = [
        DatasetRun(
            spec,
            [
                StagedFile(spec.name, p, RuntimeTree.temp_path(p.path, context.run_id))
                for p in planned_files(tree, spec, as_of, formats)
            ],
        )
        for spec in specs
    ]
    params = {run.spec.name: run.spec.build_params(settings, as_of) for run in runs}
    jobs = [_Job(run, table, params[run.spec.name]) for run in runs for table in run.spec.tables]
    jobs.sort(key=lambda job: -job.table.cost(settings))  # heaviest first; stable otherwise
    workers = max(1, min(settings.parallel_queries, len(jobs)))
    try:
        with ExitStack() as stack:
            conn = source.get()
            connections = [conn]
            snapshot_id = _open_snapshot(stack, conn, settings, share=workers > 1)
            taken = snapshot_time(conn)
            for run in runs:
                run.snapshot_at = taken
            if before is not None:
                before(conn)
            if snapshot_id is not None:
                for helper in source.get_helpers(workers - 1):
                    _join_snapshot(stack, helper, settings, snapshot_id)
                    connections.append(helper)
            collected = _run_jobs(tree, connections, jobs, settings, context, _Progress(progress))
            for run in runs:
                tables = {t: kept for (d, t), kept in collected.items() if d == run.spec.name}
                _derive(tree, settings, run, as_of, context, tables)
    except psycopg.Error as exc:
        source.drop()
        for run in runs:
            discard(tree, run.staged)
        names = ", ".join(s.name for s in specs)
        redactor = Redactor.from_settings(settings)
        raise classify(exc, redactor=redactor, during=f"exporting {names}") from None
    except BaseException:
        for run in runs:
            discard(tree, run.staged)
        raise
    return runs
