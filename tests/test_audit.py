"""The audit trail: records of real runs, the hash chain, tampering, concurrency, secrets,
the PostgreSQL copy, and `abaco audit list | show | verify` through the real CLI."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from abaco_cli.services import staging
from abaco_cli.services.exporting import export_dataset
from abaco_cli.settings import Settings
from tests.conftest import invoke
from tests.ops import (
    LockHolder,
    add_loans,
    audit_path,
    dsn_with_secret,
    expected_hash,
    files_of,
    manifest_path,
    read_records,
    run_abaco,
    tree_snapshot,
    write_lines,
)

REQUIRED = {
    "time",
    "event",
    "run_id",
    "command",
    "arguments",
    "actor",
    "tool_version",
    "config_hash",
    "source",
    "as_of_dates",
    "outputs",
    "duration_seconds",
    "exit_code",
    "error",
    "seq",
    "prev_hash",
    "hash",
}


def verify_json(cli: CliRunner) -> tuple[int, dict[str, Any]]:
    result = invoke(cli, "audit", "verify", "--json")
    return result.exit_code, json.loads(result.stdout)


def kinds(report: dict[str, Any]) -> list[str]:
    return [p["kind"] for p in report["problems"]]


@pytest.fixture
def three_exports(cli: CliRunner, db_conninfo: str, runtime_dir: Path) -> list[dict[str, Any]]:
    """Three successful exports (six records), read back from the log."""
    add_loans(db_conninfo)
    for day in ("2025-06-28", "2025-06-29", "2025-06-30"):
        result = invoke(cli, "export", "dpd", "--as-of", day)
        assert result.exit_code == 0, result.stderr
    return read_records(runtime_dir)


# --------------------------------------------------------------------------------- the records


def test_an_export_appends_start_and_complete(
    three_exports: list[dict[str, Any]], runtime_dir: Path, db_conninfo: str
) -> None:
    records = three_exports
    assert [r["event"] for r in records] == ["START", "COMPLETE"] * 3
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    for record in records:
        assert set(record) >= REQUIRED, REQUIRED - set(record)
        assert record["hash"] == expected_hash(record)
        assert record["command"] == "export dpd"
        assert record["datasets"] == ["dpd"]
        assert record["actor"]["uid"] >= 0 and record["actor"]["host"]
        assert record["actor"]["started_by"] in {"terminal", "cron", "systemd", "other"}
        assert (
            record["source"]["database"] == psycopg.conninfo.conninfo_to_dict(db_conninfo)["dbname"]
        )
        assert len(record["config_hash"]) == 64
    assert records[0]["prev_hash"] == "0" * 64
    for before, after in itertools.pairwise(records):
        assert after["prev_hash"] == before["hash"]
    start, complete = records[4], records[5]
    assert start["run_id"] == complete["run_id"]
    assert start["outputs"] == [] and start["exit_code"] is None
    assert complete["exit_code"] == 0 and complete["error"] is None
    assert complete["as_of_dates"] == ["2025-06-30"]
    assert complete["duration_seconds"] > 0
    # the outputs are the files on disk, byte for byte
    manifest = manifest_path(runtime_dir, "dpd", "2025-06-30")
    on_disk = {
        p.relative_to(runtime_dir / "exports").as_posix(): p.read_bytes()
        for p in files_of(manifest)
    }
    assert {o["path"]: o["sha256"] for o in complete["outputs"]} == {
        path: hashlib.sha256(data).hexdigest() for path, data in on_disk.items()
    }
    assert {o["path"]: o["bytes"] for o in complete["outputs"]} == {
        path: len(data) for path, data in on_disk.items()
    }
    head = json.loads((audit_path(runtime_dir).with_name("audit.jsonl.head")).read_text())
    assert head == {"seq": 6, "hash": complete["hash"]}


def test_a_failed_export_records_fail_with_its_exit_code(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    with psycopg.connect(db_conninfo) as conn:
        conn.execute("DROP TABLE core_banking.payments")
    result = invoke(cli, "export", "dpd", "--as-of", "2025-06-30")
    assert result.exit_code == 1
    start, fail = read_records(runtime_dir)
    assert (start["event"], fail["event"]) == ("START", "FAIL")
    assert fail["exit_code"] == 1
    assert fail["error"]["type"] == "SourceQueryError"
    assert "payments" in fail["error"]["message"]
    assert fail["outputs"] == []


def test_ctrl_c_records_fail_130(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_loans(db_conninfo)

    def interrupt(*args: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(staging, "_stage_table", interrupt)
        result = invoke(cli, "export", "dpd", "--as-of", "2025-06-30")
    assert result.exit_code == 130
    fail = read_records(runtime_dir)[-1]
    assert fail["event"] == "FAIL"
    assert fail["exit_code"] == 130
    assert fail["error"]["type"] == "KeyboardInterrupt"
    assert invoke(cli, "audit", "verify").exit_code == 0


def test_a_locked_dataset_records_fail_4(
    cli: CliRunner, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABACO_LOCK_TIMEOUT_SECONDS", "0.3")
    holder = LockHolder(runtime_dir / "locks" / "dpd.lock")
    try:
        result = invoke(cli, "export", "dpd", "--as-of", "2025-06-30")
    finally:
        holder.stop()
    assert result.exit_code == 4
    fail = read_records(runtime_dir)[-1]
    assert (fail["event"], fail["exit_code"], fail["error"]["type"]) == ("FAIL", 4, "LockedError")
    assert str(holder.pid) in fail["error"]["message"]


def test_db_init_and_seed_are_audited(
    cli: CliRunner, empty_db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABACO_DATABASE_URL", empty_db_conninfo)
    assert invoke(cli, "db", "init").exit_code == 0
    assert invoke(cli, "db", "seed", "--loans", "60", "--seed", "1").exit_code == 0
    records = read_records(runtime_dir)
    assert [(r["command"], r["event"]) for r in records] == [
        ("db init", "START"),
        ("db init", "COMPLETE"),
        ("db seed", "START"),
        ("db seed", "COMPLETE"),
    ]
    assert len(records[1]["details"]["created"]) == 5
    assert records[2]["arguments"] == {
        "loans": 60,
        "seed": 1,
        "through": "2025-12-31",
        "replace": False,
        "destroy": None,
    }
    assert records[3]["details"]["loans"] == 60


def test_an_unwritable_audit_log_stops_the_export_before_it_starts(
    cli: CliRunner,
    db_conninfo: str,
    runtime_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_loans(db_conninfo)
    assert invoke(cli, "export", "dpd", "--as-of", "2025-06-30").exit_code == 0
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("ABACO_AUDIT__PATH", str(blocker / "audit.jsonl"))
    before = tree_snapshot(runtime_dir / "exports")
    failed = invoke(cli, "export", "dpd", "--as-of", "2025-07-01")
    assert failed.exit_code == 1
    lines = [line for line in failed.stderr.splitlines() if line.startswith("abaco: error:")]
    assert len(lines) == 1 and "cannot append to the audit log" in lines[0]
    assert tree_snapshot(runtime_dir / "exports") == before


# ----------------------------------------------------------------------------------- tampering


def test_an_intact_trail_verifies(three_exports: list[dict[str, Any]], cli: CliRunner) -> None:
    code, report = verify_json(cli)
    assert code == 0
    assert report["ok"] is True
    assert report["records"] == 6
    assert report["manifests"] == 3
    assert report["files_checked"] == 12
    assert report["problems"] == []


def test_an_edited_record_is_named(
    three_exports: list[dict[str, Any]], cli: CliRunner, runtime_dir: Path
) -> None:
    path = audit_path(runtime_dir)
    lines = path.read_text().splitlines()
    edited = json.loads(lines[3])
    edited["exit_code"] = 1  # someone hides a success, or fakes one
    lines[3] = json.dumps(edited, sort_keys=True, separators=(",", ":"))
    write_lines(path, lines)
    code, report = verify_json(cli)
    assert code == 1
    assert kinds(report) == ["edited"]
    assert "line 4" in report["problems"][0]["message"]
    assert edited["run_id"] in report["problems"][0]["message"]


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(
    three_exports: list[dict[str, Any]], cli: CliRunner, runtime_dir: Path
) -> None:
    path = audit_path(runtime_dir)
    lines = path.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["outputs"] = []
    edited["hash"] = expected_hash(edited)
    lines[1] = json.dumps(edited, sort_keys=True, separators=(",", ":"))
    write_lines(path, lines)
    code, report = verify_json(cli)
    assert code == 1
    # the edited COMPLETE record no longer lists the run's files: its manifest is unaudited
    assert kinds(report) == ["broken_link", "unaudited_run"]
    assert "line 3" in report["problems"][0]["message"]


def test_a_deleted_record_is_named(
    three_exports: list[dict[str, Any]], cli: CliRunner, runtime_dir: Path
) -> None:
    path = audit_path(runtime_dir)
    lines = path.read_text().splitlines()
    del lines[2]
    write_lines(path, lines)
    code, report = verify_json(cli)
    assert code == 1
    assert kinds(report) == ["broken_link"]
    assert "expected seq 3, found 4" in report["problems"][0]["message"]


def test_reordered_records_are_named(
    three_exports: list[dict[str, Any]], cli: CliRunner, runtime_dir: Path
) -> None:
    path = audit_path(runtime_dir)
    lines = path.read_text().splitlines()
    lines[2], lines[3] = lines[3], lines[2]
    write_lines(path, lines)
    code, report = verify_json(cli)
    assert code == 1
    assert set(kinds(report)) == {"broken_link"}
    wheres = " ".join(p["where"] for p in report["problems"])
    assert "line 3" in wheres and "line 4" in wheres


def test_records_cut_off_the_end_are_detected(
    three_exports: list[dict[str, Any]], cli: CliRunner, runtime_dir: Path
) -> None:
    path = audit_path(runtime_dir)
    write_lines(path, path.read_text().splitlines()[:4])
    code, report = verify_json(cli)
    assert code == 1
    # the third export's records were cut: its live manifest has no record any more
    assert kinds(report) == ["truncated", "unaudited_run"]
    assert "2 record(s) were cut off" in report["problems"][0]["message"]


def test_a_deleted_log_is_detected(
    three_exports: list[dict[str, Any]], cli: CliRunner, runtime_dir: Path
) -> None:
    audit_path(runtime_dir).unlink()
    code, report = verify_json(cli)
    assert code == 1
    assert kinds(report) == ["truncated"] + ["unaudited_run"] * 3


def test_a_modified_artifact_is_named(
    three_exports: list[dict[str, Any]], cli: CliRunner, runtime_dir: Path
) -> None:
    target = next(
        p
        for p in files_of(manifest_path(runtime_dir, "dpd", "2025-06-29"))
        if p.suffix == ".csv" and "loans" in p.name
    )
    target.write_bytes(target.read_bytes().replace(b"1000.00", b"9000.00"))  # same size
    code, report = verify_json(cli)
    assert code == 1
    assert kinds(report) == ["modified_file"]
    assert (
        "dpd/loans.csv/as_of_date=2025-06-29/dpd_loans_2025-06-29.csv"
        in report["problems"][0]["message"]
    )


def test_a_removed_artifact_is_named(
    three_exports: list[dict[str, Any]], cli: CliRunner, runtime_dir: Path
) -> None:
    target = files_of(manifest_path(runtime_dir, "dpd", "2025-06-28"))[-1]
    target.unlink()
    result = invoke(cli, "audit", "verify")
    assert result.exit_code == 1
    assert "missing_file" in result.stdout
    assert target.name in result.stdout
    assert "1 problem(s)" in result.stderr


def test_a_manifest_rewritten_to_match_a_forged_file_is_caught_by_the_audit_record(
    three_exports: list[dict[str, Any]], cli: CliRunner, runtime_dir: Path
) -> None:
    manifest = manifest_path(runtime_dir, "dpd", "2025-06-30")
    data = json.loads(manifest.read_text())
    entry = next(f for f in data["files"] if f["format"] == "csv" and f["table"] == "loans")
    forged = runtime_dir / "exports" / entry["path"]
    forged.write_bytes(forged.read_bytes() + b"extra\r\n")
    entry["sha256"] = hashlib.sha256(forged.read_bytes()).hexdigest()
    entry["bytes"] = forged.stat().st_size
    manifest.write_text(json.dumps(data, indent=2))
    code, report = verify_json(cli)
    assert code == 1
    assert kinds(report) == ["manifest_edited"]


def test_a_torn_line_is_reported_and_later_appends_stay_chained(
    three_exports: list[dict[str, Any]], cli: CliRunner, runtime_dir: Path
) -> None:
    path = audit_path(runtime_dir)
    with path.open("a") as handle:
        handle.write('{"event":"STA')  # a crash in the middle of a write
    assert invoke(cli, "export", "dpd", "--as-of", "2025-07-01").exit_code == 0
    records = read_records_tolerant(path)
    assert records[-1]["prev_hash"] == records[-2]["hash"]
    assert records[-2]["seq"] == 7
    code, report = verify_json(cli)
    assert code == 1
    assert kinds(report) == ["unparseable"]


def read_records_tolerant(path: Path) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def test_verify_exit_code_in_a_real_process(
    three_exports: list[dict[str, Any]], cli_env: dict[str, str], tmp_path: Path, runtime_dir: Path
) -> None:
    assert run_abaco(["audit", "verify"], cli_env, tmp_path).returncode == 0
    files_of(manifest_path(runtime_dir, "dpd", "2025-06-28"))[0].unlink()
    done = run_abaco(["audit", "verify"], cli_env, tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------------- concurrency

_APPENDER = """
import sys, time
from pathlib import Path
from abaco_cli.audit.chain import AuditLog

log = AuditLog(Path(sys.argv[1]))
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
for n in range(int(sys.argv[4])):
    log.append({"event": "START", "run_id": f"{sys.argv[3]}-{n}", "command": "test",
                "padding": "x" * 5000})
"""


def test_concurrent_appends_from_several_processes_keep_one_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit" / "audit.jsonl"
    go = tmp_path / "go"
    writers, each = 6, 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(log), str(go), f"p{i}", str(each)],
        )
        for i in range(writers)
    ]
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    lines = log.read_text().splitlines()
    assert len(lines) == writers * each
    records = [json.loads(line) for line in lines]  # every line whole: nothing interleaved
    assert [r["seq"] for r in records] == list(range(1, writers * each + 1))
    previous = "0" * 64
    for record in records:
        assert record["prev_hash"] == previous
        assert record["hash"] == expected_hash(record)
        previous = record["hash"]
    assert {r["run_id"] for r in records} == {
        f"p{i}-{n}" for i in range(writers) for n in range(each)
    }


# -------------------------------------------------------------------------------------- secrets


def test_the_password_never_appears_in_records_logs_metrics_or_output(
    cli_env: dict[str, str], db_conninfo: str, runtime_dir: Path, tmp_path: Path
) -> None:
    add_loans(db_conninfo)
    dsn, secret = dsn_with_secret(db_conninfo)
    sink_secret = "Sink-Pa55-also-hidden"
    env = {
        **cli_env,
        "ABACO_DATABASE_URL": dsn,
        "ABACO_LOG_FORMAT": "json",
        "ABACO_AUDIT__SINK": "postgres",  # its database is down: logged, never fatal
        "ABACO_AUDIT__DATABASE_URL": f"postgresql://auditor:{sink_secret}@127.0.0.1:1/audit",
        "ABACO_AUDIT__SINK_TIMEOUT_SECONDS": "1",
    }
    outputs = []
    for args in (
        ["export", "dpd", "--as-of", "2025-06-30", "--json"],
        ["export", "dpd", "--as-of", "2025-06-31"],  # a usage error
        ["db", "seed", "--loans", "10"],  # refused: tables hold data
        ["audit", "list", "--json"],
        ["audit", "verify", "--json"],
        ["prune", "--retention", "1h", "--json"],
        ["healthcheck", "--json"],
        ["healthcheck"],
        ["config", "show", "--json"],
    ):
        done = run_abaco(args, env, tmp_path)
        assert "Traceback" not in done.stderr, done.stderr
        outputs.append(done.stdout + done.stderr)
    everything = "\n".join(outputs)
    assert "audit copy in PostgreSQL" in everything  # the sink failure was logged
    written = [p for p in runtime_dir.rglob("*") if p.is_file()]
    assert any(p.name == "audit.jsonl" for p in written)
    assert any(p.name == "abaco.prom" for p in written)
    for secret_text in (secret, sink_secret):
        assert secret_text not in everything
        for path in written:
            assert secret_text.encode() not in path.read_bytes(), path
    records = read_records(runtime_dir)
    assert {r["command"] for r in records} >= {"export dpd", "prune", "db seed"}


# ---------------------------------------------------------------------------- the PostgreSQL copy


def test_db_init_audit_creates_the_shared_table_and_records_go_there(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = invoke(cli, "db", "init", "--audit", "--json")
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["audit_table"]["created"] is True
    again = invoke(cli, "db", "init", "--audit", "--json")
    assert json.loads(again.stdout)["audit_table"]["created"] is False
    monkeypatch.setenv("ABACO_AUDIT__SINK", "postgres")
    add_loans(db_conninfo)
    assert invoke(cli, "export", "dpd", "--as-of", "2025-06-30").exit_code == 0
    local = [r for r in read_records(runtime_dir) if r["command"] == "export dpd"]
    with psycopg.connect(db_conninfo) as conn:
        rows = conn.execute(
            "SELECT event, run_id, seq, hash, record FROM abaco_audit.audit_log ORDER BY id"
        ).fetchall()
        assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
            (r["event"], r["run_id"], r["seq"], r["hash"]) for r in local
        ]
        assert rows[-1][4] == local[-1]
        for statement in (
            "UPDATE abaco_audit.audit_log SET event = 'FAIL'",
            "DELETE FROM abaco_audit.audit_log",
            "TRUNCATE abaco_audit.audit_log",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
            conn.rollback()


def test_a_down_audit_database_never_fails_the_export(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_loans(db_conninfo)
    monkeypatch.setenv("ABACO_AUDIT__SINK", "postgres")
    monkeypatch.setenv("ABACO_AUDIT__DATABASE_URL", "postgresql://auditor@127.0.0.1:1/audit")
    monkeypatch.setenv("ABACO_AUDIT__SINK_TIMEOUT_SECONDS", "1")
    result = invoke(cli, "export", "dpd", "--as-of", "2025-06-30")
    assert result.exit_code == 0
    assert result.stderr.count("the audit copy in PostgreSQL (abaco_audit.audit_log) failed") == 2
    assert [r["event"] for r in read_records(runtime_dir)] == ["START", "COMPLETE"]


# ------------------------------------------------------------------------------- list and show


def test_list_filters_by_window_dataset_status_and_command(
    cli: CliRunner, settings: Settings, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    with freeze_time(datetime.now(UTC) - timedelta(days=10)):
        export_dataset(settings, "dpd", datetime(2025, 6, 1).date(), ["csv"])  # old run
    assert invoke(cli, "export", "dpd", "--as-of", "2025-06-30").exit_code == 0
    with psycopg.connect(db_conninfo) as conn:
        conn.execute("DROP TABLE core_banking.payments")
    assert invoke(cli, "export", "dpd", "--as-of", "2025-06-30").exit_code == 1

    def runs(*args: str) -> list[dict[str, Any]]:
        result = invoke(cli, "audit", "list", "--json", *args)
        assert result.exit_code == 0, result.stderr
        found: list[dict[str, Any]] = json.loads(result.stdout)["runs"]
        return found

    assert [r["status"] for r in runs()] == ["success", "failed"]
    assert len(runs("--since", "2w")) == 3
    failed = runs("--status", "failed")
    assert len(failed) == 1 and failed[0]["exit_code"] == 1
    assert "SourceQueryError" in failed[0]["error"]
    assert len(runs("--dataset", "dpd", "--since", "4w")) == 3
    assert runs("--dataset", "kpi") == []
    assert len(runs("--command", "export")) == 2
    assert runs("--command", "prune") == []
    table = invoke(cli, "audit", "list", "--status", "failed")
    assert "SourceQueryError" in table.stdout


@pytest.mark.parametrize("since", ["6m", "90", "-1d", "0d"])
def test_list_refuses_ambiguous_windows(cli: CliRunner, since: str) -> None:
    result = invoke(cli, "audit", "list", "--since", since)
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--since" in result.stderr


def test_show_prints_every_record_of_a_run(
    three_exports: list[dict[str, Any]], cli: CliRunner
) -> None:
    run_id = three_exports[2]["run_id"]
    result = invoke(cli, "audit", "show", run_id, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["records"] == three_exports[2:4]
    text = invoke(cli, "audit", "show", run_id)
    assert text.exit_code == 0
    assert three_exports[3]["hash"] in text.stdout
    missing = invoke(cli, "audit", "show", "19990101T000000Z-000000")
    assert missing.exit_code == 1
    assert len(missing.stderr.strip().splitlines()) == 1


def test_sigterm_from_a_timer_is_audited_like_ctrl_c(
    cli_env: dict[str, str], runtime_dir: Path, tmp_path: Path
) -> None:
    """systemd stops a unit (and `timeout` a cron job) with SIGTERM: FAIL, exit 130."""
    holder = LockHolder(runtime_dir / "locks" / "dpd.lock")  # the export waits for it
    env = {**cli_env, "ABACO_LOCK_TIMEOUT_SECONDS": "60"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACO_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "abaco_cli", "export", "dpd", "--as-of", "2025-06-30"],
        env={**clean, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not audit_path(runtime_dir).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        holder.stop()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    fail = read_records(runtime_dir)[-1]
    assert (fail["event"], fail["exit_code"]) == ("FAIL", 130)
    assert fail["error"]["type"] == "InterruptedRun"
    assert fail["error"]["message"].startswith("stopped by SIGTERM; nothing of run")
    assert "interrupted by SIGTERM: nothing of run" in stderr
    assert len(stderr.strip().splitlines()) <= 2  # the wait notice and the one error line


def test_operations_commands_have_help(cli: CliRunner) -> None:
    for args in (
        ["audit", "list"],
        ["audit", "show"],
        ["audit", "verify"],
        ["prune"],
        ["healthcheck"],
        ["db", "init"],
    ):
        result = invoke(cli, *args, "--help")
        assert result.exit_code == 0, args
        assert "Usage" in result.stdout and len(result.stdout.splitlines()) > 3
    assert "--audit" in invoke(cli, "db", "init", "--help").stdout
