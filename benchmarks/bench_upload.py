"""Benchmark uploads: `abaco upload` of a whole `export all` to a folder, to S3 (moto's server)
and to GCS (gcp-storage-emulator), and the time `--dest` adds to `export all`.

    python benchmarks/bench_upload.py [--loans 250000] [--repeat 2] [--dsn DSN]

Starts a private PostgreSQL (or uses --dsn, which is re-seeded!), seeds the portfolio with
`abaco db seed`, runs ANALYZE, exports every dataset as of 2025-12-31 (CSV and Parquet, the
KPI trend), then times, each as its own process, best of --repeat runs:

- `abaco upload --dest D` of that run into an empty destination D: a folder, a bucket on moto's
  S3 server and a bucket on gcp-storage-emulator (both started here, on local ports: the
  emulators are single Python processes, so these figures measure abaco's path and the
  emulator, not a cloud store);
- `abaco export all` without a destination and with `--dest <an empty folder>`: the difference
  is what uploading adds to an export.

Files and bytes are those the upload sent (its --json result); throughput is bytes / wall time
of the whole process (start-up, listing, manifests and pointers included).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from gcp_storage_emulator.server import create_server
from moto.server import ThreadedMotoServer

from abaco_cli.pgcluster import LocalCluster
from bench_dpd import AS_OF, abaco, run_timed, seed_portfolio

BUCKET = "abaco-bench"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKE0BENCH0KEY00",
    "AWS_SECRET_ACCESS_KEY": "fake-bench-secret-0000000000000000000000",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def stores() -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """moto's S3 and the GCS emulator on local ports: the environment each needs."""
    for name in ("werkzeug", "gcp_storage_emulator", ""):
        logging.getLogger(name).setLevel(logging.ERROR)  # no line per request
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    s3_endpoint = f"http://127.0.0.1:{moto_port}"
    boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
    ).create_bucket(Bucket=BUCKET)
    gcs_port = free_port()
    gcs = create_server("127.0.0.1", gcs_port, in_memory=True, default_bucket=BUCKET)
    gcs.start()
    try:
        yield (
            {
                "ABACO_UPLOAD__S3_ENDPOINT_URL": s3_endpoint,
                "ABACO_UPLOAD__S3_REGION": "us-east-1",
                **FAKE_AWS,
            },
            {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{gcs_port}"},
        )
    finally:
        gcs.stop()
        moto.stop()


def upload_once(dest: str, env: dict[str, str]) -> tuple[float, int, int]:
    """One `abaco upload --json` into ``dest``: seconds, files sent, bytes sent."""
    started = time.perf_counter()
    done = subprocess.run(
        abaco("upload", "--dest", dest, "--json"), env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"upload to {dest} failed ({done.returncode}): {done.stderr.strip()}")
    result = json.loads(done.stdout)
    runs = [r for d in result["datasets"] for r in d["runs"]]
    return seconds, sum(r["files"] for r in runs), sum(r["bytes"] for r in runs)


def bench(dsn: str, loans: int, repeat: int, workdir: Path) -> None:
    tree = workdir / "rt"
    env = {**os.environ, "ABACO_DATABASE_URL": dsn, "ABACO_RUNTIME_DIR": str(tree)}
    env = {k: v for k, v in env.items() if not k.startswith(("AWS_", "ABACO_UPLOAD"))}
    seed = seed_portfolio(dsn, loans, env)
    print(f"{loans:,} loans seeded in {seed.seconds:.1f} s; as-of {AS_OF}", flush=True)

    plain = [run_timed(abaco("export", "all", "--as-of", AS_OF), env, subprocess.DEVNULL)]
    size = sum(p.stat().st_size for p in (tree / "exports").rglob("*") if p.is_file())
    print(f"export all: {size / 2**20:.1f} MiB in the runtime tree", flush=True)

    with stores() as (s3_env, gcs_env):
        targets = {
            "folder": (lambda: str(workdir / f"landing-{uuid.uuid4().hex[:8]}"), {}),
            "S3 (moto)": (lambda: f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", s3_env),
            "GCS (emulator)": (lambda: f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}", gcs_env),
        }
        print(
            "abaco upload of that export all into an empty destination (best of "
            f"{repeat}; upload.parallel_files 4):",
            flush=True,
        )
        for label, (fresh, extra) in targets.items():
            timings = [upload_once(fresh(), {**env, **extra}) for _ in range(repeat)]
            seconds, sent, sent_bytes = min(timings)
            print(
                f"  {label:<15} {sent:4d} files  {sent_bytes / 2**20:7.1f} MiB  {seconds:6.2f} s"
                f"  {sent_bytes / 2**20 / seconds:7.1f} MiB/s",
                flush=True,
            )

    with_dest, inside = [], []
    for _ in range(repeat):
        plain.append(run_timed(abaco("export", "all", "--as-of", AS_OF), env, subprocess.DEVNULL))
        landing = workdir / f"export-landing-{uuid.uuid4().hex[:8]}"
        argv = abaco("export", "all", "--as-of", AS_OF, "--dest", str(landing), "--json")
        output = workdir / "export.json"
        with open(output, "wb") as sink:
            with_dest.append(run_timed(argv, env, sink.fileno()))
        upload = json.loads(output.read_text())["upload"]
        inside.append(sum(r["seconds"] for r in upload["runs"]))
    base = min(t.seconds for t in plain)
    uploading = min(t.seconds for t in with_dest)
    print(
        f"export all: {base:.2f} s without a destination (peak "
        f"{max(t.peak_mb for t in plain):.0f} MB), {uploading:.2f} s with --dest <an empty "
        f"folder> (peak {max(t.peak_mb for t in with_dest):.0f} MB): uploading adds "
        f"{uploading - base:.2f} s ({(uploading - base) / base:.0%}); the upload's own runs "
        f"took {min(inside):.2f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loans", type=int, default=250_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs per figure; the best counts")
    parser.add_argument("--dsn", help="use this database instead of a private server")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="abaco-bench-") as tmp:
        if args.dsn:
            bench(args.dsn, args.loans, args.repeat, Path(tmp))
            return
        with LocalCluster(settings={"shared_buffers": "512MB", "work_mem": "64MB"}) as cluster:
            bench(cluster.dsn, args.loans, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
