"""Which tables and columns the lake captures, and what the source says about each.

Only the tables and columns of ``lake.tables`` reach the lake (by default the source contract's
tables, as ``tables.*`` names them, with the contract's columns: ids, dates and amounts, never a
name). ``inspect_table`` checks a table before it is captured: it exists, has a primary key (or
REPLICA IDENTITY FULL / USING INDEX), every key column is captured, and every captured column
has an exact Arrow type (the whole-table reader's types, so the load and the changes agree).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from abaco_cli.db.binary_copy import TableName, column_of, describe_columns, relation_facts
from abaco_cli.db.connect import Connection, connect
from abaco_cli.db.contract import CONTRACT
from abaco_cli.errors import DataError, UsageError
from abaco_cli.lake.changes import CapturedTable
from abaco_cli.lake.slot import PublishedTable
from abaco_cli.lake.store import ColumnState, TableState
from abaco_cli.settings import Settings

SETTING = "lake.tables"


def allow_list(settings: Settings) -> dict[str, list[str]]:
    """``lake.tables``, or by default the contract's tables (as ``tables.*`` names them) with
    the contract's columns."""
    if settings.lake.tables is not None:
        return settings.lake.tables
    return {getattr(settings.tables, role): list(columns) for role, columns in CONTRACT.items()}


def chosen_tables(settings: Settings, names: Sequence[str] | None) -> dict[str, list[str]]:
    """The tables asked for (default: every table of the allow-list) with their allowed
    columns; a usage error naming the setting for a table that is not on it."""
    allowed = allow_list(settings)
    if not names:
        return dict(allowed)
    chosen: dict[str, list[str]] = {}
    for text in names:
        name = str(TableName.parse(text))
        if name not in allowed:
            where = (
                "" if settings.lake.tables is not None else " (by default the contract's tables)"
            )
            raise UsageError(
                f"{name} is not on the list of tables the lake may capture: {SETTING}{where}",
                hint=f"Add it, with the columns that may leave the database, to {SETTING} in "
                "abaco.toml (or ABACO_LAKE__TABLES as JSON).",
            )
        chosen[name] = allowed[name]
    return chosen


@dataclass(frozen=True)
class SourceTable:
    """A table as the source has it now, restricted to what the lake may capture."""

    name: str
    columns: tuple[ColumnState, ...]  # captured, in the table's order
    schema: pa.Schema  # their Arrow types
    key: tuple[str, ...]
    replica_identity: str  # d (default: the primary key), f (full), i (index), n (nothing)
    skipped: tuple[str, ...]  # columns of the table that are not captured
    absent: tuple[str, ...]  # allowed columns the table does not have (yet)

    def state(self, loaded_lsn: str, rows: int) -> TableState:
        return TableState(
            columns=list(self.columns),
            key=list(self.key),
            arrow_schema=TableState.encode_schema(self.schema),
            loaded_lsn=loaded_lsn,
            rows=rows,
        )

    @property
    def published(self) -> PublishedTable:
        """The whole table: a publication column list would make the source refuse to
        retype or drop those columns (ALTER TABLE fails while a publication depends on
        them), and the lake must never block the source's migrations. The columns not
        captured are dropped by the change reader as they arrive, never written."""
        return PublishedTable(self.name, None)


def inspect_table(conn: Connection, name: str, allowed: Sequence[str]) -> SourceTable:
    table = TableName.parse(name)
    oid, kind, identity = relation_facts(conn, table)
    if kind not in ("r", "p"):
        raise UsageError(f"{name} is not a table (views cannot be captured)")
    present = column_states(conn, name)
    names = [c.name for c in present]
    captured = [c for c in present if c.name in allowed]
    if not captured:
        raise UsageError(f"no column of {name} is on {SETTING}")
    described = describe_columns(conn, table, oid, [c.name for c in captured])
    fields = []
    for column in described:
        if column.type_name == "numeric" and column.precision is None:
            raise DataError(
                f"column {column.name!r} of {name} is numeric without precision and scale: the "
                "lake needs one exact type for every change",
                hint=f"Declare it numeric(p,s), or leave it out of {SETTING}.",
            )
        fields.append(pa.field(column.name, column.arrow_type))
    key = _key_columns(conn, oid, identity, name, [c.name for c in captured])
    return SourceTable(
        name=name,
        columns=tuple(captured),
        schema=pa.schema(fields),
        key=key,
        replica_identity=identity,
        skipped=tuple(n for n in names if n not in allowed),
        absent=tuple(c for c in allowed if c not in names),
    )


def _key_columns(
    conn: Connection, oid: int, identity: str, name: str, captured: Sequence[str]
) -> tuple[str, ...]:
    """The columns a change is matched on: the primary key (or the replica identity index);
    every captured column under REPLICA IDENTITY FULL without a key."""
    index_rows = conn.execute(
        "SELECT i.indisprimary, i.indisreplident, a.attname FROM pg_catalog.pg_index i "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = %s AND (i.indisprimary OR i.indisreplident) ORDER BY k.position",
        (oid,),
    ).fetchall()
    replident = [str(r[2]) for r in index_rows if r[1]]
    primary = [str(r[2]) for r in index_rows if r[0]]
    key = replident if identity == "i" else primary
    if identity == "n" or (not key and identity != "f"):
        raise UsageError(
            f"{name} has no primary key and no REPLICA IDENTITY FULL: its updates and deletes "
            "cannot be captured",
            hint=f"Add a primary key, or run ALTER TABLE {name} REPLICA IDENTITY FULL.",
        )
    if not key:  # REPLICA IDENTITY FULL without a key: a row is its captured columns
        return tuple(captured)
    missing = [c for c in key if c not in captured]
    if missing:
        raise UsageError(
            f"the key of {name} ({', '.join(key)}) has columns that are not captured: "
            f"{', '.join(missing)}",
            hint=f"Add them to {SETTING}[{name!r}].",
        )
    return tuple(key)


def captured_table(name: str, state: TableState, allowed: Sequence[str]) -> CapturedTable:
    """What the change reader needs of a table the lake holds."""
    return CapturedTable(
        name=name,
        allowed=tuple(allowed),
        schema=state.schema,
        types={c.name: (c.type_oid, c.typmod) for c in state.columns},
        key=tuple(state.key),
    )


def captured_tables(
    tables: Mapping[str, TableState], allowed: Mapping[str, list[str]]
) -> dict[str, CapturedTable]:
    """Every table of the lake's state; a table no longer on the allow-list keeps its captured
    columns only (nothing new reaches the lake)."""
    return {
        name: captured_table(name, state, allowed.get(name, [c.name for c in state.columns]))
        for name, state in tables.items()
    }


def column_states(conn: Connection, name: str) -> list[ColumnState]:
    """Every column of a table now, with its type oid and typmod."""
    table = TableName.parse(name)
    rows = conn.execute(
        "SELECT a.attname, a.atttypid, a.atttypmod FROM pg_catalog.pg_attribute a "
        "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum",
        (table.schema, table.name),
    ).fetchall()
    return [ColumnState(name=str(r[0]), type_oid=int(r[1]), typmod=int(r[2])) for r in rows]


class arrow_type_resolver:  # noqa: N801 - used as a function that holds a connection
    """``resolve_type(type_oid, typmod, column)`` for columns added at the source: the Arrow
    type the whole-table reader gives that type. Opens its own connection when first needed
    (the change reader's is busy streaming); ``close()`` it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conn: Connection | None = None

    def __call__(self, type_oid: int, typmod: int, column: str) -> pa.DataType:
        if self._conn is None:
            self._conn = connect(self.settings)
            self._conn.autocommit = True
        row = self._conn.execute("SELECT format_type(%s, %s)", (type_oid, typmod)).fetchone()
        shown = str(row[0]) if row else f"oid {type_oid}"
        found = column_of(self._conn, "an added column", column, type_oid, typmod, shown)
        if found.type_name == "numeric" and found.precision is None:
            raise DataError(
                f"the added column {column!r} is numeric without precision and scale",
                hint=f"Declare it numeric(p,s), or leave it out of {SETTING}.",
            )
        return found.arrow_type

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
