"""Shared by the lake's tests: the source's rows, the lake's rows, the change log replayed."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

Row = tuple[Any, ...]
KEYS = {
    "core_banking.customers": ("customer_id",),
    "core_banking.loans": ("loan_id",),
    "core_banking.payment_schedule": ("loan_id", "installment_no"),
    "core_banking.payments": ("payment_id",),
    "commercial.rate_card": ("rate_card_id",),
}
_slots = itertools.count(1)


def new_slot_name() -> str:
    return f"lake_t{os.getpid()}_{next(_slots)}"


def drop_slots(dsn: str) -> None:
    """Drop every slot of the database (a database with a slot cannot be dropped)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for (name,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
        ).fetchall():
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE slot_name = %s AND active_pid IS NOT NULL",
                (name,),
            )
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def _norm(value: Any) -> Any:
    if isinstance(value, Decimal):
        return value.normalize() if value == value else value
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def source_rows(dsn: str, table: str, columns: Sequence[str]) -> list[Row]:
    key = KEYS[table]
    cols = ", ".join(columns)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT {cols} FROM {table} ORDER BY {', '.join(key)}").fetchall()
    return [tuple(_norm(v) for v in row) for row in rows]


def _sorted(table: pa.Table, table_name: str, columns: Sequence[str]) -> list[Row]:
    key = KEYS[table_name]
    table = table.select(list(columns)).sort_by([(k, "ascending") for k in key])
    return [tuple(_norm(v) for v in row.values()) for row in table.to_pylist()]


def lake_rows(
    dest: Path, table: str, columns: Sequence[str], version: int | None = None
) -> list[Row]:
    from abaco_cli.lake.delta import LakeTable  # reads through DataFusion (no abort at exit)

    delta = LakeTable(str(dest / "lake" / "tables" / table), {})
    return _sorted(delta.read(version), table, columns)


def duckdb_rows(dest: Path, table: str, columns: Sequence[str]) -> list[Row]:
    import duckdb
    import duckdb_extension_delta as wheel  # the extension from its wheel: no download

    folder = Path(wheel.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{folder / 'delta.duckdb_extension'}'")
    path = dest / "lake" / "tables" / table
    result = con.execute(f"SELECT * FROM delta_scan('{path}')").arrow()
    return _sorted(pa.table(result), table, columns)


def manifests(dest: Path) -> list[dict[str, Any]]:
    folder = dest / "lake" / "_batches"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def replay_change_log(dest: Path, table: str, columns: Sequence[str]) -> list[Row]:
    """The table rebuilt from the change log alone (the files the manifests list), in
    (_commit_lsn, _seq) order: truncate empties, insert and update set, delete removes."""
    key = KEYS[table]
    files = [dest / f["name"] for m in manifests(dest) for f in m["files"] if f["table"] == table]
    pieces = [pq.read_table(f) for f in files]
    if not pieces:
        return []
    log = pa.concat_tables(pieces, promote_options="permissive")
    log = log.sort_by([("_commit_lsn", "ascending"), ("_seq", "ascending")])
    state: dict[Row, Row] = {}
    for change in log.to_pylist():
        op = change["_op"]
        ident = tuple(change[k] for k in key)
        if op == "truncate":
            state.clear()
        elif op == "delete":
            state.pop(ident, None)
        else:
            state[ident] = tuple(_norm(change.get(c)) for c in columns)
    return [state[k] for k in sorted(state)]


def run_cli(
    env: dict[str, str], *args: str, check: bool = False, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """A real `abaco` process (for kills and concurrency)."""
    done = subprocess.run(
        [sys.executable, "-m", "abaco_cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"abaco {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def lake_files(dest: Path) -> Iterator[Path]:
    yield from (p for p in (dest / "lake").rglob("*") if p.is_file())
