"""Raw extracts of whole source tables (`abaco export table`): the dataset ``tables``.

Only the tables and columns of the allow-list may be extracted (``extract.tables``; by default
the source contract's tables and columns, which hold ids, dates and amounts, never a name).
Each table is read by the parallel binary COPY reader (db/binary_copy.py) in one snapshot (one
snapshot for every table of a run) and written, like every export, under temporary names, then
published with the date's journal (services/exporting.py ``publish_date``) under the lock of
``tables``: ``exports/tables/<schema>.<table>/as_of_date=<D>/`` (Parquet),
``<schema>.<table>.csv/`` and ``<schema>.<table>.json/``, D the snapshot's date in UTC. One
manifest a date lists every table extracted that day; a table and format extracted again the
same day replaces its file.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import BinaryIO

import psycopg
import pyarrow as pa

from abaco_cli import __version__, metrics
from abaco_cli.datasets.base import DatasetSpec
from abaco_cli.db.binary_copy import TableName, TableReader
from abaco_cli.db.classify import classify
from abaco_cli.db.connect import Connection, SourceIdentity, connect, snapshot, with_retries
from abaco_cli.db.contract import CONTRACT
from abaco_cli.db.pgbinary import bytea_text
from abaco_cli.db.snapshot import export_snapshot, snapshot_time
from abaco_cli.db.table_parquet import TableParquetWriter
from abaco_cli.errors import UploadPendingError, UsageError, WriteError
from abaco_cli.redaction import Redactor
from abaco_cli.runtime import files
from abaco_cli.runtime.tree import TABLES_DATASET, Place, RuntimeTree
from abaco_cli.services.exporting import ExportResult, publish_date, upload_results
from abaco_cli.services.run import Run, iso
from abaco_cli.services.staging import (
    DatasetRun,
    ExportEvent,
    PlannedFile,
    ProgressCallback,
    StagedFile,
    discard,
    notify,
    seal,
)
from abaco_cli.services.uploading import UploadOutcome, pending_message
from abaco_cli.settings import Settings
from abaco_cli.storage import open_destination
from abaco_cli.writers.base import BatchWriter, FileContext
from abaco_cli.writers.registry import WRITERS

__all__ = [
    "TABLES",
    "AllowedTable",
    "ExtractPlan",
    "allowed_tables",
    "extract_tables",
    "plan_extract",
]
log = logging.getLogger("abaco.extract")
PARTITION_COLUMN = "as_of_date"
SETTING = "extract.tables"


def _no_params(settings: Settings, as_of: date) -> dict[str, object]:
    return {}


TABLES = DatasetSpec(
    name=TABLES_DATASET,
    description="Raw extracts of whole source tables (the allow-listed columns).",
    refresh="on demand",
    tables=(),
    build_params=_no_params,
)


@dataclass(frozen=True)
class AllowedTable:
    """A source table and the columns the allow-list lets out of it."""

    name: TableName
    columns: tuple[str, ...]

    @property
    def key(self) -> str:
        """Its name in the runtime tree and manifests: ``<schema>.<table>``."""
        return str(self.name)


def allow_list(settings: Settings) -> dict[str, list[str]]:
    """``extract.tables``, or by default the source contract's tables (as ``tables.*`` names
    them) with the contract's columns."""
    if settings.extract.tables is not None:
        return settings.extract.tables
    return {getattr(settings.tables, role): list(columns) for role, columns in CONTRACT.items()}


def allowed_tables(settings: Settings, names: Sequence[str]) -> list[AllowedTable]:
    """The tables asked for, each with its allowed columns; a usage error (exit 2) naming the
    setting for a table that is not on the allow-list."""
    allowed = allow_list(settings)
    chosen: list[AllowedTable] = []
    for text in dict.fromkeys(names):
        name = TableName.parse(text)
        columns = allowed.get(str(name))
        if columns is None:
            where = (
                ""
                if settings.extract.tables is not None
                else " (by default the source contract's tables)"
            )
            raise UsageError(
                f"{name} is not on the allow-list of tables that may be extracted: "
                f"{SETTING}{where}",
                hint=f"Add it, with the columns that may leave the database, to {SETTING} in "
                "abaco.toml (or ABACO_EXTRACT__TABLES as JSON); `abaco config show` prints the "
                "list.",
            )
        if PARTITION_COLUMN in columns:
            raise UsageError(
                f"{name}: the column {PARTITION_COLUMN} would clash with the partition folders "
                f"(as_of_date=<D>) of the extract",
                hint=f"Leave {PARTITION_COLUMN} out of {SETTING}[{name!s}].",
            )
        chosen.append(AllowedTable(name, tuple(columns)))
    if not chosen:
        raise UsageError("name at least one table (schema.table)")
    return chosen


@dataclass(frozen=True)
class ExtractPlan:
    """What a run would read and write (nothing is read: the date is the snapshot's)."""

    tables: list[AllowedTable]
    formats: list[str]
    files: list[PlannedFile]
    statements: dict[str, str]
    as_of: date


def plan_extract(
    settings: Settings, names: Sequence[str], formats: list[str], *, today: date | None = None
) -> ExtractPlan:
    """The tables, columns and target files of a run, with today's UTC date for the snapshot's
    date; touches neither the database nor the disk."""
    tables = allowed_tables(settings, names)
    as_of = today or datetime.now(UTC).date()
    tree = RuntimeTree.at(settings.runtime_dir)
    planned = [
        PlannedFile(t.key, fmt, tree.table_file(TABLES_DATASET, t.key, as_of, fmt))
        for t in tables
        for fmt in formats
    ]
    statements = {
        t.key: (
            f"COPY (SELECT {', '.join(t.columns)} FROM {t.key} "
            "WHERE ctid >= '(a,0)' AND ctid < '(b,0)') TO STDOUT (FORMAT binary)"
        )
        for t in tables
    }
    return ExtractPlan(tables, formats, planned, statements, as_of)


# --------------------------------------------------------------------------------- the files


def text_batch(batch: pa.RecordBatch, schema: pa.Schema, as_of: date) -> pa.RecordBatch:
    """A batch as CSV and JSON files hold it: as_of_date first, bytea as PostgreSQL prints it."""
    arrays = [pa.array([as_of] * batch.num_rows, pa.date32())]
    for field_, column in zip(batch.schema, batch.columns, strict=True):
        arrays.append(bytea_text(column) if pa.types.is_binary(field_.type) else column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def text_schema(schema: pa.Schema) -> pa.Schema:
    fields = [pa.field(PARTITION_COLUMN, pa.date32())]
    for item in schema:
        kind = pa.string() if pa.types.is_binary(item.type) else item.type
        fields.append(pa.field(item.name, kind))
    return pa.schema(fields)


class _ParquetFile(BatchWriter):
    """The Parquet file of one table: TableParquetWriter behind the writers' interface."""

    def __init__(self, sink: BinaryIO, schema: pa.Schema, context: FileContext) -> None:
        super().__init__(sink, schema, context)
        self._writer = TableParquetWriter(sink, schema, metadata=context.as_metadata())

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._writer.write(batch)

    def finish(self) -> None:
        self._writer.close()


@dataclass
class _Output:
    item: StagedFile
    writer: BatchWriter
    text: bool  # CSV or JSON: the batches as text_batch makes them


@dataclass
class _Extracted:
    staged: list[StagedFile] = field(default_factory=list)
    as_of: date | None = None
    snapshot_at: datetime | None = None


def _open_outputs(
    stack: ExitStack,
    tree: RuntimeTree,
    table: AllowedTable,
    schema: pa.Schema,
    formats: list[str],
    as_of: date,
    context: FileContext,
    extracted: _Extracted,
) -> list[_Output]:
    outputs: list[_Output] = []
    for fmt in formats:
        target = tree.table_file(TABLES_DATASET, table.key, as_of, fmt)
        item = StagedFile(
            TABLES_DATASET,
            PlannedFile(table.key, fmt, target),
            RuntimeTree.temp_path(target, context.run_id),
        )
        extracted.staged.append(item)
        sink = stack.enter_context(files.open_new(tree, item.temp, Place.TEMP))
        if fmt == "parquet":
            writer: BatchWriter = _ParquetFile(sink, schema, context)
        else:
            writer = WRITERS[fmt](sink, text_schema(schema), context)
        stack.callback(writer.abort)  # before the sink closes; a no-op after close()
        outputs.append(_Output(item, writer, fmt != "parquet"))
    return outputs


def _extract_one(
    reader: TableReader,
    tree: RuntimeTree,
    table: AllowedTable,
    formats: list[str],
    as_of: date,
    context: FileContext,
    extracted: _Extracted,
    progress: ProgressCallback | None,
) -> int:
    """Stream one table into a temporary file per format (fsynced); its rows."""
    key = f"{TABLES_DATASET}/{table.key}"
    notify(progress, ExportEvent("table", f"extracting {table.key}", table=key))
    rows = 0
    with ExitStack() as stack:
        outputs = _open_outputs(
            stack, tree, table, reader.schema, formats, as_of, context, extracted
        )
        text_schema_ = text_schema(reader.schema)
        for batch in reader.batches():
            text = text_batch(batch, text_schema_, as_of) if any(o.text for o in outputs) else None
            for output in outputs:
                output.writer.write(text if output.text and text is not None else batch)
            rows += batch.num_rows
            notify(progress, ExportEvent("rows", f"{rows} rows", table=key, rows=rows))
        for output in outputs:
            seal(output.item, output.writer)
    notify(progress, ExportEvent("written", f"{table.key}: {rows} rows", table=key, rows=rows))
    return rows


@contextlib.contextmanager
def _held_snapshot(settings: Settings, run: Run) -> Iterator[tuple[str, datetime]]:
    """One connection holding a read-only snapshot open, exported for the readers of several
    tables; its id and its time."""
    conn: Connection = connect(settings)
    run.connected(SourceIdentity.of(conn))
    try:
        with snapshot(conn, settings):
            yield export_snapshot(conn), snapshot_time(conn)
    finally:
        conn.close()


def _stage(
    run: Run,
    tables: list[AllowedTable],
    formats: list[str],
    given_snapshot: str | None,
    progress: ProgressCallback | None,
) -> _Extracted:
    """Every table into temporary files, all in one snapshot; on failure nothing stays."""
    settings, tree = run.settings, run.tree
    extracted = _Extracted()
    context = FileContext(
        dataset=TABLES_DATASET,
        table="",
        as_of_date="",
        run_id=run.run_id,
        tool_version=__version__,
        schema_version=TABLES.schema_version,
        generated_at=iso(run.started),
        partition_columns=(PARTITION_COLUMN,),
    )
    try:
        with ExitStack() as stack:
            shared, taken = given_snapshot, None
            if shared is None and len(tables) > 1:
                shared, taken = stack.enter_context(_held_snapshot(settings, run))
            for table in tables:
                reader = stack.enter_context(
                    TableReader(
                        settings,
                        table.name,
                        table.columns,
                        snapshot=shared,
                        on_connect=run.connected,
                    )
                )
                if extracted.snapshot_at is None:
                    extracted.snapshot_at = taken or reader.snapshot_at
                    assert extracted.snapshot_at is not None
                    extracted.as_of = extracted.snapshot_at.astimezone(UTC).date()
                assert extracted.as_of is not None
                day = extracted.as_of.isoformat()
                table_context = replace(context, table=table.key, as_of_date=day)
                _extract_one(
                    reader, tree, table, formats, extracted.as_of, table_context, extracted,
                    progress,
                )  # fmt: skip
                reader.close()  # its connections, before the next table opens its own
    except psycopg.Error as exc:
        discard(tree, extracted.staged)
        raise classify(
            exc, redactor=Redactor.from_settings(settings), during="extracting tables"
        ) from None
    except OSError as exc:
        discard(tree, extracted.staged)
        raise WriteError(f"could not write the extract: {exc}") from None
    except BaseException:
        discard(tree, extracted.staged)
        raise
    return extracted


def extract_tables(
    run: Run,
    names: Sequence[str],
    formats: list[str],
    *,
    snapshot_id: str | None = None,
    replace_formats: bool = False,
    progress: ProgressCallback | None = None,
    upload_to: str | None = None,
    upload_progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Extract the tables (allow-listed columns only) in one snapshot, or in the exported
    ``snapshot_id`` given, and publish them as one date of the dataset ``tables``; with
    ``upload_to`` the run is then uploaded there (UploadPendingError, exit 5, when that does
    not finish: the extract stays published and pending).

    The audit log gets START first (a refused table is recorded too) and COMPLETE or FAIL at
    the end; the lock of ``tables`` is held meanwhile (an interrupted publish is finished
    first). Transient source failures are retried with a new snapshot.
    """
    target = open_destination(upload_to, run.settings) if upload_to else None  # checked first
    clock = time.monotonic()
    succeeded = False
    outcome: UploadOutcome | None = None
    try:
        with run.audited(
            arguments={
                "tables": list(names),
                "formats": list(formats),
                "snapshot": snapshot_id is not None,
                "replace_formats": replace_formats,
                **({"destination": target.url} if target is not None else {}),
            },
            datasets=[TABLES_DATASET],
        ) as audit:
            tables = allowed_tables(run.settings, names)
            run.hold(
                [TABLES_DATASET],
                on_wait=lambda holder: notify(
                    progress, ExportEvent("waiting", f"waiting for {holder}")
                ),
            )

            def attempt() -> _Extracted:
                return _stage(run, tables, formats, snapshot_id, progress)

            extracted = with_retries(
                run.settings,
                attempt,
                on_retry=lambda n, exc, wait: notify(
                    progress,
                    ExportEvent("retry", f"attempt {n} failed ({exc}); retrying in {wait:.1f}s"),
                ),
            )
            assert extracted.as_of is not None
            audit.as_of_dates.append(extracted.as_of.isoformat())
            dataset_run = DatasetRun(TABLES, extracted.staged, extracted.snapshot_at)
            results = publish_date(
                run, [dataset_run], extracted.as_of, replace_formats=replace_formats
            )
            notify(
                progress,
                ExportEvent("published", f"published {len(extracted.staged)} files"),
            )
            if target is not None:
                outcome = upload_results(run, results, target, upload_progress)
        succeeded = True
    finally:
        update = metrics.MetricsUpdate()
        # an on-demand extract has no freshness: only the run counts (no stale-export alert)
        update.count(
            "abaco_runs_total", command="export", status="success" if succeeded else "failure"
        )
        run.metrics(update)
        if target is not None:
            target.close()
        log.debug("extract took %.1f s", time.monotonic() - clock)
    if outcome is not None and outcome.pending:
        raise UploadPendingError(pending_message(outcome), results=results)
    return results[0]
