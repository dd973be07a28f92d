"""Safe by default, against a real PostgreSQL, real files and the real CLI.

`abaco demo` never touches the configured runtime tree, audit log, metrics or database, refuses
a tree of a real source, and its private server inherits none of the caller's secrets;
`db seed --replace` empties only a demo's own database or the one named by --yes-destroy-data;
the read-only export role of docs/supabase.md works for `abaco export` and cannot write.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from typer.testing import CliRunner

from abaco_cli.errors import ServerToolsMissingError
from abaco_cli.pgcluster import DEMO_DATABASE_COMMENT, LocalCluster, find_server_bindir
from abaco_cli.settings import SourceTables
from tests.conftest import Server, invoke
from tests.ops import add_loans, dsn_with_secret, run_abaco, tree_snapshot

ROOT = Path(__file__).resolve().parent.parent
SUPABASE_DOC = ROOT / "docs" / "supabase.md"
DEMO_LOANS = "300"
DEMO_AS_OF = "2025-12-31"
REAL_AS_OF = "2025-06-30"
DATASETS = ("dpd", "kpi", "pricing", "analytics")
TABLES = SourceTables()
_roles = itertools.count(1)


def _server_tools_installed() -> bool:
    try:
        find_server_bindir()
    except ServerToolsMissingError:
        return False
    return True


needs_server = pytest.mark.skipif(
    not _server_tools_installed(), reason="PostgreSQL server programs are not installed"
)


# ------------------------------------------------------------------------------------ helpers


def dbname_of(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["dbname"])


def fingerprints(dsn: str) -> dict[str, tuple[int, str | None]]:
    """Row count and an md5 of every row of the five source tables."""
    found: dict[str, tuple[int, str | None]] = {}
    with psycopg.connect(dsn) as conn:
        for role in TABLES.roles():
            query = sql.SQL(
                "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {} t"
            ).format(sql.Identifier(*TABLES.split(role)))
            row = conn.execute(query).fetchone()
            assert row is not None
            found[role] = (int(row[0]), row[1])
    return found


def loan_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM core_banking.loans").fetchone()
    assert row is not None
    return int(row[0])


def export_real(cli: CliRunner, tree: Path) -> None:
    """A real export of the test database (not a demo server) into ``tree``."""
    result = invoke(cli, "--runtime-dir", str(tree), "export", "dpd", "--as-of", REAL_AS_OF)
    assert result.exit_code == 0, result.stderr
    assert (tree / "exports" / "dpd" / "_manifests" / f"dpd_{REAL_AS_OF}.manifest.json").is_file()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def manifest(tree: Path, dataset: str, day: str) -> dict[str, Any]:
    path = tree / "exports" / dataset / "_manifests" / f"{dataset}_{day}.manifest.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def audit_commands(tree: Path) -> list[str]:
    lines = (tree / "audit" / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["command"] for line in lines if line.strip()]


def has_schema(dsn: str, schema: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
    assert row is not None
    return bool(row[0])


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.decode(errors="replace").partition("=") for entry in raw.split(b"\0") if entry)
    return {name: value for name, _, value in pairs}


def wait_gone(pid: int, seconds: float = 20.0) -> bool:
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


# Values that must never reach the demo's server (nor anything else of the demo).
CALLER_SECRETS = {
    "PGPASSWORD": "Pg-Pa55word-of-the-caller",
    "ABACO_DATABASE_URL": "postgresql://u:S3cret@h/db",
    "AWS_SECRET_ACCESS_KEY": "aws-SeCrEt-AcCeSs-KeY-0123456789",
    "ABACO_AUDIT__DATABASE_URL": "postgresql://auditor:Aud1t-S3cret@audit-host/audit",
    "GOOGLE_APPLICATION_CREDENTIALS": "/etc/abaco/gcp-key-never-shown.json",
}
SECRET_FRAGMENTS = ("S3cret", "Pg-Pa55word", "aws-SeCrEt", "Aud1t-S3cret", "gcp-key-never")
# What the server may see: the kept variables, what LocalCluster sets, what pg_ctl and the
# server programs set for themselves (PGDATA, PGLOCALEDIR, PGSYSCONFDIR, PG_GRANDPARENT_PID)
# and what a shell adds.
SERVER_ENVIRONMENT = {
    *("PATH", "TZ", "TMPDIR", "HOME", "LC_ALL", "LANG"),
    *("PGDATA", "PGLOCALEDIR", "PGSYSCONFDIR", "PG_GRANDPARENT_PID"),
    *("PWD", "OLDPWD", "SHLVL", "_"),
}


def assert_no_caller_secret(environment: dict[str, str]) -> None:
    text = "\0".join(f"{k}={v}" for k, v in environment.items())
    for value in CALLER_SECRETS.values():
        assert value not in text
    for fragment in SECRET_FRAGMENTS:
        assert fragment not in text
    assert set(environment) <= SERVER_ENVIRONMENT, sorted(set(environment) - SERVER_ENVIRONMENT)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The demo's working directory (its tree is ./abaco_runtime here)."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


# ------------------------------------------------------------------ the demo: its own tree


@needs_server
def test_demo_with_production_settings_leaves_production_alone(
    cli: CliRunner, db_conninfo: str, tmp_path: Path, workdir: Path
) -> None:
    add_loans(db_conninfo)
    env_tree, toml_tree = tmp_path / "prod-env" / "abaco_runtime", tmp_path / "prod-toml"
    export_real(cli, env_tree)
    export_real(cli, toml_tree)
    (workdir / "abaco.toml").write_text(f'runtime_dir = "{toml_tree}"\n', encoding="utf-8")
    secret_dsn, secret = dsn_with_secret(db_conninfo)
    elsewhere = tmp_path / "var"
    env = {
        "ABACO_DATABASE_URL": secret_dsn,
        "ABACO_RUNTIME_DIR": str(env_tree),
        "ABACO_AUDIT__PATH": str(elsewhere / "audit" / "audit.jsonl"),
        "ABACO_AUDIT__SINK": "postgres",
        "ABACO_AUDIT__DATABASE_URL": secret_dsn,
        "ABACO_METRICS__PATH": str(elsewhere / "metrics" / "abaco.prom"),
        "PGPASSWORD": secret,
        "PGDATABASE": dbname_of(db_conninfo),
        "PGSSLMODE": "prefer",
    }
    before = {tree: tree_snapshot(tree) for tree in (env_tree, toml_tree)}
    rows_before = fingerprints(db_conninfo)

    result = run_abaco(["demo", "--loans", DEMO_LOANS], env, workdir, timeout=600)

    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert secret not in output
    for tree, snapshot in before.items():
        assert tree_snapshot(tree) == snapshot, tree
    assert not elsewhere.exists()  # neither the configured audit log nor the metrics file
    assert fingerprints(db_conninfo) == rows_before
    assert not has_schema(db_conninfo, "abaco_audit")  # no audit copy into the real database
    # It said it ignored the configured runtime_dir, and where its own tree is kept.
    demo_tree = (workdir / "abaco_runtime").resolve()
    ignored = [line for line in result.stderr.splitlines() if "configured runtime_dir" in line]
    assert ignored and str(env_tree) in ignored[0], result.stderr
    assert f"kept in {demo_tree}" in output
    # Everything it wrote is in ./abaco_runtime of its working directory, from the demo server.
    for dataset in DATASETS:
        source = manifest(demo_tree, dataset, DEMO_AS_OF)["source"]
        assert source["database"] == "abaco_demo"
        assert source["host"].startswith("/")
    commands = audit_commands(demo_tree)
    assert commands and all(command.startswith("demo: ") for command in commands)
    assert (demo_tree / "metrics" / "abaco.prom").is_file()


@needs_server
def test_demo_ignores_the_runtime_dir_of_abaco_toml_and_reruns_into_its_own_tree(
    cli: CliRunner,
    db_conninfo: str,
    tmp_path: Path,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_loans(db_conninfo)
    toml_tree = tmp_path / "prod-toml"
    export_real(cli, toml_tree)
    monkeypatch.delenv("ABACO_RUNTIME_DIR")
    monkeypatch.setenv("ABACO_AUDIT__PATH", str(tmp_path / "var" / "audit.jsonl"))
    monkeypatch.setenv("ABACO_METRICS__PATH", str(tmp_path / "var" / "abaco.prom"))
    monkeypatch.chdir(workdir)
    (workdir / "abaco.toml").write_text(f'runtime_dir = "{toml_tree}"\n', encoding="utf-8")
    before = tree_snapshot(toml_tree)
    demo_tree = (workdir / "abaco_runtime").resolve()

    first = invoke(cli, "demo", "--loans", DEMO_LOANS)
    assert first.exit_code == 0, first.stderr
    assert "configured runtime_dir" in first.stderr and str(toml_tree) in first.stderr
    assert str(demo_tree) in first.stdout + first.stderr
    started = len(audit_commands(demo_tree))

    # Its own earlier demo tree, given as the global --runtime-dir: accepted, and the
    # configured runtime_dir is still ignored out loud.
    again = invoke(cli, "--runtime-dir", "abaco_runtime", "demo", "--loans", DEMO_LOANS)
    assert again.exit_code == 0, again.stderr
    assert "configured runtime_dir" in again.stderr and str(toml_tree) in again.stderr
    assert len(audit_commands(demo_tree)) > started
    assert tree_snapshot(toml_tree) == before
    assert not (tmp_path / "var").exists()


@needs_server
def test_demo_refuses_a_tree_of_a_real_source(
    cli: CliRunner, tmp_path: Path, db_conninfo: str, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_loans(db_conninfo)
    prod = tmp_path / "prod"
    export_real(cli, prod)
    before = tree_snapshot(prod)
    monkeypatch.chdir(workdir)
    for args in (
        ["demo", "--runtime-dir", str(prod), "--loans", DEMO_LOANS],
        ["--runtime-dir", str(prod), "demo", "--loans", DEMO_LOANS],
    ):
        result = invoke(cli, *args)
        assert result.exit_code == 2, result.stderr
        lines = error_lines(result.stderr)
        assert len(lines) == 1, result.stderr
        assert "abaco: error:" in lines[0] and dbname_of(db_conninfo) in lines[0]
        assert "not of a demo server" in lines[0]
        assert tree_snapshot(prod) == before
    assert not (workdir / "abaco_runtime").exists()
    # A real process: the same exit code and one line.
    real = run_abaco(
        ["demo", "--runtime-dir", str(prod), "--loans", DEMO_LOANS], {}, workdir, timeout=120
    )
    assert real.returncode == 2, real.stderr
    assert len(error_lines(real.stderr)) == 1, real.stderr
    assert tree_snapshot(prod) == before


@needs_server
def test_demo_refuses_a_tree_whose_manifest_it_cannot_read(
    cli: CliRunner, tmp_path: Path, db_conninfo: str
) -> None:
    """A manifest that cannot be read may well be production's: never written over."""
    add_loans(db_conninfo)
    prod = tmp_path / "prod"
    export_real(cli, prod)
    path = prod / "exports" / "dpd" / "_manifests" / f"dpd_{REAL_AS_OF}.manifest.json"
    path.write_text('{"dataset": "dpd", "source": ', encoding="utf-8")
    before = tree_snapshot(prod)
    result = invoke(cli, "demo", "--runtime-dir", str(prod), "--loans", DEMO_LOANS)
    assert result.exit_code == 2, result.stderr
    assert len(error_lines(result.stderr)) == 1, result.stderr
    assert tree_snapshot(prod) == before


# ----------------------------------------------------------- the demo's server environment


@needs_server
def test_local_cluster_server_holds_none_of_the_callers_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in CALLER_SECRETS.items():
        monkeypatch.setenv(name, value)
    with LocalCluster() as pg:
        environment = environ_of(postmaster_pid(pg.data_dir))
        assert "PATH" in environment  # the file was read, and is what the server started with
        assert_no_caller_secret(environment)
        # Its backends inherit the postmaster's environment: check one of them as well.
        with psycopg.connect(pg.dsn) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            assert_no_caller_secret(environ_of(int(row[0])))


@needs_server
def test_demo_keep_server_holds_none_of_the_callers_secrets(workdir: Path) -> None:
    """`abaco demo --keep` in a real process with secrets in its environment."""
    result = run_abaco(
        ["demo", "--loans", "100", "--keep"], dict(CALLER_SECRETS), workdir, timeout=600
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"export ABACO_DATABASE_URL='([^']+)'", result.stdout)
    assert found, result.stdout
    base = Path(parse_qs(urlsplit(found.group(1)).query)["host"][0])
    pid = postmaster_pid(base / "data")
    try:
        assert_no_caller_secret(environ_of(pid))
        with psycopg.connect(found.group(1)) as conn:
            row = conn.execute("SELECT count(*) FROM core_banking.loans").fetchone()
            assert row == (100,)
    finally:
        os.kill(pid, signal.SIGINT)  # the server this test started: fast shutdown
        assert wait_gone(pid)
        shutil.rmtree(base, ignore_errors=True)
    for fragment in SECRET_FRAGMENTS:
        assert fragment not in result.stdout + result.stderr


@pytest.fixture
def shared_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tempfile's folder for this test: one the server user can enter, watched for leftovers;
    a server left running in it is stopped (by its pid) and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="abaco-test-"))
    folder.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    for pid_file in folder.glob("abaco-pg-*/data/postmaster.pid"):
        pid = postmaster_pid(pid_file.parent)
        os.kill(pid, signal.SIGINT)
        wait_gone(pid)
    shutil.rmtree(folder, ignore_errors=True)


@needs_server
def test_a_failed_demo_with_keep_leaves_no_server_behind(
    cli: CliRunner, workdir: Path, shared_tmp: Path
) -> None:
    not_a_folder = workdir / "a-file"
    not_a_folder.write_text("not a runtime tree\n", encoding="utf-8")
    result = invoke(cli, "demo", "--keep", "--loans", "100", "--runtime-dir", str(not_a_folder))
    assert result.exit_code == 1, result.stderr
    assert "starting a private PostgreSQL server" in result.stderr  # it got that far
    assert "export ABACO_DATABASE_URL" not in result.stdout
    assert not list(shared_tmp.glob("abaco-pg-*"))  # stopped and removed, although --keep


# --------------------------------------------------------------- db seed --replace


def test_seed_replace_refuses_a_database_that_is_not_the_demos(
    cli: CliRunner, db_conninfo: str, tmp_path: Path
) -> None:
    name = dbname_of(db_conninfo)
    seeded = invoke(cli, "db", "seed", "--loans", "300", "--seed", "3")
    assert seeded.exit_code == 0, seeded.stderr
    before = fingerprints(db_conninfo)
    assert before["loans"][0] == 300

    for extra in ([], ["--yes-destroy-data", "WRONGNAME"], ["--yes-destroy-data", name.upper()]):
        result = invoke(cli, "db", "seed", "--replace", "--loans", "500", *extra)
        assert result.exit_code == 2, result.stderr
        lines = error_lines(result.stderr)
        assert len(lines) == 1, result.stderr
        assert f"'{name}'" in lines[0] and f"--yes-destroy-data {name}" in lines[0]
        assert fingerprints(db_conninfo) == before

    # A real process: exit code 2, one line, nothing emptied.
    real = run_abaco(
        ["db", "seed", "--replace", "--loans", "500"],
        {"ABACO_DATABASE_URL": db_conninfo, "ABACO_RUNTIME_DIR": str(tmp_path / "rt")},
        tmp_path,
    )
    assert real.returncode == 2, real.stderr
    assert len(error_lines(real.stderr)) == 1 and name in real.stderr
    assert fingerprints(db_conninfo) == before

    confirmed = invoke(
        cli, "db", "seed", "--replace", "--loans", "500", "--yes-destroy-data", name, "--json"
    )
    assert confirmed.exit_code == 0, confirmed.stderr
    assert json.loads(confirmed.stdout)["loans"] == 500
    assert loan_count(db_conninfo) == 500


def test_yes_destroy_data_without_replace_is_a_usage_error(
    cli: CliRunner, db_conninfo: str
) -> None:
    name = dbname_of(db_conninfo)
    result = invoke(cli, "db", "seed", "--loans", "50", "--yes-destroy-data", name)
    assert result.exit_code == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "--yes-destroy-data goes with --replace" in lines[0]
    assert loan_count(db_conninfo) == 0  # nothing was seeded either


@needs_server
def test_seed_replace_in_a_local_cluster_database_needs_no_confirmation(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalCluster() as pg:
        with psycopg.connect(pg.dsn) as conn:
            row = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database"
                " WHERE datname = current_database()"
            ).fetchone()
        assert row == (DEMO_DATABASE_COMMENT,)
        monkeypatch.setenv("ABACO_DATABASE_URL", pg.dsn)
        assert invoke(cli, "db", "init").exit_code == 0
        assert invoke(cli, "db", "seed", "--loans", "100").exit_code == 0
        replaced = invoke(cli, "db", "seed", "--replace", "--loans", "200")
        assert replaced.exit_code == 0, replaced.stderr
        assert loan_count(pg.dsn) == 200


# ----------------------------------------------------- the read-only export role (docs)


def sql_blocks(text: str) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)


def doc_block(containing: str) -> str:
    blocks = [b for b in sql_blocks(SUPABASE_DOC.read_text(encoding="utf-8")) if containing in b]
    assert len(blocks) == 1, f"docs/supabase.md: one ```sql block with {containing!r}"
    return blocks[0]


@pytest.fixture
def export_role(pg_server: Server, db_conninfo: str) -> Iterator[str]:
    """A unique name for the doc's `abaco_export` (roles are cluster-wide), dropped after."""
    role = f"abaco_export_t{os.getpid()}_{next(_roles)}"
    yield role
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with pg_server.admin() as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_the_documented_read_only_role_exports_and_cannot_write(
    cli: CliRunner,
    db_conninfo: str,
    export_role: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_loans(db_conninfo, count=3)
    password = "Role-Pa55-of-the-test"
    setup = doc_block("CREATE ROLE abaco_export").replace("abaco_export", export_role)
    setup = re.sub(r"PASSWORD '[^']*'", f"PASSWORD '{password}'", setup)
    with psycopg.connect(db_conninfo, autocommit=True) as admin:  # the owner of the tables
        admin.execute(setup)
        # ALTER DEFAULT PRIVILEGES: a table created later by the same owner is readable too.
        admin.execute("CREATE TABLE commercial.later (id int)")
        admin.execute("INSERT INTO commercial.later VALUES (1)")
    role_dsn = make_conninfo(db_conninfo, user=export_role, password=password)

    monkeypatch.setenv("ABACO_DATABASE_URL", role_dsn)
    check = invoke(cli, "db", "check")
    assert check.exit_code == 0, check.stderr
    exported = invoke(cli, "export", "dpd", "--as-of", REAL_AS_OF, "--json")
    assert exported.exit_code == 0, exported.stderr
    assert "cannot share a snapshot" not in exported.stderr  # pg_export_snapshot() is allowed
    assert manifest(tmp_path / "abaco_runtime", "dpd", REAL_AS_OF)["files"]
    audit_lines = (tmp_path / "abaco_runtime" / "audit" / "audit.jsonl").read_text().splitlines()
    assert json.loads(audit_lines[-1])["source"]["user"] == export_role
    all_of = invoke(cli, "export", "all", "--as-of", REAL_AS_OF)
    assert all_of.exit_code == 0, all_of.stderr

    with psycopg.connect(role_dsn, autocommit=True) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SELECT count(*) FROM commercial.later").fetchone() == (1,)
        row = conn.execute(
            "SELECT has_function_privilege('pg_export_snapshot()', 'EXECUTE')"
        ).fetchone()
        assert row == (True,)
        check_insert = doc_block("INSERT INTO")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute(check_insert)
        # default_transaction_read_only is only a default: the GRANTs are what stop writes.
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(check_insert)
        for statement in (
            "TRUNCATE core_banking.payments",
            "DELETE FROM core_banking.loans",
            "UPDATE core_banking.loans SET principal = 0",
            "CREATE TABLE core_banking.x (id int)",
            "DROP TABLE core_banking.payments",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # `db seed --replace --yes-destroy-data` as this role: the database refuses.
    monkeypatch.setenv("ABACO_DATABASE_URL", role_dsn)
    seeded = invoke(cli, "db", "seed", "--replace", "--yes-destroy-data", dbname_of(db_conninfo))
    assert seeded.exit_code != 0
    assert loan_count(db_conninfo) == 3


def test_the_documented_row_level_security_policy_lets_the_role_read(
    db_conninfo: str, export_role: str
) -> None:
    add_loans(db_conninfo, count=3)
    setup = doc_block("CREATE ROLE abaco_export").replace("abaco_export", export_role)
    policy = doc_block("CREATE POLICY").replace("abaco_export", export_role)
    with psycopg.connect(db_conninfo, autocommit=True) as admin:
        admin.execute(setup)
        admin.execute("ALTER TABLE core_banking.loans ENABLE ROW LEVEL SECURITY")
    role_dsn = make_conninfo(db_conninfo, user=export_role, password="x")
    with psycopg.connect(role_dsn, autocommit=True) as conn:  # RLS on, no policy: no rows
        assert conn.execute("SELECT count(*) FROM core_banking.loans").fetchone() == (0,)
    with psycopg.connect(db_conninfo, autocommit=True) as admin:
        admin.execute(policy)
    with psycopg.connect(role_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM core_banking.loans").fetchone() == (3,)
