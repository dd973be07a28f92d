"""The source side of the lake: the publication, the logical replication slot, the advisory lock.

The slot (plugin pgoutput) is only a cursor: ``lake sync`` peeks its changes through SQL and
advances it itself once a batch is committed to the store (services/lake/sync.py). It is created on
a ``replication=database`` connection with ``(SNAPSHOT 'export')``, so the initial load reads
the tables in exactly the state the slot starts after: nothing is read twice, nothing missed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from abaco_cli.db.classify import classify
from abaco_cli.db.connect import Connection
from abaco_cli.db.source import conninfo_of
from abaco_cli.errors import AbacoError, LockedError, SourceQueryError, UsageError
from abaco_cli.lake.lsn import format_lsn, parse_lsn
from abaco_cli.redaction import Redactor
from abaco_cli.settings import Settings

log = logging.getLogger("abaco.lake")

SLOT_RUNBOOK = "runbooks/lake-slot-lost.md"
# The advisory lock a sync holds on the source for the whole run: two VMs (or a VM and a
# laptop) never consume one slot at once. Keyed by the slot's name.
_LOCK_NAMESPACE = "abaco_lake:"


class SlotLostError(AbacoError):
    """The slot is gone or its WAL was removed: the lake can no longer follow the source."""

    default_hint = (
        "The changes since the last sync are gone from the source: run `abaco lake resync` "
        f"(reloads every table in a new slot); see {SLOT_RUNBOOK}."
    )


@dataclass(frozen=True)
class SlotInfo:
    """One row of pg_replication_slots, LSNs as ints."""

    name: str
    plugin: str | None
    database: str | None
    confirmed_flush: int | None
    restart: int | None
    wal_status: str | None  # reserved | extended | unreserved | lost
    safe_wal_size: int | None  # bytes left before the slot's WAL may be removed; None: no limit
    active: bool

    @property
    def lost(self) -> bool:
        return self.wal_status == "lost" or self.confirmed_flush is None


def _lsn_or_none(value: object) -> int | None:
    return None if value is None else parse_lsn(str(value))


def slot_info(conn: Connection, name: str) -> SlotInfo | None:
    """The slot ``name`` of this server, or None."""
    row = conn.execute(
        "SELECT slot_name, plugin, database, confirmed_flush_lsn::text, restart_lsn::text, "
        "wal_status, safe_wal_size, active FROM pg_catalog.pg_replication_slots "
        "WHERE slot_name = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    return SlotInfo(
        name=str(row[0]),
        plugin=None if row[1] is None else str(row[1]),
        database=None if row[2] is None else str(row[2]),
        confirmed_flush=_lsn_or_none(row[3]),
        restart=_lsn_or_none(row[4]),
        wal_status=None if row[5] is None else str(row[5]),
        safe_wal_size=None if row[6] is None else int(row[6]),
        active=bool(row[7]),
    )


def flush_lsn(conn: Connection) -> int:
    """The WAL flushed now: logical decoding never reads past it, so a batch stops here."""
    row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
    assert row is not None
    return parse_lsn(str(row[0]))


def check_logical(conn: Connection) -> None:
    """wal_level must be logical (Supabase's is); otherwise say how to change it."""
    row = conn.execute("SELECT current_setting('wal_level')").fetchone()
    level = str(row[0]) if row else "?"
    if level != "logical":
        raise UsageError(
            f"the source's wal_level is {level}: change data capture needs logical",
            hint="Set wal_level = logical (postgresql.conf or ALTER SYSTEM) and restart the "
            "server; Supabase, RDS (rds.logical_replication) and Cloud SQL "
            "(cloudsql.logical_decoding) have a setting for it.",
        )


def advance_slot(conn: Connection, name: str, lsn: int) -> None:
    """Move the slot's confirmed position to ``lsn`` (never backwards: PostgreSQL ignores a
    position behind the slot's)."""
    conn.execute(
        "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (name, format_lsn(lsn))
    ).fetchone()


def drop_slot(conn: Connection, name: str) -> bool:
    """Drop the slot if it exists; False when there was none. An active slot (a sync running
    on it now) is refused by the server: LockedError."""
    if slot_info(conn, name) is None:
        return False
    try:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
    except psycopg.errors.ObjectInUse:
        raise LockedError(
            f"the slot {name} is in use by another session (a sync running now)",
            hint="Wait for it to finish (`abaco lake status`), then run this again.",
        ) from None
    return True


# ------------------------------------------------------------------------------ the publication


@dataclass(frozen=True)
class PublishedTable:
    """A table of the publication: its name and, when the server can filter them, the columns
    it publishes (PostgreSQL 15's column lists; None: every column, filtered by abaco)."""

    name: str
    columns: tuple[str, ...] | None


def _table_clause(table: PublishedTable) -> sql.Composable:
    schema, _, name = table.name.partition(".")
    ident = sql.Identifier(schema, name)
    if table.columns is None:
        return ident
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
    return sql.SQL("{} ({})").format(ident, columns)


def published_tables(conn: Connection, name: str) -> set[str] | None:
    """The tables the publication lists (None: there is no such publication)."""
    exists = conn.execute("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = %s", (name,))
    if exists.fetchone() is None:
        return None
    rows = conn.execute(
        "SELECT schemaname, tablename FROM pg_catalog.pg_publication_tables WHERE pubname = %s",
        (name,),
    ).fetchall()
    return {f"{r[0]}.{r[1]}" for r in rows}


def set_publication(conn: Connection, name: str, tables: Sequence[PublishedTable]) -> None:
    """Create the publication for exactly these tables, or make an existing one list exactly
    them. A publication that already does (a DBA may create it, so that abaco's role need not
    own the tables) is left as it is."""
    clause = sql.SQL(", ").join(_table_clause(t) for t in tables)
    listed = published_tables(conn, name)
    whole = all(t.columns is None for t in tables)
    try:
        if listed is None:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(name), clause)
            )
        elif not whole or listed != {t.name for t in tables}:
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(sql.Identifier(name), clause)
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        wanted = ", ".join(t.name for t in tables)
        raise SourceQueryError(
            f"the source role may not create or change the publication {name}: "
            f"{(exc.diag.message_primary or '').strip()}",
            hint=f"Have the tables' owner run CREATE PUBLICATION {name} FOR TABLE {wanted}; "
            "abaco then uses it as it is (docs/lake.md, 'Roles').",
        ) from None


def drop_publication(conn: Connection, name: str) -> bool:
    exists = conn.execute("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = %s", (name,))
    if exists.fetchone() is None:
        return False
    conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(name)))
    return True


# ------------------------------------------------------------------------------------ the slot


@dataclass(frozen=True)
class CreatedSlot:
    """A new slot and the snapshot its changes start after (valid while the context is open)."""

    name: str
    consistent_point: int
    snapshot: str


@contextmanager
def create_slot(settings: Settings, name: str) -> Iterator[CreatedSlot]:
    """Create the logical slot ``name`` (pgoutput) on a replication connection and export its
    snapshot; the snapshot stays importable (``SET TRANSACTION SNAPSHOT``) until the block ends.
    Creation waits for the transactions running at that moment: lock_timeout and
    statement_timeout bound the wait."""
    redactor = Redactor.from_settings(settings)
    try:
        conn: psycopg.Connection[Any] = psycopg.connect(
            conninfo_of(settings),
            autocommit=True,
            replication="database",
            cursor_factory=psycopg.ClientCursor,  # the walsender takes the simple protocol only
            application_name=f"{settings.application_name}-lake",
            connect_timeout=settings.connect_timeout_seconds,
        )
    except psycopg.Error as exc:
        raise classify(exc, redactor=redactor, during="connecting for replication") from None
    try:
        timeout = max(settings.statement_timeout_seconds, 60)
        conn.execute(f"SET statement_timeout = '{int(timeout)}s'")
        conn.execute(f"SET lock_timeout = '{int(timeout)}s'")
        try:
            row = conn.execute(
                sql.SQL("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')").format(
                    sql.Identifier(name)
                )
            ).fetchone()
        except psycopg.errors.DuplicateObject:
            raise UsageError(
                f"a replication slot named {name} already exists on the source",
                hint="Another lake uses it, or an earlier init was interrupted: "
                "`abaco lake status` says which; `abaco lake drop --yes` removes it.",
            ) from None
        except psycopg.errors.InsufficientPrivilege:
            raise SourceQueryError(
                "the source role may not create a replication slot (it needs REPLICATION)",
                hint="Use a role with REPLICATION (Supabase's postgres role has it), or "
                "ALTER ROLE ... REPLICATION.",
            ) from None
        assert row is not None
        yield CreatedSlot(str(row[0]), parse_lsn(str(row[1])), str(row[2]))
    except psycopg.Error as exc:
        raise classify(exc, redactor=redactor, during="creating the replication slot") from None
    finally:
        conn.close()


# ------------------------------------------------------------------------- one consumer at once


@contextmanager
def source_lock(conn: Connection, slot: str) -> Iterator[None]:
    """A session advisory lock on the source for the slot: one consumer at a time, whichever
    machine it runs on. LockedError (exit 4) when another session holds it."""
    key = _LOCK_NAMESPACE + slot
    row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
    if not row or not row[0]:
        raise LockedError(
            f"another lake consumer holds the source's lock on the slot {slot}",
            hint="Only one `abaco lake` command may consume the slot at a time; the next timer "
            "run catches up.",
        )
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):  # the connection gone: so is the lock
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
