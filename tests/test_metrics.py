"""The Prometheus textfile: what an export writes, merging between processes, the counter
across processes, atomic replacement, configuration, and failures that never fail the job."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from abaco_cli.metrics import (
    FAMILIES,
    DatasetRun,
    MetricsUpdate,
    export_update,
    health_update,
    write_metrics,
)
from tests.conftest import invoke
from tests.ops import add_loans, files_of, manifest_path, metric_samples

DPD = (("dataset", "dpd"),)


def prom(runtime_dir: Path) -> Path:
    return runtime_dir / "metrics" / "abaco.prom"


def test_an_export_writes_its_metrics(cli: CliRunner, db_conninfo: str, runtime_dir: Path) -> None:
    add_loans(db_conninfo, count=5)
    assert invoke(cli, "export", "dpd", "--as-of", "2025-06-30").exit_code == 0
    samples = metric_samples(prom(runtime_dir))
    files = files_of(manifest_path(runtime_dir, "dpd", "2025-06-30"))
    loans_csv = next(p for p in files if p.name == "dpd_loans_2025-06-30.csv")
    aging_csv = next(p for p in files if p.name == "dpd_aging_2025-06-30.csv")

    def rows(path: Path) -> int:
        return len(list(csv.DictReader(io.StringIO(path.read_text(), newline=""))))

    assert samples[("abaco_export_last_status", DPD)] == 1
    assert samples[("abaco_export_rows", (("dataset", "dpd"), ("table", "loans")))] == rows(
        loans_csv
    )
    assert rows(loans_csv) == 5
    assert samples[("abaco_export_rows", (("dataset", "dpd"), ("table", "aging")))] == rows(
        aging_csv
    )
    assert samples[("abaco_export_bytes", DPD)] == sum(p.stat().st_size for p in files)
    assert samples[("abaco_export_freshness_limit_seconds", DPD)] == 2 * 3600
    success = samples[("abaco_export_last_success_timestamp_seconds", DPD)]
    assert samples[("abaco_export_last_run_timestamp_seconds", DPD)] == success
    assert samples[("abaco_export_duration_seconds", DPD)] > 0
    assert samples[("abaco_runs_total", (("command", "export"), ("status", "success")))] == 1

    with psycopg.connect(db_conninfo) as conn:
        conn.execute("DROP TABLE core_banking.payments")
    assert invoke(cli, "export", "dpd", "--as-of", "2025-07-01").exit_code == 1
    after = metric_samples(prom(runtime_dir))
    assert after[("abaco_export_last_status", DPD)] == 0
    assert after[("abaco_export_last_success_timestamp_seconds", DPD)] == success  # unchanged
    assert after[("abaco_export_last_run_timestamp_seconds", DPD)] > success
    assert after[("abaco_runs_total", (("command", "export"), ("status", "failure")))] == 1
    assert after[("abaco_runs_total", (("command", "export"), ("status", "success")))] == 1


def test_processes_merge_their_own_families_and_keep_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "abaco.prom"
    path.parent.mkdir()
    path.write_text(
        "# HELP node_custom_thing Someone else's metric.\n"
        "# TYPE node_custom_thing gauge\n"
        'node_custom_thing{x="1"} 42\n'
    )
    write_metrics(
        path,
        export_update(
            [DatasetRun("dpd", True, 1000.0, 2.0, 7200, {"loans": 10, "aging": 7, "old": 1}, 99)]
        ),
    )
    write_metrics(path, export_update([DatasetRun("kpi", True, 2000.0, 3.0, 93600, {"kpi": 5})]))
    write_metrics(
        path,
        health_update(3000.0, {"db": 0, "disk": 1}, disk_free_ratio=0.5, freshness_limits={}),
    )
    # a later dpd run without the "old" table drops that series, and only dpd's
    write_metrics(
        path, export_update([DatasetRun("dpd", True, 4000.0, 2.0, 7200, {"loans": 11}, 98)])
    )
    samples = metric_samples(path)
    assert samples[("node_custom_thing", (("x", "1"),))] == 42
    assert samples[("abaco_export_last_success_timestamp_seconds", DPD)] == 4000
    assert samples[("abaco_export_last_success_timestamp_seconds", (("dataset", "kpi"),))] == 2000
    rows = {k[1]: v for k, v in samples.items() if k[0] == "abaco_export_rows"}
    assert rows == {
        (("dataset", "dpd"), ("table", "loans")): 11,
        (("dataset", "kpi"), ("table", "kpi")): 5,
    }
    assert samples[("abaco_healthcheck_status", (("check", "disk"),))] == 1
    assert samples[("abaco_runs_total", (("command", "export"), ("status", "success")))] == 3
    assert not [p for p in path.parent.iterdir() if p.name not in {"abaco.prom", "abaco.prom.lock"}]


_WRITER = """
import sys, time
from pathlib import Path
from abaco_cli.metrics import DatasetRun, export_update, write_metrics

go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
for n in range(int(sys.argv[3])):
    write_metrics(Path(sys.argv[1]), export_update([DatasetRun("dpd", True, n, 1.0, 7200)]))
"""


def test_the_run_counter_adds_up_across_concurrent_processes(tmp_path: Path) -> None:
    path = tmp_path / "abaco.prom"
    go = tmp_path / "go"
    writers, each = 6, 15
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(go), str(each)])
        for _ in range(writers)
    ]
    go.touch()
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    samples = metric_samples(path)
    key = ("abaco_runs_total", (("command", "export"), ("status", "success")))
    assert samples[key] == writers * each


def test_a_corrupt_file_is_started_afresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "abaco.prom"
    path.write_text("this is { not prometheus\n")
    write_metrics(path, health_update(1.0, {"db": 0}, disk_free_ratio=None, freshness_limits={}))
    assert metric_samples(path)[("abaco_healthcheck_status", (("check", "db"),))] == 0
    assert "starting" in caplog.text and "afresh" in caplog.text


def test_only_declared_families_and_labels_can_be_written() -> None:
    update = MetricsUpdate()
    with pytest.raises(ValueError, match="labels"):
        update.gauge("abaco_export_rows", 1, dataset="dpd")
    with pytest.raises(KeyError):
        update.gauge("abaco_made_up", 1)
    assert FAMILIES["abaco_runs_total"].kind == "counter"


def test_metrics_path_is_configurable_and_must_end_in_prom(
    cli: CliRunner,
    db_conninfo: str,
    runtime_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_loans(db_conninfo)
    textfile = tmp_path / "node-exporter" / "abaco.prom"
    monkeypatch.setenv("ABACO_METRICS__PATH", str(textfile))
    assert invoke(cli, "export", "dpd", "--as-of", "2025-06-30").exit_code == 0
    assert ("abaco_export_last_status", DPD) in metric_samples(textfile)
    assert not prom(runtime_dir).exists()
    monkeypatch.setenv("ABACO_METRICS__PATH", str(tmp_path / "abaco.txt"))
    result = invoke(cli, "export", "dpd", "--as-of", "2025-06-30")
    assert result.exit_code == 2
    assert "must end in .prom" in result.stderr


def test_metrics_can_be_turned_off(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_loans(db_conninfo)
    monkeypatch.setenv("ABACO_METRICS__ENABLED", "false")
    assert invoke(cli, "export", "dpd", "--as-of", "2025-06-30").exit_code == 0
    assert not prom(runtime_dir).exists()


def test_an_unwritable_metrics_file_never_fails_the_export(
    cli: CliRunner,
    db_conninfo: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_loans(db_conninfo)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("ABACO_METRICS__PATH", str(blocker / "abaco.prom"))
    result = invoke(cli, "export", "dpd", "--as-of", "2025-06-30")
    assert result.exit_code == 0
    assert "could not write the metrics file" in result.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_file(cli: CliRunner, db_conninfo: str, runtime_dir: Path) -> None:
    add_loans(db_conninfo)
    assert invoke(cli, "export", "dpd", "--as-of", "2025-06-30").exit_code == 0
    assert invoke(cli, "prune", "--retention", "90d").exit_code == 0
    invoke(cli, "healthcheck")
    done = subprocess.run(
        ["promtool", "check", "metrics"],
        input=prom(runtime_dir).read_text(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
