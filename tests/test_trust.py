"""The trust review's findings 1, 2, 4 and 5, each reproduced as the review did it, and the
one error mapping of the command line.

1. a re-export deleted whatever its old manifest named, anywhere;
2. prune trusted a manifest's paths inside the dataset folder;
4. dates that cannot be true were accepted and pinned the latest pointers for good;
5. symbolic links were followed inconsistently (export wrote through a linked dataset folder,
   a linked lock file was truncated).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from abaco_cli.services import health
from tests.conftest import invoke
from tests.ops import (
    add_loans,
    manifest_path,
    read_records,
    run_abaco,
    set_finished_at,
    tree_snapshot,
)

OLD, NEWEST = "2025-12-29", "2025-12-30"


def exports(runtime_dir: Path) -> Path:
    return runtime_dir / "exports"


def export(cli: CliRunner, *args: str) -> Any:
    result = invoke(cli, "export", *args)
    assert "Traceback" not in result.stderr
    return result


def verify(cli: CliRunner) -> tuple[int, dict[str, Any]]:
    result = invoke(cli, "audit", "verify", "--json")
    return result.exit_code, json.loads(result.stdout)


def kinds(report: dict[str, Any], key: str = "problems") -> list[str]:
    return sorted(p["kind"] for p in report[key])


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("abaco: error:"), stderr
    return lines[0]


def add_entry(manifest: Path, path: str) -> None:
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["files"].append(
        {
            "path": path,
            "table": "loans",
            "format": "csv",
            "rows": 0,
            "bytes": 1,
            "sha256": "0" * 64,
            "columns": [],
        }
    )
    manifest.write_text(json.dumps(data, indent=2), encoding="utf-8")


# ---------------------------------------------------------------- 1. the re-export's clean-up


def test_a_reexport_never_deletes_what_an_edited_manifest_names(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, tmp_path: Path
) -> None:
    add_loans(db_conninfo)
    assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("not abaco's", encoding="utf-8")
    audit_log = runtime_dir / "audit" / "audit.jsonl"
    head = runtime_dir / "audit" / "audit.jsonl.head"
    manifest = manifest_path(runtime_dir, "dpd", NEWEST)
    for path in (str(victim), "dpd/../../audit/audit.jsonl", "dpd/../../audit/audit.jsonl.head"):
        add_entry(manifest, path)
    records_before = len(read_records(runtime_dir))

    code, report = verify(cli)
    assert code == 1 and kinds(report) == ["bad_path"]  # the edited manifest is reported

    result = export(cli, "dpd", "--as-of", NEWEST)
    assert result.exit_code == 0, result.stderr
    assert victim.read_text(encoding="utf-8") == "not abaco's"
    assert audit_log.is_file() and head.is_file()
    records = read_records(runtime_dir)
    assert len(records) == records_before + 2  # the chain goes on: START and COMPLETE appended
    assert records[-1]["seq"] == records_before + 2
    assert "is not trusted" in result.stderr  # said once, as a warning
    code, report = verify(cli)
    assert code == 0, report["problems"]  # the new run's manifest replaced the edited one
    assert invoke(cli, "healthcheck", "--check", "audit").exit_code == 0


def test_a_manifest_naming_another_date_or_dataset_is_bad_path(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    assert export(cli, "dpd", "--as-of", OLD).exit_code == 0
    assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 0
    newest_csv = f"dpd/loans/as_of_date={NEWEST}/dpd_loans_{NEWEST}.csv"
    add_entry(manifest_path(runtime_dir, "dpd", OLD), newest_csv)
    code, report = verify(cli)
    assert code == 1 and kinds(report) == ["bad_path"]
    assert newest_csv in report["problems"][0]["message"]


# ------------------------------------------------------------------------ 2. prune's trust


def test_prune_never_removes_what_an_old_manifest_names_outside_its_own_files(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    assert export(cli, "dpd", "--as-of", OLD).exit_code == 0
    assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 0
    old, newest = manifest_path(runtime_dir, "dpd", OLD), manifest_path(runtime_dir, "dpd", NEWEST)
    pointer = exports(runtime_dir) / "dpd" / "latest.json"
    add_entry(old, f"dpd/_manifests/{newest.name}")
    add_entry(old, "dpd/latest.json")
    set_finished_at(old, datetime.now(UTC) - timedelta(days=200))
    before = tree_snapshot(exports(runtime_dir))

    result = invoke(cli, "prune", "--retention", "90d", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["removed"] == []
    kept = {k["as_of_date"]: k["reason"] for k in report["kept"]}
    assert kept[OLD].startswith("bad_path:") and kept[OLD].endswith("never removed")
    assert newest.is_file() and pointer.is_file() and old.is_file()
    assert tree_snapshot(exports(runtime_dir)) == before
    code, verified = verify(cli)
    assert code == 1 and kinds(verified) == ["bad_path"]
    assert verified["manifests"] == 1  # the newest still counts; the edited one is reported


# ------------------------------------------------------------------------------- 4. dates


@pytest.mark.parametrize("when", ["today", "tomorrow", "2027-01-01", "9999-12-31"])
def test_dates_whose_day_is_not_over_are_refused(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, when: str
) -> None:
    today = datetime.now(UTC).date()
    day = {"today": today, "tomorrow": today + timedelta(days=1)}.get(when)
    text = day.isoformat() if day else when
    for args in (
        ["dpd", "--as-of", text],
        ["all", "--as-of", text],
        ["kpi", "--from", "2025-01-01", "--to", text],
    ):
        result = export(cli, *args)
        assert result.exit_code == 2, (args, result.stderr)
        line = one_error_line(result.stderr)
        assert f"newest as-of date is {today - timedelta(days=1)}" in line
        assert "--allow-future" in line
    assert not exports(runtime_dir).exists() or not list(exports(runtime_dir).rglob("*.json"))


def test_a_future_run_moves_latest_until_it_is_removed(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    assert export(cli, "kpi", "--as-of", NEWEST).exit_code == 0
    result = export(cli, "kpi", "--as-of", "2027-01-01", "--allow-future")
    assert result.exit_code == 0, result.stderr
    kpi = exports(runtime_dir) / "kpi"
    assert json.loads((kpi / "latest.json").read_text())["as_of_date"] == "2027-01-01"
    health = invoke(cli, "healthcheck", "--check", "runtime")
    assert health.exit_code == 1 and "kpi as of 2027-01-01" in health.stdout
    code, report = verify(cli)
    assert code == 0 and "future_run" in kinds(report, "notes")

    # removed by hand: the next run of the dataset moves the pointer and the alias back
    manifest_path(runtime_dir, "kpi", "2027-01-01").unlink()
    assert invoke(cli, "prune", "--retention", "9999w").exit_code == 0
    pointer = json.loads((kpi / "latest.json").read_text())
    assert pointer["as_of_date"] == NEWEST
    alias = (kpi / "json" / "kpi_latest.json").read_bytes()
    assert alias == (kpi / "json" / f"kpi_{NEWEST}.json").read_bytes()


def test_a_manifest_date_that_is_no_date_never_becomes_the_newest(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    assert export(cli, "dpd", "--as-of", OLD).exit_code == 0
    assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 0
    newest = manifest_path(runtime_dir, "dpd", NEWEST)
    data = json.loads(newest.read_text())
    data["as_of_date"] = "zzzz"
    newest.write_text(json.dumps(data))
    assert export(cli, "dpd", "--as-of", OLD).exit_code == 0  # takes the lock: refreshes latest
    pointer = json.loads((exports(runtime_dir) / "dpd" / "latest.json").read_text())
    assert pointer["as_of_date"] == OLD
    code, report = verify(cli)
    assert code == 1 and kinds(report) == ["bad_manifest"]
    assert "'zzzz' is not a date" in report["problems"][0]["message"]


def test_the_business_time_zone_decides_when_a_day_is_over(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kiritimati is UTC+14: its yesterday can be today in UTC; Niue (UTC-11) is behind UTC.
    monkeypatch.setenv("ABACO_BUSINESS_TIMEZONE", "Pacific/Kiritimati")
    ahead = (datetime.now(UTC) + timedelta(hours=14)).date() - timedelta(days=1)
    result = export(cli, "dpd", "--as-of", (ahead + timedelta(days=1)).isoformat())
    assert result.exit_code == 2 and f"newest as-of date is {ahead}" in result.stderr
    monkeypatch.setenv("ABACO_BUSINESS_TIMEZONE", "Mars/Olympus")
    result = export(cli, "dpd", "--as-of", "2025-06-30")
    assert result.exit_code == 2 and "not an IANA time zone" in one_error_line(result.stderr)


# ------------------------------------------------------------------------ 5. symbolic links


def test_a_linked_dataset_folder_is_never_written_through(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, tmp_path: Path
) -> None:
    add_loans(db_conninfo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (exports(runtime_dir)).mkdir(parents=True)
    (exports(runtime_dir) / "dpd").symlink_to(elsewhere, target_is_directory=True)

    result = export(cli, "dpd", "--as-of", NEWEST)
    assert result.exit_code == 1
    assert "is a symbolic link: abaco never follows one" in one_error_line(result.stderr)
    assert list(elsewhere.iterdir()) == []
    health = invoke(cli, "healthcheck", "--check", "runtime,freshness")
    assert health.exit_code == 2
    assert "symbolic link(s) in the runtime tree: exports/dpd:" in health.stdout
    assert "dpd never exported successfully" in health.stdout
    pruned = invoke(cli, "prune", "--retention", "1d", "--json")
    assert pruned.exit_code == 0 and json.loads(pruned.stdout)["removed"] == []
    assert list(elsewhere.iterdir()) == []


def test_a_linked_lock_file_is_refused_and_its_target_kept(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, tmp_path: Path
) -> None:
    add_loans(db_conninfo)
    target = tmp_path / "precious.conf"
    target.write_text("do not truncate me\n", encoding="utf-8")
    (runtime_dir / "locks").mkdir(parents=True)
    (runtime_dir / "locks" / "dpd.lock").symlink_to(target)

    result = export(cli, "dpd", "--as-of", NEWEST)
    assert result.exit_code == 1
    assert "dpd.lock is a symbolic link" in one_error_line(result.stderr)
    assert target.read_text(encoding="utf-8") == "do not truncate me\n"


def test_a_runtime_dir_that_is_itself_a_link_is_fine(
    cli: CliRunner, db_conninfo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_loans(db_conninfo)
    real = tmp_path / "real_runtime"
    real.mkdir()
    link = tmp_path / "runtime_link"
    link.symlink_to(real, target_is_directory=True)
    monkeypatch.setenv("ABACO_RUNTIME_DIR", str(link))
    assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 0
    assert (real / "exports" / "dpd" / "latest.json").is_file()
    assert invoke(cli, "audit", "verify").exit_code == 0


# ------------------------------------------------------------- one error line, every command


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["export", "dpd", "--bogus"], "No such option: --bogus"),
        (["export", "nothing"], "No such command 'nothing'"),
        (["export", "dpd", "--as-of"], "Option '--as-of' requires an argument"),
        (["prune", "--keep-last", "two"], "Invalid value for '--keep-last'"),
        (["--log-format", "xml", "healthcheck"], "'xml' is not one of 'plain', 'json'"),
        (["export", "dpd", "--as-of", "30/06/2025"], "is not a date"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    cli_env: dict[str, str], tmp_path: Path, args: list[str], expected: str
) -> None:
    done = run_abaco(args, cli_env, tmp_path)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert expected in line
    assert "Traceback" not in done.stderr and "Usage:" not in done.stderr


def test_no_arguments_prints_the_help(cli_env: dict[str, str], tmp_path: Path) -> None:
    done = run_abaco([], cli_env, tmp_path)
    assert done.returncode == 2
    assert "Usage:" in done.stderr + done.stdout and "export" in done.stderr + done.stdout


# ------------------------------------------------------------- finding 8: one redaction


def test_log_lines_and_json_results_pass_the_one_redactor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    from abaco_cli.cli import console
    from abaco_cli.redaction import Redactor

    console.setup_logging("json")
    console.use_redactor(Redactor(["S3cret", "2025"]))
    try:
        logging.getLogger("abaco.test").warning(
            "retrying postgresql://u:S3cret@db/x after %s for dpd/loans/as_of_date=2025-12-31",
            "password=2025",
        )
        console.emit_json({"dsn": "host=h password=2025", "path": "as_of_date=2025-12-31"})
    finally:
        console.use_redactor(Redactor())
        console.setup_logging("plain")
    captured = capsys.readouterr()
    line = json.loads(captured.err.strip().splitlines()[-1])["message"]
    assert line == (
        "retrying postgresql://u:***@db/x after password=*** for dpd/loans/as_of_date=2025-12-31"
    )
    assert json.loads(captured.out) == {
        "dsn": "host=h password=***",
        "path": "as_of_date=2025-12-31",
    }


# ------------------------------------------- journals and pointers are untrusted input too


def test_a_forged_journal_touches_nothing_and_is_reported(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, tmp_path: Path
) -> None:
    add_loans(db_conninfo)
    assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("not abaco's", encoding="utf-8")
    manifest = json.loads(manifest_path(runtime_dir, "dpd", NEWEST).read_text())
    forged = {
        "journal_version": 1,
        "run_id": "20251231T000000Z-abcdef",
        "as_of_date": NEWEST,
        "parts": [
            {
                "dataset": "dpd",
                "moves": [],
                "obsolete": [f"dpd/../../../{victim.name}", "dpd/latest.json"],
                "manifest": {**manifest, "run_id": "20251231T000000Z-abcdef"},
            }
        ],
    }
    journal = runtime_dir / "journal"
    journal.mkdir(exist_ok=True)
    (journal / f"20251231T000000Z-abcdef_{NEWEST}.publish.json").write_text(json.dumps(forged))
    before = tree_snapshot(exports(runtime_dir))

    code, report = verify(cli)
    assert code == 1 and kinds(report) == ["bad_journal"]
    assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 0  # recovery leaves it alone
    assert victim.read_text(encoding="utf-8") == "not abaco's"
    assert (exports(runtime_dir) / "dpd" / "latest.json").is_file()
    assert tree_snapshot(exports(runtime_dir)).keys() == before.keys()


def test_a_pointer_naming_anything_is_rewritten_from_the_manifests(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 0
    pointer = exports(runtime_dir) / "dpd" / "latest.json"
    pointer.write_text(
        json.dumps({"as_of_date": "9999-12-31", "manifest": "../../audit/audit.jsonl"})
    )
    code, report = verify(cli)
    assert code == 1 and kinds(report) == ["dangling_latest"]
    assert invoke(cli, "prune", "--retention", "9999w").exit_code == 0  # takes the lock
    assert json.loads(pointer.read_text())["as_of_date"] == NEWEST
    assert verify(cli)[0] == 0


def test_a_publish_that_cannot_be_completed_is_one_line_until_its_journal_goes(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temporary file the journal needs was deleted by hand: the next run says so, changes
    nothing, and the runbook's way out (remove the journal) lets exports go on."""
    from abaco_cli.runtime import files

    add_loans(db_conninfo)
    real_replace = files.replace
    calls = {"n": 0}

    def crash_second(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real_replace(*args)

    with monkeypatch.context() as patched:
        patched.setattr(files, "replace", crash_second)
        crashed = export(cli, "dpd", "--as-of", NEWEST)
    assert crashed.exit_code == 130, crashed.stderr
    for temp in exports(runtime_dir).rglob(".*.tmp"):
        temp.unlink()  # someone "cleans up"
    result = export(cli, "dpd", "--as-of", NEWEST)
    assert result.exit_code == 1
    assert "an interrupted publish of dpd cannot be completed" in one_error_line(result.stderr)
    for journal in (runtime_dir / "journal").iterdir():
        journal.unlink()
    assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 0
    assert verify(cli)[0] == 0


def test_recovery_never_publishes_a_stale_file_under_a_new_manifest(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-export killed after its journal, whose temporary files someone then deleted: the
    old files are still in place but are not the ones the new manifest names, so recovery
    refuses (one line), instead of publishing a manifest that the files contradict."""
    from abaco_cli.runtime import files

    add_loans(db_conninfo)
    assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 0
    with psycopg.connect(db_conninfo) as conn:  # new data: the re-export's files differ
        conn.execute(
            "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date, principal)"
            " VALUES ('L-NEW', 'C1', '2025-06-01', 55.55)"
        )
    real_replace = files.replace
    calls = {"n": 0}

    def crash_second(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the journal was written (1st): die before any rename
            raise KeyboardInterrupt
        real_replace(*args)

    with monkeypatch.context() as patched:
        patched.setattr(files, "replace", crash_second)
        assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 130
    for temp in exports(runtime_dir).rglob(".*.tmp"):
        temp.unlink()
    result = export(cli, "dpd", "--as-of", NEWEST)
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert "is not the file the new manifest names" in line
    assert verify(cli)[0] == 0  # the previous run is still whole: nothing was published


def test_links_anywhere_in_the_tree_are_reported_by_the_health_check_and_prune(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path, tmp_path: Path
) -> None:
    add_loans(db_conninfo)
    assert export(cli, "dpd", "--as-of", NEWEST).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (exports(runtime_dir) / "pricing").symlink_to(elsewhere, target_is_directory=True)
    (runtime_dir / "locks" / "kpi.lock").symlink_to(tmp_path / "precious")
    health = invoke(cli, "healthcheck", "--check", "runtime")
    assert health.exit_code == 2
    assert "exports/pricing, locks/kpi.lock" in health.stdout
    pruned = json.loads(invoke(cli, "prune", "--retention", "9999w", "--json").stdout)
    assert {"path": "pricing", "reason": "symbolic link: never followed", "bytes": 0} in pruned[
        "unknown"
    ]
    real = tmp_path / "real_runtime"
    (tmp_path / "runtime_b").mkdir()
    real.mkdir()
    (tmp_path / "runtime_b" / "exports").symlink_to(real, target_is_directory=True)
    linked_root = invoke(cli, "--runtime-dir", str(tmp_path / "runtime_b"), "healthcheck",
                         "--check", "runtime")  # fmt: skip
    assert linked_root.exit_code == 2 and "runtime tree: exports:" in linked_root.stdout


def test_the_writable_probe_never_follows_or_truncates_a_planted_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime check's probe is a new file of its own: a link planted at its name (here
    the name is forced) is neither followed nor truncated, and no probe file is left."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    folder = tmp_path / "exports"
    folder.mkdir()
    monkeypatch.setattr(health.secrets, "token_hex", lambda n: "fixed")
    (folder / f".abaco-healthcheck-{os.getpid()}-fixed.tmp").symlink_to(victim)
    problem = health._probe(folder)
    assert problem is not None and "not writable" in problem
    assert victim.read_text() == "precious\n"
    monkeypatch.undo()
    assert health._probe(folder) is None
    assert [p.name for p in folder.iterdir()] == [f".abaco-healthcheck-{os.getpid()}-fixed.tmp"]
