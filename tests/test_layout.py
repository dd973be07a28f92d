"""Issue 10, part 1: one format a folder, an older tree migrated, other formats kept.

An older tree (every format in the table's folder, version 1 manifests) is made from a real
export by moving its CSV files back into the Parquet folders and rewriting its manifest as
version 1 did; `abaco migrate-tree` (or any command that takes the dataset's lock) moves it to
the new layout, crash-safe, and `audit verify` stays clean throughout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
from typer.testing import CliRunner

from tests.conftest import invoke
from tests.ops import add_loans, manifest_path, tree_snapshot

DAYS = ("2025-12-29", "2025-12-30")


def exports(runtime_dir: Path) -> Path:
    return runtime_dir / "exports"


def to_old_layout(runtime_dir: Path, day: str) -> list[str]:
    """Put a run back into the version 1 layout; the old paths of its CSV files."""
    path = manifest_path(runtime_dir, "dpd", day)
    data = json.loads(path.read_text(encoding="utf-8"))
    moved: list[str] = []
    for entry in data["files"]:
        entry.pop("run_id", None)
        entry.pop("snapshot_at", None)
        if entry["format"] != "csv":
            continue
        old = entry["path"].replace(".csv/", "/", 1)
        (exports(runtime_dir) / old).parent.mkdir(parents=True, exist_ok=True)
        (exports(runtime_dir) / entry["path"]).rename(exports(runtime_dir) / old)
        entry["path"] = old
        moved.append(old)
    data["manifest_version"] = 1
    data.pop("snapshot_at", None)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return moved


def verify(cli: CliRunner) -> dict[str, Any]:
    result = invoke(cli, "audit", "verify", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report["problems"]
    return dict(report)


def csv_paths(runtime_dir: Path, day: str) -> list[str]:
    data = json.loads(manifest_path(runtime_dir, "dpd", day).read_text(encoding="utf-8"))
    return sorted(f["path"] for f in data["files"] if f["format"] == "csv")


def test_migrate_tree_moves_an_older_tree(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    for day in DAYS:
        assert invoke(cli, "export", "dpd", "--as-of", day).exit_code == 0
    old = {day: to_old_layout(runtime_dir, day) for day in DAYS}
    verify(cli)  # an older tree verifies: file names tie it to the audit records
    before = tree_snapshot(exports(runtime_dir))

    dry = invoke(cli, "migrate-tree", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    planned = json.loads(dry.stdout)["runs"]
    assert {r["as_of_date"] for r in planned} == set(DAYS)
    assert sorted(f["from"] for r in planned for f in r["files"]) == sorted(
        p for paths in old.values() for p in paths
    )
    assert tree_snapshot(exports(runtime_dir)) == before  # a dry run moves nothing

    done = invoke(cli, "migrate-tree", "--json")
    assert done.exit_code == 0, done.stderr
    assert len(json.loads(done.stdout)["runs"]) == 2
    for day in DAYS:
        assert all(".csv/as_of_date=" in p for p in csv_paths(runtime_dir, day))
        assert all(not (exports(runtime_dir) / p).exists() for p in old[day])
    moved = tree_snapshot(exports(runtime_dir))
    csv_hashes = sorted(h for p, h in before.items() if p.endswith(".csv"))
    assert sorted(h for p, h in moved.items() if p.endswith(".csv")) == csv_hashes
    assert ds.dataset(str(exports(runtime_dir) / "dpd" / "loans"), format="parquet").count_rows()
    verify(cli)
    again = invoke(cli, "migrate-tree", "--json")
    assert json.loads(again.stdout)["runs"] == []  # nothing left to move
    pointer = json.loads((exports(runtime_dir) / "dpd" / "latest.json").read_text())
    assert all(".csv/" in f["path"] for f in pointer["files"] if f["format"] == "csv")


def test_any_run_of_a_dataset_migrates_it_first(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    assert invoke(cli, "export", "dpd", "--as-of", DAYS[0]).exit_code == 0
    to_old_layout(runtime_dir, DAYS[0])
    result = invoke(cli, "export", "dpd", "--as-of", DAYS[1])
    assert result.exit_code == 0, result.stderr
    assert "to folders of their own" in result.stderr
    assert all(".csv/" in p for p in csv_paths(runtime_dir, DAYS[0]))
    verify(cli)


def test_a_migration_killed_half_way_is_finished_by_the_next_run(
    cli: CliRunner, cli_env: dict[str, str], db_conninfo: str, runtime_dir: Path, tmp_path: Path
) -> None:
    add_loans(db_conninfo)
    assert invoke(cli, "export", "dpd", "--as-of", DAYS[0]).exit_code == 0
    to_old_layout(runtime_dir, DAYS[0])
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACO_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "abaco_cli", "migrate-tree"],
        env={**clean, **cli_env, "ABACO_TEST_PAUSE_PUBLISH_AT": "1"},  # after the 1st rename
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, ""):
        if "test pause at publish step" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    report = verify(cli)  # half moved: a note, not damage
    assert "publish_interrupted" in {n["kind"] for n in report["notes"]}
    assert invoke(cli, "prune", "--retention", "9999w").exit_code == 0  # finishes it
    assert all(".csv/" in p for p in csv_paths(runtime_dir, DAYS[0]))
    assert not list((runtime_dir / "journal").iterdir())
    report = verify(cli)
    assert report["notes"] == []


def test_dry_run_says_which_files_stay_and_which_are_replaced(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    assert (
        invoke(cli, "export", "dpd", "--as-of", DAYS[0], "--format", "csv,parquet").exit_code == 0
    )
    result = invoke(cli, "export", "dpd", "--as-of", DAYS[0], "--format", "json", "--dry-run",
                    "--json")  # fmt: skip
    plan = json.loads(result.stdout)
    assert sorted(Path(p).suffix for p in plan["kept"]) == [".csv", ".csv", ".parquet", ".parquet"]
    assert plan["replaced"] == []
    result = invoke(cli, "export", "dpd", "--as-of", DAYS[0], "--format", "json", "--dry-run",
                    "--replace-formats", "--json")  # fmt: skip
    plan = json.loads(result.stdout)
    assert plan["kept"] == [] and len(plan["replaced"]) == 4
    table = invoke(cli, "export", "dpd", "--as-of", DAYS[0], "--format", "json", "--dry-run")
    assert "stays (another format)" in table.stdout


def test_asking_for_one_more_format_keeps_the_others(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    add_loans(db_conninfo)
    assert invoke(cli, "export", "dpd", "--as-of", DAYS[0]).exit_code == 0  # csv,parquet
    before = {p: h for p, h in tree_snapshot(exports(runtime_dir)).items() if "as_of_date=" in p}
    assert invoke(cli, "export", "dpd", "--as-of", DAYS[0], "--format", "json").exit_code == 0
    after = {p: h for p, h in tree_snapshot(exports(runtime_dir)).items() if "as_of_date=" in p}
    assert {p: after[p] for p in before} == before  # CSV and Parquet untouched
    assert sorted(set(after) - set(before)) == [
        "dpd/aging.json/as_of_date=2025-12-29/dpd_aging_2025-12-29.json",
        "dpd/loans.json/as_of_date=2025-12-29/dpd_loans_2025-12-29.json",
    ]
    verify(cli)


def to_version_1_types(runtime_dir: Path, day: str) -> None:
    """Write dpd/aging's ratio back as version 1 did (a binary float), in Parquet and CSV,
    and the manifest to match (as an old tree restored from a copy would have it)."""
    import hashlib

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = manifest_path(runtime_dir, "dpd", day)
    data = json.loads(path.read_text(encoding="utf-8"))
    for entry in data["files"]:
        if entry["table"] != "aging" or entry["format"] not in ("parquet", "csv"):
            continue
        file = exports(runtime_dir) / entry["path"]
        if entry["format"] == "parquet":
            table = pq.read_table(file)
            index = table.schema.get_field_index("share_of_outstanding")
            floats = table.column(index).cast(pa.float64())
            table = table.set_column(index, pa.field("share_of_outstanding", pa.float64()), floats)
            pq.write_table(table, file, compression="zstd")
        else:
            text = file.read_text(encoding="utf-8")
            rows = list(pacsv.read_csv(file).to_pylist())
            for row in rows:  # the share as a float's repr, as version 1 printed it
                value = row["share_of_outstanding"]
                if value is not None:
                    text = text.replace(f",{value},", f",{float(value)!r},", 1)
            file.write_text(text, encoding="utf-8", newline="")
        for column in entry["columns"]:
            if column["name"] == "share_of_outstanding":
                column["type"] = "double"
        entry["bytes"] = file.stat().st_size
        entry["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    data["schema_version"] = 1
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def test_files_of_an_earlier_version_are_rewritten_with_this_versions_types(
    cli: CliRunner, db_conninfo: str, runtime_dir: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    add_loans(db_conninfo)
    assert invoke(cli, "export", "dpd", "--as-of", DAYS[0]).exit_code == 0
    to_version_1_types(runtime_dir, DAYS[0])
    dry = json.loads(invoke(cli, "migrate-tree", "--dry-run", "--json").stdout)
    assert [r["columns"] for r in dry["retyped"]] == [["share_of_outstanding"]]
    assert len(dry["retyped"][0]["files"]) == 2  # the Parquet and the CSV file

    # the old run restored by hand: record-restore takes the lock, which migrates it first
    restored = invoke(cli, "audit", "record-restore", "--dataset", "dpd", "--as-of", DAYS[0])
    assert restored.exit_code == 0, restored.stderr
    assert "with this version's column types (share_of_outstanding)" in restored.stderr
    aging = exports(runtime_dir) / "dpd" / "aging" / f"as_of_date={DAYS[0]}"
    schema = pq.read_schema(next(aging.glob("*.parquet")))
    assert schema.field("share_of_outstanding").type == pa.decimal128(18, 10)
    csv_text = next((exports(runtime_dir) / "dpd" / "aging.csv").rglob("*.csv")).read_text()
    assert "e-" not in csv_text and "E" not in csv_text.split("\n", 1)[1]
    data = json.loads(manifest_path(runtime_dir, "dpd", DAYS[0]).read_text())
    types = {
        (f["format"], c["name"]): c["type"]
        for f in data["files"]
        if f["table"] == "aging"
        for c in f["columns"]
    }
    assert types[("parquet", "share_of_outstanding")] == "decimal128(18, 10)"
    assert types[("csv", "share_of_outstanding")] == "decimal128(18, 10)"
    report = verify(cli)  # the MIGRATE record ties the rewritten files to the trail
    assert report["problems"] == []
    events = [json.loads(line)["event"] for line in
              (runtime_dir / "audit" / "audit.jsonl").read_text().splitlines()]  # fmt: skip
    assert "MIGRATE" in events
    again = json.loads(invoke(cli, "migrate-tree", "--json").stdout)
    assert again["retyped"] == []
