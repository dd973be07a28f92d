"""The private throwaway PostgreSQL cluster (abaco_cli.pgcluster)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from abaco_cli import pgcluster
from abaco_cli.errors import AbacoError, ServerToolsMissingError
from abaco_cli.pgcluster import LocalCluster, find_server_bindir


def _server_tools_installed() -> bool:
    try:
        find_server_bindir()
    except ServerToolsMissingError:
        return False
    return True


needs_server = pytest.mark.skipif(
    not _server_tools_installed(), reason="PostgreSQL server programs are not installed"
)


def _postmaster_pid(cluster: LocalCluster) -> int:
    return int((cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    """True once `pid` no longer exists (or is a zombie waiting for init to reap it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        if "\nState:\tZ" in status:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    if not _server_tools_installed():
        pytest.skip("PostgreSQL server programs are not installed")
    with LocalCluster() as pg:
        yield pg


@pytest.fixture
def recorded_mkdtemp(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record the folders LocalCluster creates with tempfile.mkdtemp."""
    made: list[Path] = []
    real = tempfile.mkdtemp

    def spy(*args: object, **kwargs: object) -> str:
        folder = Path(real(*args, **kwargs))  # type: ignore[call-overload]
        if folder.name.startswith("abaco-pg-"):
            made.append(folder)
        return str(folder)

    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    return made


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder under /tmp that the unprivileged server user can enter (pytest's tmp_path is 0700
    and owned by root when the suite runs as root)."""
    folder = Path(tempfile.mkdtemp(prefix="abaco-test-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# -- a running cluster ------------------------------------------------------------------------


def test_connects_and_runs_a_query(cluster: LocalCluster) -> None:
    with psycopg.connect(cluster.dsn) as conn:
        row = conn.execute("select 1, current_database(), current_user").fetchone()
    assert row == (1, "abaco", "abaco")


def test_dsn_for_other_database(cluster: LocalCluster) -> None:
    assert cluster.dsn.startswith("postgresql://abaco@/abaco?host=")
    assert f"port={cluster.port}" in cluster.dsn
    with psycopg.connect(cluster.dsn_for("postgres")) as conn:
        assert conn.execute("select current_database()").fetchone() == ("postgres",)


def test_socket_folder_is_private(cluster: LocalCluster) -> None:
    info = cluster.socket_dir.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert (cluster.socket_dir / f".s.PGSQL.{cluster.port}").is_socket()
    if os.geteuid() == 0:
        assert info.st_uid != 0  # handed to the unprivileged user that runs the server


def test_listens_on_no_tcp_address(cluster: LocalCluster) -> None:
    with psycopg.connect(cluster.dsn) as conn:
        assert conn.execute("show listen_addresses").fetchone() == ("",)
        assert conn.execute("show fsync").fetchone() == ("off",)


# -- lifecycle --------------------------------------------------------------------------------


@needs_server
def test_stop_stops_the_server_and_removes_the_folder() -> None:
    pg = LocalCluster(database="other").start()
    folder, pid = pg.base_dir, _postmaster_pid(pg)
    with psycopg.connect(pg.dsn) as conn:
        assert conn.execute("select current_database()").fetchone() == ("other",)
    pg.stop()
    assert not folder.exists()
    assert _wait_gone(pid)
    pg.stop()  # a second stop is harmless


@needs_server
def test_keep_leaves_the_server_running() -> None:
    with LocalCluster(keep=True) as pg:
        folder, pid = pg.base_dir, _postmaster_pid(pg)
    try:
        assert folder.is_dir()
        with psycopg.connect(pg.dsn) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        pg.destroy()
    assert not folder.exists()
    assert _wait_gone(pid)


@needs_server
def test_server_failure_is_reported_with_the_log_and_cleaned_up(
    recorded_mkdtemp: list[Path],
) -> None:
    pg = LocalCluster(settings={"shared_buffers": "plenty"})
    with pytest.raises(AbacoError, match="did not start") as caught:
        pg.start()
    assert "shared_buffers" in caught.value.hint  # the server log's last lines
    assert len(recorded_mkdtemp) == 1
    assert not recorded_mkdtemp[0].exists()


def test_initdb_failure_is_reported_and_cleaned_up(
    shared_tmp: Path, recorded_mkdtemp: list[Path]
) -> None:
    bindir = shared_tmp / "bin"
    bindir.mkdir()
    bindir.chmod(0o755)  # the server's user must reach the fake programs whatever the umask
    for name in ("initdb", "pg_ctl", "postgres"):
        (bindir / name).write_text("#!/bin/sh\necho 'initdb: boom' >&2\nexit 1\n")
        (bindir / name).chmod(0o755)
    with pytest.raises(AbacoError, match="initdb") as caught:
        LocalCluster(bindir=bindir).start()
    assert "boom" in caught.value.hint
    assert len(recorded_mkdtemp) == 1
    assert not recorded_mkdtemp[0].exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the folder to another user")
def test_root_refuses_a_folder_the_server_user_cannot_reach(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)  # owned by root: the server's user cannot enter it
    with pytest.raises(AbacoError, match="cannot reach"):
        LocalCluster(base_dir=tmp_path / "pg", bindir=Path("/nonexistent")).start()
    assert not (tmp_path / "pg").exists()


@needs_server
def test_given_base_dir_is_used_and_removed(shared_tmp: Path) -> None:
    folder = shared_tmp / "cluster"
    with LocalCluster(base_dir=folder) as pg:
        assert pg.base_dir == folder
        assert (folder / "data" / "PG_VERSION").exists()
    assert not folder.exists()


# -- finding the server programs --------------------------------------------------------------


def _no_search_locations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty_path = tmp_path / "empty-path"
    empty_path.mkdir()
    monkeypatch.setenv("PATH", str(empty_path))
    monkeypatch.setattr(pgcluster, "_FALLBACK_PATTERNS", ())


def test_find_server_bindir_honours_abaco_pg_bindir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bindir = tmp_path / "pg" / "bin"
    bindir.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres"):
        (bindir / name).write_text("#!/bin/sh\n")
        (bindir / name).chmod(0o755)
    monkeypatch.setenv("ABACO_PG_BINDIR", str(bindir))
    assert find_server_bindir() == bindir


def test_find_server_bindir_raises_when_nothing_is_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_search_locations(monkeypatch, tmp_path)
    monkeypatch.setenv("ABACO_PG_BINDIR", str(tmp_path))  # an empty folder
    with pytest.raises(ServerToolsMissingError, match="were not found") as caught:
        find_server_bindir()
    assert "ABACO_PG_BINDIR" in caught.value.hint
    assert "apt-get install postgresql" in caught.value.hint

    monkeypatch.delenv("ABACO_PG_BINDIR")
    with pytest.raises(ServerToolsMissingError) as caught:
        find_server_bindir()
    assert caught.value.hint == ServerToolsMissingError.default_hint


def test_find_server_bindir_searches_versioned_folders_highest_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_search_locations(monkeypatch, tmp_path)
    monkeypatch.delenv("ABACO_PG_BINDIR", raising=False)
    for version in ("9.6", "15", "16"):
        bindir = tmp_path / "lib" / version / "bin"
        bindir.mkdir(parents=True)
        for name in ("initdb", "pg_ctl", "postgres"):
            (bindir / name).write_text("#!/bin/sh\n")
            (bindir / name).chmod(0o755)
    monkeypatch.setattr(pgcluster, "_FALLBACK_PATTERNS", (str(tmp_path / "lib" / "*" / "bin"),))
    assert find_server_bindir() == tmp_path / "lib" / "16" / "bin"
