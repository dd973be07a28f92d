"""A private, throwaway PostgreSQL cluster for `abaco demo` and the test suite.

The cluster lives in one folder (mode 0700) holding the data directory, the server log and
the unix socket; the server listens on no TCP address at all. PostgreSQL refuses to run as
root, so when the caller is root the folder is handed to an unprivileged user and the server
programs run as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import psycopg
from psycopg import sql

from abaco_cli.errors import AbacoError, ServerToolsMissingError

_SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
# Searched after $ABACO_PG_BINDIR, PATH and `pg_config --bindir`; highest version first.
_FALLBACK_PATTERNS: tuple[str, ...] = (
    "/usr/lib/postgresql/*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
)
_FAST_SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_connections": "50",
    # logical decoding for `abaco lake` (pgoutput through the SQL functions), as on Supabase
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
}
# The comment on the database a LocalCluster creates: `db seed --replace` may empty it unasked.
DEMO_DATABASE_COMMENT = "abaco LocalCluster: a throwaway database"
# What the server programs inherit of the caller's environment: nothing else (no password, no
# ABACO_* settings, no cloud credentials) reaches /proc/<pid>/environ of the server.
_KEPT_ENVIRONMENT = ("PATH", "TZ", "TMPDIR")
_MAX_SOCKET_PATH = 103  # sun_path is 108 bytes on Linux, 104 on macOS, including the NUL
_TIMEOUT_SECONDS = 120
_LOG_TAIL_LINES = 15


def _has_server_programs(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in _SERVER_PROGRAMS)


def _version_key(folder: str) -> tuple[int, ...]:
    """`/usr/lib/postgresql/15/bin` -> (15,); `.../postgresql@9.6/bin` -> (9, 6)."""
    name = Path(folder).parent.name.rpartition("@")[2]
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (-1,)


def _candidate_dirs() -> list[Path]:
    found: list[Path] = []
    if override := os.environ.get("ABACO_PG_BINDIR"):
        found.append(Path(override))
    if initdb := shutil.which("initdb"):
        found += [Path(initdb).parent, Path(initdb).resolve().parent]
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            if out.stdout.strip():
                found.append(Path(out.stdout.strip()))
    for pattern in _FALLBACK_PATTERNS:
        found += [Path(p) for p in sorted(glob.glob(pattern), key=_version_key, reverse=True)]
    return found


def find_server_bindir() -> Path:
    """Return the folder holding PostgreSQL's `initdb`, `pg_ctl` and `postgres`."""
    for folder in _candidate_dirs():
        if _has_server_programs(folder):
            return folder
    message = "PostgreSQL's server programs (initdb, pg_ctl) were not found"
    if override := os.environ.get("ABACO_PG_BINDIR"):
        raise ServerToolsMissingError(
            message,
            hint=f"ABACO_PG_BINDIR={override} does not contain initdb, pg_ctl and postgres. "
            + ServerToolsMissingError.default_hint,
        )
    raise ServerToolsMissingError(message)


def _free_port() -> int:
    """A number for the socket file name; the socket folder is private, so any number works."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
    except OSError:
        return 5432


def _run_as_user() -> pwd.struct_passwd:
    """The unprivileged account that runs the server when the caller is root."""
    wanted = os.environ.get("ABACO_PG_RUN_AS")
    for name in [wanted] if wanted else ["postgres", "nobody"]:
        with contextlib.suppress(KeyError, ValueError):
            account = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
            if account.pw_uid != 0:
                return account
    raise AbacoError(
        "PostgreSQL cannot run as root and no unprivileged user was found to run it",
        hint="Set ABACO_PG_RUN_AS to an existing non-root user, or run abaco as a normal user.",
    )


def _can_traverse(folder: Path, account: pwd.struct_passwd) -> bool:
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for part in [folder, *folder.parents]:
        st = part.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _conf_value(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class LocalCluster:
    """A throwaway PostgreSQL server in a private folder, reachable only via a unix socket.

    Use it as a context manager (`with LocalCluster() as pg: psycopg.connect(pg.dsn)`), or
    call `start()` and `stop()`. With `keep=True`, `stop()` leaves the server up and the folder
    in place; `destroy()` always stops the server and removes the folder.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        database: str = "abaco",
        user: str = "abaco",
        keep: bool = False,
        settings: Mapping[str, str] | None = None,
        bindir: Path | None = None,
    ) -> None:
        self._requested_dir = base_dir
        self.port = port if port is not None else _free_port()
        self.database = database
        self.user = user
        self.keep = keep
        self.settings = {**_FAST_SETTINGS, **(settings or {})}
        self._bindir = bindir
        self._base: Path | None = None
        self._account: pwd.struct_passwd | None = None
        self.running = False

    # -- locations --------------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        """The private folder: data directory, server log and the unix socket."""
        if self._base is None:
            raise AbacoError("The local PostgreSQL cluster has not been started")
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    @property
    def dsn(self) -> str:
        """A libpq URL for `database`, e.g. `postgresql://abaco@/abaco?host=/tmp/...&port=N`."""
        return self.dsn_for(self.database)

    def dsn_for(self, dbname: str) -> str:
        host = quote(str(self.socket_dir), safe="/")
        return (
            f"postgresql://{quote(self.user, safe='')}@/{quote(dbname, safe='')}"
            f"?host={host}&port={self.port}"
        )

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Self:
        """Create the cluster, start the server and create `database`; return self."""
        if self.running:
            return self
        bindir = self._bindir or find_server_bindir()
        self._prepare_folder()
        try:
            self._initdb(bindir)
            log = str(self.log_file)
            start = ["start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", log]
            self._run([str(bindir / "pg_ctl"), *start], "The local PostgreSQL server did not start")
            self.running = True
            self._create_database()
        except BaseException:
            self._teardown(bindir, mode="immediate")
            raise
        self._bindir = bindir
        return self

    def stop(self) -> None:
        """Stop the server and remove the folder, unless the cluster was made with keep=True."""
        if not self.keep:
            self.destroy()

    def destroy(self) -> None:
        """Stop the server (`pg_ctl stop -m fast`) and remove the folder, whatever `keep` says."""
        if self._base is not None:
            self._teardown(self._bindir or find_server_bindir(), mode="fast")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------------
    def _prepare_folder(self) -> None:
        if os.geteuid() == 0:
            self._account = _run_as_user()
        if self._requested_dir is None:
            base = Path(tempfile.mkdtemp(prefix="abaco-pg-"))
        else:
            base = self._requested_dir.absolute()
            if base.exists() and any(base.iterdir()):
                raise AbacoError(f"The cluster folder {base} is not empty")
            base.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._base = base
        try:
            base.chmod(0o700)
            socket_path = base / f".s.PGSQL.{self.port}"
            if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
                raise AbacoError(
                    f"The cluster folder {base} is too deep for a unix socket path",
                    hint=f"Use a folder whose path is under {_MAX_SOCKET_PATH - 16} characters.",
                )
            if self._account is not None:
                account = self._account
                if not _can_traverse(base.parent, account):
                    raise AbacoError(
                        f"User {account.pw_name}, who runs PostgreSQL (it refuses root), "
                        f"cannot reach {base}",
                        hint="Pick a folder whose parents that user can enter (e.g. under "
                        "/tmp), or set ABACO_PG_RUN_AS to a user who can.",
                    )
                os.chown(base, account.pw_uid, account.pw_gid)
        except BaseException:
            self._remove_folder()
            raise

    def _initdb(self, bindir: Path) -> None:
        options = ["--auth=trust", "-U", self.user, "--encoding=UTF8", "--locale=C", "--no-sync"]
        self._run(
            [str(bindir / "initdb"), "-D", str(self.data_dir), *options],
            "initdb could not create the local PostgreSQL cluster",
        )
        lines = {
            **self.settings,
            "listen_addresses": "",
            "port": str(self.port),
            "unix_socket_directories": f'"{self.socket_dir}"',
        }
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# abaco LocalCluster\n")
            conf.writelines(f"{key} = {_conf_value(value)}\n" for key, value in lines.items())

    def _create_database(self) -> None:
        if self.database == "postgres":
            return
        try:
            with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
                name = sql.Identifier(self.database)
                conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
                conn.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        name, sql.Literal(DEMO_DATABASE_COMMENT)
                    )
                )
        except psycopg.Error as exc:
            raise AbacoError(
                f"Could not create database {self.database!r} in the local PostgreSQL server",
                hint=str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            ) from exc

    def _run(self, argv: list[str], failure: str, *, check: bool = True) -> bool:
        """Run a server program as the right user; on failure raise AbacoError (if `check`)."""
        kwargs: dict[str, Any] = {}
        if self._account is not None:
            account = self._account
            kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env = {k: os.environ[k] for k in _KEPT_ENVIRONMENT if k in os.environ}
        env.update(HOME=str(self.base_dir), LC_ALL="C", LANG="C")
        try:
            done = subprocess.run(
                argv,
                cwd=self.base_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=_TIMEOUT_SECONDS,
                umask=0o077,
                **kwargs,
            )
            output, ok = done.stdout + done.stderr, done.returncode == 0
        except (OSError, subprocess.SubprocessError) as exc:
            output, ok = str(exc), False
        if not ok and check:
            raise AbacoError(failure, hint=self._tail(output))
        return ok

    def _tail(self, output: str) -> str:
        lines = output.strip().splitlines()
        with contextlib.suppress(OSError):
            if self._base is not None and self.log_file.exists():
                lines += ["-- server log:", *self.log_file.read_text(errors="replace").splitlines()]
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def _teardown(self, bindir: Path, *, mode: str) -> None:
        if self._base is not None and (self.data_dir / "postmaster.pid").exists():
            for how in dict.fromkeys([mode, "immediate"]):
                stop = [str(bindir / "pg_ctl"), "stop", "-w", "-m", how, "-D", str(self.data_dir)]
                if self._run(stop, "The local PostgreSQL server did not stop", check=False):
                    break
        self.running = False
        self._remove_folder()

    def _remove_folder(self) -> None:
        base, self._base = self._base, None
        if base is None:
            return
        shutil.rmtree(base, ignore_errors=True)
