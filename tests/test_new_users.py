"""What new users hit first (issue 10, parts 3, 4, 6 and 7), each against the real program:

- the source really read (a libpq service file, several hosts) in manifests, audit records and
  `db check`, and the mechanism `config show` names;
- errors that never fix themselves (a missing database, an unknown host, sslmode=require without
  TLS) fail at once, transient ones are still retried, nothing configured says so, and a reader
  that closes the pipe (`| head -1`) is not an error;
- a transaction-mode pooler (port 6543, or a snapshot that another connection cannot import)
  is named in one line with the fix;
- choices and completion, flags without `<bool>`, JSON errors, configuration errors that name
  their source, metrics of the newest as-of date after a backfill, plugin disk thresholds, the
  demo's stop command, no pandas at run time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from abaco_cli.audit.recorder import AuditedRun
from abaco_cli.db.classify import TransientSourceError, classify
from abaco_cli.pgcluster import LocalCluster
from abaco_cli.redaction import Redactor
from abaco_cli.services.run import Run, new_run_id
from abaco_cli.settings import Settings
from tests.conftest import Server, invoke
from tests.ops import add_loans, manifest_path, metric_samples, read_records

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ helpers


def abaco(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The real program in its own process, with no ABACO_* or PG* variable but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ABACO_", "PG"))}
    return subprocess.run(
        [sys.executable, "-m", "abaco_cli", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("abaco: error:")]


def params_of(dsn: str) -> dict[str, str]:
    return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}


def unix_socket(dsn: str) -> Path:
    params = params_of(dsn)
    host = params.get("host", "")
    if not host.startswith("/"):
        pytest.skip("needs the suite's own server on a unix socket")
    return Path(host) / f".s.PGSQL.{params.get('port', '5432')}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty home: no ~/.pgpass, no ~/.pg_service.conf."""
    folder = tmp_path / "home"
    folder.mkdir()
    return folder


@pytest.fixture
def work(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


class Proxy:
    """A TCP port in front of PostgreSQL unix sockets, as a pooler is in front of servers:
    the n-th connection goes to ``targets[n]`` (the last target for every later one). Bytes
    pass unchanged, so the server itself answers (no TLS, snapshots, errors)."""

    def __init__(self, targets: list[Path], port: int = 0) -> None:
        self.targets = targets
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            target = self.targets[min(self.accepted, len(self.targets) - 1)]
            self.accepted += 1
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(target))
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


def tcp_dsn(dsn: str, port: int, **more: str) -> str:
    params = params_of(dsn)
    params.update(host="127.0.0.1", port=str(port), connect_timeout="5", **more)
    return make_conninfo(**params)


# ------------------------------------------------------------- part 3: the source really read


def test_a_service_file_is_the_source_of_manifests_audit_records_and_db_check(
    db_conninfo: str, work: Path, home: Path, tmp_path: Path
) -> None:
    add_loans(db_conninfo)
    params = params_of(db_conninfo)
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text(
        "# the demo's server\n[abaco_demo]\n" + "".join(f"{k}={v}\n" for k, v in params.items())
    )
    runtime = tmp_path / "abaco_runtime"
    env = {
        "HOME": str(home),
        "PGSERVICEFILE": str(service_file),
        "PGSERVICE": "abaco_demo",
        "ABACO_RUNTIME_DIR": str(runtime),
    }
    expected = {
        "host": params["host"],
        "port": params.get("port", "5432"),
        "database": params["dbname"],
        "user": params["user"],
    }

    exported = abaco(["export", "dpd", "--as-of", "2025-06-30"], env, work)
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads(manifest_path(runtime, "dpd", "2025-06-30").read_text())
    assert manifest["source"] == expected
    records = [r for r in read_records(runtime) if r["command"] == "export dpd"]
    assert [r["event"] for r in records] == ["START", "COMPLETE"]
    assert [r["source"] for r in records] == [expected, expected]

    checked = abaco(["db", "check"], env, work)
    assert checked.returncode == 0, checked.stderr
    identity = f"{expected['user']}@{expected['host']}:{expected['port']}/{expected['database']}"
    assert f"source contract satisfied on {identity}" in checked.stderr

    shown = abaco(["config", "show", "--json"], env, work)
    assert shown.returncode == 0, shown.stderr
    connection = json.loads(shown.stdout)["connection"]
    assert connection["mechanism"] == "service"
    assert "abaco_demo" in connection["description"]
    assert str(service_file) in connection["description"]
    assert connection["source"] == expected
    table = abaco(["config", "show"], env, work)
    assert "database_url\tunset (libpq service abaco_demo (PGSERVICE) in" in table.stdout
    assert "database_url\tNone" not in table.stdout


def test_the_host_recorded_is_the_one_the_connection_reached(
    db_conninfo: str, work: Path, home: Path, tmp_path: Path
) -> None:
    """Two hosts, the first one dead: libpq moves on, and so must the records."""
    params = params_of(db_conninfo)
    port = params.get("port", "5432")
    dead = tmp_path / "no-server-here"
    dead.mkdir()
    dsn = make_conninfo(**{**params, "host": f"{dead},{params['host']}", "port": f"{port},{port}"})
    env = {"HOME": str(home), "ABACO_DATABASE_URL": dsn, "ABACO_RUNTIME_DIR": str(tmp_path / "rt")}
    checked = abaco(["db", "check"], env, work)
    assert checked.returncode == 0, checked.stderr
    reached = f"{params['user']}@{params['host']}:{port}/{params['dbname']}"
    assert f"source contract satisfied on {reached}" in checked.stderr
    initialised = abaco(["db", "init"], env, work)
    assert initialised.returncode == 0, initialised.stderr
    complete = read_records(tmp_path / "rt")[-1]
    assert complete["event"] == "COMPLETE"
    assert complete["source"]["host"] == params["host"]


def test_config_show_names_the_mechanism_and_where_the_password_comes_from(
    db_conninfo: str, work: Path, home: Path
) -> None:
    params = params_of(db_conninfo)
    port = params.get("port", "5432")

    def connection(env: dict[str, str]) -> dict[str, Any]:
        shown = abaco(["config", "show", "--json"], {"HOME": str(home), **env}, work)
        assert shown.returncode == 0, shown.stderr
        found: dict[str, Any] = json.loads(shown.stdout)["connection"]
        return found

    url = connection({"ABACO_DATABASE_URL": make_conninfo(db_conninfo, password="pw-1")})
    assert (url["mechanism"], url["description"]) == ("url", "ABACO_DATABASE_URL")
    assert url["password_from"] == "ABACO_DATABASE_URL"

    variables = connection(
        {"PGHOST": params["host"], "PGPORT": port, "PGUSER": "abaco_export", "PGPASSWORD": "pw"}
    )
    assert variables["mechanism"] == "environment"
    assert variables["description"] == "PG* variables PGHOST, PGPASSWORD, PGPORT, PGUSER"
    assert variables["source"]["database"] == "abaco_export"  # libpq's default: the user
    assert variables["password_from"] == "PGPASSWORD"

    pgpass = home / ".pgpass"
    pgpass.write_text(f"localhost:{port}:{params['dbname']}:abaco_export:pw\n")
    pgpass.chmod(0o600)
    passfile = connection(
        {
            "PGHOST": params["host"],
            "PGPORT": port,
            "PGDATABASE": params["dbname"],
            "PGUSER": "abaco_export",
        }
    )
    assert passfile["password_from"] == f".pgpass ({pgpass})"

    nothing = connection({})
    assert nothing["mechanism"] == "defaults"
    assert nothing["description"].startswith("nothing configured")
    assert nothing["password_from"] is None


# ------------------------------------------------------ part 4: errors that never fix themselves


@pytest.fixture
def listening_proxy(db_conninfo: str) -> Iterator[Proxy]:
    proxy = Proxy([unix_socket(db_conninfo)])
    yield proxy
    proxy.close()


def _host_does_not_resolve() -> None:
    try:
        socket.getaddrinfo("nohost.invalid", 5432)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            pytest.skip("no DNS server answers here: the lookup itself is transient")
        return
    pytest.skip("nohost.invalid resolves here")


@pytest.mark.parametrize("case", ["missing database", "unknown host", "sslmode=require"])
def test_an_error_that_never_fixes_itself_fails_at_once(
    case: str,
    pg_server: Server,
    db_conninfo: str,
    listening_proxy: Proxy,
    work: Path,
    home: Path,
) -> None:
    if case == "missing database":
        dsn, fragment = pg_server.dsn_for("abaco_no_such_database"), "the database does not exist"
    elif case == "unknown host":
        _host_does_not_resolve()
        dsn = "postgresql://abaco@nohost.invalid:5432/abaco?connect_timeout=5"
        fragment = "the host name does not resolve"
    else:
        dsn = tcp_dsn(db_conninfo, listening_proxy.port, sslmode="require")
        fragment = "the server offers no TLS"
    env = {
        "HOME": str(home),
        "ABACO_DATABASE_URL": dsn,
        "ABACO_RETRY__ATTEMPTS": "4",
        "ABACO_RETRY__INITIAL_WAIT_SECONDS": "2",  # a retry would show as seconds and a line
    }
    result = abaco(["db", "check"], env, work)
    assert result.returncode == 3, result.stderr
    assert "retrying" not in result.stderr
    assert "transient" not in result.stderr
    assert result.stderr.strip().splitlines() == error_lines(result.stderr)  # one line, only
    assert len(error_lines(result.stderr)) == 1
    assert fragment in result.stderr


def test_a_refused_connection_is_still_retried(work: Path, home: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again at once: nothing listens there
    env = {
        "HOME": str(home),
        "ABACO_DATABASE_URL": f"postgresql://abaco@127.0.0.1:{port}/abaco?connect_timeout=5",
        "ABACO_RETRY__ATTEMPTS": "2",
        "ABACO_RETRY__INITIAL_WAIT_SECONDS": "0.1",
    }
    result = abaco(["db", "check"], env, work)
    assert result.returncode == 3
    assert "transient source failure (attempt 1 of 2), retrying" in result.stderr
    assert "Connection refused" in error_lines(result.stderr)[0]


def test_an_admin_shutdown_stays_transient(pg_server: Server, db_conninfo: str) -> None:
    with psycopg.connect(db_conninfo) as victim:
        pid = victim.info.backend_pid
        with pg_server.admin() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.Error) as caught:
            victim.execute("SELECT 1")
    assert caught.value.sqlstate == "57P01"  # admin_shutdown
    error = classify(caught.value, during="exporting dpd", redactor=Redactor())
    assert isinstance(error, TransientSourceError)


def test_nothing_configured_says_so_and_names_the_variables(work: Path, home: Path) -> None:
    with contextlib.suppress(psycopg.Error), psycopg.connect("", connect_timeout=3):
        pytest.skip("libpq's defaults reach a server on this machine")
    result = abaco(["db", "check"], {"HOME": str(home)}, work)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert "no source database is configured" in lines[0]
    for name in ("ABACO_DATABASE_URL", "PGHOST", "PGDATABASE", "PGUSER", "PGSERVICE"):
        assert name in lines[0]
    assert "retrying" not in result.stderr


@pytest.fixture
def long_audit_log(tmp_path: Path) -> Path:
    """An audit log whose `audit list` is far longer than a pipe's buffer."""
    runtime = tmp_path / "abaco_runtime"
    run = Run(Settings(runtime_dir=runtime), "prune")
    recorder = run.recorder
    for _ in range(1500):
        audited = AuditedRun(
            run_id=new_run_id(),
            command="prune",
            arguments={},
            datasets=[],
            as_of_dates=[],
            started=run.started,
            reads_source=False,
        )
        recorder.append(recorder.record(audited, "START"))
        recorder.append(recorder.record(audited, "COMPLETE", exit_code=0, duration_seconds=0.1))
    return runtime


@pytest.mark.parametrize(
    "command", ["audit list", "audit list --json", "--log-format json audit list", "--help"]
)
def test_a_reader_that_stops_early_is_not_an_error(
    command: str, long_audit_log: Path, work: Path, home: Path
) -> None:
    """`abaco ... | head -1` in a real shell with pipefail: abaco's own status is the job's
    (0), not 1 and not a SIGPIPE death, and it says nothing on stderr."""
    program = f"{sys.executable} -m abaco_cli"
    script = f"set -o pipefail; {program} {command} 2>{work / 'stderr'} | head -1"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ABACO_", "PG"))},
        "HOME": str(home),
        "ABACO_RUNTIME_DIR": str(long_audit_log),
    }
    done = subprocess.run(
        ["bash", "-c", script], env=env, cwd=work, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (work / "stderr").read_text()
    assert len(done.stdout.splitlines()) == 1
    assert (work / "stderr").read_text() == ""


# --------------------------------------------------------------- part 6: transaction poolers


def test_port_6543_is_named_as_the_transaction_pooler(
    db_conninfo: str, work: Path, home: Path
) -> None:
    target = unix_socket(db_conninfo)
    try:
        proxy = Proxy([target], port=6543)
    except OSError:
        pytest.skip("port 6543 is taken on this machine")
    try:
        env = {"HOME": str(home), "ABACO_DATABASE_URL": tcp_dsn(db_conninfo, 6543)}
        result = abaco(["db", "check"], env, work)
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "transaction pooler" in line]
    assert len(warnings) == 1
    assert "session pooler (port 5432" in warnings[0]
    assert "db.<project-ref>.supabase.co:5432" in warnings[0]


def test_a_snapshot_no_other_connection_can_import_is_named_with_the_fix(
    db_conninfo: str, work: Path, home: Path, tmp_path: Path
) -> None:
    """Behind a pooler the connections of one run may reach different servers: the first
    exports its snapshot, the next cannot import it. Here the proxy sends the first connection
    to the suite's server and the others to a second server with a database of the same name."""
    add_loans(db_conninfo)
    first = unix_socket(db_conninfo)
    params = params_of(db_conninfo)
    with LocalCluster(database=params["dbname"], user=params["user"]) as other:
        second = Path(other.socket_dir) / f".s.PGSQL.{other.port}"
        proxy = Proxy([first, second])
        try:
            env = {
                "HOME": str(home),
                "ABACO_DATABASE_URL": tcp_dsn(db_conninfo, proxy.port),
                "ABACO_RUNTIME_DIR": str(tmp_path / "rt"),
                "ABACO_PARALLEL_QUERIES": "2",
            }
            result = abaco(["export", "dpd", "--as-of", "2025-06-30"], env, work)
        finally:
            proxy.close()
    assert result.returncode == 1, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1
    assert "exported a snapshot but another connection could not import it" in lines[0]
    assert "transaction-mode pooler" in lines[0]
    assert "session pooler (port 5432 on the same pooler host)" in lines[0]
    assert "retrying" not in result.stderr
    assert not manifest_path(tmp_path / "rt", "dpd", "2025-06-30").exists()


# ----------------------------------------------------------------------- part 7: smaller things


def _all_help(cli: CliRunner) -> dict[str, str]:
    pages: dict[str, str] = {}
    commands = [
        [],
        ["db", "init"],
        ["db", "seed"],
        ["db", "check"],
        ["export", "dpd"],
        ["export", "all"],
        ["kpi", "definitions"],
        ["config", "show"],
        ["demo"],
        ["audit", "list"],
        ["audit", "show"],
        ["audit", "verify"],
        ["audit", "record-restore"],
        ["prune"],
        ["healthcheck"],
    ]
    for command in commands:
        result = invoke(cli, *command, "--help")
        assert result.exit_code == 0, (command, result.stderr)
        pages[" ".join(command)] = result.stdout
    return pages


def test_help_lists_the_choices_and_no_flag_shows_a_value(cli: CliRunner) -> None:
    pages = _all_help(cli)
    for name, page in pages.items():
        assert "<bool>" not in page, name
    assert "<plain|json>" in pages[""]
    assert "<success|failed|incomplete|" in pages["audit list"]
    assert "recovered|restored>" in pages["audit list"]
    for check in ("config", "db", "contract", "freshness", "runtime", "disk", "audit", "sink"):
        assert check in pages["healthcheck"]


def test_status_choices_are_the_statuses_audit_list_knows() -> None:
    from typing import get_args

    from abaco_cli.cli.audit import Status
    from abaco_cli.services.audit_trail import STATUSES

    assert get_args(Status) == STATUSES


def complete(words: str, work: Path) -> list[str]:
    """What bash completion offers for the last word of ``words`` (the real program)."""
    parts = words.split(" ")
    env = {
        "_ABACO_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(parts) - 1),
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACO_")}
    done = subprocess.run(
        [sys.executable, "-c", "from abaco_cli.cli.app import main; main()"],
        env={**clean, **env},
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_shell_completion_completes_choices_and_each_item_of_check(work: Path) -> None:
    assert complete("abaco --log-format ", work) == ["plain", "json"]
    assert complete("abaco audit list --status re", work) == ["recovered", "restored"]
    assert complete("abaco healthcheck --check db,fr", work) == ["db,freshness"]
    assert complete("abaco healthcheck --check db,freshness,d", work) == [
        "db,freshness,dq",
        "db,freshness,disk",
    ]
    offered = complete("abaco healthcheck --check db,", work)
    assert "db,db" not in offered
    assert "db,locks" in offered


def test_a_bad_choice_is_a_usage_error(cli: CliRunner) -> None:
    result = invoke(cli, "--log-format", "xml", "config", "show")
    assert result.exit_code == 2
    assert "'xml' is not one of 'plain', 'json'" in result.stderr
    result = invoke(cli, "audit", "list", "--status", "done")
    assert result.exit_code == 2
    result = invoke(cli, "healthcheck", "--check", "db,nope")
    assert result.exit_code == 3  # the plugin convention: UNKNOWN
    assert "unknown check nope" in result.stderr


def test_a_failure_is_json_under_log_format_json_and_json(
    pg_server: Server, work: Path, home: Path
) -> None:
    env = {"HOME": str(home), "ABACO_DATABASE_URL": pg_server.dsn_for("abaco_no_such_database")}
    result = abaco(["--log-format", "json", "db", "check", "--json"], env, work)
    assert result.returncode == 3
    printed = json.loads(result.stdout)
    assert printed["ok"] is False
    assert printed["exit_code"] == 3
    assert "the database does not exist" in printed["error"]
    assert "dbname" in printed["hint"]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    logged = json.loads(lines[0])
    assert logged["level"] == "error"
    assert (logged["message"], logged["hint"]) == (printed["error"], printed["hint"])
    assert logged["exit_code"] == 3

    usage = abaco(["export", "dpd", "--as-of", "2025-13-01", "--json"], env, work)
    assert usage.returncode == 2
    assert json.loads(usage.stdout) == {
        "ok": False,
        "exit_code": 2,
        "error": "--as-of '2025-13-01' is not a date; use YYYY-MM-DD, e.g. 2025-06-30",
        "hint": None,
    }
    by_env = abaco(["db", "check", "--bogus"], {**env, "ABACO_LOG_FORMAT": "json"}, work)
    assert by_env.returncode == 2
    assert "No such option: --bogus" in json.loads(by_env.stderr.strip())["message"]


def test_configuration_errors_name_their_source_and_key(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "abaco.toml").write_text("batch_rows = 5000\n")
    monkeypatch.setenv("ABACO_BATCH_ROWS", "ten")
    result = invoke(cli, "config", "show")
    assert result.exit_code == 2
    assert "batch_rows = 'ten' from the environment variable ABACO_BATCH_ROWS" in result.stderr
    assert "abaco.toml" not in result.stderr.split("(hint")[0]
    monkeypatch.delenv("ABACO_BATCH_ROWS")

    monkeypatch.setenv("ABACO_DPD__PAR_THRESHOLDS", "7,30")
    result = invoke(cli, "config", "show")
    assert result.exit_code == 2
    assert "dpd.par_thresholds = '7,30' from the environment variable" in result.stderr
    assert "ABACO_DPD__PAR_THRESHOLDS='[7,30]'" in result.stderr
    assert "EnvSettingsSource" not in result.stderr
    assert "None" not in result.stderr
    monkeypatch.delenv("ABACO_DPD__PAR_THRESHOLDS")

    (tmp_path / "abaco.toml").write_text("batch_rows = 50\n")
    result = invoke(cli, "config", "show")
    assert result.exit_code == 2
    assert "batch_rows = 50 in abaco.toml: Input should be greater than or equal to 100" in (
        result.stderr
    )


def test_metrics_describe_the_newest_as_of_date_after_a_backfill(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)  # disbursed 2025-05-01: none in January, three in December
    assert invoke(cli, "export", "dpd", "--as-of", "2025-12-31").exit_code == 0
    backfill = invoke(cli, "export", "dpd", "--from", "2025-01-01", "--to", "2025-03-31")
    assert backfill.exit_code == 0, backfill.stderr
    december = json.loads(manifest_path(runtime_dir, "dpd", "2025-12-31").read_text())
    january = json.loads(manifest_path(runtime_dir, "dpd", "2025-01-31").read_text())
    loans = {f["table"]: f["rows"] for f in december["files"]}["loans"]
    assert loans == 3
    assert {f["table"]: f["rows"] for f in january["files"]}["loans"] == 0
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    assert samples[("abaco_export_rows", (("dataset", "dpd"), ("table", "loans")))] == loans
    assert samples[("abaco_export_bytes", (("dataset", "dpd"),))] == sum(
        f["bytes"] for f in december["files"]
    )


def test_disk_perfdata_alerts_below_its_thresholds(cli: CliRunner) -> None:
    result = invoke(cli, "healthcheck", "--check", "disk")
    assert re.search(r"disk_free=\d+(\.\d)?%;10:;5:;0;100", result.stdout), result.stdout


def test_demo_keep_prints_a_command_that_stops_and_removes_the_server(
    work: Path, home: Path
) -> None:
    if shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin")):
        pytest.skip("PostgreSQL's server programs are not installed")
    work.chmod(0o755)
    result = abaco(["demo", "--loans", "100", "--keep"], {"HOME": str(home)}, work, timeout=600)
    dsn = re.search(r"export ABACO_DATABASE_URL='([^']+)'", result.stdout)
    stop = [line for line in result.stdout.splitlines() if " pg_ctl" in line or "/pg_ctl" in line]
    assert dsn and len(stop) == 1, result.stdout + result.stderr
    base = Path(params_of(dsn.group(1))["host"])
    try:
        assert result.returncode == 0, result.stderr
        with psycopg.connect(dsn.group(1)) as conn:
            assert conn.execute("SELECT count(*) FROM core_banking.loans").fetchone() == (100,)
        stopped = subprocess.run(
            ["bash", "-c", stop[0]], capture_output=True, text=True, timeout=120, check=False
        )
        assert stopped.returncode == 0, stopped.stderr
        assert not base.exists()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn.group(1), connect_timeout=3)
    finally:
        pid_file = base / "data" / "postmaster.pid"
        if pid_file.exists():  # the printed command failed: stop the server this test started
            os.kill(int(pid_file.read_text().split()[0]), 2)
        shutil.rmtree(base, ignore_errors=True)


def test_pandas_is_not_needed_at_run_time() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("pandas")]
    assert "pandas==" not in (ROOT / "requirements" / "runtime.lock").read_text()
    probe = (
        "import sys, abaco_cli.cli.app, abaco_cli.services.exporting, abaco_cli.writers.registry;"
        "print('pandas' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_the_environment_example_uses_the_session_pooler_over_tls() -> None:
    example = (ROOT / "deploy" / "abaco.env.example").read_text(encoding="utf-8")
    active = [line for line in example.splitlines() if line.startswith("ABACO_DATABASE_URL=")]
    assert len(active) == 1
    params = params_of(active[0].split("=", 1)[1].strip("'"))
    assert params["host"].endswith(".pooler.supabase.com")
    assert params["port"] == "5432"  # session mode; 6543 is the transaction pooler
    assert params["user"].startswith("abaco_export.")  # <role>.<project-ref> at the pooler
    assert params["sslmode"] == "require"
    doc = (ROOT / "docs" / "supabase.md").read_text(encoding="utf-8")
    for fragment in ("db.<project-ref>.supabase.co:5432", "IPv4 add-on", "port **6543**"):
        assert fragment in doc
