"""One batch of changes from the lake's replication slot, as Arrow tables of typed changes.

    changes = read_changes(conn, slot=..., publication=..., upto_lsn=..., upto_nchanges=...,
                           tables=captured, resolve_type=...)
    while True:
        try:
            chunk = next(changes)      # ChangeChunk: per table, rows in (_commit_lsn, _seq) order
        except StopIteration as stop:
            end: BatchEnd = stop.value  # the generator's return value
            break
        ...                            # or, in a generator: end = yield from changes

The slot is only a cursor: ``pg_logical_slot_peek_binary_changes`` reads without consuming, and
the caller advances the slot (``pg_replication_slot_advance`` to ``BatchEnd.end_lsn``) once it
has committed the batch. The peek's rows are streamed with ``COPY (...) TO STDOUT (FORMAT
binary)``, gathered into chunks of about ``chunk_changes`` messages (or CHUNK_BYTES bytes) and
decoded in bulk (lake/pgoutput.py), so memory stays bounded whatever a transaction's size: a
chunk may end inside a transaction, whose commit LSN, time and xid are known from its Begin.

Only captured tables are decoded, and of them only the allowed columns (a borrower's name is
skipped where it lies in the buffer, never made a value). A Relation message of a captured table
is checked against what was captured: a column dropped, renamed or retyped stops the batch
(SchemaChanged); an allowed column that appears is added (``ChangeChunk.added``).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from abaco_cli.errors import DataError
from abaco_cli.lake.lsn import format_lsn
from abaco_cli.lake.peek import CHUNK_BYTES, ROW_HEAD, Prefetch
from abaco_cli.lake.pgoutput import (
    BEGIN,
    COMMIT,
    DELETE,
    INSERT,
    KEY,
    MESSAGE,
    NEW,
    OLD,
    ORIGIN,
    PADDING,
    RELATION,
    TEXT,
    TRUNCATE,
    TYPE,
    UPDATE,
    Messages,
    ProtocolError,
    Relation,
    TupleColumn,
    Tuples,
    column_to_arrow,
    gather,
    parse_begin,
    parse_commit,
    parse_relation,
    parse_truncate,
    walk_tuples,
)

__all__ = [
    "CHANGE_COLUMNS",
    "CHANGE_FIELDS",
    "CHUNK_BYTES",
    "BatchEnd",
    "CapturedTable",
    "ChangeChunk",
    "SchemaChanged",
    "read_changes",
]

Int64s = npt.NDArray[np.int64]
ResolveType = Callable[[int, int, str], pa.DataType]

CHANGE_COLUMNS = ("_op", "_commit_lsn", "_xid", "_commit_time", "_seq")
CHANGE_FIELDS = (
    pa.field("_op", pa.string(), nullable=False),
    pa.field("_commit_lsn", pa.int64(), nullable=False),
    pa.field("_xid", pa.int64(), nullable=False),
    pa.field("_commit_time", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("_seq", pa.int64(), nullable=False),
)
OPS = ("insert", "update", "delete", "truncate")
_INSERT, _UPDATE, _DELETE, _TRUNCATE = range(4)
_SUB_BITS = 20  # a row's order key: its message's index, then its place among that message's rows
_SESSION = (
    # the values are decoded in this session and printed with its settings: one exact form
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
    "SET client_encoding = 'UTF8'",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CapturedTable:
    """What the lake keeps of one source table, as the initial load captured it.

    ``allowed``: the columns that may reach the lake (any other is dropped on arrival);
    ``schema``: the captured columns' Arrow types now, in the table's column order;
    ``types``: column -> (type oid, typmod) as captured (pg_attribute's atttypid and
    atttypmod, as pgoutput sends them), to notice a retyped column; ``key``: the primary key
    (every captured column for REPLICA IDENTITY FULL without a key), all in ``schema``.
    """

    name: str
    allowed: tuple[str, ...]
    schema: pa.Schema
    types: Mapping[str, tuple[int, int]]
    key: tuple[str, ...]


@dataclass
class ChangeChunk:
    """A part of a batch: per captured table with changes in it, CHANGE_COLUMNS then its
    captured columns, rows in (_commit_lsn, _seq) order. ``added``: columns that appeared in
    this chunk (their rows before the column appeared are NULL); later chunks carry them."""

    tables: dict[str, pa.Table]
    added: dict[str, list[pa.Field]] = field(default_factory=dict)


@dataclass
class BatchEnd:
    """What the whole batch held, returned by ``read_changes`` when it is exhausted.

    ``end_lsn``: the end LSN of the last Commit (None: no transaction), where the caller
    advances the slot once it has committed the batch. ``complete``: the peek stopped because
    it reached ``upto_lsn`` (it returned fewer rows than ``upto_nchanges``), so the caller may
    advance the slot to ``max(upto_lsn, end_lsn)`` even when nothing was captured; this holds
    when ``upto_lsn`` is at most the server's flush LSN at the time of the peek.
    """

    end_lsn: int | None
    last_commit_time: datetime | None
    transactions: int
    changes: dict[tuple[str, str], int]
    complete: bool


class SchemaChanged(DataError):  # noqa: N818 - the name the lake's callers use
    """A captured column was dropped, renamed or retyped in the source: the lake's copy of
    the table can no longer be continued, only rebuilt."""

    def __init__(self, table: str, column: str, what: str) -> None:
        super().__init__(
            f"column {column!r} of {table} was {what} in the source",
            hint=f"`abaco lake resync --table {table}` copies the table again as it is now.",
        )
        self.table = table
        self.column = column


# ------------------------------------------------------------------------------- reading


def read_changes(
    conn: psycopg.Connection[Any],
    *,
    slot: str,
    publication: str,
    upto_lsn: int,
    upto_nchanges: int,
    tables: Mapping[str, CapturedTable],
    resolve_type: ResolveType,
    chunk_changes: int = 50_000,
) -> Generator[ChangeChunk, None, BatchEnd]:
    """Peek the slot's changes up to ``upto_lsn`` (at most about ``upto_nchanges`` messages:
    the server stops only after a whole transaction) and yield them decoded, chunk by chunk;
    the BatchEnd is the generator's return value (``StopIteration.value``, or the value of
    ``yield from``). Nothing is consumed: the caller advances the slot.

    ``tables``: the captured tables by ``schema.table``; ``resolve_type(type_oid, typmod,
    column)`` gives the Arrow type of a column that appears (it runs while ``conn`` is busy
    with the COPY: it must not use ``conn``). Sets the session's TimeZone, DateStyle,
    IntervalStyle, extra_float_digits, bytea_output and client_encoding. The server's errors
    (a missing slot, a slot in use) are raised as psycopg errors, for the caller to classify."""
    if upto_nchanges < 1 or chunk_changes < 1:
        raise ValueError("upto_nchanges and chunk_changes must be at least 1")
    batch = _Batch(tables, resolve_type)
    for statement in _SESSION:
        conn.execute(statement)
    encoding = conn.execute("SELECT current_setting('server_encoding')").fetchone()
    batch.check_utf8 = encoding is None or str(encoding[0]).upper() == "SQL_ASCII"
    query = sql.SQL(
        "COPY (SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes("
        "{slot}, {upto}::pg_lsn, {count}, 'proto_version', '1', 'publication_names', {pub})) "
        "TO STDOUT (FORMAT binary)"
    ).format(
        slot=sql.Literal(slot),
        upto=sql.Literal(format_lsn(upto_lsn)),
        count=sql.Literal(int(upto_nchanges)),
        pub=sql.Literal(publication),
    )
    rows = 0
    with Prefetch(conn, query.as_bytes(conn), chunk_changes) as chunks:
        for buffer, lengths in chunks:
            rows += len(lengths)
            chunk = batch.decode(buffer, lengths)
            if chunk.tables or chunk.added:
                yield chunk
    return batch.end(complete=rows < upto_nchanges)


# ------------------------------------------------------------------------ decoding a batch


@dataclass
class _Txn:
    """The transaction being read: from its Begin; ``next_seq`` counts its rows so far."""

    final_lsn: int
    commit_time: int
    xid: int
    next_seq: int = 0


@dataclass
class _Layout:
    """A relation as its last Relation message described it: for a captured table, which
    TupleData column becomes which lake column, and which are the key."""

    relation: Relation
    table: str | None
    outputs: dict[int, str]
    key: tuple[int, ...]

    @property
    def wanted(self) -> tuple[int, ...]:
        return tuple(sorted({*self.outputs, *self.key}))


class _TableState:
    """A captured table's columns now (the captured ones, then any added in this batch)."""

    def __init__(self, captured: CapturedTable) -> None:
        names = captured.schema.names
        if missing := [c for c in captured.key if c not in names]:
            raise ValueError(f"{captured.name}: key columns {missing} are not in its schema")
        if missing := [c for c in names if c not in captured.types]:
            raise ValueError(f"{captured.name}: columns {missing} have no captured type")
        self.captured = captured
        self.fields: list[pa.Field] = list(captured.schema)
        self.types: dict[str, tuple[int, int]] = {n: captured.types[n] for n in names}
        self.allowed = frozenset(captured.allowed)

    def where(self, column: str) -> str:
        return f"column {column!r} of {self.captured.name}"


@dataclass
class _Rows:
    """Rows of one table decoded from a set of messages: each row's order key (message index
    << _SUB_BITS | its place among the message's rows), operation, and per lake column where
    its text lies (a column absent here is NULL)."""

    order: Int64s
    op: int
    columns: dict[str, TupleColumn]


class _Batch:
    """The decoder's state across the chunks of one batch."""

    def __init__(self, tables: Mapping[str, CapturedTable], resolve_type: ResolveType) -> None:
        self.states = {name: _TableState(table) for name, table in tables.items()}
        self.resolve_type = resolve_type
        self.check_utf8 = True
        self.layouts: dict[int, _Layout] = {}
        self.open: _Txn | None = None
        self.end_lsn: int | None = None
        self.last_commit_time: int | None = None
        self.transactions = 0
        self.counts: Counter[tuple[str, str]] = Counter()

    def end(self, *, complete: bool) -> BatchEnd:
        if self.open is not None:
            raise ProtocolError("the change stream ended inside a transaction")
        last = self.last_commit_time
        return BatchEnd(
            end_lsn=self.end_lsn,
            last_commit_time=None if last is None else _EPOCH + timedelta(microseconds=last),
            transactions=self.transactions,
            changes=dict(self.counts),
            complete=complete,
        )

    # ---------------------------------------------------------------- Relation messages

    def _relation(self, relation: Relation, added: dict[str, list[pa.Field]]) -> _Layout:
        """The new layout of a relation; for a captured table, its columns checked against
        what was captured (SchemaChanged) and allowed newcomers added."""
        state = self.states.get(relation.qualified)
        if state is None:
            return _Layout(relation, None, {}, ())
        table = relation.qualified
        present = {c.name: c for c in relation.columns}
        for column in state.fields:
            found = present.get(column.name)
            if found is None:
                raise SchemaChanged(table, column.name, "dropped or renamed")
            was = state.types[column.name]
            if (found.type_oid, found.typmod) != was:
                now = (found.type_oid, found.typmod)
                raise SchemaChanged(
                    table, column.name, f"retyped from {_type_name(*was)} to {_type_name(*now)}"
                )
        known = {f.name for f in state.fields}
        for column in relation.columns:
            if column.name in state.allowed and column.name not in known:
                arrow = self.resolve_type(column.type_oid, column.typmod, column.name)
                new = pa.field(column.name, arrow)
                state.fields.append(new)
                state.types[column.name] = (column.type_oid, column.typmod)
                added.setdefault(table, []).append(new)
        index = {c.name: i for i, c in enumerate(relation.columns)}
        outputs = {index[f.name]: f.name for f in state.fields}
        key = tuple(index[name] for name in state.captured.key)
        return _Layout(relation, table, outputs, key)

    # ------------------------------------------------------------------------ one chunk

    def decode(self, buffer: bytearray, lengths: array[int]) -> ChangeChunk:
        """Decode one chunk of peek rows (their COPY payloads back to back in ``buffer``)."""
        messages = _frame(buffer, lengths)
        chunk = _Chunk(self, messages)
        chunk.run()
        return chunk.result()


def _frame(buffer: bytearray, lengths: array[int]) -> Messages:
    """The pgoutput messages inside the peek rows (lsn, xid, data), each row checked."""
    sizes = np.frombuffer(lengths, dtype=np.int64) if len(lengths) else np.zeros(0, np.int64)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    if len(sizes) and int(sizes.min()) <= ROW_HEAD:
        raise ProtocolError("a peek row shorter than its lsn, xid and message")
    buffer += bytes(PADDING)
    messages = Messages(buffer, starts + ROW_HEAD, sizes - ROW_HEAD)
    if len(sizes) and not (
        np.all(messages.at(">i2", starts) == 3)
        and np.all(messages.at(">i4", starts + 2) == 8)
        and np.all(messages.at(">i4", starts + 14) == 4)
        and np.all(messages.at(">i4", starts + 22) == sizes - ROW_HEAD)
    ):
        raise ProtocolError("a peek row that is not (lsn, xid, data)")
    return messages


class _Chunk:
    """Decodes one chunk: the rare messages one by one, then the changes of each captured
    table in bulk, then each table's rows in order with their transaction's columns."""

    def __init__(self, batch: _Batch, messages: Messages) -> None:
        self.batch = batch
        self.messages = messages
        self.added: dict[str, list[pa.Field]] = {}
        self.rows: dict[str, list[_Rows]] = {}
        self.emitted = np.zeros(len(messages), dtype=np.int64)
        # the transactions of the chunk: where each Begin is (-1: carried from the last chunk)
        self.txn_at: list[int] = []
        self.txns: list[_Txn] = []
        self.commits_at: list[int] = []
        if batch.open is not None:
            self.txn_at.append(-1)
            self.txns.append(batch.open)
        self.start_layouts = dict(batch.layouts)
        self.relation_events: dict[int, list[tuple[int, _Layout]]] = {}

    def run(self) -> None:
        kinds = self.messages.kinds
        changes = (kinds == INSERT) | (kinds == UPDATE) | (kinds == DELETE)
        for index in np.flatnonzero(~changes).tolist():
            self._control(index, int(kinds[index]))
        self._changes(np.flatnonzero(changes))

    # ----------------------------------------------------------- Begin, Commit, Relation, ...

    def _control(self, index: int, kind: int) -> None:
        batch, data = self.batch, self.messages.message(index)
        if kind == BEGIN:
            if batch.open is not None:
                raise ProtocolError("a pgoutput Begin inside a transaction")
            begin = parse_begin(data)
            batch.open = _Txn(begin.final_lsn, begin.commit_time, begin.xid)
            self.txn_at.append(index)
            self.txns.append(batch.open)
        elif kind == COMMIT:
            commit = parse_commit(data)
            if batch.open is None or commit.commit_lsn != batch.open.final_lsn:
                raise ProtocolError("a pgoutput Commit that does not end its Begin")
            batch.open = None
            batch.end_lsn = commit.end_lsn
            batch.last_commit_time = commit.commit_time
            batch.transactions += 1
            self.commits_at.append(index)
        elif kind == RELATION:
            relation = parse_relation(data)
            layout = batch._relation(relation, self.added)
            batch.layouts[relation.oid] = layout
            self.relation_events.setdefault(relation.oid, []).append((index, layout))
        elif kind == TRUNCATE:
            if batch.open is None:
                raise ProtocolError("a pgoutput Truncate outside a transaction")
            truncate = parse_truncate(data)
            place = 0
            for oid in truncate.oids:
                truncated = batch.layouts.get(oid)
                if truncated is None:
                    raise ProtocolError(f"a Truncate of relation {oid} before its Relation")
                if truncated.table is None:
                    continue
                order = np.array([(index << _SUB_BITS) | place], dtype=np.int64)
                self.rows.setdefault(truncated.table, []).append(_Rows(order, _TRUNCATE, {}))
                place += 1
            self.emitted[index] += place
        elif kind not in (TYPE, ORIGIN, MESSAGE):
            raise ProtocolError(f"a pgoutput message of unknown kind {chr(kind)!r}")

    # --------------------------------------------------------------- Insert, Update, Delete

    def _changes(self, indices: Int64s) -> None:
        if not len(indices):
            return
        txn_at = np.asarray(self.txn_at, dtype=np.int64)
        txn = np.searchsorted(txn_at, indices, side="right") - 1
        commits = np.searchsorted(np.asarray(self.commits_at, dtype=np.int64), indices)
        if int(txn.min()) < 0 or not np.array_equal(commits, txn):
            raise ProtocolError("a pgoutput change outside a transaction")
        oids = self.messages.oids(indices)
        layouts: list[_Layout | None] = []
        of_change = np.empty(len(indices), dtype=np.int64)
        unique, inverse = np.unique(oids, return_inverse=True)
        for number, oid in enumerate(unique.tolist()):
            selected = np.flatnonzero(inverse == number)
            events = self.relation_events.get(oid, [])
            candidates = [self.start_layouts.get(oid), *(layout for _, layout in events)]
            which = np.searchsorted(np.asarray([at for at, _ in events], dtype=np.int64),
                                    indices[selected])  # fmt: skip
            of_change[selected] = which + len(layouts)
            layouts.extend(candidates)
        kinds = self.messages.kinds[indices]
        for number, layout in enumerate(layouts):
            mine = of_change == number
            if not mine.any():
                continue
            if layout is None:
                raise ProtocolError("a pgoutput change of a relation before its Relation")
            if layout.table is None:
                continue  # not captured: never decoded
            for kind, decode in ((INSERT, self._inserts), (UPDATE, self._updates),
                                 (DELETE, self._deletes)):  # fmt: skip
                group = indices[mine & (kinds == kind)]
                if len(group):
                    decode(layout, group)

    def _walk(self, layout: _Layout, positions: Int64s) -> Tuples:
        return walk_tuples(self.messages, positions, len(layout.relation.columns), layout.wanted)

    def _expect_tag(self, positions: Int64s, tags: tuple[int, ...], what: str) -> None:
        found = self.messages.u1[positions]
        if not np.all(np.isin(found, tags)):
            raise ProtocolError(f"a pgoutput {what} message without its tuple")

    def _expect_end(self, tuples: Tuples, indices: Int64s) -> None:
        if not np.array_equal(tuples.end, self.messages.ends[indices]):
            raise ProtocolError("a pgoutput change whose tuple does not end with its message")

    def _add(self, layout: _Layout, indices: Int64s, op: int, values: dict[int, TupleColumn],
             sub: Int64s | int = 0) -> None:  # fmt: skip
        assert layout.table is not None
        order = (indices << _SUB_BITS) | sub
        columns = {name: values[i] for i, name in layout.outputs.items()}
        self.rows.setdefault(layout.table, []).append(_Rows(order, op, columns))
        self.emitted[indices] += 1

    def _unchanged(self, layout: _Layout, values: dict[int, TupleColumn]) -> None:
        """A DataError for an unchanged TOASTed value with no old value to take it from."""
        for index, name in layout.outputs.items():
            if values[index].unchanged.any():
                table = layout.table
                raise DataError(
                    f"column {name!r} of {table}: an update left its large (TOASTed) value "
                    "unchanged and the change does not carry it",
                    hint=f"ALTER TABLE {table} REPLICA IDENTITY FULL, then "
                    f"`abaco lake resync --table {table}`.",
                )

    def _inserts(self, layout: _Layout, indices: Int64s) -> None:
        starts = self.messages.starts[indices]
        self._expect_tag(starts + 5, (NEW,), "Insert")
        values = self._walk(layout, starts + 6)
        self._expect_end(values, indices)
        self._unchanged(layout, values.columns)
        self._add(layout, indices, _INSERT, values.columns)

    def _deletes(self, layout: _Layout, indices: Int64s) -> None:
        starts = self.messages.starts[indices]
        self._expect_tag(starts + 5, (KEY, OLD), "Delete")
        values = self._walk(layout, starts + 6)
        self._expect_end(values, indices)
        self._unchanged(layout, values.columns)
        self._add(layout, indices, _DELETE, values.columns)

    def _updates(self, layout: _Layout, indices: Int64s) -> None:
        starts = self.messages.starts[indices]
        self._expect_tag(starts + 5, (KEY, OLD, NEW), "Update")
        tags = self.messages.u1[starts + 5]
        plain = tags == NEW
        if plain.any():
            simple = indices[plain]
            values = self._walk(layout, starts[plain] + 6)
            self._expect_end(values, simple)
            self._unchanged(layout, values.columns)
            self._add(layout, simple, _UPDATE, values.columns)
        if plain.all():
            return
        with_old = indices[~plain]
        old_tuples = self._walk(layout, starts[~plain] + 6)
        old = old_tuples.columns
        self._unchanged(layout, old)
        self._expect_tag(old_tuples.end, (NEW,), "Update")
        new_tuples = self._walk(layout, old_tuples.end + 1)
        self._expect_end(new_tuples, with_old)
        new = new_tuples.columns
        for index in new:  # an unchanged TOASTed value: the old tuple's, when it has it
            column = new[index]
            unchanged = column.unchanged
            if unchanged.any():
                donor = old[index]
                usable = unchanged & (donor.kind == TEXT)
                column.kind = np.where(usable, TEXT, column.kind).astype(np.uint8)
                column.start = np.where(usable, donor.start, column.start)
                column.length = np.where(usable, donor.length, column.length)
        self._unchanged(layout, new)
        moved = self._key_moved(layout, old, new)
        if moved.any():  # a primary-key update: the old key deleted, then the new row
            self._add(layout, with_old[moved], _DELETE, {i: c.take(moved) for i, c in old.items()})
        self._add(layout, with_old, _UPDATE, new, sub=moved.astype(np.int64))

    def _key_moved(
        self, layout: _Layout, old: dict[int, TupleColumn], new: dict[int, TupleColumn]
    ) -> npt.NDArray[np.bool_]:
        """Rows whose key columns differ between the old and the new tuple."""
        moved = np.zeros(len(next(iter(new.values())).kind) if new else 0, dtype=bool)
        for index in layout.key:
            before, after = old[index], new[index]
            both_null = ~before.valid & ~after.valid
            left = gather(self.messages, before.start, before.length, before.valid)
            right = gather(self.messages, after.start, after.length, after.valid)
            same = pc.fill_null(pc.equal(left, right), False).to_numpy(zero_copy_only=False)
            moved |= ~(same | both_null)
        return moved

    # ------------------------------------------------------------------------- the result

    def result(self) -> ChangeChunk:
        """Each table's rows in order, with their transaction's LSN, xid, time and _seq."""
        count = len(self.messages)
        before = np.zeros(count + 1, dtype=np.int64)  # rows emitted before each message
        np.cumsum(self.emitted, out=before[1:])
        txn_at = np.asarray(self.txn_at, dtype=np.int64)
        pairs = zip(self.txn_at, self.txns, strict=True)
        first_seq = np.array(
            [before[at] if at >= 0 else -txn.next_seq for at, txn in pairs], dtype=np.int64
        )
        lsn = np.array([t.final_lsn for t in self.txns], dtype=np.uint64).view(np.int64)
        xid = np.array([t.xid for t in self.txns], dtype=np.int64)
        micros = np.array([t.commit_time for t in self.txns], dtype=np.int64)
        if self.batch.open is not None:
            self.batch.open.next_seq = int(before[count] - first_seq[-1])
        tables: dict[str, pa.Table] = {}
        for table, parts in self.rows.items():
            order = np.concatenate([p.order for p in parts])
            ops = np.concatenate([np.full(len(p.order), p.op, dtype=np.int64) for p in parts])
            sort: Int64s | None = np.argsort(order, kind="stable")
            if bool(np.all(order[1:] > order[:-1])):
                sort = None  # in order already
            else:
                order, ops = order[sort], ops[sort]
            message = order >> _SUB_BITS
            txn = np.searchsorted(txn_at, message, side="right") - 1
            seq = before[message] - first_seq[txn] + (order & ((1 << _SUB_BITS) - 1))
            arrays: list[pa.Array] = [
                pc.take(pa.array(OPS), pa.array(ops)),
                pa.array(lsn[txn]),
                pa.array(xid[txn]),
                pa.array(micros[txn]).view(pa.timestamp("us", tz="UTC")),
                pa.array(seq),
            ]
            state = self.batch.states[table]
            for column in state.fields:
                arrays.append(self._column(state, column, parts, sort))
            schema = pa.schema([*CHANGE_FIELDS, *state.fields])
            tables[table] = pa.Table.from_arrays(arrays, schema=schema)
            for op, number in enumerate(np.bincount(ops, minlength=len(OPS)).tolist()):
                if number:
                    self.batch.counts[(table, OPS[op])] += number
        return ChangeChunk(tables, self.added)

    def _column(
        self, state: _TableState, column: pa.Field, parts: list[_Rows], sort: Int64s | None
    ) -> pa.Array:
        """One lake column of a table's rows, gathered and converted in one go."""
        kinds, starts, lengths = [], [], []
        for part in parts:
            found = part.columns.get(column.name)
            if found is None:  # a truncate, or a row from before the column was added: NULL
                size = len(part.order)
                kinds.append(np.zeros(size, dtype=np.uint8))
                starts.append(self.messages.starts[part.order >> _SUB_BITS])
                lengths.append(np.zeros(size, dtype=np.int64))
            else:
                kinds.append(found.kind)
                starts.append(found.start)
                lengths.append(found.length)
        kind, start, length = (np.concatenate(k) for k in (kinds, starts, lengths))
        if sort is not None:
            kind, start, length = kind[sort], start[sort], length[sort]
        return column_to_arrow(
            self.messages,
            start,
            length,
            kind == TEXT,
            column.type,
            state.where(column.name),
            check_utf8=self.batch.check_utf8,
        )


# ------------------------------------------------------------------------------ type names

_TYPE_NAMES = {
    16: "boolean",
    17: "bytea",
    19: "name",
    20: "bigint",
    21: "smallint",
    23: "integer",
    25: "text",
    114: "json",
    700: "real",
    701: "double precision",
    1042: "character",
    1043: "character varying",
    1082: "date",
    1114: "timestamp without time zone",
    1184: "timestamp with time zone",
    1700: "numeric",
    2950: "uuid",
    3802: "jsonb",
}


def _type_name(type_oid: int, typmod: int) -> str:
    """A column's type as PostgreSQL's format_type writes the common ones (else its oid)."""
    name = _TYPE_NAMES.get(type_oid)
    if name is None:
        return f"the type with oid {type_oid}" + (f" (typmod {typmod})" if typmod >= 0 else "")
    if typmod < 0:
        return name
    if type_oid == 1700 and typmod >= 4:
        packed = typmod - 4
        scale = ((packed & 0x7FF) ^ 1024) - 1024
        return f"numeric({(packed >> 16) & 0xFFFF},{scale})"
    if type_oid in (1042, 1043) and typmod >= 4:
        return f"{name}({typmod - 4})"
    if type_oid in (1114, 1184):
        return name.replace("timestamp", f"timestamp({typmod})")
    return name
