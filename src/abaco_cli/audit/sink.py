"""The optional PostgreSQL copy of the audit log, shared by every VM.

The local log stays the record of truth: the copy is written after the local append, with a
short timeout, and a failure is the caller's to log, never a reason to fail the command.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import psycopg
from psycopg import sql


def _names(table: str) -> dict[str, sql.Composable]:
    schema, name = table.split(".", 1)
    return {
        "schema": sql.Identifier(schema),
        "table": sql.Identifier(schema, name),
        "run_index": sql.Identifier(f"{name}_run_id_idx"),
        "time_index": sql.Identifier(f"{name}_recorded_at_idx"),
        "function": sql.Identifier(schema, f"{name}_append_only"),
    }


def audit_ddl(table: str) -> sql.Composed:
    """The DDL of sql/audit.sql for the configured ``schema.table``."""
    text = files("abaco_cli.audit").joinpath("sql/audit.sql").read_text(encoding="utf-8")
    return sql.SQL(text).format(**_names(table))


def table_exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def init_audit_table(conn: psycopg.Connection[Any], table: str) -> bool:
    """Create the audit table (and its append-only trigger) if missing; True when created."""
    existed = table_exists(conn, table)
    conn.execute(audit_ddl(table))
    conn.commit()
    return not existed


def send(conninfo: str, table: str, record: dict[str, Any], *, timeout_seconds: int) -> None:
    """Insert one record (idempotent per host and hash); raises psycopg.Error when it cannot."""
    query = sql.SQL(
        "INSERT INTO {table} (host, seq, recorded_at, event, run_id, command, exit_code,"
        " prev_hash, hash, record) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (host, hash) DO NOTHING"
    ).format(table=_names(table)["table"])
    actor = record.get("actor") or {}
    with (
        psycopg.connect(
            conninfo,
            application_name="abaco-audit",
            connect_timeout=timeout_seconds,
            prepare_threshold=None,
        ) as conn,
        conn.transaction(),
    ):
        conn.execute(f"SET LOCAL statement_timeout = {int(timeout_seconds) * 1000}")
        conn.execute(
            query,
            (
                str(actor.get("host", "")),
                record["seq"],
                record["time"],
                record["event"],
                record["run_id"],
                record["command"],
                record.get("exit_code"),
                record["prev_hash"],
                record["hash"],
                json.dumps(record),
            ),
        )
