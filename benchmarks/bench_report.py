"""Benchmark `abaco report`: the report of a date from the files `export all` wrote.

    python benchmarks/bench_report.py [--loans 250000] [--loans 1000000] [--repeat 3] [--dsn DSN]

Starts a private PostgreSQL (or uses --dsn, which is re-seeded!), and for each size seeds the
portfolio with `abaco db seed`, runs ANALYZE, exports every dataset as of 2025-12-31 (the KPI
trend included), then times `abaco report --as-of 2025-12-31` as its own process, best of
--repeat runs: wall time and peak resident memory. The report reads summary tables only, so its
time should not grow with the book. Target on a 2-core machine: under 10 s at 250,000 loans.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

from abaco_cli.pgcluster import LocalCluster
from bench_dpd import AS_OF, Timing, abaco, run_timed, seed_portfolio


def bench_size(dsn: str, loans: int, repeat: int, workdir: Path) -> tuple[int, Timing, int]:
    tree = workdir / f"rt-{loans}"
    env = {**os.environ, "ABACO_DATABASE_URL": dsn, "ABACO_RUNTIME_DIR": str(tree)}
    seeded = seed_portfolio(dsn, loans, env)
    print(f"{loans:,} loans seeded in {seeded.seconds:.1f} s", flush=True)
    exported = run_timed(abaco("export", "all", "--as-of", AS_OF), env, subprocess.DEVNULL)
    print(f"  export all: {exported.seconds:.1f} s", flush=True)
    runs = [
        run_timed(abaco("report", "--as-of", AS_OF), env, subprocess.DEVNULL) for _ in range(repeat)
    ]
    print("  abaco report: " + ", ".join(f"{t.seconds:.2f}" for t in runs) + " s", flush=True)
    best = min(runs, key=lambda t: t.seconds)
    folder = tree / "exports" / "reports"
    size = sum(p.stat().st_size for p in folder.glob(f"report_{AS_OF}*") if p.is_file())
    return loans, Timing(best.seconds, max(t.peak_mb for t in runs)), size


def bench(dsn: str, sizes: list[int], repeat: int, workdir: Path) -> None:
    rows = [bench_size(dsn, loans, repeat, workdir) for loans in sizes]
    print()
    print("| portfolio | `abaco report` (best) | peak memory | report files |")
    print("|---|---|---|---|")
    for loans, timing, size in rows:
        print(
            f"| {loans:,} loans | {timing.seconds:.2f} s | {timing.peak_mb:.0f} MB | "
            f"{size / 2**20:.1f} MiB |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loans", type=int, action="append", help="default: 250,000")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best counts")
    parser.add_argument("--dsn", help="use this database instead of a private server")
    args = parser.parse_args()
    sizes = args.loans or [250_000]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="abaco-bench-report-") as tmp:
        if args.dsn:
            bench(args.dsn, sizes, args.repeat, Path(tmp))
            return
        with LocalCluster(settings={"shared_buffers": "512MB", "work_mem": "64MB"}) as cluster:
            bench(cluster.dsn, sizes, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
