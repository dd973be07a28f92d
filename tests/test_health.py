"""`abaco healthcheck` in each state, with its exit code (0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN), its one-line, table-free output for monitoring, --json, and the metrics it writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from abaco_cli.runtime.lock import dataset_lock
from tests.conftest import invoke
from tests.ops import (
    LockHolder,
    add_loans,
    audit_path,
    manifest_path,
    metric_samples,
    run_abaco,
    set_finished_at,
    write_lines,
)


@pytest.fixture
def health_env(cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Check the freshness of dpd only (the datasets this suite exports)."""
    monkeypatch.setenv("ABACO_HEALTH__DATASETS", '["dpd"]')
    return {**cli_env, "ABACO_HEALTH__DATASETS": '["dpd"]'}


@pytest.fixture
def exported(health_env: dict[str, str], cli: CliRunner, db_conninfo: str) -> None:
    add_loans(db_conninfo)
    assert invoke(cli, "export", "dpd", "--as-of", "2025-06-30").exit_code == 0


def check(cli: CliRunner, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke(cli, "healthcheck", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def states(report: dict[str, Any]) -> dict[str, str]:
    return {c["check"]: c["state"] for c in report["checks"]}


def test_all_ok_exits_0_with_one_plugin_line(
    exported: None, cli: CliRunner, runtime_dir: Path
) -> None:
    result = invoke(cli, "healthcheck")
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ABACO OK - all 12 checks OK")
    assert "| " in lines[0] and "db_latency=" in lines[0]
    code, report = check(cli)
    assert code == 0
    assert report["status"] == "OK"
    assert set(states(report).values()) == {"OK"}
    assert list(states(report)) == [
        "config",
        "db",
        "contract",
        "freshness",
        "dq",
        "runtime",
        "disk",
        "audit",
        "sink",
        "locks",
        "upload",
        "lake",
    ]
    freshness = next(c for c in report["checks"] if c["check"] == "freshness")
    assert freshness["details"]["dpd"]["limit_hours"] == 2.0
    db = next(c for c in report["checks"] if c["check"] == "db")
    assert db["details"]["latency_ms"] >= 0
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    for name in states(report):
        assert samples[("abaco_healthcheck_status", (("check", name),))] == 0
    assert 0 < samples[("abaco_disk_free_ratio", ())] <= 1
    assert samples[("abaco_export_freshness_limit_seconds", (("dataset", "dpd"),))] == 7200
    assert ("abaco_healthcheck_last_run_timestamp_seconds", ()) in samples


def test_an_unreachable_database_is_critical_in_a_real_process(
    health_env: dict[str, str], tmp_path: Path
) -> None:
    secret = "Unreachable-Pa55"
    env = {**health_env, "ABACO_DATABASE_URL": f"postgresql://u:{secret}@127.0.0.1:1/x"}
    done = run_abaco(["healthcheck", "--check", "db,contract"], env, tmp_path)
    assert done.returncode == 2
    assert done.stdout.startswith("ABACO CRITICAL - db CRITICAL: unreachable")
    assert "contract UNKNOWN" in done.stdout
    assert secret not in done.stdout + done.stderr
    assert done.stdout.count("\n") == 1 and "Traceback" not in done.stderr


def test_contract_alone_with_the_database_down_is_unknown(
    health_env: dict[str, str], cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABACO_DATABASE_URL", "postgresql://u@127.0.0.1:1/x")
    code, report = check(cli, "--check", "contract")
    assert code == 3
    assert states(report) == {"contract": "UNKNOWN"}


def test_a_broken_contract_is_critical(exported: None, cli: CliRunner, db_conninfo: str) -> None:
    with psycopg.connect(db_conninfo) as conn:
        conn.execute("ALTER TABLE core_banking.payments DROP COLUMN rebates")
    code, report = check(cli, "--check", "db,contract")
    assert code == 2
    assert states(report) == {"db": "OK", "contract": "CRITICAL"}
    contract = report["checks"][1]
    assert "core_banking.payments.rebates: column is missing" in contract["summary"]


def test_a_stale_export_is_critical_until_the_limit_allows_it(
    exported: None, cli: CliRunner, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = manifest_path(runtime_dir, "dpd", "2025-06-30")
    set_finished_at(manifest, datetime.now(UTC) - timedelta(hours=3))
    result = invoke(cli, "healthcheck", "--check", "freshness")
    assert result.exit_code == 2
    assert result.stdout.startswith(
        "ABACO CRITICAL - freshness CRITICAL: dpd stale: last success 3.0h ago (limit 2h)"
    )
    monkeypatch.setenv("ABACO_HEALTH__FRESHNESS_HOURS__DPD", "4")
    assert invoke(cli, "healthcheck", "--check", "freshness").exit_code == 0


def test_a_dataset_never_exported_is_critical(health_env: dict[str, str], cli: CliRunner) -> None:
    code, report = check(cli, "--check", "freshness")
    assert code == 2
    assert "dpd never exported successfully" in report["checks"][0]["summary"]


def test_a_runtime_tree_that_is_not_a_folder_is_critical(
    health_env: dict[str, str], cli: CliRunner, runtime_dir: Path
) -> None:
    runtime_dir.write_text("not a folder")
    code, report = check(cli, "--check", "runtime")
    assert code == 2
    assert "is not a folder" in report["checks"][0]["summary"]


def test_a_missing_runtime_tree_is_a_warning(health_env: dict[str, str], cli: CliRunner) -> None:
    code, report = check(cli, "--check", "runtime")
    assert code == 1
    assert "does not exist yet" in report["checks"][0]["summary"]


@pytest.mark.parametrize(
    ("warning", "critical", "code"), [("0.9999", "0.0001", 1), ("0.9999", "0.9998", 2)]
)
def test_disk_thresholds(
    exported: None,
    cli: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    warning: str,
    critical: str,
    code: int,
) -> None:
    monkeypatch.setenv("ABACO_HEALTH__DISK_FREE_WARNING_RATIO", warning)
    monkeypatch.setenv("ABACO_HEALTH__DISK_FREE_CRITICAL_RATIO", critical)
    result = invoke(cli, "healthcheck", "--check", "disk")
    assert result.exit_code == code
    assert result.stdout.startswith(f"ABACO {['OK', 'WARNING', 'CRITICAL'][code]} - disk")


def test_a_broken_audit_chain_is_critical(
    exported: None, cli: CliRunner, runtime_dir: Path
) -> None:
    path = audit_path(runtime_dir)
    lines = path.read_text().splitlines()
    write_lines(path, [lines[1], lines[0]])
    code, report = check(cli, "--check", "audit")
    assert code == 2
    assert report["checks"][0]["summary"].startswith("chain broken:")
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    assert samples[("abaco_healthcheck_status", (("check", "audit"),))] == 2


def test_a_stale_lock_is_a_warning_and_a_held_one_is_not(
    health_env: dict[str, str], cli: CliRunner, runtime_dir: Path
) -> None:
    holder = LockHolder(runtime_dir / "locks" / "dpd.lock")
    try:
        code, report = check(cli, "--check", "locks")
        assert code == 0
        assert report["checks"][0]["details"]["held"] == ["dpd"]
        holder.kill()  # dies holding it: the kernel drops the flock, the holder info stays
        result = invoke(cli, "healthcheck", "--check", "locks")
    finally:
        holder.stop()
    assert result.exit_code == 1
    assert result.stdout.startswith("ABACO WARNING - locks WARNING: stale lock(s)")
    assert f"dpd.lock (pid {holder.pid} on" in result.stdout
    assert "is gone" in result.stdout
    # a clean release leaves no holder info: no warning
    with dataset_lock(
        runtime_dir / "locks" / "dpd.lock", run_id="x", command="t", timeout_seconds=1
    ):
        pass
    assert invoke(cli, "healthcheck", "--check", "locks").exit_code == 0


def test_an_invalid_configuration_is_critical_and_the_rest_unknown(
    health_env: dict[str, str], cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABACO_PRUNE__RETENTION", "6m")
    result = invoke(cli, "healthcheck")
    assert result.exit_code == 2
    assert result.stdout.startswith("ABACO CRITICAL - config CRITICAL: invalid configuration")
    code, report = check(cli)
    assert code == 2
    assert {s for name, s in states(report).items() if name != "config"} == {"UNKNOWN"}


def test_an_unknown_check_is_unknown_3(health_env: dict[str, str], tmp_path: Path) -> None:
    done = run_abaco(["healthcheck", "--check", "db,coffee"], health_env, tmp_path)
    assert done.returncode == 3
    assert "coffee" in done.stderr and done.stderr.count("\n") == 1


def test_only_the_chosen_checks_run_and_change_the_metrics(
    exported: None, cli: CliRunner, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert invoke(cli, "healthcheck").exit_code == 0
    monkeypatch.setenv("ABACO_DATABASE_URL", "postgresql://u@127.0.0.1:1/x")
    code, report = check(cli, "--check", "db")
    assert code == 2
    assert list(states(report)) == ["db"]
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    assert samples[("abaco_healthcheck_status", (("check", "db"),))] == 2
    assert samples[("abaco_healthcheck_status", (("check", "contract"),))] == 0  # untouched


def test_exit_codes_in_real_processes(
    exported: None, health_env: dict[str, str], tmp_path: Path, runtime_dir: Path
) -> None:
    ok = run_abaco(["healthcheck"], health_env, tmp_path)
    assert ok.returncode == 0, ok.stdout
    assert ok.stdout.startswith("ABACO OK - ")
    set_finished_at(
        manifest_path(runtime_dir, "dpd", "2025-06-30"), datetime(2020, 1, 1, tzinfo=UTC)
    )
    stale = run_abaco(["healthcheck"], health_env, tmp_path)
    assert stale.returncode == 2
    assert stale.stdout.startswith("ABACO CRITICAL - freshness CRITICAL")
    warn = run_abaco(
        ["healthcheck", "--check", "disk"],
        {**health_env, "ABACO_HEALTH__DISK_FREE_WARNING_RATIO": "0.9999"},
        tmp_path,
    )
    assert warn.returncode == 1
