"""Publishing an export: paths, manifest, latest pointer, replacement and failure safety.

Every test runs the real `export_dataset` against a fresh database holding a few loans.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import abaco_cli
from abaco_cli import libc
from abaco_cli.errors import WriteError
from abaco_cli.runtime import files
from abaco_cli.runtime.tree import Place, RuntimeTree
from abaco_cli.services.exporting import export_dataset
from abaco_cli.services.pruning import prune
from abaco_cli.services.run import Run
from abaco_cli.services.verifying import verify_audit
from abaco_cli.settings import Settings
from abaco_cli.writers.csv_writer import CsvWriter
from abaco_cli.writers.parquet_writer import ParquetWriter

JUNE = date(2025, 6, 30)
MAY = date(2025, 5, 31)
JULY = date(2025, 7, 31)
AGING_BUCKETS = 7  # the default DPD policy has seven buckets, Current to 180+

# loan_id, customer_id, disbursement_date, principal; no schedule, so nothing is past due
LOANS = [
    ("L-001", "C-1", date(2025, 1, 15), "1000.00"),
    ("L-002", "C-1", date(2025, 3, 1), "12345678901234.56"),
    ("L-003", "C-2", date(2025, 6, 10), "0.10"),  # disbursed after 31 May
]


def add_loans(conninfo: str, loans: list[tuple[str, str, date, str]]) -> None:
    with psycopg.connect(conninfo) as conn:
        for loan_id, customer_id, disbursed, principal in loans:
            conn.execute(
                "INSERT INTO core_banking.customers (customer_id, city, country) "
                "VALUES (%s, 'San Salvador, Cuscatlán', 'SLV') ON CONFLICT DO NOTHING",
                (customer_id,),
            )
            conn.execute(
                "INSERT INTO core_banking.loans "
                "(loan_id, customer_id, disbursement_date, principal) VALUES (%s, %s, %s, %s)",
                (loan_id, customer_id, disbursed, principal),
            )


@pytest.fixture
def loans_db(db_conninfo: str) -> str:
    add_loans(db_conninfo, LOANS)
    return db_conninfo


def exports(settings: Settings) -> Path:
    return settings.runtime_dir / "exports"


def table_path(settings: Settings, table: str, as_of: date, fmt: str) -> Path:
    """One format a folder: loans/ (Parquet), loans.csv/, loans.json/."""
    day = as_of.isoformat()
    folder = table if fmt == "parquet" else f"{table}.{fmt}"
    return exports(settings) / "dpd" / folder / f"as_of_date={day}" / f"dpd_{table}_{day}.{fmt}"


def manifest_path(settings: Settings, as_of: date) -> Path:
    return exports(settings) / "dpd" / "_manifests" / f"dpd_{as_of.isoformat()}.manifest.json"


def latest_path(settings: Settings) -> Path:
    return exports(settings) / "dpd" / "latest.json"


def read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(settings: Settings) -> dict[str, str]:
    """Every file under the exports folder with its checksum."""
    root = exports(settings)
    return {
        p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def data_files(settings: Settings) -> list[str]:
    root = exports(settings) / "dpd"
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.parent.name.startswith("as_of_date=")
    )


def csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def parse_iso(text: str) -> datetime:
    assert text.endswith("Z")
    return datetime.fromisoformat(text[:-1] + "+00:00")


# ------------------------------------------------------------------------------------ happy path


def test_files_land_at_hive_partitioned_paths(settings: Settings, loans_db: str) -> None:
    result = export_dataset(settings, "dpd", JUNE, ["csv", "parquet", "json"])
    assert result.status == "success"
    assert data_files(settings) == sorted(
        [
            "aging.csv/as_of_date=2025-06-30/dpd_aging_2025-06-30.csv",
            "aging.json/as_of_date=2025-06-30/dpd_aging_2025-06-30.json",
            "aging/as_of_date=2025-06-30/dpd_aging_2025-06-30.parquet",
            "loans.csv/as_of_date=2025-06-30/dpd_loans_2025-06-30.csv",
            "loans.json/as_of_date=2025-06-30/dpd_loans_2025-06-30.json",
            "loans/as_of_date=2025-06-30/dpd_loans_2025-06-30.parquet",
        ]
    )
    loans = pq.read_table(table_path(settings, "loans", JUNE, "parquet"))
    assert loans.column("loan_id").to_pylist() == ["L-001", "L-002", "L-003"]
    assert [str(v) for v in loans.column("principal").to_pylist()] == [
        "1000.00",
        "12345678901234.56",
        "0.10",
    ]
    kv = pq.read_metadata(table_path(settings, "loans", JUNE, "parquet")).metadata
    assert kv[b"abaco.run_id"] == result.run_id.encode()
    assert kv[b"abaco.as_of_date"] == b"2025-06-30"
    assert [r["principal"] for r in csv_rows(table_path(settings, "loans", JUNE, "csv"))] == [
        "1000.00",
        "12345678901234.56",
        "0.10",
    ]
    assert temp_files(settings.runtime_dir) == []


def test_manifest_describes_every_file(settings: Settings, loans_db: str) -> None:
    result = export_dataset(settings, "dpd", JUNE, ["csv", "parquet"])
    assert result.manifest_path == manifest_path(settings, JUNE)
    manifest = read_json(manifest_path(settings, JUNE))
    assert manifest["run_id"] == result.run_id
    assert manifest["dataset"] == "dpd"
    assert manifest["as_of_date"] == "2025-06-30"
    assert manifest["tool_version"] == abaco_cli.__version__
    assert manifest["status"] == "success"
    started, finished = parse_iso(manifest["started_at"]), parse_iso(manifest["finished_at"])
    assert started <= finished
    expected_rows = {"loans": 3, "aging": AGING_BUCKETS}
    expected_columns = {"loans": 24, "aging": 9}  # definitions version 2: schema 2 of dpd/loans
    files = manifest["files"]
    assert sorted(f["path"] for f in files) == sorted(
        f"dpd/{t}{'' if fmt == 'parquet' else '.' + fmt}/as_of_date=2025-06-30/"
        f"dpd_{t}_2025-06-30.{fmt}"
        for t in ("loans", "aging")
        for fmt in ("csv", "parquet")
    )
    for record in files:
        path = exports(settings) / record["path"]
        assert record["bytes"] == path.stat().st_size
        assert record["sha256"] == sha256(path)
        assert record["rows"] == expected_rows[record["table"]]
        # Parquet leaves the partition column (as_of_date) to the Hive folder name.
        in_folder = 1 if record["format"] == "parquet" else 0
        assert len(record["columns"]) == expected_columns[record["table"]] - in_folder
        if record["format"] == "parquet":
            table = pq.read_table(path)
            assert table.num_rows == record["rows"]
            assert [c["name"] for c in record["columns"]] == table.schema.names
            assert [c["type"] for c in record["columns"]] == [str(t) for t in table.schema.types]
        else:
            assert len(csv_rows(path)) == record["rows"]
    loans_parquet = next(f for f in files if f["table"] == "loans" and f["format"] == "parquet")
    types = {c["name"]: c["type"] for c in loans_parquet["columns"]}
    assert types["principal"] == "decimal128(18, 2)"
    assert "as_of_date" not in types
    loans_csv = next(f for f in files if f["table"] == "loans" and f["format"] == "csv")
    assert loans_csv["columns"][0] == {"name": "as_of_date", "type": "date32[day]"}


def test_latest_points_at_the_newest_date_and_never_moves_back(
    settings: Settings, loans_db: str
) -> None:
    june = export_dataset(settings, "dpd", JUNE, ["parquet"])
    latest = read_json(latest_path(settings))
    assert latest["as_of_date"] == "2025-06-30"
    assert latest["run_id"] == june.run_id
    assert latest["manifest"] == "dpd/_manifests/dpd_2025-06-30.manifest.json"
    for entry in latest["files"]:
        assert (exports(settings) / entry["path"]).is_file()

    may = export_dataset(settings, "dpd", MAY, ["parquet"])
    assert manifest_path(settings, MAY).is_file()
    assert read_json(manifest_path(settings, MAY))["files"][0]["rows"] == 2  # L-003 came later
    latest = read_json(latest_path(settings))
    assert latest["as_of_date"] == "2025-06-30"
    assert latest["run_id"] == june.run_id
    assert may.run_id != june.run_id

    june_again = export_dataset(settings, "dpd", JUNE, ["parquet"])
    assert read_json(latest_path(settings))["run_id"] == june_again.run_id

    july = export_dataset(settings, "dpd", JULY, ["parquet"])
    latest = read_json(latest_path(settings))
    assert latest["as_of_date"] == "2025-07-31"
    assert latest["run_id"] == july.run_id


def test_rerun_replaces_its_formats_and_keeps_the_others(settings: Settings, loans_db: str) -> None:
    first = export_dataset(settings, "dpd", JUNE, ["csv", "parquet", "json"])
    files_before = data_files(settings)
    assert len(files_before) == 6

    second = export_dataset(settings, "dpd", JUNE, ["csv", "parquet", "json"])
    assert data_files(settings) == files_before  # replaced, not duplicated
    kv = pq.read_metadata(table_path(settings, "loans", JUNE, "parquet")).metadata
    assert kv[b"abaco.run_id"] == second.run_id.encode()
    assert read_json(manifest_path(settings, JUNE))["run_id"] == second.run_id
    assert first.run_id != second.run_id

    # one format asked for: it is replaced, the others stay, marked with their own run
    csv_before = table_path(settings, "loans", JUNE, "csv").read_bytes()
    third = export_dataset(settings, "dpd", JUNE, ["parquet"])
    assert data_files(settings) == files_before
    assert table_path(settings, "loans", JUNE, "csv").read_bytes() == csv_before
    manifest = read_json(manifest_path(settings, JUNE))
    assert manifest["manifest_version"] == 2 and manifest["run_id"] == third.run_id
    origins = {(f["table"], f["format"]): f["run_id"] for f in manifest["files"]}
    assert origins == {
        ("loans", "parquet"): third.run_id,
        ("aging", "parquet"): third.run_id,
        ("loans", "csv"): second.run_id,
        ("aging", "csv"): second.run_id,
        ("loans", "json"): second.run_id,
        ("aging", "json"): second.run_id,
    }
    snapshots = {f["run_id"]: f["snapshot_at"] for f in manifest["files"]}
    assert snapshots[third.run_id] == manifest["snapshot_at"]
    assert snapshots[second.run_id] < manifest["snapshot_at"]  # an earlier instant
    assert verify_audit(settings).ok

    # --replace-formats: today's formats only, the others removed
    fourth = export_dataset(settings, "dpd", JUNE, ["parquet"], replace_formats=True)
    assert data_files(settings) == [
        "aging/as_of_date=2025-06-30/dpd_aging_2025-06-30.parquet",
        "loans/as_of_date=2025-06-30/dpd_loans_2025-06-30.parquet",
    ]
    manifest = read_json(manifest_path(settings, JUNE))
    assert {f["run_id"] for f in manifest["files"]} == {fourth.run_id}
    assert [f["path"] for f in read_json(latest_path(settings))["files"]] == [
        "dpd/loans/as_of_date=2025-06-30/dpd_loans_2025-06-30.parquet",
        "dpd/aging/as_of_date=2025-06-30/dpd_aging_2025-06-30.parquet",
    ]
    assert not (exports(settings) / "dpd" / "loans.csv" / "as_of_date=2025-06-30").exists()
    assert temp_files(settings.runtime_dir) == []
    assert verify_audit(settings).ok


# ------------------------------------------------------------------------------ failure safety


def fail_on_call(number: int, exc: BaseException, real: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in that behaves like ``real`` until its ``number``-th call, which raises."""
    calls = {"n": 0}

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == number:
            raise exc
        return real(*args, **kwargs)

    return stand_in


@pytest.mark.parametrize(
    ("writer", "call", "exc", "expected"),
    [
        # the first batch of the loans table, while every loans temp file is open
        (ParquetWriter, 1, OSError(28, "No space left on device"), WriteError),
        # the aging table, after the loans table was fully staged
        (CsvWriter, 2, OSError(5, "Input/output error"), WriteError),
        (ParquetWriter, 2, RuntimeError("writer crashed"), RuntimeError),
    ],
    ids=["parquet-oserror-first-table", "csv-oserror-second-table", "parquet-runtimeerror"],
)
def test_failure_mid_write_leaves_previous_output_untouched(
    settings: Settings,
    loans_db: str,
    monkeypatch: pytest.MonkeyPatch,
    writer: type[Any],
    call: int,
    exc: BaseException,
    expected: type[BaseException],
) -> None:
    export_dataset(settings, "dpd", JUNE, ["csv", "parquet"])
    before = snapshot(settings)
    add_loans(loans_db, [("L-004", "C-2", date(2025, 6, 20), "77.77")])  # new data: new bytes

    monkeypatch.setattr(writer, "write_batch", fail_on_call(call, exc, writer.write_batch))
    with pytest.raises(expected):
        export_dataset(settings, "dpd", JUNE, ["csv", "parquet"])

    assert snapshot(settings) == before  # data files, manifest and latest.json byte-identical
    assert temp_files(settings.runtime_dir) == []

    monkeypatch.undo()
    export_dataset(settings, "dpd", JUNE, ["csv", "parquet"])
    assert read_json(manifest_path(settings, JUNE))["files"][0]["rows"] == 4


def test_bad_source_value_through_the_cli_is_one_line_and_changes_nothing(
    settings: Settings, loans_db: str
) -> None:
    """A DataError raised by a real source value while the loans files are being written.

    BUG (services/exporting.py, _stage_table): when the stream fails after the writers were
    opened, the ExitStack closes the sinks but never the writers; when the
    pyarrow.parquet.ParquetWriter is garbage-collected its __del__ tries to write the footer
    to the closed sink and Python prints "Exception ignored in: <function
    ParquetWriter.__del__ ...> Traceback (most recent call last): ... ValueError: write to
    closed file" on stderr, after the one-line error. A user error must never show a traceback.
    The exit code, the error line and the untouched previous output are right.
    """
    export_dataset(settings, "dpd", JUNE, ["csv", "parquet"])
    before = snapshot(settings)
    with psycopg.connect(loans_db) as conn:
        conn.execute(
            "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date, principal, "
            "maturity_date) VALUES ('L-009', 'C-1', '2025-02-01', 5.00, 'infinity')"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABACO_")}
    env["ABACO_DATABASE_URL"] = loans_db
    env["ABACO_RUNTIME_DIR"] = str(settings.runtime_dir)
    done = subprocess.run(
        [sys.executable, "-m", "abaco_cli", "export", "dpd", "--as-of", "2025-06-30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("abaco: error")]
    assert len(errors) == 1, done.stderr
    assert "maturity_date" in errors[0]
    assert snapshot(settings) == before
    assert temp_files(settings.runtime_dir) == []
    assert "Traceback" not in done.stderr, done.stderr


def test_failure_while_publishing_the_second_file(
    settings: Settings, loans_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError renaming the 2nd of four files into place, after the journal is written: the
    publish is committed, so the next command that takes the lock completes it (roll forward);
    until then `audit verify` reports the interrupted publish as a note, never as damage."""
    export_dataset(settings, "dpd", JUNE, ["csv", "parquet"])
    add_loans(loans_db, [("L-004", "C-2", date(2025, 6, 20), "77.77")])  # new data: new bytes

    real_replace = files.replace
    calls = {"n": 0}

    def fail_second(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_replace(*args)

    monkeypatch.setattr(files, "replace", fail_second)
    with pytest.raises(WriteError, match="the next run of the dataset completes it"):
        export_dataset(settings, "dpd", JUNE, ["csv", "parquet"])
    monkeypatch.undo()

    report = verify_audit(settings)
    assert report.ok, report.problems
    assert [n.kind for n in report.notes] == ["publish_interrupted"]

    prune(Run(settings, "prune"), retention=timedelta(weeks=9999))  # takes the lock: recovers
    assert temp_files(settings.runtime_dir) == []
    manifest = read_json(manifest_path(settings, JUNE))
    for record in manifest["files"]:
        assert sha256(exports(settings) / record["path"]) == record["sha256"], record["path"]
    loans_csv = table_path(settings, "loans", JUNE, "csv").read_text(encoding="utf-8")
    assert "L-004" in loans_csv  # the new run's files, all of them
    assert read_json(latest_path(settings))["run_id"] == manifest["run_id"]
    report = verify_audit(settings)
    assert report.ok and report.notes == [], (report.problems, report.notes)


def test_interrupt_while_publishing_is_completed_by_the_next_run(
    settings: Settings, loans_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception that is not a signal (signals wait for the publish) stops the renames half
    way: the journal stays, and the next export of the dataset finishes that publish first."""
    export_dataset(settings, "dpd", JUNE, ["csv", "parquet"])
    real_replace = files.replace
    calls = {"n": 0}

    def interrupt_second(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real_replace(*args)

    monkeypatch.setattr(files, "replace", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        export_dataset(settings, "dpd", JUNE, ["csv", "parquet"])
    assert temp_files(settings.runtime_dir) != []  # three files still to rename
    monkeypatch.undo()

    export_dataset(settings, "dpd", JUNE, ["csv", "parquet"])
    assert temp_files(settings.runtime_dir) == []
    assert not list((settings.runtime_dir / "journal").iterdir())
    for record in read_json(manifest_path(settings, JUNE))["files"]:
        assert sha256(exports(settings) / record["path"]) == record["sha256"]
    assert verify_audit(settings).ok


def test_stale_temp_files_of_a_crashed_run_are_removed(settings: Settings, loans_db: str) -> None:
    export_dataset(settings, "dpd", JUNE, ["parquet"])
    crashed = "20250630T120000Z-0a1b2c"
    stale = [
        table_path(settings, "loans", JUNE, "parquet").with_name(
            f".dpd_loans_2025-06-30.parquet.{crashed}.tmp"
        ),
        manifest_path(settings, JUNE).with_name(f".dpd_2025-06-30.manifest.json.{crashed}.tmp"),
        exports(settings)
        / "dpd"
        / "aging"
        / "as_of_date=2025-05-31"
        / f".dpd_aging_2025-05-31.csv.{crashed}.tmp",
        # the hard link of a replaced file that an earlier version kept during its renames
        table_path(settings, "loans", JUNE, "parquet").with_name(
            f".dpd_loans_2025-06-30.parquet.{crashed}.tmp.previous"
        ),
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    keep = exports(settings) / "dpd" / "notes.tmp"  # not hidden: not ours to delete
    keep.write_text("keep me")
    odd = exports(settings) / "dpd" / ".not-ours.tmp"  # hidden, but no name of abaco's
    odd.write_text("keep me too")

    export_dataset(settings, "dpd", JUNE, ["parquet"])
    assert temp_files(settings.runtime_dir) == [odd]
    assert not any(p.exists() for p in stale)
    assert keep.read_text() == "keep me"
    assert not (exports(settings) / "dpd" / "aging" / "as_of_date=2025-05-31").exists()


def test_files_keep_other_users_out_under_umask_027(settings: Settings, loans_db: str) -> None:
    previous = os.umask(0o027)
    try:
        export_dataset(settings, "dpd", JUNE, ["csv", "parquet", "json"])
        export_dataset(settings, "dpd", JUNE, ["csv", "parquet", "json"])  # replacements too
    finally:
        os.umask(previous)
    paths = [settings.runtime_dir, *settings.runtime_dir.rglob("*")]
    assert len([p for p in paths if p.is_file()]) >= 8  # 6 data files, manifest, latest, lock
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o007 == 0, f"{path} has mode {mode:o}"


# --- the checksum taken as a staged file is written -------------------------------------------


def _staged_temp(tmp_path: Path) -> tuple[RuntimeTree, Path]:
    tree = RuntimeTree(tmp_path / "abaco_runtime")
    target = tree.table_file("dpd", "loans", JUNE, "parquet")
    return tree, RuntimeTree.temp_path(target, "20250630T000000Z-abcdef")


def test_the_checksum_taken_while_writing_is_the_files_own(tmp_path: Path) -> None:
    """Bytes through every path a writer uses (small pieces the buffer gathers, a piece larger
    than the buffer, Arrow's Parquet writer through a Python file) hash to the file on disk."""
    tree, temp = _staged_temp(tmp_path)
    table = pa.table({"n": pa.array(range(200_000)), "s": [f"v{i % 97}" for i in range(200_000)]})
    with files.open_new(tree, temp, Place.TEMP) as sink:
        sink.write(b"head")
        sink.write(memoryview(bytes(range(256)) * 64_000))  # 16 MB, past the buffer
        with pq.ParquetWriter(sink, table.schema, compression="zstd") as writer:
            writer.write_table(table, row_group_size=50_000)
        sink.write(pa.py_buffer(b"tail"))
        sink.flush()
        written = files.written_checksum(sink)
    on_disk = temp.read_bytes()
    assert written == (len(on_disk), hashlib.sha256(on_disk).hexdigest())
    assert files.checksum_of_staged(tree, temp, Place.TEMP, written) == written


def test_a_file_sought_or_truncated_is_checksummed_from_disk(tmp_path: Path) -> None:
    tree, temp = _staged_temp(tmp_path)
    with files.open_new(tree, temp, Place.TEMP) as sink:
        sink.write(b"0123456789")
        sink.seek(2)
        sink.write(b"xx")
        sink.flush()
        assert files.written_checksum(sink) is None
    expected = (10, hashlib.sha256(b"01xx456789").hexdigest())
    assert files.checksum_of_staged(tree, temp, Place.TEMP, None) == expected
    temp.unlink()
    with files.open_new(tree, temp, Place.TEMP) as sink:
        sink.write(b"0123456789")
        sink.truncate(4)
        sink.flush()
        assert files.written_checksum(sink) is None
    assert files.written_checksum(io.BytesIO()) is None  # not a file open_new made


def test_a_staged_file_changed_after_writing_is_checksummed_from_disk(tmp_path: Path) -> None:
    """The checksum taken while writing stands only while the file has the size written: one
    grown or cut afterwards is read again, so its manifest entry describes what is there."""
    tree, temp = _staged_temp(tmp_path)
    with files.open_new(tree, temp, Place.TEMP) as sink:
        sink.write(b"exact money")
        sink.flush()
        written = files.written_checksum(sink)
    assert written is not None
    with temp.open("ab") as handle:
        handle.write(b", and more")
    assert files.checksum_of_staged(tree, temp, Place.TEMP, written) == (
        21,
        hashlib.sha256(b"exact money, and more").hexdigest(),
    )
    # the same size, other bytes: the manifest lists what abaco wrote, so `audit verify` names
    # the file as changed instead of the manifest vouching for bytes abaco never wrote
    temp.write_bytes(b"exact money")
    tampered_written = (11, hashlib.sha256(b"exact money").hexdigest())
    temp.write_bytes(b"exact honey")
    assert files.checksum_of_staged(tree, temp, Place.TEMP, tampered_written) == tampered_written


def test_a_new_file_is_handed_to_the_disk_as_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every WRITEBACK_BYTES written start their writeback (sync_file_range) in order, none
    twice and none skipped, so that the fsync at the end has little left; the real call
    runs too, and the file is whole."""
    real = libc.sync_file_range()
    handed: list[tuple[int, int]] = []

    def recording(fd: int, offset: int, length: int, flags: int) -> int:
        handed.append((offset, length))
        return real(fd, offset, length, flags) if real is not None else 0

    monkeypatch.setattr(libc, "sync_file_range", lambda: recording)
    tree, temp = _staged_temp(tmp_path)
    piece = os.urandom(3 << 20)
    with files.open_new(tree, temp, Place.TEMP) as sink:
        for _ in range(7):  # 21 MiB
            sink.write(piece)
        sink.flush()
        os.fsync(sink.fileno())
    assert handed == [(0, 9 << 20), (9 << 20, 9 << 20)]
    assert temp.read_bytes() == piece * 7
