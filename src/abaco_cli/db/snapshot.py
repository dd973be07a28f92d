"""Sharing one snapshot between connections, and the session settings of an export.

The first connection of a date opens the read-only REPEATABLE READ transaction (``snapshot``
in connect.py) and exports its snapshot; the others import it as the first statement of their
own transactions, so every query of the date sees the same instant of the source.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql

from abaco_cli.db.connect import Connection
from abaco_cli.errors import SourceQueryError


class SnapshotNotSharedError(SourceQueryError):
    """The first connection exported its snapshot but another could not import it: the
    connections do not each reach one session of one server (a transaction-mode pooler)."""

    default_hint = (
        "Use Supabase's session pooler (port 5432 on the same pooler host) or the direct "
        "connection db.<project-ref>.supabase.co:5432, never the transaction pooler on 6543 "
        "(docs/supabase.md); ABACO_PARALLEL_QUERIES=1 runs each date on one connection."
    )


def export_snapshot(conn: Connection) -> str:
    """``pg_export_snapshot()`` inside the open transaction: the id other connections import."""
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    if row is None:  # pragma: no cover - the function always returns a row
        raise RuntimeError("pg_export_snapshot() returned nothing")
    return str(row[0])


def import_snapshot(conn: Connection, snapshot_id: str) -> None:
    """Make the open transaction on ``conn`` see the exported snapshot ``snapshot_id``;
    SnapshotNotSharedError when the server refuses it (a lost connection stays a psycopg
    error, which a retry may cure)."""
    try:
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
    except psycopg.OperationalError:
        raise
    except psycopg.DatabaseError as exc:
        reason = (exc.diag.message_primary or str(exc)).strip()
        raise SnapshotNotSharedError(
            f"the source exported a snapshot but another connection could not import it "
            f"({reason}): this looks like a transaction-mode pooler (Supabase's Supavisor on "
            "port 6543), which does not give each connection a session of the same server"
        ) from None


def ping(conn: Connection, timeout_seconds: int) -> None:
    """``SELECT 1`` within a statement timeout (the health check's probe)."""
    with conn.transaction():
        conn.execute(f"SET LOCAL statement_timeout = {int(timeout_seconds) * 1000}")
        conn.execute("SELECT 1").fetchone()


def snapshot_time(conn: Connection) -> datetime:
    """The start of the open transaction (``now()``): the instant of the source it sees."""
    row = conn.execute("SELECT now()").fetchone()
    if row is None or not isinstance(row[0], datetime):  # pragma: no cover
        raise RuntimeError("now() returned no timestamp")
    return row[0]
