"""Benchmark `abaco lake`'s change capture: pgoutput decoding against what the server can serve.

    python benchmarks/bench_lake.py [--changes 1000000] [--transactions 1000] [--repeat 3]
                                    [--chunk 50000] [--profile]

Starts a private PostgreSQL (wal_level=logical), creates the source contract, a publication of
core_banking.payments and a pgoutput slot, then writes the workload: --changes changes in
--transactions transactions, each 70 % inserts, 25 % updates and 5 % deletes of payments (at
the defaults 700,000 inserts, 250,000 updates and 50,000 deletes: 1,002,001 pgoutput messages
with the Begin, Commit and Relation messages). The slot is only peeked, so every measurement
reads the same changes. Each figure is the median of --repeat runs, taken in turn ((a), (b), (c),
then again), so that each meets the machine in the same state:

- (a) the server's decoding alone: SELECT count(*) FROM pg_logical_slot_peek_binary_changes(...);
- (b) the floor, the changes decoded and delivered to a client: psql's
  COPY (SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes(...)) TO STDOUT
  (FORMAT binary) into a file (its bytes and seconds);
- (c) abaco's decoding alone: read_changes (lake/changes.py) into Arrow tables, every chunk
  consumed, in a child process of its own: its time from the call to the last chunk (the
  interpreter's start and imports left out), its ratio to the floor (target at most 2.0) and
  the child's peak resident memory (target under 500 MB);
- (d) the end-to-end `abaco lake sync` (change files, manifest, MERGE into Delta, state,
  advance) of --repeat lakes initialised before the workload (each its own slot: each syncs the
  same changes), and of one more whose batches are four times smaller: its time, the ratio to
  the floor (target at most 5.0) and peak memory (target under 500 MB, flat in the number of
  batches);
- then the initial load (`abaco lake init`) of a book of --load-loans loans (`abaco db seed`):
  time and peak memory.

--profile runs the decoding once more under cProfile (the consumer's thread) and prints the
functions that took the most time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from abaco_cli.db.contract import init_contract
from abaco_cli.pgcluster import LocalCluster
from abaco_cli.settings import SourceTables

TABLE = "core_banking.payments"
SLOT = PUBLICATION = "abaco_bench_lake"
LOANS = 1000


def peek(function: str = "pg_logical_slot_peek_binary_changes") -> str:
    return (
        f"{function}('{SLOT}', NULL, NULL, 'proto_version', '1', "
        f"'publication_names', '{PUBLICATION}')"
    )


# ---------------------------------------------------------------------------- the workload


def write_workload(
    dsn: str, changes: int, transactions: int, before_changes: Callable[[], None] | None = None
) -> tuple[int, int, int]:
    """The publication, the slot (and ``before_changes``: the lakes of (d)), then the
    transactions; (inserts, updates, deletes)."""
    per = max(1, changes // transactions)
    inserts = per * 70 // 100
    updates = per * 25 // 100
    deletes = per - inserts - updates
    with psycopg.connect(dsn, autocommit=True) as conn:
        init_contract(conn, SourceTables())
        conn.execute(f"TRUNCATE {TABLE}, core_banking.loans, core_banking.customers CASCADE")
        conn.execute("INSERT INTO core_banking.customers (customer_id) VALUES ('C1')")
        conn.execute(
            "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date, principal) "
            f"SELECT 'L' || g, 'C1', date '2024-01-01', 1000 FROM generate_series(1, {LOANS}) g"
        )
        conn.execute(f"CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE}")
        conn.execute(f"SELECT pg_create_logical_replication_slot('{SLOT}', 'pgoutput')")
        if before_changes is not None:
            before_changes()
        for number in range(transactions):
            first = number * inserts
            with conn.transaction():
                conn.execute(
                    f"INSERT INTO {TABLE} (payment_id, loan_id, paid_on, principal_paid, "
                    "interest_paid, fee_paid, currency) "
                    "SELECT 'P' || lpad(g::text, 9, '0'), 'L' || (1 + g %% %(loans)s), "
                    "date '2024-01-01' + (g %% 700)::int, (g %% 100000) / 100.0, "
                    "(g %% 777) / 10.0, 0, 'USD' "
                    "FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS g",
                    {"loans": LOANS, "first": first, "last": first + inserts - 1},
                )
                conn.execute(
                    f"UPDATE {TABLE} SET principal_paid = principal_paid + 1, "
                    "updated_at = now() WHERE payment_id BETWEEN %(a)s AND %(b)s",
                    {"a": f"P{first:09d}", "b": f"P{first + updates - 1:09d}"},
                )
                last = first + inserts - 1
                conn.execute(
                    f"DELETE FROM {TABLE} WHERE payment_id BETWEEN %(a)s AND %(b)s",
                    {"a": f"P{last - deletes + 1:09d}", "b": f"P{last:09d}"},
                )
    return inserts * transactions, updates * transactions, deletes * transactions


# ---------------------------------------------------------------------------- measurements


@dataclass
class Run:
    seconds: float
    peak_mb: float = 0.0
    detail: dict[str, Any] | None = None


def run_child(argv: list[str], env: dict[str, str] | None = None) -> Run:
    """One process to completion: wall time, peak resident memory, and its JSON line."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:4]} failed: {err.strip()[-3000:]}")
    if err.strip():
        print(err, file=sys.stderr, end="")
    try:
        detail = json.loads(out)  # a command's --json result (one object, indented)
    except ValueError:
        lines = [line for line in out.splitlines() if line.startswith("{")]
        detail = json.loads(lines[-1]) if lines else None
    return Run(elapsed, usage.ru_maxrss / 1024, detail)


def server_side(dsn: str) -> Run:
    started = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {peek()}").fetchone()
    return Run(time.perf_counter() - started, detail={"messages": row[0] if row else 0})


def floor(dsn: str, target: Path) -> Run:
    """psql's binary COPY of the peek into a file: the changes decoded and delivered."""
    psql = shutil.which("psql")
    if psql is None:
        raise SystemExit("psql is not installed: the floor is measured with it")
    keyvalue = make_conninfo(**{k: str(v) for k, v in conninfo_to_dict(dsn).items()})
    copy = f"COPY (SELECT lsn, xid, data FROM {peek()}) TO STDOUT (FORMAT binary)"
    started = time.perf_counter()
    with target.open("wb") as sink:
        subprocess.run([psql, keyvalue, "-X", "-q", "-c", copy], stdout=sink, check=True)
    elapsed = time.perf_counter() - started
    return Run(elapsed, detail={"bytes": target.stat().st_size})


def decoding(dsn: str, chunk: int, *, profile: bool = False) -> Run:
    argv = [sys.executable, __file__, "--decode-child", dsn, "--chunk", str(chunk)]
    return run_child([*argv, "--profile"] if profile else argv)


def decode_child(dsn: str, chunk: int, profile: bool) -> None:
    """In a process of its own: read_changes over the whole slot, every chunk consumed; prints
    one JSON line (seconds from the call to the last chunk, rows, chunks)."""
    import pyarrow as pa

    from abaco_cli.db.binary_copy import TableName, describe_columns
    from abaco_cli.lake.changes import CapturedTable, read_changes
    from abaco_cli.lake.lsn import parse_lsn

    with psycopg.connect(dsn, autocommit=True) as conn:
        name = TableName.parse(TABLE)
        row = conn.execute("SELECT %s::regclass::oid", (TABLE,)).fetchone()
        assert row is not None
        columns = describe_columns(conn, name, int(row[0]), None)
        schema = pa.schema([pa.field(c.name, c.arrow_type) for c in columns])
        types = {
            str(n): (int(t), int(m))
            for n, t, m in conn.execute(
                "SELECT attname, atttypid::int, atttypmod FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (TABLE,),
            ).fetchall()
        }
        captured = CapturedTable(TABLE, tuple(schema.names), schema, types, ("payment_id",))
        flushed = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
        assert flushed is not None

        def run() -> dict[str, Any]:
            started = time.perf_counter()
            changes = read_changes(
                conn,
                slot=SLOT,
                publication=PUBLICATION,
                upto_lsn=parse_lsn(flushed[0]),
                upto_nchanges=2**31 - 1,
                tables={TABLE: captured},
                resolve_type=lambda *args: pa.null(),
                chunk_changes=chunk,
            )
            rows = chunks = 0
            while True:
                try:
                    found = next(changes)
                except StopIteration as stop:
                    end = stop.value
                    break
                chunks += 1
                rows += sum(t.num_rows for t in found.tables.values())
            return {
                "seconds": time.perf_counter() - started,
                "rows": rows,
                "chunks": chunks,
                "transactions": end.transactions,
                "changes": {f"{t} {op}": n for (t, op), n in end.changes.items()},
            }

        if profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            result = profiler.runcall(run)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
        else:
            result = run()
    print(json.dumps(result))


@dataclass(frozen=True)
class LakeUnderTest:
    """One lake of (d): its own slot and folder, initialised before the workload, so that
    every one of them syncs the same changes."""

    name: str
    env: dict[str, str]
    batch_changes: int


def lake_env(dsn: str, workdir: Path, name: str, batch_changes: int) -> dict[str, str]:
    return {
        **os.environ,
        "ABACO_DATABASE_URL": dsn,
        "ABACO_RUNTIME_DIR": str(workdir / name / "runtime"),
        "ABACO_LAKE__DESTINATION": str(workdir / name / "lakehouse"),
        "ABACO_LAKE__SLOT": name,
        "ABACO_LAKE__PUBLICATION": "abaco_bench_e2e",
        "ABACO_LAKE__BATCH_CHANGES": str(batch_changes),
        "ABACO_LAKE__MAX_CHANGES": str(10**9),
        "ABACO_LAKE__MAX_SECONDS": str(10**6),
    }


def abaco(env: dict[str, str], *args: str) -> Run:
    return run_child([sys.executable, "-m", "abaco_cli", "--log-format", "json", *args], env)


def init_lakes(dsn: str, workdir: Path, repeat: int, batch_changes: int) -> list[LakeUnderTest]:
    """``repeat`` lakes of batches of ``batch_changes``, and one of batches four times smaller
    (four times as many batches: memory must not grow with them)."""
    lakes = [
        LakeUnderTest(f"e2e_{n}", lake_env(dsn, workdir, f"e2e_{n}", batch_changes), batch_changes)
        for n in range(repeat)
    ]
    small = max(1, batch_changes // 4)
    lakes.append(LakeUnderTest("e2e_small", lake_env(dsn, workdir, "e2e_small", small), small))
    for lake in lakes:
        abaco(lake.env, "lake", "init", "--tables", TABLE)
    return lakes


def end_to_end(lakes: list[LakeUnderTest], floor_seconds: float, messages: int) -> None:
    """(d) `abaco lake sync` end to end (change files, manifest, MERGE into Delta, state,
    advance), each lake once: its own figure (the sync's seconds, without the interpreter's
    start) and the whole process; target at most 5x the floor, memory under 500 MB and flat in
    the number of batches."""
    runs = []
    for lake in lakes:
        run = abaco(lake.env, "lake", "sync", "--json")
        detail = run.detail or {}
        runs.append((lake, run, detail))
        print(
            f"  (d) {lake.name}: {detail.get('changes', 0):,} changes in "
            f"{len(detail.get('batches', []))} batches, {detail.get('seconds', 0):.2f} s "
            f"(process {run.seconds:.2f} s), {run.peak_mb:.0f} MB",
            flush=True,
        )
    main_runs = [r for r in runs if r[0].name != "e2e_small"]
    seconds = statistics.median(d.get("seconds", float("nan")) for _, _, d in main_runs)
    process = statistics.median(r.seconds for _, r, _ in main_runs)
    changes = main_runs[0][2].get("changes", 0)
    batches = len(main_runs[0][2].get("batches", []))
    peak = max(r.peak_mb for _, r, _ in main_runs)
    small = runs[-1]
    print()
    print("| measure | time | per second | vs floor | peak memory |")
    print("|---|---|---|---|---|")
    print(
        f"| (d) `abaco lake sync` end to end ({changes:,} changes, {batches} batches of "
        f"{main_runs[0][0].batch_changes:,}) | {seconds:.2f} s | {changes / seconds:,.0f} "
        f"changes/s | {seconds / floor_seconds:.2f}x | {peak:.0f} MB |"
    )
    print(
        f"| (d) the same in {len(small[2].get('batches', []))} batches of "
        f"{small[0].batch_changes:,} | {small[2].get('seconds', 0):.2f} s | | "
        f"{small[2].get('seconds', 0) / floor_seconds:.2f}x | {small[1].peak_mb:.0f} MB |"
    )
    print()
    print(
        f"(d) as a whole process (interpreter start and imports included): {process:.2f} s; "
        f"target: end to end at most 5.0x the floor ({seconds / floor_seconds:.2f}x), peak "
        f"memory under 500 MB ({peak:.0f} MB) and flat in the number of batches "
        f"({small[1].peak_mb:.0f} MB with {len(small[2].get('batches', []))} batches)"
    )


def initial_load(dsn: str, workdir: Path, loans: int) -> None:
    """`abaco lake init` of a book of ``loans`` loans (db seed): time and peak memory."""
    if loans <= 0:
        return
    env = lake_env(dsn, workdir, "load", 100_000)
    print(f"\nseeding a book of {loans:,} loans for the initial load ...", flush=True)
    # --replace: the private cluster's own database (a LocalCluster's) may be emptied unasked
    seeded = abaco(env, "db", "seed", "--loans", str(loans), "--seed", "7", "--replace")
    print(f"  seeded in {seeded.seconds:.1f} s", flush=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
        rows = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in ("core_banking.loans", "core_banking.payment_schedule", TABLE)
        }
    load = abaco(env, "lake", "init", "--json")
    print()
    print("| initial load (`abaco lake init`, every contract table) | time | peak memory |")
    print("|---|---|---|")
    print(
        f"| {rows['core_banking.loans']:,} loans, {rows['core_banking.payment_schedule']:,} "
        f"installments, {rows[TABLE]:,} payments | {load.seconds:.1f} s | {load.peak_mb:.0f} MB |"
    )


# ------------------------------------------------------------------------------- the report


def bench(dsn: str, changes: int, transactions: int, repeat: int, chunk: int, workdir: Path,
          profile: bool, batch_changes: int, load_loans: int) -> None:  # fmt: skip
    print(f"writing the workload: {changes:,} changes in {transactions:,} transactions ...")
    started = time.perf_counter()
    lakes: list[LakeUnderTest] = []

    def make_lakes() -> None:
        lakes.extend(init_lakes(dsn, workdir, repeat, batch_changes))

    inserts, updates, deletes = write_workload(dsn, changes, transactions, make_lakes)
    print(
        f"  {inserts:,} inserts, {updates:,} updates, {deletes:,} deletes "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    # (a), (b) and (c) in turn, so that each repetition meets the machine in the same state
    servers: list[Run] = []
    floors: list[Run] = []
    decodes: list[Run] = []
    for number in range(repeat):
        servers.append(server_side(dsn))
        floors.append(floor(dsn, workdir / "floor.bin"))
        decodes.append(decoding(dsn, chunk))
        decoded = decodes[-1].detail["seconds"] if decodes[-1].detail else float("nan")
        print(
            f"  run {number + 1}: (a) {servers[-1].seconds:.2f} s, (b) {floors[-1].seconds:.2f} s,"
            f" (c) {decoded:.2f} s",
            flush=True,
        )
    messages = servers[0].detail["messages"] if servers[0].detail else 0
    server_s = statistics.median(r.seconds for r in servers)
    floor_s = statistics.median(r.seconds for r in floors)
    floor_bytes = floors[0].detail["bytes"] if floors[0].detail else 0
    decode_s = statistics.median(r.detail["seconds"] for r in decodes if r.detail)
    process_s = statistics.median(r.seconds for r in decodes)
    peak = max(r.peak_mb for r in decodes)
    detail = decodes[0].detail or {}
    print()
    load = os.getloadavg()[0]
    print(
        f"machine: {os.cpu_count()} cores, load {load:.2f}; {messages:,} pgoutput messages "
        f"({inserts:,} inserts, {updates:,} updates, {deletes:,} deletes in "
        f"{transactions:,} transactions); medians of {repeat}; chunks of {chunk:,}"
    )
    print()
    print("| measure | time | per second | vs floor | peak memory |")
    print("|---|---|---|---|---|")
    print(f"| (a) server-side decoding, count(*) | {server_s:.2f} s | "
          f"{messages / server_s:,.0f} msg/s | {server_s / floor_s:.2f}x | |")  # fmt: skip
    print(f"| (b) floor: psql binary COPY into a file ({floor_bytes / 1e6:,.0f} MB) | "
          f"{floor_s:.2f} s | {messages / floor_s:,.0f} msg/s | 1.00x | |")  # fmt: skip
    print(
        f"| (c) abaco decoding to Arrow ({detail.get('rows', 0):,} rows, "
        f"{detail.get('chunks', 0)} chunks) | {decode_s:.2f} s | "
        f"{detail.get('rows', 0) / decode_s:,.0f} changes/s | {decode_s / floor_s:.2f}x | "
        f"{peak:.0f} MB |"
    )
    print()
    print(
        f"(c) as a whole process (interpreter start and imports included): {process_s:.2f} s; "
        f"target: decoding at most 2.0x the floor ({decode_s / floor_s:.2f}x), peak memory "
        f"under 500 MB ({peak:.0f} MB)"
    )
    end_to_end(lakes, floor_s, messages)
    if profile:
        print("\nprofile of one decoding (the consumer's thread), on stderr:", flush=True)
        decoding(dsn, chunk, profile=True)
    initial_load(dsn, workdir, load_loans)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=textwrap.dedent(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measure (median)")
    parser.add_argument("--chunk", type=int, default=50_000, help="read_changes chunk_changes")
    parser.add_argument("--profile", action="store_true", help="profile one decoding")
    parser.add_argument(
        "--batch-changes", type=int, default=100_000, help="lake.batch_changes of (d)"
    )
    parser.add_argument(
        "--load-loans", type=int, default=1_000_000, help="the initial load's book (0: none)"
    )
    parser.add_argument("--decode-child", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.decode_child:
        decode_child(args.decode_child, args.chunk, args.profile)
        return
    transactions = max(1, min(args.transactions, args.changes))
    with (
        tempfile.TemporaryDirectory(prefix="abaco-bench-lake-") as tmp,
        LocalCluster() as cluster,
    ):
        print(f"private PostgreSQL cluster ({cluster.dsn})", flush=True)
        bench(cluster.dsn, args.changes, transactions, args.repeat, args.chunk, Path(tmp),
              args.profile, args.batch_changes, args.load_loans)  # fmt: skip


if __name__ == "__main__":
    main()
