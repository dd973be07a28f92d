"""Benchmark whole-table reads into zstd Parquet: abaco export table beside DuckDB, ConnectorX,
pandas and psql's COPY, in one run on one private server.

    python benchmarks/bench_table.py [--rows 5000000] [--repeat 3] [--duel 5] [--dsn DSN]

Starts a private PostgreSQL (or uses --dsn, where it creates and drops the schema bench_table)
and creates bench_table.payments: --rows rows, 14 columns (bigint, text x2, timestamptz, date,
numeric(18,2) x4, integer, char(3), a text of four values, boolean, a text with NULLs and
empty strings). Then times each tool as its own process, --repeat times, and prints the median
wall time, the peak resident memory of that process (wait4), its own CPU time (user + system:
the server's is not in it) and the types it wrote:

- psql: COPY ... TO STDOUT (FORMAT csv), then (FORMAT binary), into /dev/null;
- DuckDB, its postgres scanner extension loaded from its PyPI wheel
  (duckdb-extension-postgres-scanner, the same version as duckdb): COPY (SELECT * FROM the
  attached table) TO a zstd Parquet file;
- ConnectorX, 2 partitions on the key, into Arrow, then a zstd Parquet file;
- pandas.read_sql in chunks of 100,000 rows over a psycopg connection, each appended to one zstd
  Parquet file;
- abaco's reader and Parquet writer alone (``copy_table_to_parquet`` in a bare Python
  process: the command line's start-up, lock, manifest and audit left out);
- abaco export table bench_table.payments --format parquet (the allow-list set for it).

abaco's modules are byte-compiled first, as an installed abaco has them. Last, abaco and
DuckDB alternate --duel times each (abaco, DuckDB, abaco, ...): the ratio of their medians is
the comparison (this machine varies by about 15 % from run to run: up to 1.05 is a tie).
Targets on a 2-core machine: no slower than DuckDB, under 300 MB.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from abaco_cli.pgcluster import LocalCluster

SCHEMA = "bench_table"
TABLE = f"{SCHEMA}.payments"
COLUMNS = (
    "payment_id", "loan_id", "customer_id", "paid_at", "paid_on", "principal_paid",
    "interest_paid", "fee_paid", "tax_paid", "installment_no", "currency", "channel",
    "is_reversal", "reference",
)  # fmt: skip
CREATE = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {TABLE} (
    payment_id      bigint PRIMARY KEY,
    loan_id         text NOT NULL,
    customer_id     text NOT NULL,
    paid_at         timestamptz NOT NULL,
    paid_on         date NOT NULL,
    principal_paid  numeric(18,2) NOT NULL,
    interest_paid   numeric(18,2) NOT NULL,
    fee_paid        numeric(18,2),
    tax_paid        numeric(18,2),
    installment_no  integer NOT NULL,
    currency        char(3) NOT NULL,
    channel         text,
    is_reversal     boolean NOT NULL,
    reference       text
);
INSERT INTO {TABLE}
SELECT g,
       'L' || lpad((g / 3)::text, 9, '0'),
       'C' || lpad((g / 180)::text, 7, '0'),
       timestamptz '2019-01-01 00:00:00+00' + g * interval '37 seconds',
       date '2019-01-01' + (g / 2500)::int,
       round((random() * 50000)::numeric, 2),
       round((random() * 2500)::numeric, 2),
       CASE WHEN g % 7 = 0 THEN NULL ELSE round((random() * 150)::numeric, 2) END,
       CASE WHEN g % 11 = 0 THEN NULL ELSE round((random() * 20)::numeric, 2) END,
       1 + g % 12,
       CASE WHEN g % 10 = 0 THEN 'SVC' ELSE 'USD' END,
       (ARRAY['transfer', 'cash', 'card', 'check'])[1 + g % 4],
       g % 97 = 0,
       CASE WHEN g % 5 = 0 THEN NULL WHEN g % 5 = 1 THEN '' ELSE md5(g::text) END
FROM generate_series(1, %(rows)s) AS g;
"""

DUCKDB = """
import os, sys, duckdb, duckdb_extension_postgres_scanner as wheel
extension = os.path.join(os.path.dirname(wheel.__file__), "extensions",
                         "v" + duckdb.__version__, "postgres_scanner.duckdb_extension")
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute("LOAD '" + extension + "'")
con.execute("ATTACH '" + sys.argv[1] + "' AS pg (TYPE postgres, READ_ONLY)")
con.execute("COPY (SELECT * FROM pg.%s) TO '" + sys.argv[2] + "' "
            "(FORMAT parquet, COMPRESSION zstd)")
"""
CONNECTORX = """
import sys, connectorx, pyarrow.parquet as pq
table = connectorx.read_sql(sys.argv[1], "SELECT * FROM %s", partition_on="payment_id",
                            partition_num=2, return_type="arrow")
pq.write_table(table, sys.argv[2], compression="zstd")
"""
LIBRARY = """
import sys
from pydantic import SecretStr
from abaco_cli.db.table_parquet import copy_table_to_parquet
from abaco_cli.settings import Settings
settings = Settings(database_url=SecretStr(sys.argv[1]), runtime_dir=sys.argv[2] + ".runtime")
copy_table_to_parquet(settings, "%s", sys.argv[2])
"""
PANDAS = """
import sys, warnings, pandas, psycopg, pyarrow as pa, pyarrow.parquet as pq
warnings.simplefilter("ignore")  # pandas only knows SQLAlchemy and sqlite3 connections
writer = None
with psycopg.connect(sys.argv[1]) as conn:
    for frame in pandas.read_sql("SELECT * FROM %s", conn, chunksize=100_000):
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if writer is None:
            schema = table.schema
            writer = pq.ParquetWriter(sys.argv[2], schema, compression="zstd")
        writer.write_table(table.cast(schema))
writer.close()
"""


@dataclass
class Timing:
    seconds: float
    peak_mb: float
    cpu_seconds: float


def run_timed(argv: list[str], env: dict[str, str]) -> Timing:
    """Run one process to completion: wall time, its peak resident memory, its CPU time."""
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{argv[:3]} failed: {err.strip()[-2000:]}")
    if proc.stderr:
        proc.stderr.close()
    return Timing(elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


@dataclass
class Tool:
    name: str
    argv: list[str]
    output: Path | None  # the Parquet file it writes (removed before each run)
    env: dict[str, str]


def median(timings: list[Timing]) -> Timing:
    return Timing(
        statistics.median(t.seconds for t in timings),
        max(t.peak_mb for t in timings),
        statistics.median(t.cpu_seconds for t in timings),
    )


def types_of(path: Path | None) -> str:
    """The Arrow types a tool wrote for the table's kinds of column."""
    if path is None or not path.exists():
        return "(no file)"
    schema = pq.read_schema(path)
    shown = []
    for column, kind in (
        ("principal_paid", "numeric(18,2)"),
        ("paid_at", "timestamptz"),
        ("paid_on", "date"),
        ("installment_no", "int4"),
    ):
        shown.append(f"{kind}: {schema.field(column).type}")
    return "; ".join(shown)


def latest_parquet(folder: Path) -> Path | None:
    found = sorted(folder.glob("exports/tables/*/as_of_date=*/*.parquet"))
    return found[-1] if found else None


def tools(dsn: str, workdir: Path) -> list[Tool]:
    params = conninfo_to_dict(dsn)
    keyvalue = make_conninfo(**{k: str(v) for k, v in params.items()})
    url = (  # ConnectorX wants a URL; libpq's host=/socket/folder becomes ?host=
        f"postgresql://{params.get('user', '')}@localhost:{params.get('port', 5432)}/"
        f"{params.get('dbname', '')}?host={params.get('host', 'localhost')}"
    )
    env = {**os.environ}
    found: list[Tool] = []
    psql = shutil.which("psql")
    if psql:
        for fmt in ("csv", "binary"):
            copy = [psql, keyvalue, "-X", "-q", "-c", f"COPY {TABLE} TO STDOUT (FORMAT {fmt})"]
            found.append(Tool(f"psql COPY ({fmt}) > /dev/null", copy, None, env))
    scripts = (
        ("DuckDB postgres scanner", DUCKDB, keyvalue, "duckdb"),
        ("abaco's reader alone (copy_table_to_parquet)", LIBRARY, keyvalue, "library"),
        ("ConnectorX (2 partitions)", CONNECTORX, url, "connectorx"),
        ("pandas read_sql (chunks)", PANDAS, keyvalue, "pandas"),
    )
    for name, script, source, stem in scripts:
        output = workdir / f"{stem}.parquet"
        argv = [sys.executable, "-c", script % TABLE, source, str(output)]
        found.append(Tool(name, argv, output, env))
    abaco_env = {
        **env,
        "ABACO_DATABASE_URL": dsn,
        "ABACO_RUNTIME_DIR": str(workdir / "runtime"),
        "ABACO_EXTRACT__TABLES": json.dumps({TABLE: list(COLUMNS)}),
        "ABACO_METRICS__ENABLED": "false",
    }
    abaco = [sys.executable, "-m", "abaco_cli", "export", "table", TABLE, "--format", "parquet"]
    found.append(Tool("abaco export table", abaco, None, abaco_env))
    return found


def run_tool(tool: Tool) -> Timing:
    if tool.output is not None:
        tool.output.unlink(missing_ok=True)
    return run_timed(tool.argv, tool.env)


def create_table(dsn: str, rows: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(CREATE.replace("%(rows)s", str(int(rows))))
        conn.execute(f"VACUUM ANALYZE {TABLE}")
        # read it once, so that every tool finds it in the page cache
        with conn.cursor().copy(f"COPY {TABLE} TO STDOUT (FORMAT binary)") as copy:
            for _ in copy:
                pass
    return time.perf_counter() - started


def bench(dsn: str, rows: int, repeat: int, duel: int, workdir: Path) -> None:
    print(f"creating {TABLE}: {rows:,} rows, {len(COLUMNS)} columns ...", flush=True)
    print(f"  {create_table(dsn, rows):.1f} s", flush=True)
    found = tools(dsn, workdir)
    results: dict[str, Timing] = {}
    outputs: dict[str, str] = {}
    for tool in found:
        timings = [run_tool(tool) for _ in range(repeat)]
        results[tool.name] = median(timings)
        output = tool.output or (
            latest_parquet(workdir / "runtime") if tool.name.startswith("abaco") else None
        )
        outputs[tool.name] = types_of(output) if output is not None else "(into /dev/null)"
        runs = ", ".join(f"{t.seconds:.2f}" for t in timings)
        print(f"  {tool.name}: {runs} s", flush=True)
    by_name = {t.name: t for t in found}
    pair = ("abaco export table", "DuckDB postgres scanner")
    duel_runs: dict[str, list[Timing]] = {name: [] for name in pair}
    for _ in range(duel):
        for name in pair:
            duel_runs[name].append(run_tool(by_name[name]))
    abaco_s = statistics.median(t.seconds for t in duel_runs[pair[0]])
    duck_s = statistics.median(t.seconds for t in duel_runs[pair[1]])
    duck = results[pair[1]].seconds
    print()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load {load:.2f}; {rows:,} rows; medians of {repeat}")
    print()
    print("| tool | wall time | peak memory | its own CPU | types written | vs DuckDB |")
    print("|---|---|---|---|---|---|")
    for tool in found:
        t = results[tool.name]
        # a child counts the memory of the process it was forked from (this one) until exec
        peak = f"{t.peak_mb:.0f} MB" if t.peak_mb > own + 1 else f"under {own:.0f} MB"
        print(
            f"| {tool.name} | {t.seconds:.2f} s | {peak} | {t.cpu_seconds:.2f} s | "
            f"{outputs[tool.name]} | {t.seconds / duck:.2f}x |"
        )
    print()
    print(
        f"abaco and DuckDB alternating, {duel} runs each: abaco "
        + ", ".join(f"{t.seconds:.2f}" for t in duel_runs[pair[0]])
        + f" (median {abaco_s:.2f} s, peak {max(t.peak_mb for t in duel_runs[pair[0]]):.0f} MB)"
        + "; DuckDB "
        + ", ".join(f"{t.seconds:.2f}" for t in duel_runs[pair[1]])
        + f" (median {duck_s:.2f} s, peak {max(t.peak_mb for t in duel_runs[pair[1]]):.0f} MB)"
    )
    ratio = abaco_s / duck_s
    verdict = "faster" if ratio < 0.95 else "a tie" if ratio <= 1.05 else "slower"
    print(f"ratio abaco / DuckDB: {ratio:.2f} ({verdict}; up to 1.05 is a tie on this machine)")


def compile_abaco() -> None:
    """abaco as it is installed: its modules byte-compiled, as pip does when it installs the
    wheel. An editable install under PYTHONDONTWRITEBYTECODE=1 (this machine's environment)
    would compile all of its modules again in every run: 0.05 s that no user pays."""
    import abaco_cli

    compileall.compile_dir(Path(abaco_cli.__file__).parent, quiet=1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=textwrap.dedent(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool (median)")
    parser.add_argument("--duel", type=int, default=5, help="alternating runs of abaco, DuckDB")
    parser.add_argument(
        "--dsn", help=f"use this database instead of a private server ({SCHEMA} is replaced)"
    )
    args = parser.parse_args()
    compile_abaco()
    with tempfile.TemporaryDirectory(prefix="abaco-bench-table-") as tmp:
        workdir = Path(tmp)
        if args.dsn:
            bench(args.dsn, args.rows, args.repeat, args.duel, workdir)
            return
        settings = {"shared_buffers": "512MB", "work_mem": "64MB"}
        with LocalCluster(settings=settings) as cluster:
            print(f"private PostgreSQL cluster ({cluster.dsn})", flush=True)
            bench(cluster.dsn, args.rows, args.repeat, args.duel, workdir)


if __name__ == "__main__":
    main()
