"""The real CLI: exit codes, one-line errors, --json, --dry-run, db commands, secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from abaco_cli.cli.app import app
from tests.conftest import Server, invoke


def seed_one_loan(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO core_banking.customers (customer_id) VALUES ('C1')")
        conn.execute(
            "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date, principal)"
            " VALUES ('L1', 'C1', '2025-05-01', 1000.00)"
        )
        conn.execute(
            "INSERT INTO core_banking.payment_schedule (loan_id, installment_no, due_date,"
            " principal_due) VALUES ('L1', 1, '2025-06-01', 1000.00)"
        )


def test_every_command_has_help(cli: CliRunner) -> None:
    groups = {"db": ["init", "seed", "check"], "export": ["dpd"], "config": ["show"]}
    for group, commands in groups.items():
        for command in commands:
            result = invoke(cli, group, command, "--help")
            assert result.exit_code == 0
            assert "Usage" in result.stdout
            assert len(result.stdout.strip().splitlines()) > 3
    assert invoke(cli, "demo", "--help").exit_code == 0


def test_version(cli: CliRunner) -> None:
    result = invoke(cli, "--version")
    assert result.exit_code == 0
    assert result.stdout.startswith("abaco ")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--as-of", "2025-13-01"], "--as-of '2025-13-01' is not a date"),
        (["--as-of", "yesterday"], "is not a date"),
        (["--as-of", "2025-6-30"], "is not a date"),
        (["--format", "xlsx"], "unknown format 'xlsx'"),
        (["--format", ","], "no format given"),
    ],
)
def test_bad_export_input_exits_2_with_one_line(
    cli: CliRunner, args: list[str], fragment: str
) -> None:
    result = invoke(cli, "export", "dpd", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["db", "seed", "--loans", "0"],
        ["db", "seed", "--loans", "-5"],
        ["db", "seed", "--through", "31/12/2025"],
    ],
)
def test_bad_seed_input_exits_2(cli: CliRunner, args: list[str]) -> None:
    result = invoke(cli, *args)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_configuration_exits_2(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABACO_DPD__DEFAULT_THRESHOLD_DAYS", "zero")
    result = invoke(cli, "export", "dpd", "--as-of", "2025-06-30")
    assert result.exit_code == 2
    assert "dpd.default_threshold_days" in result.stderr


def test_bad_bucket_policy_in_toml_exits_2(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "gaps.toml"
    config.write_text(
        "[[dpd.buckets]]\nvalue = 0\nlabel = 'Current'\nmin_days = 0\nmax_days = 0\n"
        "[[dpd.buckets]]\nvalue = 1\nlabel = 'Late'\nmin_days = 5\n"
    )
    result = invoke(cli, "--config", str(config), "export", "dpd", "--as-of", "2025-06-30")
    assert result.exit_code == 2
    assert "must start at 1 days" in result.stderr


def test_export_json_describes_the_run(cli: CliRunner, db_conninfo: str, runtime_dir: Path) -> None:
    seed_one_loan(db_conninfo)
    result = invoke(
        cli, "export", "dpd", "--as-of", "2025-06-30", "--format", "csv,parquet", "--json"
    )
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["dataset"] == "dpd"
    assert payload["as_of_date"] == "2025-06-30"
    assert payload["status"] == "success"
    assert Path(payload["manifest_path"]).is_file()
    assert {(f["table"], f["format"]) for f in payload["files"]} == {
        ("loans", "csv"),
        ("loans", "parquet"),
        ("aging", "csv"),
        ("aging", "parquet"),
    }
    loans_csv = next(f for f in payload["files"] if f["table"] == "loans" and f["format"] == "csv")
    assert loans_csv["rows"] == 1
    assert Path(loans_csv["path"]).stat().st_size == loans_csv["bytes"]
    assert runtime_dir in Path(loans_csv["path"]).parents


def test_dry_run_writes_nothing(cli: CliRunner, runtime_dir: Path) -> None:
    result = invoke(cli, "export", "dpd", "--as-of", "2025-06-30", "--dry-run", "--json")
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True
    assert any(f["path"].endswith("dpd_loans_2025-06-30.csv") for f in plan["files"])
    assert "core_banking" in plan["queries"]["loans"]
    assert not (runtime_dir / "exports").exists()
    text = invoke(cli, "export", "dpd", "--as-of", "2025-06-30", "--dry-run")
    assert text.exit_code == 0
    assert "dpd_aging_2025-06-30.parquet" in text.stdout
    assert not (runtime_dir / "exports").exists()


def test_db_check_names_a_missing_column(cli: CliRunner, db_conninfo: str) -> None:
    assert invoke(cli, "db", "check").exit_code == 0
    with psycopg.connect(db_conninfo) as conn:
        conn.execute("ALTER TABLE core_banking.payments DROP COLUMN rebates")
        conn.execute("ALTER TABLE core_banking.loans ALTER COLUMN principal TYPE float8")
    result = invoke(cli, "db", "check", "--json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert {
        "table": "core_banking.payments",
        "column": "rebates",
        "problem": "column is missing",
    } in problems
    assert any(p["column"] == "principal" and "double precision" in p["problem"] for p in problems)


def test_db_init_is_idempotent_and_check_passes(
    cli: CliRunner, empty_db_conninfo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABACO_DATABASE_URL", empty_db_conninfo)
    before = invoke(cli, "db", "check", "--json")
    assert before.exit_code == 1
    assert len(json.loads(before.stdout)["problems"]) == 5
    first = invoke(cli, "db", "init", "--json")
    assert first.exit_code == 0
    assert len(json.loads(first.stdout)["created"]) == 5
    second = invoke(cli, "db", "init", "--json")
    assert second.exit_code == 0
    assert json.loads(second.stdout)["created"] == []
    assert invoke(cli, "db", "check").exit_code == 0


def test_configured_table_names_are_used(
    cli: CliRunner, empty_db_conninfo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABACO_DATABASE_URL", empty_db_conninfo)
    monkeypatch.setenv("ABACO_TABLES__LOANS", "lending.loan_book")
    assert invoke(cli, "db", "init").exit_code == 0
    with psycopg.connect(empty_db_conninfo) as conn:
        found = conn.execute("SELECT to_regclass('lending.loan_book')").fetchone()
    assert found is not None and found[0] is not None
    assert invoke(cli, "db", "check").exit_code == 0


def test_seed_then_export_through_the_cli(cli: CliRunner, runtime_dir: Path) -> None:
    seeded = invoke(cli, "db", "seed", "--loans", "300", "--seed", "3", "--json")
    assert seeded.exit_code == 0, seeded.stderr
    assert json.loads(seeded.stdout)["loans"] == 300
    again = invoke(cli, "db", "seed", "--loans", "300")
    assert again.exit_code == 2
    assert "--replace" in again.stderr
    result = invoke(cli, "export", "dpd", "--as-of", "2025-12-31", "--json")
    assert result.exit_code == 0
    loans = next(f for f in json.loads(result.stdout)["files"] if f["table"] == "loans")
    assert loans["rows"] == 300


def test_missing_table_is_a_clear_failure(cli: CliRunner, db_conninfo: str) -> None:
    with psycopg.connect(db_conninfo) as conn:
        conn.execute("DROP TABLE core_banking.payments")
    result = invoke(cli, "export", "dpd", "--as-of", "2025-06-30")
    assert result.exit_code == 1
    assert "payments" in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("abaco: error:")]
    assert len(errors) == 1
    assert 'relation "core_banking.payments" does not exist' in errors[0]
    assert "LINE" not in errors[0]


def test_config_show_redacts_the_password(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ABACO_DATABASE_URL", "postgresql://analyst:Sup3r-S3cret@db.example:6543/abaco"
    )
    result = invoke(cli, "config", "show", "--json")
    assert result.exit_code == 0
    assert "Sup3r-S3cret" not in result.stdout + result.stderr
    settings = json.loads(result.stdout)["settings"]
    assert "***" in settings["database_url"]
    assert settings["dpd"]["default_threshold_days"] == 90  # definitions version 2
    table = invoke(cli, "config", "show")
    assert "Sup3r-S3cret" not in table.stdout + table.stderr


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "abaco_cli", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_unreachable_database_exits_3_without_the_password(tmp_path: Path) -> None:
    secret = "Pa55-w0rd-never-shown"
    env = {
        "ABACO_DATABASE_URL": f"postgresql://analyst:{secret}@127.0.0.1:1/abaco",
        "ABACO_RUNTIME_DIR": str(tmp_path / "runtime"),
        "ABACO_RETRY__ATTEMPTS": "2",
        "ABACO_RETRY__INITIAL_WAIT_SECONDS": "0.1",
    }
    result = _run(["export", "dpd", "--as-of", "2025-06-30"], env, tmp_path)
    assert result.returncode == 3
    assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "abaco: error:" in line]
    assert len(error_lines) == 1
    assert "retrying" in result.stderr  # the retry was logged
    assert not list((tmp_path / "runtime").rglob("*.csv"))


def test_a_given_password_never_leaks_from_db_check(pg_server: Server, tmp_path: Path) -> None:
    base = pg_server.dsn_for("postgres")
    if "host=/" not in base and "host=%2F" not in base and "?host=/" not in base:
        pytest.skip("the password check needs our own socket server")
    with pg_server.admin() as conn:
        conn.execute("DROP ROLE IF EXISTS pw_user")
        conn.execute("CREATE ROLE pw_user LOGIN PASSWORD 'right-one'")
    # trust auth accepts any password; this checks only that a given password never leaks.
    secret = "wrong-Secret-123"
    env = {
        "ABACO_DATABASE_URL": base.replace("abaco@", f"pw_user:{secret}@", 1),
        "ABACO_RUNTIME_DIR": str(tmp_path / "rt"),
    }
    result = _run(["db", "check"], env, tmp_path)
    assert secret not in result.stdout + result.stderr


def test_real_process_exit_code_for_bad_date(tmp_path: Path) -> None:
    result = _run(["export", "dpd", "--as-of", "30-06-2025"], {}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_cli_runner_separates_streams() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["export", "dpd", "--as-of", "bad"])
    assert result.exit_code == 2
    assert result.stdout == ""


# --- the way out: exit handlers and streams, without the interpreter's teardown ---------------

_LEAVE = """
import atexit, logging, sys, threading, time
from abaco_cli.cli.app import leave
logging.basicConfig(stream=sys.stderr, format="%(message)s")
atexit.register(lambda: print("exit handler ran", flush=False))
sys.stdout.write("x" * 200_000 + "\\n")  # more than a pipe holds: written before the exit
logging.getLogger("t").warning("logged")
if sys.argv[1] == "thread":
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished"))).start()
leave(SystemExit(int(sys.argv[2]) if sys.argv[2].isdigit() else sys.argv[2]))
"""


@pytest.mark.parametrize(
    ("kind", "status", "code", "last_line"),
    [
        ("plain", "0", 0, "exit handler ran"),
        ("plain", "3", 3, "exit handler ran"),
        ("thread", "4", 4, "exit handler ran"),  # the ordinary way: the thread finishes first
        ("plain", "a message", 1, "exit handler ran"),  # the ordinary way: the message printed
    ],
)
def test_leaving_runs_exit_handlers_and_flushes_the_streams(
    kind: str, status: str, code: int, last_line: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LEAVE, kind, status],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == code
    lines = result.stdout.splitlines()
    assert lines[0] == "x" * 200_000
    assert lines[-1] == last_line
    assert ("thread finished" in lines) == (kind == "thread")
    assert "logged" in result.stderr
    assert ("a message" in result.stderr) == (status == "a message")


def test_the_real_program_prints_all_of_its_output_and_its_exit_code(tmp_path: Path) -> None:
    """`abaco` leaves without the interpreter's teardown: what it printed is all there, and
    the exit code is the command's."""
    env = {"ABACO_RUNTIME_DIR": str(tmp_path / "rt")}
    shown = _run(["kpi", "definitions", "--json"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.endswith("\n")
    assert json.loads(shown.stdout)
    usage = _run(["export", "nothing-such"], env, tmp_path)
    assert usage.returncode == 2
    assert usage.stderr.count("abaco: error:") == 1


# --- the root's commands, imported when they are run ---------------------------------------


def test_a_command_imports_only_its_own_group() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from abaco_cli.cli.app import app\n"
        "result = CliRunner().invoke(app, ['kpi', 'definitions', '--json'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('abaco_cli.cli.'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "abaco_cli.cli.kpi" in loaded
    assert not loaded & {f"abaco_cli.cli.{m}" for m in ("lake", "upload", "demo", "db", "report")}


def test_the_root_help_lists_every_command_and_a_typo_gets_suggestions(cli: CliRunner) -> None:
    from abaco_cli.cli.app import COMMANDS

    shown = invoke(cli, "--help")
    assert shown.exit_code == 0
    rows = [line for line in shown.stdout.splitlines() if line.startswith("│ ") and line[2] != " "]
    listed = [row.split()[1] for row in rows]  # a row's first word, not a wrapped line's
    names = [n for n in listed if n in COMMANDS]
    assert names == list(COMMANDS)  # every one, in the order of COMMANDS
    typo = invoke(cli, "exprot", "dpd")
    assert typo.exit_code == 2
    assert "Did you mean 'export'" in typo.stderr
    assert invoke(cli, "export", "table", "--help").exit_code == 0  # added by cli/extract
