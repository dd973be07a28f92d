"""Finding 3: publishing is all-or-nothing, proven by killing a real `abaco export all`.

The publish of a date writes one journal, then renames every file, writes the manifests and
moves the pointers. A test-only variable (ABACO_TEST_PAUSE_PUBLISH_AT=N) makes the process
pause after step N; the test then kills it with SIGKILL (or sends SIGTERM), and checks:
- right after the kill, `audit verify` exits 0 (an interrupted publish is a note, never
  `modified_file`) and the health check's audit is not CRITICAL;
- after the next command that takes the locks, the four datasets' manifests, files and
  pointers are entirely the previous run's (killed before the journal existed) or entirely the
  new run's (after), every file matches its manifest, and no `.tmp`, `.previous` or journal
  file is left anywhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from tests.conftest import invoke
from tests.ops import add_loans, read_records

DAY = "2025-12-30"
DATASETS = ("analytics", "dpd", "kpi", "pricing")
PAUSE = "ABACO_TEST_PAUSE_PUBLISH_AT"


def add_loan(dsn: str, number: int) -> None:
    """New data before each run, so that a new run's files differ from the previous run's."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date, principal)"
            " VALUES (%s, 'C1', '2025-06-01', %s)",
            (f"K{number}", f"{100 + number}.00"),
        )


def start_export(env: dict[str, str], cwd: Path, pause_at: int | None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACO_")}
    extra = {PAUSE: str(pause_at)} if pause_at is not None else {}
    return subprocess.Popen(
        [sys.executable, "-m", "abaco_cli", "export", "all", "--as-of", DAY, "--format", "csv"],
        env={**clean, **env, **extra},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_pause(proc: subprocess.Popen[str]) -> tuple[bool, str]:
    """True when the process paused at its step; False when it ended without pausing."""
    watchdog = threading.Timer(90, proc.kill)
    watchdog.start()
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in iter(proc.stderr.readline, ""):
            seen.append(line)
            if "test pause at publish step" in line:
                return True, "".join(seen)
        proc.wait()
        return False, "".join(seen)
    finally:
        watchdog.cancel()


def manifests(runtime_dir: Path) -> dict[str, dict[str, Any]]:
    exports = runtime_dir / "exports"
    return {
        d: json.loads((exports / d / "_manifests" / f"{d}_{DAY}.manifest.json").read_text())
        for d in DATASETS
    }


def leftovers(runtime_dir: Path) -> list[str]:
    """Temporary files, hard links of replaced files, and journals, anywhere in the tree."""
    found = [
        p.relative_to(runtime_dir).as_posix()
        for p in runtime_dir.rglob("*")
        if p.name.endswith((".tmp", ".previous")) or ".publish.json" in p.name
    ]
    journal = runtime_dir / "journal"
    if journal.is_dir():
        found += [f"journal/{p.name}" for p in journal.iterdir()]
    return sorted(found)


def verify(cli: CliRunner) -> dict[str, Any]:
    result = invoke(cli, "audit", "verify", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report["problems"]
    return report


def assert_whole(runtime_dir: Path, run_id: str) -> None:
    """Every dataset's manifest, files and pointer are the run ``run_id``'s."""
    exports = runtime_dir / "exports"
    for dataset, manifest in manifests(runtime_dir).items():
        assert manifest["run_id"] == run_id, (dataset, manifest["run_id"], run_id)
        pointer = json.loads((exports / dataset / "latest.json").read_text())
        assert (pointer["run_id"], pointer["as_of_date"]) == (run_id, DAY), dataset


@pytest.mark.slow
def test_sigkill_at_every_step_of_the_publish(
    cli: CliRunner, cli_env: dict[str, str], db_conninfo: str, runtime_dir: Path, tmp_path: Path
) -> None:
    add_loans(db_conninfo)
    first = start_export(cli_env, tmp_path, None)
    assert not wait_for_pause(first)[0] and first.returncode == 0
    current = manifests(runtime_dir)["dpd"]["run_id"]

    # killed while staging (before any journal): the previous run stays whole
    add_loan(db_conninfo, 0)
    early = start_export(cli_env, tmp_path, 1)
    assert early.stderr is not None
    early.stderr.readline()  # the run has started
    early.send_signal(signal.SIGKILL)
    early.wait()
    verify(cli)
    assert invoke(cli, "prune", "--retention", "9999w").exit_code == 0
    assert_whole(runtime_dir, current)
    assert leftovers(runtime_dir) == []

    step, kills = 1, 0
    while True:
        add_loan(db_conninfo, step)
        proc = start_export(cli_env, tmp_path, step)
        paused, stderr = wait_for_pause(proc)
        if not paused:
            assert proc.returncode == 0, stderr
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        killed_run = next(r["run_id"] for r in reversed(read_records(runtime_dir)))

        # right after the kill: a note, never damage
        report = verify(cli)
        assert "publish_interrupted" in {n["kind"] for n in report["notes"]}, step
        health = invoke(cli, "healthcheck", "--check", "audit,runtime", "--json")
        states = {c["check"]: c["state"] for c in json.loads(health.stdout)["checks"]}
        assert states == {"audit": "OK", "runtime": "WARNING"}, (step, health.stdout)

        # the next command that takes the locks finishes the publish: all new
        assert invoke(cli, "prune", "--retention", "9999w").exit_code == 0
        assert_whole(runtime_dir, killed_run)
        assert leftovers(runtime_dir) == [], step
        report = verify(cli)
        assert report["notes"] == [], (step, report["notes"])
        recovered = [r for r in read_records(runtime_dir) if r["event"] == "RECOVER"]
        assert {r["outputs"][0]["dataset"] for r in recovered if r["run_id"] == killed_run} == set(
            DATASETS
        )
        current = killed_run
        step += 1

    files = sum(len(m["files"]) for m in manifests(runtime_dir).values())
    assert kills == 1 + files + 2 * len(DATASETS)  # the journal, each rename, each manifest
    assert kills >= 20  # and pointer: every step of the publish was killed once
    final = manifests(runtime_dir)["dpd"]["run_id"]
    assert final != current
    assert_whole(runtime_dir, final)
    assert leftovers(runtime_dir) == []
    assert verify(cli)["notes"] == []


def test_sigterm_during_the_publish_finishes_it_then_exits_130(
    cli: CliRunner, cli_env: dict[str, str], db_conninfo: str, runtime_dir: Path, tmp_path: Path
) -> None:
    add_loans(db_conninfo)
    proc = start_export(cli_env, tmp_path, 5)  # paused among the renames
    paused, _ = wait_for_pause(proc)
    assert paused
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    rest = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 130, rest
    errors = [line for line in rest.splitlines() if line.startswith("abaco: error:")]
    assert len(errors) == 1 and "Traceback" not in rest
    assert "interrupted by SIGTERM: published analytics, dpd, kpi, pricing as of" in errors[0]
    run_id = read_records(runtime_dir)[-1]["run_id"]
    assert_whole(runtime_dir, run_id)
    assert leftovers(runtime_dir) == []
    fail = read_records(runtime_dir)[-1]
    assert (fail["event"], fail["exit_code"]) == ("FAIL", 130)
    assert {o["dataset"] for o in fail["outputs"]} == set(DATASETS)  # what it did publish
    assert verify(cli)["notes"] == []
