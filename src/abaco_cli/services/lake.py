"""`abaco lake`: change data capture of source tables into Delta Lake and a change log.

Exactly once, by protocol (docs/lake.md). The store is the source of truth, the slot a cursor:

1. take the lake lock (this machine) and the source's advisory lock (every machine);
2. read the state; reconcile the slot with it: behind (a crash after the state was written, or
   a server that rewound the slot) -> advance it; ahead -> something else consumed it: stop;
   missing or lost -> stop (exit 1, runbooks/lake-slot-lost.md);
3. fix the end of the run (the WAL flushed now) and, batch after batch:
   peek up to it (a batch note left by a crashed run replays that batch with its own bounds);
   note the batch's bounds; write its change files (deterministic names and bytes); create its
   manifest (create-only); MERGE into each Delta table unless its latest abaco commit already
   covers the batch; write the state by compare-and-swap; only then advance the slot.

A crash between any two steps is repaired by the next run: files are rewritten identically, an
existing identical manifest is accepted, a covered MERGE is skipped, the slot is advanced to the
state. LSNs are compared as integers, never as text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from abaco_cli import metrics
from abaco_cli.audit.recorder import AuditedRun
from abaco_cli.db.binary_copy import TableReader
from abaco_cli.db.connect import Connection, connect
from abaco_cli.db.table_parquet import TableParquetWriter
from abaco_cli.errors import AbacoError, LockedError, UsageError
from abaco_cli.lake import delta
from abaco_cli.lake.changelog import ChangeLogWriter, StagedFile
from abaco_cli.lake.changes import CHANGE_COLUMNS, BatchEnd, read_changes
from abaco_cli.lake.lsn import format_lsn
from abaco_cli.lake.net import NetChanges
from abaco_cli.lake.slot import (
    SlotInfo,
    SlotLostError,
    advance_slot,
    check_logical,
    create_slot,
    drop_publication,
    drop_slot,
    flush_lsn,
    set_publication,
    slot_info,
    source_lock,
)
from abaco_cli.lake.store import (
    BATCH_NOTE_NAME,
    BatchManifest,
    LakeState,
    LakeStateError,
    LakeStore,
    ManifestFile,
    SourceState,
    TableState,
)
from abaco_cli.lake.tables import (
    SourceTable,
    allow_list,
    arrow_type_resolver,
    captured_tables,
    chosen_tables,
    inspect_table,
)
from abaco_cli.runtime.lock import dataset_lock
from abaco_cli.services.run import Run
from abaco_cli.settings import Settings
from abaco_cli.storage import open_destination

log = logging.getLogger("abaco.lake")
Progress = Callable[[str], None]
LOCK_NAME = "lake"
ALL_CHANGES = 2**31 - 1  # upto_nchanges is an int4: "every change up to the LSN"
# Test-only: SIGKILL this process right after the named step of a batch (files, manifest,
# merge, state, advance), so that a test can check the next sync repairs it. Never set in
# production.
TEST_KILL_ENV = "ABACO_TEST_LAKE_KILL_AFTER"


TEST_PAUSE_ENV = "ABACO_TEST_LAKE_PAUSE_LOCKED"  # test-only: seconds to hold the locks


def _checkpoint(step: str) -> None:
    if os.environ.get(TEST_KILL_ENV) == step:
        log.warning("test kill after %s", step)
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get(TEST_PAUSE_ENV) if step == "locked" else None
    if pause:
        time.sleep(float(pause))


SCHEMA_RUNBOOK = "runbooks/lake-schema-change.md"


class SlotAheadError(AbacoError):
    """The slot is past the lake's state: another consumer took changes the lake never got."""

    default_hint = (
        "Something other than this lake consumed the slot (pg_logical_slot_get_changes, "
        "another tool): the changes in between are lost to the lake. Run `abaco lake resync`."
    )


# ---------------------------------------------------------------------------------- the lake


@dataclass
class Lake:
    """One lake: its settings, its store and how deltalake reaches it."""

    settings: Settings
    url: str
    store: LakeStore
    storage_options: dict[str, str]

    @classmethod
    def open(cls, settings: Settings, dest: str | None) -> Lake:
        url = dest or settings.lake.destination or str(Path(settings.runtime_dir).absolute())
        destination = open_destination(url, settings)
        return cls(settings, url, LakeStore(destination), delta.storage_options(settings, url))

    def table(self, name: str) -> delta.LakeTable:
        return delta.LakeTable(delta.table_uri(self.url, name), self.storage_options)

    def close(self) -> None:
        self.store.destination.close()

    def state(self) -> tuple[LakeState, str]:
        found = self.store.read_state()
        if found is None:
            raise UsageError(
                f"no lake at {self.store.url}: run `abaco lake init`",
                hint="Or point at the lake: --dest, or lake.destination (ABACO_LAKE__DESTINATION).",
            )
        return found

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        root = Path(self.settings.runtime_dir)
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".lake-staging-", dir=root) as folder:
            yield Path(folder)


def lake_settings(settings: Settings) -> Settings:
    """The settings the lake's commands run with: the source reached as lake.database_url's
    role (REPLICATION) when it is set, else as database_url's."""
    if settings.lake.database_url is None:
        return settings
    return settings.model_copy(update={"database_url": settings.lake.database_url})


@contextlib.contextmanager
def _audited_lake(
    run: Run, dest: str | None, arguments: dict[str, Any], *, reads_source: bool = True
) -> Iterator[tuple[Lake, Connection, AuditedRun]]:
    """The lake, a connection to the source and the run's audit (START now, COMPLETE or FAIL
    when the block ends), for a command that changes the lake."""
    lake = Lake.open(run.settings, dest)
    try:
        conn = _connect(run.settings)
        with (
            conn,
            run.audited(
                arguments={"destination": lake.store.url, **arguments}, reads_source=reads_source
            ) as audit,
        ):
            yield lake, conn, audit
    finally:
        lake.close()


def _connect(settings: Settings) -> Connection:
    conn = connect(settings, read_only=False)
    conn.autocommit = True
    return conn


def _source_state(conn: Connection) -> SourceState:
    row = conn.execute("SELECT current_database()").fetchone()
    database = str(row[0]) if row else "?"
    try:
        ident = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        system = str(ident[0]) if ident else "unknown"
    except Exception:  # noqa: BLE001 - a role without pg_monitor may not read it
        system = "unknown"
    return SourceState(system_identifier=system, database=database)


def _check_source(conn: Connection, state: LakeState) -> None:
    now = _source_state(conn)
    same_system = "unknown" in (now.system_identifier, state.source.system_identifier) or (
        now.system_identifier == state.source.system_identifier
    )
    if now.database != state.source.database or not same_system:
        raise UsageError(
            f"this lake follows the database {state.source.database} (system "
            f"{state.source.system_identifier}), but the source is {now.database} (system "
            f"{now.system_identifier})",
            hint="Point abaco at the lake's own source, or start a new lake elsewhere (--dest).",
        )


@contextlib.contextmanager
def _held(
    run: Run, lake: Lake, conn: Connection, slot: str, on_wait: Progress | None
) -> Iterator[None]:
    """The lake lock of this machine, then the source's advisory lock for the slot."""
    with ExitStack() as stack:
        stack.enter_context(
            dataset_lock(
                run.tree.lock_path(LOCK_NAME),
                run_id=run.run_id,
                command=run.command,
                timeout_seconds=run.settings.lock_timeout_seconds,
                on_wait=(lambda who: on_wait(f"waiting for the lake lock held by {who}"))
                if on_wait
                else None,
            )
        )
        stack.enter_context(source_lock(conn, slot))
        yield


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


def _send(lake: Lake, files: Sequence[StagedFile]) -> list[ManifestFile]:
    entries = []
    for item in files:
        lake.store.destination.put_file(item.name, item.path, sha256=item.sha256)
        entries.append(
            ManifestFile(
                name=item.name, table=item.table, rows=item.rows, size=item.size, sha256=item.sha256
            )
        )
    return entries


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


def _inspect(
    conn: Connection, settings: Settings, names: Sequence[str] | None
) -> list[SourceTable]:
    check_logical(conn)
    return [inspect_table(conn, n, cols) for n, cols in chosen_tables(settings, names).items()]


def _load(
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
                files = _send(lake, log_writer.finish(lsn, lsn))
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
        _audited_lake(run, dest, arguments) as (lake, conn, audit),
        _held(run, lake, conn, slot, progress),
    ):
        existing = lake.store.read_state()
        if existing is not None and not existing[0].dropped:
            raise UsageError(
                f"a lake already exists at {lake.store.url} (slot {existing[0].slot})",
                hint="`abaco lake sync` keeps it current, `abaco lake resync` reloads it, "
                "`abaco lake drop --yes` ends it.",
            )
        sources = _inspect(conn, settings, tables)
        result = InitResult(lake.store.url, slot, publication, "")
        for source in sources:
            if source.skipped:
                result.skipped[source.name] = list(source.skipped)
            if source.absent:
                result.absent[source.name] = list(source.absent)
        lsn, states, files = _load(run, lake, conn, sources, slot, publication, progress)
        _put_load_manifest(lake, lsn, states, files)
        state = LakeState(
            slot=slot,
            publication=publication,
            source=_source_state(conn),
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


def _put_load_manifest(
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


# ------------------------------------------------------------------------------------ sync


@dataclass
class BatchResult:
    start: str
    end: str
    transactions: int
    changes: dict[str, dict[str, int]]
    files: int
    seconds: float
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "transactions": self.transactions,
            "changes": self.changes,
            "files": self.files,
            "seconds": round(self.seconds, 3),
            "replayed": self.replayed,
        }


@dataclass
class SyncResult:
    url: str
    slot: str
    start: str = ""
    lsn: str = ""
    batches: list[BatchResult] = field(default_factory=list)
    reconciled: str | None = None
    rows: dict[str, int] = field(default_factory=dict)
    slot_info: SlotInfo | None = None
    wal: WalFigures | None = None
    lost: bool = False
    compacted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def changes(self) -> int:
        return sum(sum(ops.values()) for b in self.batches for ops in b.changes.values())

    def changes_by(self) -> dict[tuple[str, str], int]:
        total: dict[tuple[str, str], int] = {}
        for batch in self.batches:
            for table, ops in batch.changes.items():
                for op, count in ops.items():
                    total[(table, op)] = total.get((table, op), 0) + count
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.url,
            "slot": self.slot,
            "from_lsn": self.start,
            "lsn": self.lsn,
            "changes": self.changes,
            "batches": [b.to_json() for b in self.batches],
            "reconciled": self.reconciled,
            "compacted": self.compacted,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }


def _reconcile(conn: Connection, state: LakeState) -> tuple[SlotInfo, str | None]:
    """The slot against the state: advanced when behind; an error when ahead, missing, lost."""
    info = slot_info(conn, state.slot)
    if info is None:
        raise SlotLostError(
            f"the lake's replication slot {state.slot} does not exist on the source"
        )
    if info.lost:
        raise SlotLostError(
            f"the replication slot {state.slot} has lost the WAL it needed (wal_status "
            f"{info.wal_status}): the source removed changes the lake never read"
        )
    position = state.position
    assert info.confirmed_flush is not None
    if info.confirmed_flush < position:
        advance_slot(conn, state.slot, position)
        note = (
            f"the slot was at {format_lsn(info.confirmed_flush)}, behind the lake's "
            f"{state.lsn}: advanced"
        )
        log.info("%s", note)
        return info, note
    if info.confirmed_flush > position:
        raise SlotAheadError(
            f"the slot {state.slot} is at {format_lsn(info.confirmed_flush)}, past the lake's "
            f"{state.lsn}: something else consumed its changes"
        )
    return info, None


class _Batch:
    """One batch: peek, change files, manifest, MERGE, state, advance."""

    def __init__(
        self,
        lake: Lake,
        conn: Connection,
        state: LakeState,
        version: str,
        folder: Path,
        progress: Progress | None,
        *,
        exclude: frozenset[str] = frozenset(),
    ) -> None:
        self.lake, self.conn, self.state, self.version = lake, conn, state, version
        self.folder, self.progress = folder, progress
        self.start = state.position
        captured = captured_tables(state.tables, allow_list(lake.settings))
        self.captured = {n: t for n, t in captured.items() if n not in exclude}
        self.nets = {name: NetChanges(t.key) for name, t in self.captured.items()}
        self.added: dict[str, list[pa.Field]] = {}
        self.log_writer = ChangeLogWriter(folder)
        self.covered: set[str] = set()  # tables whose Delta commits have this batch (replay)
        self.parts: dict[str, int] = {}  # parts merged before the last commit, per table

    def read(self, upto: int, nchanges: int | None) -> BatchEnd:
        """Peek the batch: its change files staged, its keys gathered per table (merged in
        parts when they grow past lake.merge_rows). ``nchanges`` None: a replay, up to
        ``upto`` exactly; a table whose Delta commits already cover it is left alone."""
        if nchanges is None:
            self.covered = {
                name
                for name in self.captured
                if (self.lake.table(name).covered_lsn() or -1) >= upto
            }
        resolver = arrow_type_resolver(self.lake.settings)
        try:
            changes = read_changes(
                self.conn,
                slot=self.state.slot,
                publication=self.state.publication,
                upto_lsn=upto,
                upto_nchanges=ALL_CHANGES if nchanges is None else nchanges,
                tables=self.captured,
                resolve_type=resolver,
            )
            while True:
                try:
                    chunk = next(changes)
                except StopIteration as stop:
                    end: BatchEnd = stop.value
                    return end
                for name, fields in chunk.added.items():
                    known = self.added.setdefault(name, [])
                    known.extend(f for f in fields if f.name not in {k.name for k in known})
                for name, table in chunk.tables.items():
                    self.log_writer.write(name, table)
                    if name in self.covered:
                        continue  # its last commit has this batch already: replayed
                    self.nets[name].add(table)
                    self._flush_large(name)
        finally:
            resolver.close()

    def commit(self, end: BatchEnd, batch_end: int, replayed: bool) -> BatchResult:
        clock = time.monotonic()
        lake, store = self.lake, self.lake.store
        changes = {
            table: {op: count for (t, op), count in sorted(end.changes.items()) if t == table}
            for table in sorted({t for t, _ in end.changes})
        }
        files: list[StagedFile] = []
        if not self.log_writer.empty or self.added:
            if not replayed:
                store.write_note(self.start, batch_end)
            files = self.log_writer.finish(self.start, batch_end)
            entries = _send(lake, files)
            _checkpoint("files")
            store.put_manifest(
                BatchManifest(
                    kind="changes",
                    start=format_lsn(self.start),
                    end=format_lsn(batch_end),
                    transactions=end.transactions,
                    last_commit_time=end.last_commit_time,
                    changes=changes,
                    files=entries,
                )
            )
            _checkpoint("manifest")
        tables = dict(self.state.tables)
        for name in sorted(set(changes) | set(self.added) | set(self.parts)):
            tables[name] = self._merge(name, tables[name], batch_end, end.last_commit_time)
            _checkpoint("merge")
        new_state = self.state.model_copy(
            update={
                "lsn": format_lsn(batch_end),
                "updated": datetime.now(UTC),
                "tables": tables,
            }
        )
        self.version = store.write_state(new_state, version=self.version)
        self.state = new_state
        _checkpoint("state")
        if files or self.added:
            store.clear_note()
        advance_slot(self.conn, self.state.slot, batch_end)
        _checkpoint("advance")
        return BatchResult(
            format_lsn(self.start),
            format_lsn(batch_end),
            end.transactions,
            changes,
            len(files),
            time.monotonic() - clock,
            replayed,
        )

    def _schema(self, name: str) -> pa.Schema:
        """The table's columns now: as captured, then any added during this batch."""
        return pa.schema([*self.state.tables[name].schema, *self.added.get(name, [])])

    def _apply(self, name: str, commit: delta.LakeCommit | None) -> None:
        """MERGE the keys gathered for ``name`` (the batch's last commit: ``commit``; a part
        of a large batch: None) and forget them."""
        target = self.lake.table(name)
        if self.added.get(name):
            target.add_columns(self.added[name])  # columns it has already are left alone
        schema = self._schema(name)
        net = self.nets[name]
        rows = net.result(schema.names)
        if rows is None:
            rows = pa.Table.from_batches([], schema.append(pa.field("_op", pa.string())))
        target.apply(
            _cast_net(rows, schema),
            key=self.state.tables[name].key,
            truncated=net.truncated,
            commit=commit,
        )
        net.clear()

    def _flush_large(self, name: str) -> None:
        """A batch holding more keys of a table than lake.merge_rows (one huge transaction)
        is merged in parts as it is read, so memory stays bounded: each part's commit carries
        no LSN; replaying the batch applies every part again, in order (full rows, the last
        change wins), and only its last commit says the batch is in."""
        if self.nets[name].keys >= self.lake.settings.lake.merge_rows:
            self._apply(name, None)
            self.parts[name] = self.parts.get(name, 0) + 1
            _checkpoint("part")

    def _merge(
        self, name: str, table_state: TableState, lsn: int, commit_time: datetime | None
    ) -> TableState:
        target = self.lake.table(name)
        columns = list(table_state.columns)
        added = self.added.get(name, [])
        if added:
            columns = columns + [
                c for c in self._added_columns(name) if c.name in {f.name for f in added}
            ]
        covered = target.covered_lsn()
        if covered is not None and covered > lsn:
            raise LakeStateError(
                f"the Delta table of {name} says it holds changes up to {format_lsn(covered)}, "
                f"past this batch's end {format_lsn(lsn)}: its commit metadata was edited"
            )
        if covered is None or covered < lsn:
            self._apply(name, delta.LakeCommit(lsn, commit_time))
        last_change = commit_time if commit_time is not None else table_state.last_change_time
        return table_state.model_copy(
            update={
                "rows": target.count_rows(),
                "last_change_time": last_change,
                "arrow_schema": TableState.encode_schema(self._schema(name)),
                "columns": columns,
            }
        )

    def _added_columns(self, name: str) -> list[Any]:
        from abaco_cli.lake.tables import column_states

        return column_states(self.conn, name)


def _cast_net(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """The net rows with every column of ``schema`` (missing ones NULL) and ``_op``."""
    arrays, names = [], []
    for item in schema:
        if item.name in rows.column_names:
            arrays.append(rows[item.name].cast(item.type))
        else:
            arrays.append(pa.nulls(rows.num_rows, item.type))
        names.append(item.name)
    arrays.append(rows["_op"])
    names.append("_op")
    return pa.Table.from_arrays(arrays, names=names)


def sync_lake(
    run: Run,
    *,
    dest: str | None,
    max_changes: int | None = None,
    max_seconds: float | None = None,
    progress: Progress | None = None,
) -> SyncResult:
    settings = run.settings
    limit_changes = max_changes or settings.lake.max_changes
    limit_seconds = max_seconds or settings.lake.max_seconds
    lake = Lake.open(settings, dest)
    clock = time.monotonic()
    result = SyncResult(lake.store.url, settings.lake.slot)
    succeeded = locked = False
    try:
        conn = _connect(settings)
        with (
            conn,
            run.audited(
                arguments={
                    "destination": lake.store.url,
                    "max_changes": limit_changes,
                    "max_seconds": limit_seconds,
                },
                reads_source=True,
            ) as audit,
        ):
            state, version = lake.state()
            result.slot = state.slot
            if state.dropped:
                raise UsageError(
                    f"the lake at {lake.store.url} was ended with `abaco lake drop`",
                    hint="`abaco lake init` starts it again (a new slot, every table reloaded).",
                )
            with _held(run, lake, conn, state.slot, progress):
                state, version = lake.state()  # as it is now that this run holds the locks
                _checkpoint("locked")
                _check_source(conn, state)
                result.start = state.lsn
                upto = flush_lsn(conn)
                if state.position > upto:
                    raise LakeStateError(
                        f"the lake's state is at {state.lsn}, past the source's WAL "
                        f"({format_lsn(upto)}): the state was edited, or belongs to another "
                        "server"
                    )
                _, result.reconciled = _reconcile(conn, state)
                state, version = _catch_up(
                    lake,
                    conn,
                    state,
                    version,
                    upto,
                    result,
                    limit_changes,
                    clock + limit_seconds,
                    progress,
                )
                state, version = _compact_when_due(lake, state, version, result, progress)
                result.lsn = state.lsn
                result.rows = {n: t.rows for n, t in state.tables.items()}
                result.slot_info = slot_info(conn, state.slot)
                result.wal = wal_figures(conn, result.slot_info)
            result.seconds = time.monotonic() - clock
            audit.details |= result.to_json()
        succeeded = True
        return result
    except SlotLostError:
        result.lost = True
        raise
    except LockedError:
        locked = True  # another sync is running: its outcome is the one to record
        raise
    finally:
        result.seconds = time.monotonic() - clock
        if not locked:
            _record_sync(run, result, succeeded)
        lake.close()


def _record_sync(run: Run, result: SyncResult, succeeded: bool) -> None:
    wal = result.wal
    slot = None
    if result.lost:
        slot = metrics.LakeSlotGauge(True, None, None, None)
    elif wal is not None:
        slot = metrics.LakeSlotGauge(
            wal.wal_status == "lost" or result.slot_info is None, wal.lag, wal.retained, wal.limit
        )
    run.metrics(
        metrics.lake_update(
            finished=time.time(),
            success=succeeded,
            changes=result.changes_by(),
            rows=result.rows,
            slot=slot,
            stale_limit_seconds=run.settings.lake.stale_critical_minutes * 60.0,
            batch_seconds=result.batches[-1].seconds if result.batches else None,
            sync_seconds=result.seconds,
        )
    )


def _lsn(text: str) -> int:
    from abaco_cli.lake.lsn import parse_lsn

    return parse_lsn(text)


def _compact_when_due(
    lake: Lake,
    state: LakeState,
    version: str,
    result: SyncResult,
    progress: Progress | None,
) -> tuple[LakeState, str]:
    """Every lake.compact_every_days a sync also compacts the tables (lake compact, with the
    default retention), so a lake needs no timer of its own for it; counted from the init."""
    every = lake.settings.lake.compact_every_days
    now = datetime.now(UTC)
    last = state.compacted or state.updated
    if every <= 0 or now - last < timedelta(days=every):
        if state.compacted is None:  # a lake from before this setting: its clock starts now
            state = state.model_copy(update={"compacted": now})
            version = lake.store.write_state(state, version=version)
        return state, version
    for name in sorted(state.tables):
        lake.table(name).compact()
        result.compacted.append(name)
        if progress:
            progress(f"{name}: compacted (every {every} days)")
    state = state.model_copy(update={"compacted": now})
    return state, lake.store.write_state(state, version=version)


def _catch_up(
    lake: Lake,
    conn: Connection,
    state: LakeState,
    version: str,
    upto: int,
    result: SyncResult,
    limit_changes: int | None,
    deadline: float | None,
    progress: Progress | None,
    *,
    exclude: frozenset[str] = frozenset(),
) -> tuple[LakeState, str]:
    """Batches from the state's LSN up to ``upto`` (or the limits); a batch note left by an
    interrupted run is replayed first, with its own bounds."""
    note = lake.store.read_note()
    replay = (
        note is not None and _lsn(note.start) == state.position and _lsn(note.end) > state.position
    )
    if replay and note is not None and _lsn(note.end) > upto:
        # a genuine note ends at WAL that was flushed when it was written: this one was not
        log.warning("ignoring %s: its end %s is past the source's WAL", BATCH_NOTE_NAME, note.end)
        replay = False
    while True:
        batch_upto = _lsn(note.end) if replay and note is not None else upto
        nchanges = None if replay else lake.settings.lake.batch_changes
        if batch_upto <= state.position:
            break
        with lake.staging() as folder:
            batch = _Batch(lake, conn, state, version, folder, progress, exclude=exclude)
            end = batch.read(batch_upto, nchanges)
            if end.complete:
                batch_end = batch_upto
            else:
                assert end.end_lsn is not None
                batch_end = end.end_lsn
            if batch_end <= state.position:
                break
            outcome = batch.commit(end, batch_end, replay)
        state, version = batch.state, batch.version
        result.batches.append(outcome)
        if progress and outcome.changes:
            count = sum(sum(o.values()) for o in outcome.changes.values())
            progress(f"batch {outcome.start} -> {outcome.end}: {count:,} changes")
        was_replay, replay = replay, False
        if was_replay:
            continue
        if end.complete and batch_end >= upto:
            break
        if limit_changes is not None and result.changes >= limit_changes:
            break
        if deadline is not None and time.monotonic() >= deadline:
            break
    return state, version


# ---------------------------------------------------------------------------------- status


@dataclass
class WalFigures:
    """What the slot holds on the source, in bytes."""

    lag: int | None  # WAL flushed now minus the slot's confirmed position
    retained: int | None  # WAL written now minus the slot's restart position
    limit: int | None  # retained + safe_wal_size: where the server drops the slot's WAL
    wal_status: str | None

    @property
    def share(self) -> float | None:
        if self.retained is None or not self.limit:
            return None
        return self.retained / self.limit


def wal_figures(conn: Connection, info: SlotInfo | None) -> WalFigures:
    if info is None:
        return WalFigures(None, None, None, None)
    row = conn.execute(
        "SELECT pg_current_wal_flush_lsn()::text, pg_current_wal_lsn()::text"
    ).fetchone()
    assert row is not None
    flushed, written = _lsn(str(row[0])), _lsn(str(row[1]))
    lag = None if info.confirmed_flush is None else max(flushed - info.confirmed_flush, 0)
    retained = None if info.restart is None else max(written - info.restart, 0)
    limit = None
    if retained is not None and info.safe_wal_size is not None:
        limit = retained + max(info.safe_wal_size, 0)
    return WalFigures(lag, retained, limit, info.wal_status)


@dataclass
class StatusResult:
    url: str
    state: LakeState | None
    slot: SlotInfo | None = None
    wal: WalFigures | None = None
    source_error: str | None = None
    checked: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        state = self.state
        body: dict[str, Any] = {"destination": self.url, "initialised": state is not None}
        if state is None:
            return body
        body |= {
            "slot": state.slot,
            "publication": state.publication,
            "dropped": state.dropped,
            "lsn": state.lsn,
            "last_sync": state.updated.isoformat(),
            "seconds_since_sync": round((self.checked - state.updated).total_seconds(), 1),
            "tables": {
                name: {
                    "rows": t.rows,
                    "last_change": t.last_change_time.isoformat() if t.last_change_time else None,
                    "columns": [c.name for c in t.columns],
                    "key": t.key,
                }
                for name, t in sorted(state.tables.items())
            },
        }
        if self.source_error is not None:
            body["source_error"] = self.source_error
        if self.wal is not None:
            body["slot_status"] = {
                "exists": self.slot is not None,
                "wal_status": self.wal.wal_status,
                "lag_bytes": self.wal.lag,
                "wal_retained_bytes": self.wal.retained,
                "wal_limit_bytes": self.wal.limit,
                "wal_retained_share": None if self.wal.share is None else round(self.wal.share, 4),
            }
        return body


def lake_state_for_health(settings: Settings) -> LakeState | None:
    """The lake's state at lake.destination (None when there is none)."""
    lake = Lake.open(settings, None)
    try:
        found = lake.store.read_state()
        return None if found is None else found[0]
    finally:
        lake.close()


def lake_status(settings: Settings, *, dest: str | None) -> StatusResult:
    """The lake's state and its slot on the source (read-only: no lock, no audit record)."""
    lake = Lake.open(settings, dest)
    try:
        found = lake.store.read_state()
        result = StatusResult(lake.store.url, found[0] if found else None)
        if found is None:
            return result
        try:
            with _connect(settings) as conn:
                result.slot = slot_info(conn, found[0].slot)
                result.wal = wal_figures(conn, result.slot)
        except AbacoError as exc:
            result.source_error = exc.message
        return result
    finally:
        lake.close()


# ----------------------------------------------------------------------------------- verify


@dataclass
class VerifyResult:
    url: str
    manifests: int = 0
    files: int = 0
    findings: list[str] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)  # table -> verdict of the deep check

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.url,
            "ok": self.ok,
            "manifests": self.manifests,
            "files": self.files,
            "findings": self.findings,
            "tables": self.tables,
        }


def verify_lake(
    run: Run, *, dest: str | None, deep: bool, progress: Progress | None = None
) -> VerifyResult:
    """The change log against the manifests, the Delta tables against the state; with
    ``deep``, every lake table against the source table, row for row."""
    lake = Lake.open(run.settings, dest)
    result = VerifyResult(lake.store.url)
    try:
        state, _ = lake.state()
        note = lake.store.read_note()
        listed: set[str] = set()
        for start, end, name in lake.store.manifests():
            manifest = lake.store.read_manifest(name)
            result.manifests += 1
            if _lsn(manifest.start) != start or _lsn(manifest.end) != end:
                result.findings.append(f"{name}: its bounds differ from its name")
            if end > state.position and not (note and _lsn(note.end) == end):
                result.findings.append(f"{name}: beyond the lake's state {state.lsn}")
            for item in manifest.files:
                listed.add(item.name)
                result.files += 1
                info = lake.store.destination.head(item.name)
                if info is None:
                    result.findings.append(f"{item.name}: listed in {name} but missing")
                elif info.size != item.size or (info.sha256 and info.sha256 != item.sha256):
                    result.findings.append(f"{item.name}: differs from {name} (size or sha256)")
        files, strangers = lake.store.change_files()
        for parsed in files:
            if parsed.name not in listed:
                in_flight = note is not None and parsed.start == _lsn(note.start)
                why = "a batch in flight (the next sync replays it)" if in_flight else "no manifest"
                result.findings.append(f"{parsed.name}: in no manifest ({why})")
        for name in strangers:
            result.findings.append(f"{name}: not a change file of the lake")
        for name in sorted(state.tables):
            covered = lake.table(name).covered_lsn()
            if covered is None or covered > state.position:
                result.findings.append(
                    f"{name}: the Delta table's last abaco commit "
                    f"({'none' if covered is None else format_lsn(covered)}) does not match the "
                    f"lake's state {state.lsn}"
                )
        if deep:
            _verify_deep(lake, state, result, progress)
        return result
    finally:
        lake.close()


def _verify_deep(
    lake: Lake, state: LakeState, result: VerifyResult, progress: Progress | None
) -> None:
    with _connect(lake.settings) as conn:
        lag = wal_figures(conn, slot_info(conn, state.slot)).lag
    for name, table_state in sorted(state.tables.items()):
        columns = [c.name for c in table_state.columns]
        with TableReader(lake.settings, name, columns) as reader:
            source = pa.Table.from_batches(list(reader.batches()), schema=reader.schema)
        mine = lake.table(name).read().select(columns)
        key = [(k, "ascending") for k in table_state.key]
        same = source.num_rows == mine.num_rows and source.sort_by(key).cast(mine.schema).equals(
            mine.sort_by(key)
        )
        verdict = (
            "same"
            if same
            else f"differs ({mine.num_rows:,} rows in the lake, {source.num_rows:,} in the source)"
        )
        result.tables[name] = verdict
        if progress:
            progress(f"{name}: {verdict}")
        if not same:
            behind = (
                f" (the lake is {lag:,} bytes of WAL behind: `abaco lake sync` first)"
                if lag
                else ""
            )
            result.findings.append(f"{name}: the lake table differs from the source{behind}")


# --------------------------------------------------------------------------- resync, compact, drop


def _other_slot(name: str, base: str) -> str:
    return f"{base}_b" if name == base else base


@dataclass
class ResyncResult:
    url: str
    slot: str
    lsn: str
    reloaded: dict[str, int]
    caught_up: SyncResult | None

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.url,
            "slot": self.slot,
            "lsn": self.lsn,
            "reloaded": self.reloaded,
            "caught_up": None if self.caught_up is None else self.caught_up.to_json(),
        }


def resync_lake(
    run: Run, *, dest: str | None, tables: Sequence[str] | None, progress: Progress | None = None
) -> ResyncResult:
    """Reload tables in a new slot's snapshot. With the old slot still usable and only some
    tables named, the others are first brought up to the new slot's start through the old one
    (nothing lost, nothing twice); otherwise every table is reloaded."""
    settings = run.settings
    arguments = {"tables": list(tables or [])}
    with _audited_lake(run, dest, arguments) as (lake, conn, audit):
        state, version = lake.state()
        with _held(run, lake, conn, state.slot, progress):
            state, version = lake.state()
            _check_source(conn, state)
            names = (
                [str(n) for n in chosen_tables(settings, tables)]
                if tables
                else sorted(state.tables)
            )
            # a table named that the lake does not hold yet (added to lake.tables) joins it
            every = sorted(set(state.tables) | set(names))
            old = slot_info(conn, state.slot)
            usable = old is not None and not old.lost and not state.dropped
            partial = usable and set(names) != set(every)
            if not partial:
                names = every
            sources = _inspect(conn, settings, every)
            reload_sources = [s for s in sources if s.name in names]
            new_slot = _other_slot(state.slot, settings.lake.slot)
            if slot_info(conn, new_slot) is not None:
                drop_slot(conn, new_slot)
            lsn, states, files = _load(
                run,
                lake,
                conn,
                reload_sources,
                new_slot,
                state.publication,
                progress,
                published=sources,
            )
            _put_load_manifest(lake, lsn, states, files)
            caught_up = None
            if partial:
                caught_up = SyncResult(lake.store.url, state.slot)
                state, version = _catch_up(
                    lake,
                    conn,
                    state,
                    version,
                    lsn,
                    caught_up,
                    None,
                    None,
                    progress,
                    exclude=frozenset(names),
                )
                if state.position < lsn:  # nothing to read up to the new start: move on
                    state = state.model_copy(update={"lsn": format_lsn(lsn)})
            merged = {**state.tables, **states}
            new_state = state.model_copy(
                update={
                    "slot": new_slot,
                    "lsn": format_lsn(lsn),
                    "updated": datetime.now(UTC),
                    "tables": merged,
                    "dropped": False,
                }
            )
            lake.store.write_state(new_state, version=version)
            if old is not None:
                drop_slot(conn, old.name)
            result = ResyncResult(
                lake.store.url,
                new_slot,
                new_state.lsn,
                {n: s.rows for n, s in states.items()},
                caught_up,
            )
            audit.details |= result.to_json()
    return result


def compact_lake(
    run: Run, *, dest: str | None, retention_hours: int, progress: Progress | None = None
) -> dict[str, Any]:
    arguments = {"retention_hours": retention_hours}
    with _audited_lake(run, dest, arguments, reads_source=False) as (lake, conn, audit):
        state, _ = lake.state()
        outcomes: dict[str, Any] = {}
        with _held(run, lake, conn, state.slot, progress):
            state, version = lake.state()
            for name in sorted(state.tables):
                outcome = lake.table(name).compact(retention_hours=retention_hours)
                outcomes[name] = _plain(outcome)
                if progress:
                    progress(f"{name}: compacted")
            lake.store.write_state(
                state.model_copy(update={"compacted": datetime.now(UTC)}), version=version
            )
        audit.details |= {"tables": outcomes}
    return {"destination": lake.store.url, "tables": outcomes}


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return value


def drop_lake(run: Run, *, dest: str | None, progress: Progress | None = None) -> dict[str, Any]:
    """Drop the slot(s) and the publication, so that the source holds no WAL for the lake;
    the lake's files stay (its state says it was dropped)."""
    settings = run.settings
    with _audited_lake(run, dest, {}) as (lake, conn, audit):
        found = lake.store.read_state()
        slot = found[0].slot if found else settings.lake.slot
        publication = found[0].publication if found else settings.lake.publication
        with _held(run, lake, conn, slot, progress):
            dropped = [
                name
                for name in dict.fromkeys(
                    [
                        slot,
                        settings.lake.slot,
                        _other_slot(settings.lake.slot, settings.lake.slot),
                    ]
                )
                if drop_slot(conn, name)
            ]
            publication_dropped = drop_publication(conn, publication)
            found = lake.store.read_state()
            if found is not None and not found[0].dropped:
                lake.store.write_state(
                    found[0].model_copy(update={"dropped": True, "updated": datetime.now(UTC)}),
                    version=found[1],
                )
        body = {
            "destination": lake.store.url,
            "slots_dropped": dropped,
            "publication_dropped": publication if publication_dropped else None,
        }
        audit.details |= body
    return body
