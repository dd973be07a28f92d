"""Benchmark the data-quality checks (`abaco db check --data`, and the start of every export).

    python benchmarks/bench_quality.py --loans 1000000 [--loans 250000] [--repeat 3]

Starts a private PostgreSQL (or uses --dsn, whose source tables are emptied and re-seeded),
seeds each portfolio size with `abaco db seed`, then times ``run_checks`` as an export runs
it: inside one REPEATABLE READ READ ONLY transaction with the export's session settings
(``snapshot``), best of --repeat runs, then the time of each SQL file and the rows its checks
found. The synthetic book is clean, so every check scans and finds nothing: the cost an export
pays on a healthy source.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from abaco_cli.db.connect import connect, snapshot
from abaco_cli.pgcluster import LocalCluster
from abaco_cli.quality import QualityReport, run_checks
from abaco_cli.settings import Settings


def abaco(*args: str) -> list[str]:
    return [sys.executable, "-m", "abaco_cli", *args]


def database_name(dsn: str) -> str:
    """The database a DSN names: `db seed --replace` wants it confirmed (the data goes)."""
    return str(conninfo_to_dict(dsn).get("dbname") or os.environ.get("PGDATABASE", ""))


def seed(dsn: str, loans: int, *, replace: bool) -> float:
    env = {**os.environ, "ABACO_DATABASE_URL": dsn}
    argv = abaco("db", "seed", "--loans", str(loans), "--seed", "7")
    if replace:  # the tables hold data: say which database may be emptied
        argv += ["--replace", "--yes-destroy-data", database_name(dsn)]
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def timed_checks(settings: Settings, *, full: bool) -> tuple[float, QualityReport]:
    """One run of every check inside a read-only snapshot; wall time includes BEGIN/COMMIT."""
    conn = connect(settings)
    try:
        started = time.perf_counter()
        with snapshot(conn, settings):
            report = run_checks(conn, settings, full=full)
        return time.perf_counter() - started, report
    finally:
        conn.close()


def bench_size(dsn: str, loans: int, repeat: int, *, replace: bool) -> None:
    seconds = seed(dsn, loans, replace=replace)
    settings = Settings(database_url=SecretStr(dsn))
    runs = [timed_checks(settings, full=False) for _ in range(repeat)]
    best, report = min(runs, key=lambda run: run[0])
    full, _ = timed_checks(settings, full=True)
    print(
        f"{loans:>10,} loans | seed {seconds:6.1f} s | run_checks best of {repeat}: "
        f"{best:6.2f} s (all runs: {', '.join(f'{s:.2f}' for s, _ in runs)}) | "
        f"full (--json) {full:6.2f} s | outcome {report.outcome}",
        flush=True,
    )
    queries: dict[str, list[str]] = {}
    for check in report.checks:  # the checks of one SQL file share its time
        note = f" (unique index {check.guaranteed_by})" if check.guaranteed_by else ""
        queries.setdefault(check.query, []).append(f"{check.name} {check.count:,}{note}")
    for query, listed in queries.items():
        seconds = report.check(listed[0].split()[0]).seconds
        print(f"    sql/{query}.sql {seconds:6.3f} s: {', '.join(listed)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loans", type=int, action="append", help="portfolio size (repeatable)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best counts")
    parser.add_argument(
        "--dsn", help="use this database instead of a private server (it will be re-seeded!)"
    )
    args = parser.parse_args()
    sizes = args.loans or [1_000_000]
    if args.dsn:
        env = {**os.environ, "ABACO_DATABASE_URL": args.dsn}
        subprocess.run(abaco("db", "init"), env=env, check=True, stderr=subprocess.DEVNULL)
        for size in sizes:
            bench_size(args.dsn, size, args.repeat, replace=True)
        return
    with LocalCluster(settings={"shared_buffers": "512MB", "work_mem": "64MB"}) as cluster:
        env = {**os.environ, "ABACO_DATABASE_URL": cluster.dsn}
        subprocess.run(abaco("db", "init"), env=env, check=True, stderr=subprocess.DEVNULL)
        print(f"machine: {os.cpu_count()} cores; PostgreSQL private cluster", flush=True)
        for number, size in enumerate(sizes):
            bench_size(cluster.dsn, size, args.repeat, replace=number > 0)


if __name__ == "__main__":
    main()
