"""`abaco lake init` and the initial load: the publication, the slot and its exported
snapshot, every table read in it into its Delta table and the change log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from abaco_cli.db.binary_copy import TableReader
from abaco_cli.db.connect import Connection
from abaco_cli.db.table_parquet import TableParquetWriter
from abaco_cli.errors import UsageError
from abaco_cli.lake import delta
from abaco_cli.lake.changelog import ChangeLogWriter, StagedFile
from abaco_cli.lake.changes import CHANGE_COLUMNS
from abaco_cli.lake.lsn import format_lsn
from abaco_cli.lake.slot import (
    check_logical,
    create_slot,
    drop_slot,
    set_publication,
)
from abaco_cli.lake.store import (
    BatchManifest,
    LakeState,
    LakeStateError,
    ManifestFile,
    TableState,
)
from abaco_cli.lake.tables import (
    SourceTable,
    chosen_tables,
    inspect_table,
)
from abaco_cli.services.lake.common import (
    Lake,
    Progress,
    audited_lake,
    held,
    send_files,
    source_state,
)
from abaco_cli.services.run import Run
from abaco_cli.settings import Settings

log = logging.getLogger("abaco.lake")


# ---------------------------------------------------------------------------- initial load


@dataclass(frozen=True)
class LoadedTable:
    name: str
    rows: int
    files: list[StagedFile]
    version: int


def _with_change_columns(
    batch: pa.RecordBatch, lsn: int, moment: datetime, first_seq: int
) -> pa.Table:
    rows = batch.num_rows
    columns: list[pa.Array] = [
        pa.array(["insert"] * rows, pa.string()),
        pa.array([lsn] * rows, pa.int64()),
        pa.nulls(rows, pa.int64()),
        pa.array([moment] * rows, pa.timestamp("us", tz="UTC")),
        pa.array(range(first_seq, first_seq + rows), pa.int64()),
    ]
    return pa.Table.from_arrays(
        [*columns, *batch.columns], names=[*CHANGE_COLUMNS, *batch.schema.names]
    )


def _truncate_row(schema: pa.Schema, lsn: int, moment: datetime) -> pa.Table:
    arrays = [
        pa.array(["truncate"]),
        pa.array([lsn], pa.int64()),
        pa.nulls(1, pa.int64()),
        pa.array([moment], pa.timestamp("us", tz="UTC")),
        pa.array([0], pa.int64()),
        *(pa.nulls(1, f.type) for f in schema),
    ]
    return pa.Table.from_arrays(arrays, names=[*CHANGE_COLUMNS, *schema.names])


def _load_table(
    lake: Lake,
    source: SourceTable,
    snapshot: str,
    lsn: int,
    folder: Path,
    log_writer: ChangeLogWriter,
    progress: Progress | None,
) -> LoadedTable:
    """Read one table in the slot's snapshot into a staged file, then from it the Delta table
    (replaced, one commit carrying the LSN) and the change log (a truncate, then every row)."""
    staged = folder / f"load-{source.name}.parquet"
    columns = [c.name for c in source.columns]
    with TableReader(lake.settings, source.name, columns, snapshot=snapshot) as reader:
        if not reader.schema.equals(source.schema):
            raise LakeStateError(
                f"{source.name}: the reader's types {reader.schema} differ from the captured "
                f"{source.schema}"
            )
        moment = reader.snapshot_at or datetime.now(UTC)
        writer = TableParquetWriter(staged, reader.schema)
        for batch in reader.batches():
            writer.write(batch)
        writer.close()
    rows = writer.rows
    if progress:
        progress(f"{source.name}: {rows:,} rows read")
    log_writer.write(source.name, _truncate_row(source.schema, lsn, moment))
    seq = 1
    for batch in pq.ParquetFile(str(staged)).iter_batches(batch_size=65_536):
        log_writer.write(source.name, _with_change_columns(batch, lsn, moment, seq))
        seq += batch.num_rows
    stream = pa.RecordBatchReader.from_batches(
        source.schema, pq.ParquetFile(str(staged)).iter_batches(batch_size=65_536)
    )
    version = lake.table(source.name).create(stream, delta.LakeCommit(lsn, moment), replace=True)
    staged.unlink()
    return LoadedTable(source.name, rows, [], version)


@dataclass
class InitResult:
    url: str
    slot: str
    publication: str
    lsn: str
    tables: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    absent: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.url,
            "slot": self.slot,
            "publication": self.publication,
            "lsn": self.lsn,
            "tables": self.tables,
            "skipped_columns": self.skipped,
            "absent_columns": self.absent,
        }


def inspect_sources(
    conn: Connection, settings: Settings, names: Sequence[str] | None
) -> list[SourceTable]:
    check_logical(conn)
    return [inspect_table(conn, n, cols) for n, cols in chosen_tables(settings, names).items()]


def load_tables(
    run: Run,
    lake: Lake,
    conn: Connection,
    sources: list[SourceTable],
    slot: str,
    publication: str,
    progress: Progress | None,
    *,
    published: Sequence[SourceTable] | None = None,
) -> tuple[int, dict[str, TableState], list[ManifestFile]]:
    """Publication (of ``published``, default ``sources``), slot and the load of ``sources``
    in the slot's snapshot; the slot is dropped again if the load fails."""
    set_publication(conn, publication, [s.published for s in (published or sources)])
    with create_slot(run.settings, slot) as created:
        try:
            lsn = created.consistent_point
            if progress:
                progress(f"slot {slot} created at {format_lsn(lsn)}; loading {len(sources)} tables")
            tables: dict[str, TableState] = {}
            with lake.staging() as folder:
                log_writer = ChangeLogWriter(folder)
                for source in sources:
                    loaded = _load_table(
                        lake, source, created.snapshot, lsn, folder, log_writer, progress
                    )
                    tables[source.name] = source.state(format_lsn(lsn), loaded.rows)
                files = send_files(lake, log_writer.finish(lsn, lsn))
        except BaseException:
            with contextlib.suppress(Exception):
                drop_slot(conn, slot)
            raise
    return lsn, tables, files


def init_lake(
    run: Run, *, dest: str | None, tables: Sequence[str] | None, progress: Progress | None = None
) -> InitResult:
    settings = run.settings
    slot, publication = settings.lake.slot, settings.lake.publication
    arguments = {"tables": list(tables or [])}
    with (
        audited_lake(run, dest, arguments) as (lake, conn, audit),
        held(run, lake, conn, slot, progress),
    ):
        existing = lake.store.read_state()
        if existing is not None and not existing[0].dropped:
            raise UsageError(
                f"a lake already exists at {lake.store.url} (slot {existing[0].slot})",
                hint="`abaco lake sync` keeps it current, `abaco lake resync` reloads it, "
                "`abaco lake drop --yes` ends it.",
            )
        sources = inspect_sources(conn, settings, tables)
        result = InitResult(lake.store.url, slot, publication, "")
        for source in sources:
            if source.skipped:
                result.skipped[source.name] = list(source.skipped)
            if source.absent:
                result.absent[source.name] = list(source.absent)
        lsn, states, files = load_tables(run, lake, conn, sources, slot, publication, progress)
        put_load_manifest(lake, lsn, states, files)
        state = LakeState(
            slot=slot,
            publication=publication,
            source=source_state(conn),
            lsn=format_lsn(lsn),
            updated=datetime.now(UTC),
            tables=states,
            compacted=datetime.now(UTC),
        )
        lake.store.write_state(state, version=existing[1] if existing else None)
        result.lsn = state.lsn
        result.tables = {n: s.rows for n, s in states.items()}
        audit.details |= result.to_json()
    return result


def put_load_manifest(
    lake: Lake, lsn: int, states: dict[str, TableState], files: list[ManifestFile]
) -> None:
    lake.store.put_manifest(
        BatchManifest(
            kind="load",
            start=format_lsn(lsn),
            end=format_lsn(lsn),
            transactions=0,
            last_commit_time=None,
            changes={n: {"insert": s.rows, "truncate": 1} for n, s in sorted(states.items())},
            files=files,
        )
    )
