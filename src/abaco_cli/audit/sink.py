"""The optional PostgreSQL copy of the audit log, shared by every VM: the anchor of the trail.

The local log stays the record of truth for what a host did; the copy is written after each
local append, with a short timeout, and a failure is the caller's to log, never a reason to fail
the command. Nothing is ever copied from the local log later: a record the sink missed stays
missing (`missing_in_sink`), so that a record forged into the local log is never laundered into
the anchor.

The table is owned by a role of its own; the role abaco writes with gets INSERT and SELECT only
(`abaco db init --audit --audit-writer ROLE`), so it can neither delete nor change rows nor
disable the triggers: one refuses UPDATE, DELETE and TRUNCATE, the other keeps the first record
received for each host and sequence number and refuses a different one with the same number.
`abaco audit verify --against-sink` compares the local chain with the sink's rows of this host.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import psycopg
from psycopg import sql

from abaco_cli.errors import UsageError


def _names(table: str) -> dict[str, sql.Composable]:
    schema, name = table.split(".", 1)
    return {
        "schema": sql.Identifier(schema),
        "table": sql.Identifier(schema, name),
        "run_index": sql.Identifier(f"{name}_run_id_idx"),
        "time_index": sql.Identifier(f"{name}_recorded_at_idx"),
        "host_seq_index": sql.Identifier(f"{name}_host_seq_idx"),
        "event_check": sql.Identifier(f"{name}_event_check"),
        "function": sql.Identifier(schema, f"{name}_append_only"),
        "insert_function": sql.Identifier(schema, f"{name}_one_record_per_seq"),
    }


def _functions(table: str) -> list[str]:
    """The names of the DDL's trigger functions (in the table's schema, no arguments)."""
    name = table.split(".", 1)[1]
    return [f"{name}_append_only", f"{name}_one_record_per_seq"]


def audit_ddl(table: str) -> sql.Composed:
    """The DDL of sql/audit.sql for the configured ``schema.table``."""
    text = files("abaco_cli.audit").joinpath("sql/audit.sql").read_text(encoding="utf-8")
    return sql.SQL(text).format(**_names(table))


def grants(table: str, writer: str) -> sql.Composed:
    """What the writing role may do: reach the schema, INSERT and SELECT; nothing else."""
    names = _names(table)
    role = sql.Identifier(writer)
    return sql.SQL(
        "REVOKE ALL ON {table} FROM PUBLIC;\n"
        "REVOKE ALL ON {table} FROM {role};\n"
        "REVOKE ALL ON SCHEMA {schema} FROM {role};\n"
        "GRANT USAGE ON SCHEMA {schema} TO {role};\n"
        "GRANT SELECT, INSERT ON {table} TO {role};"
    ).format(table=names["table"], schema=names["schema"], role=role)


def table_exists(conn: psycopg.Connection[Any], table: str) -> bool:
    return table_owner(conn, table) is not None


def table_owner(conn: psycopg.Connection[Any], table: str) -> str | None:
    """The role owning ``schema.table``, None when there is no such table. Read from the
    catalogs, which anyone may read (to_regclass fails on a schema one may not use)."""
    schema, name = table.split(".", 1)
    row = conn.execute(
        "SELECT pg_get_userbyid(c.relowner) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return str(row[0]) if row else None


def _owners(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    """(what, owning role) of the schema, the table and its trigger functions that exist."""
    schema = table.split(".", 1)[0]
    found: list[tuple[str, str]] = []
    row = conn.execute(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s", (schema,)
    ).fetchone()
    if row is not None:
        found.append((f"schema {schema}", str(row[0])))
    owner = table_owner(conn, table)
    if owner is not None:
        found.append((f"table {table}", owner))
    for function in _functions(table):
        row = conn.execute(
            "SELECT pg_get_userbyid(p.proowner) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = %s AND p.proname = %s AND p.pronargs = 0",
            (schema, function),
        ).fetchone()
        if row is not None:
            found.append((f"function {schema}.{function}()", str(row[0])))
    return found


def _member(conn: psycopg.Connection[Any], role: str, of: str) -> bool:
    """Is ``role`` ``of`` itself, or a member of it (it may then act as ``of``)?"""
    row = conn.execute("SELECT pg_has_role(%s, %s, 'MEMBER')", (role, of)).fetchone()
    return bool(row and row[0])


def _check_writer_role(conn: psycopg.Connection[Any], writer: str) -> None:
    row = conn.execute(
        "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s", (writer,)
    ).fetchone()
    if row is None:
        raise UsageError(
            f"--audit-writer: role {writer!r} does not exist in this database server",
            hint="Create it first: CREATE ROLE ... LOGIN PASSWORD '...' (docs/audit.md).",
        )
    superuser, createrole = bool(row[0]), bool(row[1])
    if superuser or createrole:
        what = "a superuser" if superuser else "allowed to CREATEROLE (it can join any role)"
        raise UsageError(
            f"--audit-writer: role {writer!r} is {what}: it could disable the audit table's "
            "triggers and delete rows",
            hint="Give abaco a plain LOGIN role of its own (docs/audit.md).",
        )


def _check_ownership(conn: psycopg.Connection[Any], table: str, writer: str | None) -> None:
    """The one running this must own an existing table (the DDL alters it); the writer must own
    (or be a member of the owner of) neither the table, its schema, nor its functions."""
    row = conn.execute("SELECT current_user").fetchone()
    me = str(row[0]) if row else ""
    owner = table_owner(conn, table)
    if owner is not None and not _member(conn, me, owner):
        raise UsageError(
            f"the audit table {table} is owned by role {owner!r}, not by {me!r} who runs this",
            hint=f"Run `abaco db init --audit` as {owner!r}, or have a superuser move the "
            "schema, table and functions to the owner role (docs/audit.md).",
        )
    if writer is None:
        return
    owned = [what for what, role in _owners(conn, table) if _member(conn, writer, role)]
    if owned:
        raise UsageError(
            f"--audit-writer: role {writer!r} owns (or is a member of the owner of) "
            f"{', '.join(owned)}: it could disable the append-only trigger and delete rows",
            hint="Run `abaco db init --audit` as another role, the owner, and give the "
            "writer no membership in it (docs/audit.md).",
        )


def init_audit_table(
    conn: psycopg.Connection[Any], table: str, *, writer: str | None = None
) -> bool:
    """Create the audit table (and its triggers) if missing, owned by the role that runs this;
    with ``writer``, grant that role INSERT and SELECT only, after checking that it neither is
    nor can become the owner. True when created; UsageError (nothing changed) when refused."""
    try:
        if writer is not None:
            _check_writer_role(conn, writer)
        _check_ownership(conn, table, None)
        existed = table_exists(conn, table)
        conn.execute(audit_ddl(table))
        if writer is not None:
            conn.execute(grants(table, writer))
            _check_ownership(conn, table, writer)
    except UsageError:
        conn.rollback()
        raise
    conn.commit()
    return not existed


def host_of(record: dict[str, Any]) -> str:
    actor = record.get("actor") or {}
    return str(record.get("host_id") or actor.get("host", ""))


def _row(record: dict[str, Any]) -> tuple[Any, ...]:
    return (
        host_of(record),
        record["seq"],
        record["time"],
        record["event"],
        record["run_id"],
        record["command"],
        record.get("exit_code"),
        record["prev_hash"],
        record["hash"],
        json.dumps(record),
    )


def send(conninfo: str, table: str, record: dict[str, Any], *, timeout_seconds: int) -> None:
    """Insert one record (the same record again is skipped); raises psycopg.Error when it cannot,
    also when the sink already holds a different record with this host and seq."""
    insert = sql.SQL(
        "INSERT INTO {table} (host, seq, recorded_at, event, run_id, command, exit_code,"
        " prev_hash, hash, record) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (host, hash) DO NOTHING"
    ).format(table=_names(table)["table"])
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
        conn.execute(insert, _row(record))


@dataclass(frozen=True)
class SinkRow:
    seq: int
    hash: str
    event: str
    run_id: str
    host: str = ""
    prev_hash: str = ""


def rows_of_host(
    conninfo: str, table: str, host: str, *, from_seq: int, timeout_seconds: int
) -> Iterator[SinkRow]:
    """The sink's rows of ``host`` from sequence number ``from_seq`` on, by seq and, for one
    seq, in the order the sink received them (the first is the one that counts)."""
    query = sql.SQL(
        "SELECT seq, hash, event, run_id, prev_hash FROM {table}"
        " WHERE host = %s AND seq >= %s ORDER BY seq, id"
    ).format(table=_names(table)["table"])
    with psycopg.connect(
        conninfo,
        application_name="abaco-audit",
        connect_timeout=timeout_seconds,
        prepare_threshold=None,
    ) as conn:
        conn.execute(f"SET statement_timeout = {int(timeout_seconds) * 1000 * 10}")
        for seq, digest, event, run_id, prev_hash in conn.execute(query, (host, from_seq)):
            yield SinkRow(int(seq), str(digest), str(event), str(run_id), host, str(prev_hash))


def records_of_runs(
    conninfo: str, table: str, run_ids: list[str], *, events: tuple[str, ...], timeout_seconds: int
) -> list[dict[str, Any]]:
    """The sink's records (verbatim) of these runs with these events, from any host, in the
    order the sink received them."""
    if not run_ids:
        return []
    query = sql.SQL(
        "SELECT record FROM {table} WHERE run_id = ANY(%s) AND event = ANY(%s) ORDER BY id"
    ).format(table=_names(table)["table"])
    with psycopg.connect(
        conninfo,
        application_name="abaco-audit",
        connect_timeout=timeout_seconds,
        prepare_threshold=None,
    ) as conn:
        conn.execute(f"SET statement_timeout = {int(timeout_seconds) * 1000 * 10}")
        return [
            row[0]
            for row in conn.execute(query, (run_ids, list(events)))
            if isinstance(row[0], dict)
        ]
