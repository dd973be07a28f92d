"""monitoring/: the alert rules pass promtool and their unit tests, link their runbooks, match
the configuration's defaults, and use only metrics abaco really writes; so does the dashboard."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from abaco_cli.metrics import FAMILIES
from abaco_cli.settings import HealthSettings
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
}
METRIC = re.compile(r"\babaco_[a-z0-9_]+\b")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it)",
)


def rule_blocks() -> dict[str, str]:
    """Each alert's block of the rules file, by alert name (the file keeps one per rule)."""
    text = RULES.read_text(encoding="utf-8")
    parts = re.split(r"^\s*- alert:\s*", text, flags=re.MULTILINE)[1:]
    return {part.split()[0]: part for part in parts}


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
    assert f"{len(ALERTS)} rules found" in done.stdout


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
    blocks = rule_blocks()
    assert set(blocks) == set(ALERTS)
    for name, runbook in ALERTS.items():
        block = blocks[name]
        assert field(block, "summary"), name
        assert field(block, "description"), name
        assert field(block, "runbook_url") == runbook, name
        assert field(block, "severity") in {"warning", "critical"}, name


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
    for topic in ("freshness", "fail", "duration", "rows", "prune", "health", "upload"):
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
    assert emitted == set(FAMILIES)  # everything declared is really written
    used_by_rules = set(METRIC.findall(RULES.read_text(encoding="utf-8")))
    used_by_dashboard = {m for expr in dashboard_exprs() for m in METRIC.findall(expr)}
    assert used_by_rules and used_by_dashboard
    assert used_by_rules <= emitted, used_by_rules - emitted
    assert used_by_dashboard <= emitted, used_by_dashboard - emitted
    tested = set(METRIC.findall(RULE_TESTS.read_text(encoding="utf-8")))
    assert tested <= emitted, tested - emitted
