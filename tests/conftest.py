"""Suite-wide fixtures: a real PostgreSQL (our own throwaway server unless
ABACO_TEST_DATABASE_URL names one), a fresh database per test, settings and a CLI runner."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr
from typer.testing import CliRunner

from abaco_cli.cli.app import app
from abaco_cli.db.contract import init_contract
from abaco_cli.pgcluster import LocalCluster
from abaco_cli.settings import Settings, SourceTables

TEMPLATE = "abaco_test_template"
_counter = itertools.count(1)


class Server:
    """Where the test databases live: hands out DSNs per database name."""

    def __init__(self, base_dsn: str) -> None:
        self.base = conninfo_to_dict(base_dsn)

    def dsn_for(self, dbname: str) -> str:
        params: dict[str, Any] = {**self.base, "dbname": dbname}
        return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.dsn_for(str(self.base.get("dbname") or "postgres")), autocommit=True
        )

    def create_database(self, name: str, template: str | None = None) -> str:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            if template:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)
                    )
                )
            else:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """The CLI sets umask 027 for its process; keep in-process CLI runs from leaking it."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    external = os.environ.get("ABACO_TEST_DATABASE_URL")
    if external:
        yield Server(external)
        return
    with LocalCluster(database="postgres_admin") as cluster:
        yield Server(cluster.dsn)


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> str:
    dsn = pg_server.create_database(TEMPLATE)
    with psycopg.connect(dsn) as conn:
        init_contract(conn, SourceTables())
    return TEMPLATE


@pytest.fixture
def db_conninfo(pg_server: Server, template_db: str) -> Iterator[str]:
    """A fresh database that already has the source contract (default table names)."""
    name = f"abaco_test_{os.getpid()}_{next(_counter)}"
    dsn = pg_server.create_database(name, template=template_db)
    yield dsn
    pg_server.drop_database(name)


@pytest.fixture
def empty_db_conninfo(pg_server: Server) -> Iterator[str]:
    """A fresh database with nothing in it."""
    name = f"abaco_empty_{os.getpid()}_{next(_counter)}"
    dsn = pg_server.create_database(name)
    yield dsn
    pg_server.drop_database(name)


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    return tmp_path / "abaco_runtime"


@pytest.fixture
def settings(db_conninfo: str, runtime_dir: Path) -> Settings:
    return Settings(database_url=SecretStr(db_conninfo), runtime_dir=runtime_dir)


@pytest.fixture
def cli_env(
    db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    """Environment for CLI runs: the test database, the test runtime tree, no stray config."""
    for key in list(os.environ):
        if key.startswith("ABACO_") and key != "ABACO_TEST_DATABASE_URL":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    env = {
        "ABACO_DATABASE_URL": db_conninfo,
        "ABACO_RUNTIME_DIR": str(runtime_dir),
        "ABACO_LOCK_TIMEOUT_SECONDS": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def cli(cli_env: dict[str, str]) -> CliRunner:
    return CliRunner()


def read_parquet_export(path: Path) -> pa.Table:
    """Read one exported Parquet file as a query engine does: as_of_date from its Hive folder."""
    key = path.parent.name.partition("=")[0]
    dataset = ds.dataset(
        path,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([(key, pa.date32())]), flavor="hive"),
        partition_base_dir=str(path.parent.parent),
    )
    table = dataset.to_table()
    return table.select([key, *(name for name in table.column_names if name != key)])


def invoke(runner: CliRunner, *args: str) -> Any:
    """Run the real app in-process; stdout and stderr are kept apart."""
    return runner.invoke(app, list(args), catch_exceptions=False)


# ------------------------------------------------------------------- destinations (storage)
# For tests/test_storage.py and tests/test_upload.py: moto's S3 and gcp-storage-emulator on free
# local ports, each with the bucket CLOUD_BUCKET, once a session; cloud_env gives fake AWS
# credentials that must never show.

CLOUD_BUCKET = "abaco-storage-test"
FAKE_AWS_KEY_ID = "AKIAFAKE0UPLOAD00KEY"
FAKE_AWS_SECRET = "SECRETFAKE0upload0secret0never0shown000"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on a free local port, with CLOUD_BUCKET."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    admin = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="admin",
        aws_secret_access_key="admin",  # moto accepts any key
    )
    admin.create_bucket(Bucket=CLOUD_BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def moto_process_endpoint() -> Iterator[str]:
    """moto's S3 server in a process of its own, with CLOUD_BUCKET: for deltalake (delta-rs),
    which holds the GIL while it waits for S3, so an in-process server would never answer."""
    import subprocess
    import sys
    import time

    import boto3

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    admin = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="admin",
        aws_secret_access_key="admin",  # moto accepts any key
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            admin.create_bucket(Bucket=CLOUD_BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.2)
    yield endpoint
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """gcp-storage-emulator in this process on a free local port, with CLOUD_BUCKET."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=CLOUD_BUCKET)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def cloud_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake AWS credentials that must never be shown, and no other cloud configuration."""
    for key in list(os.environ):
        if key.startswith(("AWS_", "ABACO_UPLOAD", "GOOGLE_", "STORAGE_EMULATOR")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_AWS_SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
