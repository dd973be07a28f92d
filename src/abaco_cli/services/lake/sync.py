"""`abaco lake sync`: exactly once, by protocol (docs/lake.md). The store is the source of
truth, the slot a cursor:

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

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from abaco_cli import metrics
from abaco_cli.db.connect import Connection
from abaco_cli.errors import LockedError, UsageError
from abaco_cli.lake import delta
from abaco_cli.lake.changelog import ChangeLogWriter, StagedFile
from abaco_cli.lake.changes import BatchEnd, read_changes
from abaco_cli.lake.lsn import format_lsn
from abaco_cli.lake.net import NetChanges
from abaco_cli.lake.slot import (
    SlotInfo,
    SlotLostError,
    advance_slot,
    flush_lsn,
    slot_info,
)
from abaco_cli.lake.store import (
    BATCH_NOTE_NAME,
    BatchManifest,
    LakeState,
    LakeStateError,
    TableState,
)
from abaco_cli.lake.tables import (
    allow_list,
    arrow_type_resolver,
    captured_tables,
)
from abaco_cli.services.lake.common import (
    ALL_CHANGES,
    Lake,
    Progress,
    SlotAheadError,
    check_source,
    checkpoint,
    connect_source,
    held,
    lsn_of,
    send_files,
)
from abaco_cli.services.lake.status import (
    WalFigures,
    wal_figures,
)
from abaco_cli.services.run import Run

log = logging.getLogger("abaco.lake")


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
            entries = send_files(lake, files)
            checkpoint("files")
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
            checkpoint("manifest")
        tables = dict(self.state.tables)
        for name in sorted(set(changes) | set(self.added) | set(self.parts)):
            tables[name] = self._merge(name, tables[name], batch_end, end.last_commit_time)
            checkpoint("merge")
        new_state = self.state.model_copy(
            update={
                "lsn": format_lsn(batch_end),
                "updated": datetime.now(UTC),
                "tables": tables,
            }
        )
        self.version = store.write_state(new_state, version=self.version)
        self.state = new_state
        checkpoint("state")
        if files or self.added:
            store.clear_note()
        advance_slot(self.conn, self.state.slot, batch_end)
        checkpoint("advance")
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
            checkpoint("part")

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
        conn = connect_source(settings)
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
            with held(run, lake, conn, state.slot, progress):
                state, version = lake.state()  # as it is now that this run holds the locks
                checkpoint("locked")
                check_source(conn, state)
                result.start = state.lsn
                upto = flush_lsn(conn)
                if state.position > upto:
                    raise LakeStateError(
                        f"the lake's state is at {state.lsn}, past the source's WAL "
                        f"({format_lsn(upto)}): the state was edited, or belongs to another "
                        "server"
                    )
                _, result.reconciled = _reconcile(conn, state)
                state, version = catch_up(
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


def catch_up(
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
        note is not None
        and lsn_of(note.start) == state.position
        and lsn_of(note.end) > state.position
    )
    if replay and note is not None and lsn_of(note.end) > upto:
        # a genuine note ends at WAL that was flushed when it was written: this one was not
        log.warning("ignoring %s: its end %s is past the source's WAL", BATCH_NOTE_NAME, note.end)
        replay = False
    while True:
        batch_upto = lsn_of(note.end) if replay and note is not None else upto
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
