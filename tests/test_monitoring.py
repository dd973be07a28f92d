"""monitoring/: the alert rules pass promtool and their unit tests, link their runbooks, match
the configuration's defaults, and use only metrics abaco really writes; so does the dashboard."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from abaco_cli.metrics import FAMILIES
from abaco_cli.settings import HealthSettings, LakeSettings
from tests.conftest import invoke
from tests.ops import add_loans, metric_samples

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
RULES = MONITORING / "prometheus" / "abaco-alerts.yml"
RULE_TESTS = MONITORING / "prometheus" / "tests" / "abaco-alerts.test.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "abaco.json"
PROVISIONING = MONITORING / "grafana" / "provisioning" / "dashboards" / "abaco.yaml"

ALERTS = {
    "AbacoExportStale": "runbooks/export-stale.md",
    "AbacoExportFailing": "runbooks/export-failed.md",
    "AbacoMetricsAbsent": "runbooks/metrics-absent.md",
    "AbacoHealthcheckCritical": "runbooks/healthcheck-critical.md",
    "AbacoDiskNearlyFull": "runbooks/disk-filling.md",
    "AbacoAuditChainBroken": "runbooks/audit-tampering.md",
    "AbacoUploadPending": "runbooks/upload-pending.md",
    "AbacoLakeStale": "runbooks/lake-sync-failed.md",
    "AbacoLakeSyncFailing": "runbooks/lake-sync-failed.md",
    "AbacoLakeWalRetainedHigh": "runbooks/lake-wal-growing.md",
    "AbacoLakeSlotLost": "runbooks/lake-slot-lost.md",
}
# Alerts with one rule per severity (the same alertname, so that the critical one can inhibit
# the warning in Alertmanager).
SEVERITIES = {"AbacoLakeWalRetainedHigh": ["warning", "critical"]}
LAKE = "abaco_lake_"
METRIC = re.compile(r"\babaco_[a-z0-9_]+\b")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it)",
)


def rule_list() -> list[tuple[str, str]]:
    """(alert name, its block of the rules file) of every rule, in the file's order."""
    text = RULES.read_text(encoding="utf-8")
    parts = re.split(r"^\s*- alert:\s*", text, flags=re.MULTILINE)[1:]
    return [(part.split()[0], part) for part in parts]


def rule_blocks() -> dict[str, str]:
    """Each alert's block of the rules file, by alert name (of an alert with a rule per
    severity, the last; rule_list() has them all)."""
    return dict(rule_list())


def field(block: str, key: str) -> str:
    match = re.search(rf"^\s*{key}:\s*(.+)$", block, flags=re.MULTILINE)
    assert match, f"no {key} in {block[:60]}"
    return match.group(1).strip().strip('"')


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rules = len(ALERTS) + sum(len(levels) - 1 for levels in SEVERITIES.values())
    assert f"{rules} rules found" in done.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    done = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_there_with_its_annotations_and_runbook() -> None:
    rules = rule_list()
    assert {name for name, _ in rules} == set(ALERTS)
    for name, block in rules:
        assert field(block, "summary"), name
        assert field(block, "description"), name
        assert field(block, "runbook_url") == ALERTS[name], name
        assert field(block, "severity") in {"warning", "critical"}, name
    for name in ALERTS:
        severities = [field(block, "severity") for each, block in rules if each == name]
        assert severities == SEVERITIES.get(name, severities[:1]), (name, severities)


def test_every_alert_has_a_unit_test() -> None:
    tested = set(re.findall(r"alertname:\s*(\w+)", RULE_TESTS.read_text(encoding="utf-8")))
    assert tested == set(ALERTS)


def test_thresholds_follow_the_configuration_defaults() -> None:
    blocks = rule_blocks()
    defaults = HealthSettings()
    disk = field(blocks["AbacoDiskNearlyFull"], "expr")
    assert disk == f"abaco_disk_free_ratio < {defaults.disk_free_warning_ratio:.2f}"
    stale = field(blocks["AbacoExportStale"], "expr")
    assert "abaco_export_freshness_limit_seconds" in stale  # the configured limit, not a number
    assert not re.search(r"\d{3,}", stale)
    assert defaults.freshness_hours.hours("dpd") == 2
    for dataset in ("kpi", "pricing", "analytics"):
        assert defaults.freshness_hours.hours(dataset) == 26


def test_upload_pending_fires_at_the_health_checks_warning_limit() -> None:
    """AbacoUploadPending and the `upload` check's WARNING agree (90 minutes by default); its
    CRITICAL (360) reaches AbacoHealthcheckCritical, whose expression excludes only audit and
    freshness."""
    from abaco_cli.settings import UploadSettings  # upload.* (issue 12)

    defaults = UploadSettings()
    pending = field(rule_blocks()["AbacoUploadPending"], "expr")
    assert pending == (
        "(time() - abaco_upload_oldest_pending_timestamp_seconds) > "
        f"{defaults.pending_warning_minutes} * 60"
    )
    assert defaults.pending_warning_minutes == 90
    assert defaults.pending_critical_minutes == 360
    assert field(rule_blocks()["AbacoUploadPending"], "for") == "5m"
    critical = field(rule_blocks()["AbacoHealthcheckCritical"], "expr")
    assert 'check!~"audit|freshness"' in critical


def test_lake_alerts_follow_the_lake_settings_and_the_health_check() -> None:
    """AbacoLakeStale reads the configured limit (lake.stale_critical_minutes, written as
    abaco_lake_stale_limit_seconds), never a number; the WAL rules warn at 50 % and turn critical
    at 80 % of the point where the source drops the slot's WAL, the health check's `lake` WARNING
    and CRITICAL; a failed sync pages after three runs of the timer; a lost slot at once."""
    defaults = LakeSettings()
    assert (defaults.stale_warning_minutes, defaults.stale_critical_minutes) == (20, 60)
    blocks = rule_blocks()
    stale = field(blocks["AbacoLakeStale"], "expr")
    assert stale == (
        "(time() - abaco_lake_last_success_timestamp_seconds) > abaco_lake_stale_limit_seconds"
    )
    assert field(blocks["AbacoLakeStale"], "severity") == "critical"
    failing = blocks["AbacoLakeSyncFailing"]
    assert field(failing, "expr") == "abaco_lake_last_status == 0"
    assert (field(failing, "for"), field(failing, "severity")) == ("15m", "warning")
    wal = {field(b, "severity"): b for name, b in rule_list() if name == "AbacoLakeWalRetainedHigh"}
    ratio = "abaco_lake_wal_retained_bytes / abaco_lake_wal_limit_bytes"
    assert field(wal["warning"], "expr") == f"{ratio} > 0.5"
    assert field(wal["warning"], "for") == "10m"
    assert field(wal["critical"], "expr") == f"{ratio} > 0.8"
    lost = blocks["AbacoLakeSlotLost"]
    assert field(lost, "expr") == "abaco_lake_slot_lost == 1"
    assert field(lost, "for") in ("0m", "1m") and field(lost, "severity") == "critical"


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in data["panels"] for t in p.get("targets", [])]
    for variable in data["templating"]["list"]:
        if variable.get("definition"):
            exprs.append(variable["definition"])
    return exprs


def test_the_dashboard_is_valid_and_provisioned() -> None:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert data["uid"] == "abaco-exports"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in data["panels"]).lower()
    for topic in ("freshness", "fail", "duration", "rows", "prune", "health", "upload", "lake"):
        assert topic in titles, topic
    for panel in data["panels"]:
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    provisioning = PROVISIONING.read_text(encoding="utf-8")
    assert "apiVersion: 1" in provisioning and "type: file" in provisioning
    assert "path: /var/lib/grafana/dashboards/abaco" in provisioning


def test_the_dashboard_shows_uploads() -> None:
    """Runs pending per dataset, the age of the oldest pending run, bytes uploaded per second."""
    exprs = dashboard_exprs()
    assert any(e.startswith("abaco_upload_pending_runs{") for e in exprs)
    assert any(
        e.startswith("time() - abaco_upload_oldest_pending_timestamp_seconds{") for e in exprs
    )
    assert any("rate(abaco_upload_bytes_total{" in e for e in exprs)


def test_the_dashboard_shows_the_lake() -> None:
    """Slot lag, WAL retained against its limit, changes per second by table and operation, rows
    per table, time since the last successful sync, batch duration."""
    exprs = dashboard_exprs()
    assert any(e.startswith("abaco_lake_slot_lag_bytes{") for e in exprs)
    assert any(e.startswith("abaco_lake_wal_retained_bytes{") for e in exprs)
    assert any(e.startswith("abaco_lake_wal_limit_bytes{") for e in exprs)
    changes = [e for e in exprs if "rate(abaco_lake_changes_total{" in e]
    assert changes and all("sum by (instance, table, op)" in e for e in changes)
    assert any(e.startswith("abaco_lake_rows{") for e in exprs)
    assert any(e.startswith("time() - abaco_lake_last_success_timestamp_seconds{") for e in exprs)
    assert any(e.startswith("abaco_lake_batch_duration_seconds{") for e in exprs)
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    rows = [p["title"] for p in data["panels"] if p["type"] == "row"]
    assert rows[-1] == "Lake"


def test_rules_and_dashboard_use_only_metrics_abaco_writes(
    cli: CliRunner,
    db_conninfo: str,
    runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Export, upload to a folder, export to a destination that is down (exit 5: exported,
    upload pending, so the oldest-pending gauge exists), prune, healthcheck and db check --data
    for real, then compare."""
    add_loans(db_conninfo)
    monkeypatch.setenv("ABACO_HEALTH__DATASETS", '["dpd"]')
    assert invoke(cli, "export", "dpd", "--as-of", "2025-06-29").exit_code == 0
    landing = tmp_path / "landing"
    assert invoke(cli, "upload", "--dest", str(landing)).exit_code == 0
    # The destination is down (nothing listens on its port): exported, upload pending.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    for key, value in {
        "ABACO_UPLOAD__S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}",
        "ABACO_UPLOAD__S3_REGION": "us-east-1",
        "ABACO_UPLOAD__MAX_TOTAL_SECONDS": "1",
        "AWS_ACCESS_KEY_ID": "monitoring-test",
        "AWS_SECRET_ACCESS_KEY": "monitoring-test",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }.items():
        monkeypatch.setenv(key, value)
    down = "s3://abaco-monitoring/prod"
    pending = invoke(cli, "export", "dpd", "--as-of", "2025-06-30", "--dest", down)
    assert pending.exit_code == 5, pending.output
    assert invoke(cli, "prune", "--retention", "1h", "--keep-last", "1").exit_code == 0
    assert invoke(cli, "healthcheck").exit_code == 0
    assert invoke(cli, "db", "check", "--data").exit_code == 0  # the abaco_dq_* families
    emitted = {name for name, _ in metric_samples(runtime_dir / "metrics" / "abaco.prom")}
    # everything declared is really written (the lake's families: the next test, after a sync)
    assert {m for m in emitted if not m.startswith(LAKE)} == {
        m for m in FAMILIES if not m.startswith(LAKE)
    }
    used_by_rules = set(METRIC.findall(RULES.read_text(encoding="utf-8")))
    used_by_dashboard = {m for expr in dashboard_exprs() for m in METRIC.findall(expr)}
    tested = set(METRIC.findall(RULE_TESTS.read_text(encoding="utf-8")))
    used_by_rules, used_by_dashboard, tested = (
        {m for m in used if not m.startswith(LAKE)}
        for used in (used_by_rules, used_by_dashboard, tested)
    )
    assert used_by_rules and used_by_dashboard
    assert used_by_rules <= emitted, used_by_rules - emitted
    assert used_by_dashboard <= emitted, used_by_dashboard - emitted
    assert tested <= emitted, tested - emitted


@pytest.fixture
def wal_kept_512mb(db_conninfo: str) -> Iterator[None]:
    """max_slot_wal_keep_size = 512 MB (Supabase's default) on the test server, so that the slot
    has a WAL limit (abaco_lake_wal_limit_bytes); the server's own value back afterwards."""
    with psycopg.connect(db_conninfo, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '512MB'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        with psycopg.connect(db_conninfo, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
            conn.execute("SELECT pg_reload_conf()")


def test_lake_rules_and_panels_use_only_metrics_a_real_sync_writes(
    cli: CliRunner,
    db_conninfo: str,
    runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    wal_kept_512mb: None,
) -> None:
    """`abaco lake init`, changes, `abaco lake sync` and the health check's `lake` check for real
    (a slot of this test's own, WAL limited as on Supabase), then compare: every lake family is
    written, and the rules, their tests and the dashboard use no other."""
    slot = f"abaco_lake_monitoring_{os.getpid()}"
    monkeypatch.setenv("ABACO_LAKE__SLOT", slot)
    monkeypatch.setenv("ABACO_LAKE__PUBLICATION", slot)
    monkeypatch.setenv("ABACO_LAKE__DESTINATION", str(tmp_path / "lake-dest"))
    add_loans(db_conninfo)
    try:
        init = invoke(cli, "lake", "init")
        assert init.exit_code == 0, init.output
        with psycopg.connect(db_conninfo, autocommit=True) as conn:
            conn.execute("UPDATE core_banking.loans SET principal = 1500.00 WHERE loan_id = 'L1'")
            conn.execute("DELETE FROM core_banking.payment_schedule WHERE loan_id = 'L3'")
        sync = invoke(cli, "lake", "sync")
        assert sync.exit_code == 0, sync.output
        health = invoke(cli, "healthcheck", "--check", "lake")
        assert health.exit_code == 0, health.output
        samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    finally:
        with psycopg.connect(db_conninfo, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s",
                (slot,),
            )
    emitted = {name for name, _ in samples if name.startswith(LAKE)}
    assert emitted == {m for m in FAMILIES if m.startswith(LAKE)}
    used = set(METRIC.findall(RULES.read_text(encoding="utf-8")))
    used |= {m for expr in dashboard_exprs() for m in METRIC.findall(expr)}
    used |= set(METRIC.findall(RULE_TESTS.read_text(encoding="utf-8")))
    lake_used = {m for m in used if m.startswith(LAKE)}
    assert lake_used and lake_used <= emitted, lake_used - emitted
    # the figures the rules divide and compare are there and make sense
    values = {name: value for (name, _labels), value in samples.items()}
    assert values["abaco_lake_last_status"] == 1
    assert values["abaco_lake_slot_lost"] == 0
    assert values["abaco_lake_stale_limit_seconds"] == 60 * 60
    assert 0 <= values["abaco_lake_wal_retained_bytes"] < values["abaco_lake_wal_limit_bytes"]
    changes = {
        dict(labels)["op"]: value
        for (name, labels), value in samples.items()
        if name == "abaco_lake_changes_total" and dict(labels)["table"] != ""
    }
    assert changes.get("update", 0) >= 1 and changes.get("delete", 0) >= 1, changes
