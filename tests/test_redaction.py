"""One redaction (abaco_cli.redaction): DSNs, free text and data, by parsing.

Every expected output here is written by hand, never computed by the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr
from typer.testing import CliRunner

from abaco_cli.redaction import MARK, SECRET_PARAMETERS, Redactor, redacted_settings
from abaco_cli.settings import AuditSettings, Settings
from tests.conftest import invoke
from tests.ops import add_loans, manifest_path, read_records

PATH = "dpd/loans/as_of_date=2025-12-31/dpd_loans_2025-12-31.csv"
LOG_LINE = f"wrote {PATH} (3 rows) in 0.2s, as of 2025-12-31; manifest dpd_2025-12-31.json"


# ------------------------------------------------------------------------------- the parameters


def test_every_libpq_password_parameter_is_secret() -> None:
    assert {"password", "sslpassword", "oauth_client_secret"} <= SECRET_PARAMETERS
    assert {"scram_client_key", "scram_server_key"} <= SECRET_PARAMETERS
    assert not {"user", "host", "dbname", "passfile", "sslkey", "sslcert"} & SECRET_PARAMETERS
    assert MARK == "***"


# ------------------------------------------------------------------------------------- DSNs


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://u:2025@h/db", "postgresql://u:***@h/db"),
        ("postgres://u:a@h:5432/db", "postgres://u:***@h:5432/db"),
        # percent-encoded password: the whole encoded value goes
        ("postgresql://analyst:p%40ss%2Fw0rd@db.example:6543/abaco", None),
        ("postgresql://u:p%40ss@h1:5432,h2:5433/db?sslmode=require&sslpassword=k%26y", None),
        ("postgresql://u@h/db?password=2025&application_name=x", None),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h/db?pass%77ord=x", "postgresql://h/db?pass%77ord=***"),
        ("host=h sslpassword=abc dbname=x", "host=h sslpassword=*** dbname=x"),
        ("host=h password=2025 dbname=x", "host=h password=*** dbname=x"),
        ("host=h password='a b' sslpassword='c\\'d' dbname=x", None),
        ("host=h  password = s3cret  port=5432", "host=h  password = ***  port=5432"),
        ("host=h oauth_client_secret=tok dbname=x", "host=h oauth_client_secret=*** dbname=x"),
        ("host=/tmp dbname=x user=u", "host=/tmp dbname=x user=u"),
        ("", ""),
    ],
)
def test_dsn_hides_every_secret_and_keeps_its_form(dsn: str, expected: str | None) -> None:
    by_hand = {
        "postgresql://analyst:p%40ss%2Fw0rd@db.example:6543/abaco": (
            "postgresql://analyst:***@db.example:6543/abaco"
        ),
        "postgresql://u:p%40ss@h1:5432,h2:5433/db?sslmode=require&sslpassword=k%26y": (
            "postgresql://u:***@h1:5432,h2:5433/db?sslmode=require&sslpassword=***"
        ),
        "postgresql://u@h/db?password=2025&application_name=x": (
            "postgresql://u@h/db?password=***&application_name=x"
        ),
        "host=h password='a b' sslpassword='c\\'d' dbname=x": (
            "host=h password=*** sslpassword=*** dbname=x"
        ),
    }
    assert Redactor().dsn(dsn) == (expected if expected is not None else by_hand[dsn])


def test_an_unparseable_dsn_shows_nothing_of_itself() -> None:
    for dsn in ("host=h password", "host=h password='2025", "postgresql://u:pw@h/db?bogus=1"):
        assert Redactor(["pw", "2025"]).dsn(dsn) == "*** (unparseable)"


def test_a_dsn_that_libpq_reads_differently_is_rebuilt_by_libpq() -> None:
    # a backslash-escaped space: libpq reads "a b"; the result is still a valid conninfo
    redacted = Redactor().dsn("host=h password=a\\ b dbname=x")
    assert redacted == "host=h password=*** dbname=x"
    assert conninfo_to_dict(redacted) == {"host": "h", "password": "***", "dbname": "x"}


# ------------------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=2025", "password=***"),
        (
            "bad conninfo: host=h sslpassword=abc dbname=x",
            "bad conninfo: host=h sslpassword=*** dbname=x",
        ),
        ("using password='a b' and host=h", "using password=*** and host=h"),
        ("cannot reach postgresql://u:2025@h/db.", "cannot reach postgresql://u:***@h/db."),
        (
            "url='postgres://u:p%40ss@h/db?sslpassword=x&dbname=d' failed",
            "url='postgres://u:***@h/db?sslpassword=***&dbname=d' failed",
        ),
        ("PGPASSWORD=hunter2 abaco export", "PGPASSWORD=*** abaco export"),
        ("--password=hunter2", "--password=***"),
        ("password authentication failed for user u", "password authentication failed for user u"),
        (
            "sslpassword is not set; no password given",
            "sslpassword is not set; no password given",
        ),
        ("password= s3cret (libpq skips spaces)", "password= *** (libpq skips spaces)"),
        (
            "password= at the end: password=",
            "password= *** the end: password=",
        ),
    ],
)
def test_text_redacts_dsns_it_finds_by_parsing(text: str, expected: str) -> None:
    assert Redactor().text(text) == expected


@pytest.mark.parametrize("secret", ["2025", "a", "12", "31", "csv", "dpd", "loans", "-", "_"])
def test_a_path_never_changes_whatever_the_secret(secret: str) -> None:
    redactor = Redactor([secret])
    assert redactor.text(PATH) == PATH
    assert redactor.text(f'"{PATH}"') == f'"{PATH}"'
    assert redactor.text(f"as_of_date=2025-12-31/{PATH}") == f"as_of_date=2025-12-31/{PATH}"
    assert redactor.value({"outputs": [{"path": PATH}]}) == {"outputs": [{"path": PATH}]}


def test_a_short_secret_is_redacted_only_where_it_stands_alone() -> None:
    redactor = Redactor(["2025"])
    assert redactor.text(LOG_LINE) == LOG_LINE
    assert redactor.text("2025") == "***"
    assert redactor.text("the password is 2025.") == "the password is ***."
    assert redactor.text("(2025), '2025' and \"2025\"") == "(***), '***' and \"***\""
    assert (
        redactor.text("2025-06-30 20250 x2025 2025x 2025/1")
        == "2025-06-30 20250 x2025 2025x 2025/1"
    )
    assert (
        redactor.text("password=2025 as_of_date=2025-12-31") == "password=*** as_of_date=2025-12-31"
    )
    assert (
        redactor.text("postgresql://u:2025@h/db?dbname=2025")
        == "postgresql://u:***@h/db?dbname=2025"
    )
    one = Redactor(["a"])
    assert one.text("a") == "***"
    assert one.text("user a, file a.csv, as_of_date=a") == "user ***, file a.csv, as_of_date=a"
    assert one.text("postgresql://a:a@a/a") == "postgresql://a:***@a/a"


def test_known_secrets_in_a_url_are_matched_encoded_too() -> None:
    redactor = Redactor(["p@ss w"])
    assert redactor.text("p@ss w") == "***"
    assert redactor.text("token p%40ss%20w given") == "token *** given"
    assert redactor.text("p@ss wx") == "p@ss wx"


def test_trailing_punctuation_after_a_known_secret_value_is_kept() -> None:
    redactor = Redactor(["abc"])
    assert redactor.text('dsn "host=h password=abc"') == 'dsn "host=h password=***"'
    assert redactor.text("(password=abc).") == "(password=***)."
    # an unknown value swallows what follows it up to whitespace: better too much than a leak
    assert Redactor().text("(password=xyz).") == "(password=***"


def test_a_secret_is_matched_case_sensitively_and_keys_are_not() -> None:
    redactor = Redactor(["Abc"])
    assert redactor.text("abc Abc ABC") == "abc *** ABC"
    assert Redactor().text("PASSWORD=x Password=y") == "PASSWORD=*** Password=***"


def test_value_walks_dicts_lists_and_tuples() -> None:
    redactor = Redactor(["2025", "hunter2"])
    data = {
        "error": {"message": "password=hunter2 refused", "type": "X"},
        "outputs": [{"path": PATH, "rows": 2025}, ("2025", "hunter2!", "2025-12-31")],
        "password": "anything",
        "sslpassword": "",
        "nested": [[{"dsn": "postgresql://u:zz@h/db"}]],
        "count": 3,
        "none": None,
    }
    assert redactor.value(data) == {
        "error": {"message": "password=*** refused", "type": "X"},
        "outputs": [{"path": PATH, "rows": 2025}, ("***", "***!", "2025-12-31")],
        "password": "***",
        "sslpassword": "",
        "nested": [[{"dsn": "postgresql://u:***@h/db"}]],
        "count": 3,
        "none": None,
    }


def test_the_redactor_never_shows_its_secrets() -> None:
    assert "hunter2" not in repr(Redactor(["hunter2"]))


# --------------------------------------------------------------------------------- settings


def _settings(source: str | None, audit: str | None = None) -> Settings:
    return Settings(
        database_url=SecretStr(source) if source is not None else None,
        audit=AuditSettings(database_url=SecretStr(audit) if audit is not None else None),
    )


def test_from_settings_knows_both_dsns_secrets() -> None:
    settings = _settings(
        "host=h password='2025' sslpassword=k3y dbname=x",
        "postgresql://auditor:s%40t@a/audit?sslpassword=q",
    )
    assert set(Redactor.from_settings(settings).secrets) == {
        "2025",
        "k3y",
        "s@t",
        "s%40t",
        "q",
    }
    assert Redactor.from_settings(_settings(None)).secrets == ()


def test_from_settings_finds_the_password_of_an_unparseable_dsn() -> None:
    redactor = Redactor.from_settings(_settings("host=h password=hunter2 port"))
    assert "hunter2" in redactor.secrets
    assert redactor.text("got hunter2 back") == "got *** back"


def test_redacted_settings_redacts_both_dsns() -> None:
    data = redacted_settings(
        _settings("host=h sslpassword=abc password=2025 dbname=x", "postgresql://a:b@c/d")
    )
    assert data["database_url"] == "host=h sslpassword=*** password=*** dbname=x"
    assert data["audit"]["database_url"] == "postgresql://a:***@c/d"
    assert data["runtime_dir"] == "abaco_runtime"


# ------------------------------------------------------------------------------ config show

SOURCE = "host=db.example port=6543 user=analyst sslpassword=Ssl-K3y password=2025 dbname=abaco"
AUDIT = "postgresql://auditor:Aud%21t-Pa55@audit.example/audit?sslmode=require"


@pytest.fixture
def secret_env(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("ABACO_DATABASE_URL", SOURCE)
    monkeypatch.setenv("ABACO_AUDIT__DATABASE_URL", AUDIT)
    return cli


def _no_secret_in(text: str) -> None:
    for secret in ("Ssl-K3y", "2025", "Aud%21t-Pa55", "Aud!t-Pa55"):
        assert secret not in text


def test_config_show_json_redacts_both_dsns(secret_env: CliRunner) -> None:
    result = invoke(secret_env, "config", "show", "--json")
    assert result.exit_code == 0, result.stderr
    _no_secret_in(result.stdout + result.stderr)
    settings = json.loads(result.stdout)["settings"]
    assert settings["database_url"] == (
        "host=db.example port=6543 user=analyst sslpassword=*** password=*** dbname=abaco"
    )
    assert settings["audit"]["database_url"] == (
        "postgresql://auditor:***@audit.example/audit?sslmode=require"
    )


def test_config_show_table_redacts_both_dsns(secret_env: CliRunner) -> None:
    result = invoke(secret_env, "config", "show")
    assert result.exit_code == 0, result.stderr
    _no_secret_in(result.stdout + result.stderr)
    assert (
        "host=db.example port=6543 user=analyst sslpassword=*** password=*** dbname=abaco"
        in result.stdout
    )
    assert '"database_url": "postgresql://auditor:***@audit.example/audit?sslmode=require"' in (
        result.stdout
    )


def test_config_show_url_with_query_string_secrets(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "ABACO_DATABASE_URL", "postgresql://u:p%40ss@h/db?sslpassword=q-s3cr3t&sslmode=require"
    )
    result = invoke(cli, "config", "show", "--json")
    assert result.exit_code == 0, result.stderr
    assert "q-s3cr3t" not in result.stdout and "p%40ss" not in result.stdout
    assert json.loads(result.stdout)["settings"]["database_url"] == (
        "postgresql://u:***@h/db?sslpassword=***&sslmode=require"
    )


# -------------------------------------------------------------------------- real failures


def test_a_refused_connection_shows_no_short_password(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ABACO_")},
        "ABACO_DATABASE_URL": "postgresql://u:2025@127.0.0.1:1/db",
        "ABACO_RUNTIME_DIR": str(tmp_path / "runtime"),
        "ABACO_RETRY__ATTEMPTS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "abaco_cli", "export", "dpd", "--as-of", "2025-06-30"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3
    assert ":2025@" not in result.stdout + result.stderr
    assert "abaco: error: connecting to the source: connection failed" in result.stderr
    records = read_records(tmp_path / "runtime")
    assert [r["event"] for r in records] == ["START", "FAIL"]
    for record in records:
        assert record["as_of_dates"] == ["2025-06-30"]
        assert record["arguments"]["as_of_dates"] == ["2025-06-30"]
    assert "2025@" not in (tmp_path / "runtime" / "audit" / "audit.jsonl").read_text()


def test_a_short_password_leaves_audit_paths_intact_and_forgery_is_caught(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if conninfo_to_dict(db_conninfo).get("password"):
        pytest.skip("the test server has a password of its own")
    add_loans(db_conninfo)
    # the suite's own server trusts local connections: any password works
    monkeypatch.setenv("ABACO_DATABASE_URL", make_conninfo(db_conninfo, password="2025"))
    result = invoke(cli, "export", "dpd", "--as-of", "2025-12-31")
    assert result.exit_code == 0, result.stderr
    complete = read_records(runtime_dir)[-1]
    assert complete["event"] == "COMPLETE"
    assert complete["as_of_dates"] == ["2025-12-31"]
    paths = {o["path"] for o in complete["outputs"]}
    assert "dpd/loans.csv/as_of_date=2025-12-31/dpd_loans_2025-12-31.csv" in paths
    assert "dpd/loans/as_of_date=2025-12-31/dpd_loans_2025-12-31.parquet" in paths
    assert all((runtime_dir / "exports" / p).is_file() for p in paths)
    # edit a file and its manifest entry together: the audit record still knows better
    manifest = manifest_path(runtime_dir, "dpd", "2025-12-31")
    data = json.loads(manifest.read_text())
    entry = next(f for f in data["files"] if f["format"] == "csv" and f["table"] == "loans")
    forged = runtime_dir / "exports" / entry["path"]
    forged.write_bytes(forged.read_bytes() + b"extra\r\n")
    entry["sha256"] = hashlib.sha256(forged.read_bytes()).hexdigest()
    entry["bytes"] = forged.stat().st_size
    manifest.write_text(json.dumps(data, indent=2))
    verify = invoke(cli, "audit", "verify", "--json")
    assert verify.exit_code == 1
    assert [p["kind"] for p in json.loads(verify.stdout)["problems"]] == ["manifest_edited"]
