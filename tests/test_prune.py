"""`abaco prune`: whole runs by recorded time, the retention edges (freezegun), keep-last,
unknown files, symbolic links, the lock, crash safety, the audit record and the metrics."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from typer.testing import CliRunner

from abaco_cli.services import pruning
from abaco_cli.services.exporting import export_dataset
from abaco_cli.settings import Settings
from tests.conftest import invoke
from tests.ops import (
    LockHolder,
    add_loans,
    files_of,
    manifest_path,
    metric_samples,
    read_records,
    run_abaco,
    set_finished_at,
    tree_snapshot,
)

NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
DAYS = ["2025-06-01", "2025-06-02", "2025-06-03", "2025-06-04"]
# recorded finish times: well past 90 days, one second past, exactly 90 days, yesterday
AGES = [timedelta(days=120), timedelta(days=90, seconds=1), timedelta(days=90), timedelta(days=1)]


@pytest.fixture
def history(settings: Settings, db_conninfo: str, cli_env: dict[str, str]) -> dict[str, Path]:
    """Four real dpd runs whose manifests record the finish times of AGES before NOW.

    File mtimes say the opposite (old runs touched now, the newest dated 2001): prune must
    judge by the recorded time only.
    """
    add_loans(db_conninfo)
    manifests: dict[str, Path] = {}
    for day, age in zip(DAYS, AGES, strict=True):
        export_dataset(settings, "dpd", date.fromisoformat(day), ["csv", "parquet"])
        manifest = manifest_path(settings.runtime_dir, "dpd", day)
        set_finished_at(manifest, NOW - age)
        manifests[day] = manifest
    for path in files_of(manifests[DAYS[-1]]):
        os.utime(path, (1e9, 1e9))
    return manifests


def prune_json(cli: CliRunner, *args: str) -> tuple[int, dict[str, Any]]:
    with freeze_time(NOW):
        result = invoke(cli, "prune", *args, "--json")
    assert "Traceback" not in result.stderr
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else {}


def run_bytes(manifest: Path) -> int:
    return sum(p.stat().st_size for p in files_of(manifest)) + manifest.stat().st_size


# ---------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("6m", "ambiguous (months or minutes?)"),
        ("90", "has no unit"),
        ("-1d", "cannot be negative"),
        ("0d", "is zero"),
        ("1.5d", "fractions"),
        ("3mo", "months and years have no fixed length"),
    ],
)
def test_bad_durations_are_refused_with_the_reason(
    cli: CliRunner, text: str, why: str, runtime_dir: Path
) -> None:
    result = invoke(cli, "prune", "--retention", text)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert why in lines[0] and "--retention" in lines[0]
    assert not runtime_dir.exists()  # nothing audited, nothing touched


def test_keep_last_below_one_is_refused(cli: CliRunner) -> None:
    result = invoke(cli, "prune", "--retention", "90d", "--keep-last", "0")
    assert result.exit_code == 2
    assert "at least 1" in result.stderr


def test_no_retention_anywhere_is_a_usage_error(cli: CliRunner) -> None:
    result = invoke(cli, "prune")
    assert result.exit_code == 2
    assert "--retention" in result.stderr


def test_a_bad_retention_in_the_configuration_is_refused(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABACO_PRUNE__DATASETS", '{"dpd": "6m"}')
    result = invoke(cli, "prune")
    assert result.exit_code == 2
    assert "prune.datasets" in result.stderr and "ambiguous" in result.stderr


# ------------------------------------------------------------------------------------- dry run


def test_dry_run_lists_runs_reasons_and_bytes_and_deletes_nothing(
    cli: CliRunner, history: dict[str, Path], runtime_dir: Path
) -> None:
    before = tree_snapshot(runtime_dir / "exports")
    code, report = prune_json(cli, "--retention", "90d", "--dry-run")
    assert code == 0
    assert report["dry_run"] is True
    assert [r["as_of_date"] for r in report["removed"]] == DAYS[:2]
    assert report["removed"][0]["bytes"] == run_bytes(history[DAYS[0]])
    assert report["bytes"] == run_bytes(history[DAYS[0]]) + run_bytes(history[DAYS[1]])
    assert "older than the 90d retention" in report["removed"][1]["reason"]
    assert "90.0 days ago" in report["removed"][1]["reason"]
    assert {k["as_of_date"]: k["reason"] for k in report["kept"]} == {
        DAYS[2]: "within the 90d retention",
        DAYS[3]: "one of the 1 newest successful runs (--keep-last 1)",
    }
    assert tree_snapshot(runtime_dir / "exports") == before
    with freeze_time(NOW):
        text = invoke(cli, "prune", "--retention", "90d", "--dry-run")
    assert "would remove 2 run(s)" in text.stderr
    assert "2025-06-01" in text.stdout and "older than the 90d retention" in text.stdout


# ----------------------------------------------------------------------------- the real thing


def test_prune_removes_whole_runs_at_the_retention_edge(
    cli: CliRunner, history: dict[str, Path], runtime_dir: Path
) -> None:
    gone = [p for day in DAYS[:2] for p in files_of(history[day])]
    expected_bytes = run_bytes(history[DAYS[0]]) + run_bytes(history[DAYS[1]])
    kept = {day: tree_snapshot_of(history[day]) for day in DAYS[2:]}
    with freeze_time(NOW):
        result = invoke(cli, "prune", "--retention", "90d")
    assert result.exit_code == 0, result.stderr
    assert f"removed 2 run(s), freed {human(expected_bytes)}" in result.stderr
    for path in [*gone, history[DAYS[0]], history[DAYS[1]]]:
        assert not path.exists(), path
    # the emptied partition folders went too; the tables' folders stay
    assert not (runtime_dir / "exports/dpd/loans/as_of_date=2025-06-01").exists()
    assert (runtime_dir / "exports/dpd/loans").is_dir()
    for day in DAYS[2:]:
        assert tree_snapshot_of(history[day]) == kept[day]
    assert invoke(cli, "audit", "verify").exit_code == 0
    # the audit record lists what went
    complete = read_records(runtime_dir)[-1]
    assert (complete["command"], complete["event"], complete["exit_code"]) == (
        "prune",
        "COMPLETE",
        0,
    )
    assert complete["source"] is None
    removed = complete["details"]["removed"]
    assert [r["as_of_date"] for r in removed] == DAYS[:2]
    assert sorted(f for r in removed for f in r["files"]) == sorted(
        p.relative_to(runtime_dir / "exports").as_posix() for p in gone
    )
    assert complete["details"]["bytes"] == expected_bytes
    # and the metrics describe the last prune
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    assert samples[("abaco_prune_deleted_runs", (("dataset", "dpd"),))] == 2
    assert samples[("abaco_prune_freed_bytes", ())] == expected_bytes
    assert samples[("abaco_prune_last_run_timestamp_seconds", ())] == NOW.timestamp()
    assert samples[("abaco_runs_total", (("command", "prune"), ("status", "success")))] == 1


def tree_snapshot_of(manifest: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in [manifest, *files_of(manifest)]}


def human(size: int) -> str:
    from abaco_cli.cli.common import human_bytes

    return human_bytes(size)


def test_one_second_inside_the_retention_stays(cli: CliRunner, history: dict[str, Path]) -> None:
    """2160h is 90 days to the second: the same edge, another unit."""
    code, report = prune_json(cli, "--retention", "2160h")
    assert code == 0
    assert [r["as_of_date"] for r in report["removed"]] == DAYS[:2]
    assert history[DAYS[2]].exists()
    code, report = prune_json(cli, "--retention", "2160h")  # again: nothing more to do
    assert (code, report["count"]) == (0, 0)


def test_keep_last_protects_the_newest_successful_runs(
    cli: CliRunner, history: dict[str, Path]
) -> None:
    code, report = prune_json(cli, "--retention", "1h", "--keep-last", "3", "--dry-run")
    assert code == 0
    assert [r["as_of_date"] for r in report["removed"]] == DAYS[:1]
    code, report = prune_json(cli, "--retention", "1h")
    assert code == 0
    assert [r["as_of_date"] for r in report["removed"]] == DAYS[:3]
    assert history[DAYS[3]].exists()  # the newest run is never removed
    assert all(p.exists() for p in files_of(history[DAYS[3]]))


def test_per_dataset_retention_from_the_configuration(
    cli: CliRunner, history: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABACO_PRUNE__RETENTION", "365d")
    monkeypatch.setenv("ABACO_PRUNE__DATASETS", '{"dpd": "100d"}')
    code, report = prune_json(cli, "--dry-run")
    assert code == 0
    assert report["retention"]["dpd"] == "100d"
    assert [r["as_of_date"] for r in report["removed"]] == DAYS[:1]
    code, report = prune_json(cli, "--dry-run", "--retention", "90d")  # the flag wins
    assert code == 0
    assert [r["as_of_date"] for r in report["removed"]] == DAYS[:2]


def test_unknown_files_are_listed_never_deleted(
    cli: CliRunner, history: dict[str, Path], runtime_dir: Path
) -> None:
    dpd = runtime_dir / "exports" / "dpd"
    stray = dpd / "notes.txt"
    stray.write_text("analyst's notes")
    extra = dpd / "loans" / "as_of_date=2025-06-01" / "extra.csv"  # in a run that goes
    extra.write_bytes(b"a,b\r\n")
    temp = dpd / "loans" / "as_of_date=2025-06-04" / ".dpd_loans_2025-06-04.csv.x.tmp"
    temp.write_text("half")
    keep = dpd / ".gitkeep"
    keep.write_text("")
    code, report = prune_json(cli, "--retention", "90d")
    assert code == 0
    unknown = {u["path"]: u["reason"] for u in report["unknown"]}
    assert unknown == {
        "dpd/notes.txt": "no manifest names this file",
        "dpd/loans/as_of_date=2025-06-01/extra.csv": "no manifest names this file",
        "dpd/loans/as_of_date=2025-06-04/.dpd_loans_2025-06-04.csv.x.tmp": (
            "temporary file of an interrupted export (its next export removes it)"
        ),
    }
    assert stray.read_text() == "analyst's notes"
    assert extra.read_bytes() == b"a,b\r\n"  # and its folder stays, as it is not empty
    assert temp.exists() and keep.exists()
    assert not any(p.exists() for p in files_of_removed(report, runtime_dir))


def files_of_removed(report: dict[str, Any], runtime_dir: Path) -> list[Path]:
    return [runtime_dir / "exports" / f for r in report["removed"] for f in r["files"]]


# ----------------------------------------------------------------------------- symbolic links


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim.txt").write_text("must survive")
    (folder / "dpd_loans_2025-06-01.csv").write_text("must survive too")
    yield folder
    assert (folder / "victim.txt").read_text() == "must survive"
    assert (folder / "dpd_loans_2025-06-01.csv").read_text() == "must survive too"


def test_symbolic_links_are_never_followed(
    cli: CliRunner, history: dict[str, Path], runtime_dir: Path, outside: Path
) -> None:
    dpd = runtime_dir / "exports" / "dpd"
    # 1. an artifact of an expiring run replaced by a link to a file outside the tree
    artifact = next(p for p in files_of(history[DAYS[0]]) if p.suffix == ".csv")
    artifact.unlink()
    artifact.symlink_to(outside / "dpd_loans_2025-06-01.csv")
    # 2. a link to a folder outside the tree, and a link to a file outside
    (dpd / "evil").symlink_to(outside, target_is_directory=True)
    (dpd / "shortcut.csv").symlink_to(outside / "victim.txt")
    # 3. a partition folder of an expiring run moved outside and linked back
    aging = dpd / "aging" / "as_of_date=2025-06-02"
    moved = outside / "aging-2025-06-02"
    aging.rename(moved)
    aging.symlink_to(moved, target_is_directory=True)
    moved_files = sorted(p.name for p in moved.iterdir())

    code, report = prune_json(cli, "--retention", "90d")
    assert code == 0
    skipped = {s["path"]: s["reason"] for r in report["removed"] for s in r["skipped"]}
    assert skipped[artifact.relative_to(runtime_dir / "exports").as_posix()].endswith(
        "dpd_loans_2025-06-01.csv is a symbolic link: abaco never follows one"
    )
    linked = [r for p, r in skipped.items() if "as_of_date=2025-06-02" in p and "aging/" in p]
    assert len(linked) == 1  # the Parquet file (the CSV one is in aging.csv/, not linked)
    assert all(r.endswith("as_of_date=2025-06-02 is a symbolic link: abaco never follows one")
               for r in linked)  # fmt: skip
    unknown = {u["path"]: u["reason"] for u in report["unknown"]}
    assert unknown["dpd/evil"] == "symbolic link to a folder: never followed"
    assert unknown["dpd/shortcut.csv"] == "symbolic link: never followed"
    assert unknown["dpd/aging/as_of_date=2025-06-02"] == "symbolic link to a folder: never followed"
    assert artifact.is_symlink()
    assert sorted(p.name for p in moved.iterdir()) == moved_files  # nothing deleted through it
    assert not history[DAYS[0]].exists() and not history[DAYS[1]].exists()


# ---------------------------------------------------------------------------------------- locks


def test_a_lock_held_by_an_export_stops_prune_of_that_dataset(
    cli: CliRunner, history: dict[str, Path], runtime_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ABACO_LOCK_TIMEOUT_SECONDS", "0.3")
    before = tree_snapshot(runtime_dir / "exports")
    holder = LockHolder(runtime_dir / "locks" / "dpd.lock")
    try:
        result = invoke(cli, "prune", "--retention", "90d")
    finally:
        holder.stop()
    assert result.exit_code == 4
    errors = [line for line in result.stderr.splitlines() if line.startswith("abaco: error:")]
    assert len(errors) == 1
    assert f"pid {holder.pid}" in errors[0] and "export dpd" in errors[0]
    assert tree_snapshot(runtime_dir / "exports") == before
    fail = read_records(runtime_dir)[-1]
    assert (fail["command"], fail["event"], fail["exit_code"]) == ("prune", "FAIL", 4)
    assert fail["details"]["count"] == 0


def test_lock_exit_code_in_a_real_process(
    history: dict[str, Path], cli_env: dict[str, str], runtime_dir: Path, tmp_path: Path
) -> None:
    holder = LockHolder(runtime_dir / "locks" / "dpd.lock")
    try:
        done = run_abaco(
            ["prune", "--retention", "90d"],
            {**cli_env, "ABACO_LOCK_TIMEOUT_SECONDS": "0.3"},
            tmp_path,
        )
    finally:
        holder.stop()
    assert done.returncode == 4
    assert "Traceback" not in done.stderr
    bad = run_abaco(["prune", "--retention", "6m"], cli_env, tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1


# ------------------------------------------------------------------------------- crash safety


def test_a_crash_between_deletions_is_finished_by_the_next_prune(
    cli: CliRunner,
    settings: Settings,
    history: dict[str, Path],
    runtime_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = {"n": 0}
    real_delete = pruning._delete

    def crash_on_second(tree: Any, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process dies between two deletions
        real_delete(tree, path)

    monkeypatch.setattr(pruning, "_delete", crash_on_second)
    with freeze_time(NOW):
        crashed = invoke(cli, "prune", "--retention", "90d")
    assert crashed.exit_code == 130
    monkeypatch.setattr(pruning, "_delete", real_delete)
    first = history[DAYS[0]]
    marker = first.with_name(f".{first.name}.pruning")
    assert marker.is_file() and not first.exists()  # marked first: no longer published
    left = [p for p in files_of(marker) if p.exists()]
    assert len(left) == 3
    assert read_records(runtime_dir)[-1]["exit_code"] == 130

    # audit verify does not trip over it: a note, exit 0
    verified = invoke(cli, "audit", "verify", "--json")
    assert verified.exit_code == 0, verified.stdout
    notes = json.loads(verified.stdout)["notes"]
    assert [n["kind"] for n in notes] == ["prune_incomplete"]
    assert "3 of its 4 files remain" in notes[0]["message"]
    # the healthcheck warns
    health = invoke(cli, "healthcheck", "--check", "runtime")
    assert health.exit_code == 1
    assert health.stdout.startswith("ABACO WARNING - runtime WARNING: an interrupted prune")
    # exports carry on, also of the very as-of date being removed
    export_dataset(settings, "dpd", date(2025, 6, 5), ["csv"])
    export_dataset(settings, "dpd", date.fromisoformat(DAYS[0]), ["csv", "parquet"])
    fresh = {p: p.read_bytes() for p in files_of(first)}

    code, report = prune_json(cli, "--retention", "90d")
    assert code == 0
    resumed = report["removed"][0]
    assert resumed["reason"] == "finishing the removal of this run, which a crash interrupted"
    assert {s["reason"] for s in resumed["skipped"]} == {"another manifest still names it"}
    assert not marker.exists()
    assert {p: p.read_bytes() for p in files_of(first)} == fresh  # the new run is untouched
    assert invoke(cli, "audit", "verify").exit_code == 0
    assert invoke(cli, "healthcheck", "--check", "runtime").exit_code == 0


def test_a_failed_deletion_leaves_the_run_marked_and_exits_1(
    cli: CliRunner, history: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_delete = pruning._delete

    def refuse(tree: Any, path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pruning, "_delete", refuse)
    with freeze_time(NOW):
        result = invoke(cli, "prune", "--retention", "90d")
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("abaco: error:")]
    assert len(errors) == 1 and "stays marked" in errors[0]
    first = history[DAYS[0]]
    assert first.with_name(f".{first.name}.pruning").exists()
    monkeypatch.setattr(pruning, "_delete", real_delete)
    code, report = prune_json(cli, "--retention", "90d")
    assert code == 0 and report["count"] == 2
