"""Benchmark `abaco export dpd`: wall time and peak memory beside psql's COPY of the loans table.

    python benchmarks/bench_dpd.py --loans 250000 [--loans 1000000] [--formats csv,parquet]

Starts a private PostgreSQL (or uses --dsn), seeds each portfolio size with `abaco db seed`,
then times, in the same run: `psql -c "COPY (SELECT * FROM core_banking.loans) TO STDOUT"`
into /dev/null, and `abaco export dpd` as a separate process (peak RSS from wait4).
Targets on a 2-core machine: 250,000 loans under 10 s and under 300 MB; the same peak memory at
1,000,000 loans.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from abaco_cli.pgcluster import LocalCluster

AS_OF = "2025-12-31"


@dataclass
class Timing:
    seconds: float
    peak_mb: float


def run_timed(argv: list[str], env: dict[str, str], stdout: int | None = None) -> Timing:
    """Run a process to completion; its wall time and peak resident memory (MB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err.strip()}")
    return Timing(elapsed, usage.ru_maxrss / 1024)


def database_name(dsn: str) -> str:
    """The database a DSN names: `db seed --replace` wants it confirmed (the data goes)."""
    return str(conninfo_to_dict(dsn).get("dbname") or os.environ.get("PGDATABASE", ""))


def abaco(*args: str) -> list[str]:
    return [sys.executable, "-m", "abaco_cli", *args]


def seed_portfolio(dsn: str, loans: int, env: dict[str, str]) -> Timing:
    """`db init`, then `db seed` of ``loans`` loans (seed 7, replacing what is there), then
    ANALYZE: the book every export benchmark starts from; the seed's timing."""
    subprocess.run(abaco("db", "init"), env=env, check=True, stderr=subprocess.DEVNULL)
    argv = abaco("db", "seed", "--loans", str(loans), "--seed", "7", "--replace",
                 "--yes-destroy-data", database_name(dsn))  # fmt: skip
    timing = run_timed(argv, env, subprocess.DEVNULL)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return timing


def bench_size(loans: int, dsn: str, formats: str, workdir: Path) -> None:
    env = {**os.environ, "ABACO_DATABASE_URL": dsn, "ABACO_RUNTIME_DIR": str(workdir / "runtime")}
    seed = run_timed(
        abaco(
            "db",
            "seed",
            "--loans",
            str(loans),
            "--seed",
            "7",
            "--replace",
            "--yes-destroy-data",
            database_name(dsn),
        ),
        env,
        subprocess.DEVNULL,
    )
    psql = shutil.which("psql")
    copy = None
    if psql:
        query = "COPY (SELECT * FROM core_banking.loans) TO STDOUT"
        with open(os.devnull, "wb") as sink:
            copy = run_timed([psql, dsn, "-X", "-q", "-c", query], env, sink.fileno())
    export = run_timed(
        abaco("export", "dpd", "--as-of", AS_OF, "--format", formats), env, subprocess.DEVNULL
    )
    again = run_timed(
        abaco("export", "dpd", "--as-of", AS_OF, "--format", formats), env, subprocess.DEVNULL
    )
    best = min(export, again, key=lambda t: t.seconds)
    copy_text = f"{copy.seconds:6.2f} s" if copy else "  (no psql)"
    print(
        f"{loans:>10,} loans | seed {seed.seconds:6.1f} s | psql COPY loans {copy_text} | "
        f"abaco export dpd ({formats}) {best.seconds:6.2f} s, "
        f"peak {max(export.peak_mb, again.peak_mb):6.1f} MB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loans", type=int, action="append", help="portfolio size (repeatable)")
    parser.add_argument("--formats", default="csv,parquet")
    parser.add_argument(
        "--dsn", help="use this database instead of a private server (it will be re-seeded!)"
    )
    args = parser.parse_args()
    sizes = args.loans or [250_000]
    with tempfile.TemporaryDirectory(prefix="abaco-bench-") as tmp:
        workdir = Path(tmp)
        if args.dsn:
            dsn = args.dsn
            subprocess.run(
                abaco("db", "init"), env={**os.environ, "ABACO_DATABASE_URL": dsn}, check=True
            )
            for size in sizes:
                bench_size(size, dsn, args.formats, workdir)
            return
        with LocalCluster(settings={"shared_buffers": "512MB", "work_mem": "64MB"}) as cluster:
            env = {**os.environ, "ABACO_DATABASE_URL": cluster.dsn}
            subprocess.run(abaco("db", "init"), env=env, check=True, stderr=subprocess.DEVNULL)
            print(
                f"machine: {os.cpu_count()} cores; PostgreSQL private cluster; as-of {AS_OF}",
                flush=True,
            )
            for size in sizes:
                bench_size(size, cluster.dsn, args.formats, workdir)


if __name__ == "__main__":
    main()
