"""Sharing one snapshot between connections, and the session settings of an export.

The first connection of a date opens the read-only REPEATABLE READ transaction (``snapshot``
in connect.py) and exports its snapshot; the others import it as the first statement of their
own transactions, so every query of the date sees the same instant of the source.
"""

from __future__ import annotations

from psycopg import sql

from abaco_cli.db.connect import Connection


def export_snapshot(conn: Connection) -> str:
    """``pg_export_snapshot()`` inside the open transaction: the id other connections import."""
    row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    if row is None:  # pragma: no cover - the function always returns a row
        raise RuntimeError("pg_export_snapshot() returned nothing")
    return str(row[0])


def import_snapshot(conn: Connection, snapshot_id: str) -> None:
    """Make the open transaction on ``conn`` see the exported snapshot ``snapshot_id``."""
    conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))


def ping(conn: Connection, timeout_seconds: int) -> None:
    """``SELECT 1`` within a statement timeout (the health check's probe)."""
    with conn.transaction():
        conn.execute(f"SET LOCAL statement_timeout = {int(timeout_seconds) * 1000}")
        conn.execute("SELECT 1").fetchone()
