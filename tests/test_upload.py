"""Uploading runs (issue 12): `abaco export ... --dest`, `abaco upload`, `upload status`, the
prune guard, `audit verify --remote`, the `upload` health check and the metrics.

Real parts only: a real PostgreSQL, the real program (in-process and in subprocesses), a folder
destination for most tests, S3 on moto's server and GCS on gcp-storage-emulator for the
end-to-end runs. Failures are injected at the destination object (a method that raises the
StorageError a store would), never by mocking the code under test. Expected layouts come from
the local manifests read here as plain JSON, not from the code that uploads.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from abaco_cli.storage import StorageError
from abaco_cli.storage.local import LocalDestination
from tests.conftest import CLOUD_BUCKET, FAKE_AWS_KEY_ID, FAKE_AWS_SECRET, free_port, invoke
from tests.ops import (
    add_loans,
    manifest_path,
    metric_samples,
    read_records,
    run_abaco,
    set_finished_at,
)

DAY = "2025-06-30"
EARLIER = "2025-06-29"
STORAGE = ".abaco-storage"


# ------------------------------------------------------------------------------------ helpers


def manifest_of(runtime_dir: Path, dataset: str, day: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        manifest_path(runtime_dir, dataset, day).read_text(encoding="utf-8")
    )
    return data


def remote_objects(landing: Path) -> dict[str, str]:
    """Every object of a folder destination: name -> sha256 (abaco's own folder left out)."""
    found: dict[str, str] = {}
    for path in sorted(landing.rglob("*")):
        name = path.relative_to(landing).as_posix()
        if path.is_file() and not name.startswith(STORAGE):
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def versions(landing: Path) -> dict[str, str]:
    """Every object's write token (a new one per write): what changes when it is written."""
    meta = landing / STORAGE / "meta"
    return {
        p.relative_to(meta).as_posix(): json.loads(p.read_text())["version"]
        for p in sorted(meta.rglob("*.json"))
    }


def expected_layout(runtime_dir: Path, runs: list[tuple[str, str]]) -> dict[str, str]:
    """What the destination must hold for these (dataset, day) runs, each the newest of its
    dataset: from the local manifests, read here as plain JSON."""
    exports = runtime_dir / "exports"
    expected: dict[str, str] = {}
    for dataset, day in runs:
        data = manifest_of(runtime_dir, dataset, day)
        for entry in data["files"]:
            expected[f"exports/{entry['path']}"] = entry["sha256"]
            if entry["path"].startswith(f"{dataset}/json/"):
                alias = f"exports/{dataset}/json/{dataset}_latest.json"
                expected[alias] = entry["sha256"]
        name = f"_control/manifests/{dataset}/{dataset}_{day}.{data['run_id']}.manifest.json"
        raw = manifest_path(runtime_dir, dataset, day).read_bytes()
        expected[name] = hashlib.sha256(raw).hexdigest()
        pointer = json.loads((exports / dataset / "latest.json").read_text())
        if pointer["as_of_date"] == day:
            expected[f"_control/latest/{dataset}.json"] = "*"
    return expected


def assert_layout(landing: Path, expected: dict[str, str]) -> None:
    found = remote_objects(landing)
    assert set(found) == set(expected), set(found) ^ set(expected)
    for name, sha in expected.items():
        if sha != "*":
            assert found[name] == sha, name


def state_of(runtime_dir: Path, dataset: str) -> dict[str, Any]:
    path = runtime_dir / "upload" / f"{dataset}.state.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def runs_at(runtime_dir: Path, dataset: str, landing: Path) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = state_of(runtime_dir, dataset)["destinations"][str(landing)][
        "runs"
    ]
    return runs


def end_record(runtime_dir: Path, command: str) -> dict[str, Any]:
    """The last end record (COMPLETE or FAIL) of a command."""
    records = [
        r
        for r in read_records(runtime_dir)
        if r["command"] == command and r["event"] in ("COMPLETE", "FAIL")
    ]
    assert records, command
    return records[-1]


def upload_json(cli: CliRunner, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke(cli, "upload", *args, "--json")
    assert "Traceback" not in result.stderr
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return tmp_path / "landing"


@pytest.fixture
def loans(db_conninfo: str, cli_env: dict[str, str]) -> None:
    add_loans(db_conninfo)


Failure = Callable[[str, str], bool]  # (method, object name) -> raise here?


class Injected:
    """Failures injected into the folder destination (LocalDestination's put methods), as a
    store that refused the request would raise them (a permanent StorageError)."""

    def __init__(self, when: Failure) -> None:
        self.when = when
        self.failed: list[str] = []
        self._lock = threading.Lock()
        self._originals = {m: getattr(LocalDestination, m) for m in ("put_file", "put_bytes")}
        for method in self._originals:
            setattr(LocalDestination, method, self._wrap(method))

    def _wrap(self, method: str) -> Any:
        original = self._originals[method]

        def call(target: LocalDestination, name: str, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                hit = self.when(method, name)
                if hit:
                    self.failed.append(name)
            if hit:
                raise StorageError(f"{target.url}: put {name}: 503 injected by the test")
            return original(target, name, *args, **kwargs)

        return call

    def heal(self) -> None:
        for method, original in self._originals.items():
            setattr(LocalDestination, method, original)


@pytest.fixture
def fail_at() -> Iterator[Callable[[Failure], Injected]]:
    made: list[Injected] = []

    def install(when: Failure) -> Injected:
        made.append(Injected(when))
        return made[-1]

    yield install
    for injected in reversed(made):
        injected.heal()


# ------------------------------------------------------------------------ the remote layout


def test_an_export_uploads_its_runs_in_the_remote_layout(
    cli: CliRunner, loans: None, runtime_dir: Path, landing: Path
) -> None:
    result = invoke(cli, "export", "all", "--as-of", DAY, "--dest", str(landing))
    assert result.exit_code == 0, result.stderr
    datasets = ["analytics", "dpd", "kpi", "pricing"]
    assert_layout(landing, expected_layout(runtime_dir, [(d, DAY) for d in datasets]))
    assert "exports/kpi/json/kpi_latest.json" in remote_objects(landing)

    for dataset in datasets:
        data = manifest_of(runtime_dir, dataset, DAY)
        run_id = data["run_id"]
        name = f"_control/manifests/{dataset}/{dataset}_{DAY}.{run_id}.manifest.json"
        head = LocalDestination(landing).head(name)
        assert head is not None
        assert dict(head.metadata) == {"dataset": dataset, "as_of_date": DAY, "run_id": run_id}
        pointer = json.loads((landing / "_control" / "latest" / f"{dataset}.json").read_text())
        assert pointer["manifest"] == name and pointer["run_id"] == run_id
        assert pointer["as_of_date"] == DAY
        assert sorted(f["path"] for f in pointer["files"]) == sorted(
            f"exports/{f['path']}" for f in data["files"]
        )
        entry = runs_at(runtime_dir, dataset, landing)[DAY]
        assert (entry["run_id"], entry["status"]) == (run_id, "uploaded")

    record = end_record(runtime_dir, "export all")
    assert record["event"] == "COMPLETE" and record["exit_code"] == 0
    assert record["details"]["upload"] == {
        "destination": str(landing),
        "status": "uploaded",
        "error": None,
    }
    assert "uploaded to" in result.stderr

    again = invoke(cli, "upload", "--dest", str(landing))
    assert again.exit_code == 0, again.stderr
    assert "nothing to upload" in again.stderr


def test_a_replay_writes_nothing_twice(
    cli: CliRunner, loans: None, runtime_dir: Path, landing: Path
) -> None:
    assert invoke(cli, "export", "dpd", "--as-of", DAY, "--dest", str(landing)).exit_code == 0
    before = versions(landing)
    state = runtime_dir / "upload" / "dpd.state.json"

    # Recorded as uploaded: nothing is even looked at again.
    code, payload = upload_json(cli, "--dest", str(landing))
    assert code == 0 and payload["uploaded"] == 0
    assert payload["datasets"][0]["already_uploaded"] == 1

    # Recorded as pending (the upload stopped after its last step): every file is found
    # there, the manifest is found with the same bytes, the pointer is right: nothing written.
    data = json.loads(state.read_text())
    data["destinations"][str(landing)]["runs"][DAY]["status"] = "pending"
    state.write_text(json.dumps(data))
    code, payload = upload_json(cli, "--dest", str(landing))
    assert code == 0, payload
    (run,) = payload["datasets"][0]["runs"]
    files = len(manifest_of(runtime_dir, "dpd", DAY)["files"])
    assert (run["status"], run["files"], run["skipped"], run["bytes"]) == ("uploaded", 0, files, 0)
    assert run["pointer_moved"] is False and run["deleted"] == []
    assert versions(landing) == before

    # Never recorded (no state at all): the manifest in the destination says it is there.
    state.unlink()
    code, payload = upload_json(cli, "--dest", str(landing))
    assert code == 0 and payload["uploaded"] == 0
    assert payload["datasets"][0]["already_uploaded"] == 1
    assert versions(landing) == before
    assert runs_at(runtime_dir, "dpd", landing)[DAY]["status"] == "uploaded"


def test_a_reexport_replaces_the_dates_objects(
    cli: CliRunner, loans: None, runtime_dir: Path, landing: Path
) -> None:
    first = invoke(
        cli, "export", "dpd", "--as-of", DAY, "--format", "csv,parquet,json", "--dest", str(landing)
    )
    assert first.exit_code == 0, first.stderr
    old_run = manifest_of(runtime_dir, "dpd", DAY)["run_id"]
    assert any(n.startswith("exports/dpd/loans.json/") for n in remote_objects(landing))

    second = invoke(
        cli,
        "export",
        "dpd",
        "--as-of",
        DAY,
        "--format",
        "csv,parquet",
        "--replace-formats",
        "--dest",
        str(landing),
    )
    assert second.exit_code == 0, second.stderr
    new = manifest_of(runtime_dir, "dpd", DAY)
    assert new["run_id"] != old_run
    expected = expected_layout(runtime_dir, [("dpd", DAY)])
    old_manifest = f"_control/manifests/dpd/dpd_{DAY}.{old_run}.manifest.json"
    expected[old_manifest] = "*"  # manifests are created once and kept
    assert_layout(landing, expected)
    assert not any(".json/" in n for n in remote_objects(landing))  # the JSON files went
    for entry in new["files"]:  # Parquet names its run inside: sent again; CSV is the same
        head = LocalDestination(landing).head(f"exports/{entry['path']}")
        assert head is not None
        if entry["format"] == "parquet":
            assert head.metadata["run_id"] == new["run_id"]
    record = end_record(runtime_dir, "export dpd")
    assert record["details"]["upload"]["status"] == "uploaded"


# ------------------------------------------------------------------- failure and catch-up

STEPS: dict[str, Callable[[int], Failure]] = {
    # each gets the number of data files and says where the destination fails
    "before the first file": lambda n: lambda method, name: name.startswith("exports/"),
    "between files": lambda n: _after(1, lambda method, name: name.startswith("exports/")),
    "before the manifest": lambda n: lambda method, name: name.startswith("_control/manifests/"),
    "before the pointer": lambda n: lambda method, name: name.startswith("_control/latest/"),
}


def _after(count: int, matches: Failure) -> Failure:
    """Fail every matching call after the first ``count`` of them."""
    seen = [0]

    def when(method: str, name: str) -> bool:
        if not matches(method, name):
            return False
        seen[0] += 1
        return seen[0] > count

    return when


@pytest.mark.parametrize("step", list(STEPS))
def test_catch_up_after_a_failure_at_each_step(
    step: str,
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    landing: Path,
    monkeypatch: pytest.MonkeyPatch,
    fail_at: Callable[[Failure], Injected],
) -> None:
    monkeypatch.setenv("ABACO_UPLOAD__PARALLEL_FILES", "1")  # one file after the other
    monkeypatch.setenv("ABACO_UPLOAD__DESTINATION", str(landing))
    injected = fail_at(STEPS[step](0))
    result = invoke(cli, "export", "dpd", "--as-of", DAY)
    assert result.exit_code == 5, result.stderr
    assert injected.failed
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"abaco: error: exported and published locally; upload to {landing} pending: dpd: "
    ), line
    assert "503 injected by the test" in line and "`abaco upload` finishes it" in line
    data = manifest_of(runtime_dir, "dpd", DAY)
    files = [f"exports/{f['path']}" for f in data["files"]]
    for name in files:  # published locally all the same
        assert (runtime_dir / name).is_file()
    there = remote_objects(landing)
    sent = [n for n in files if n in there]
    manifests = [n for n in there if n.startswith("_control/manifests/")]
    expect_sent, expect_manifest = {
        "before the first file": (0, 0),
        "between files": (1, 0),
        "before the manifest": (len(files), 0),
        "before the pointer": (len(files), 1),
    }[step]
    assert (len(sent), len(manifests)) == (expect_sent, expect_manifest)
    assert "_control/latest/dpd.json" not in there
    entry = runs_at(runtime_dir, "dpd", landing)[DAY]
    assert (entry["run_id"], entry["status"]) == (data["run_id"], "pending")
    assert "503 injected" in entry["error"]
    record = end_record(runtime_dir, "export dpd")
    assert (record["event"], record["exit_code"]) == ("FAIL", 5)
    assert record["details"]["upload"]["status"] == "pending"
    assert record["details"]["upload"]["destination"] == str(landing)
    assert "503 injected" in record["details"]["upload"]["error"]
    assert record["outputs"]  # the files it published are on record
    status = json.loads(invoke(cli, "upload", "status", "--json").stdout)
    (dpd,) = status["datasets"]
    assert [p["run_id"] for p in dpd["pending"]] == [data["run_id"]]
    assert dpd["pending"][0]["recorded"] is True and dpd["lag_seconds"] >= 0

    injected.heal()  # the destination works again
    code, payload = upload_json(cli)
    assert code == 0, payload
    (run,) = payload["datasets"][0]["runs"]
    assert run["status"] == "uploaded" and run["skipped"] == expect_sent
    assert_layout(landing, expected_layout(runtime_dir, [("dpd", DAY)]))
    assert runs_at(runtime_dir, "dpd", landing)[DAY]["status"] == "uploaded"
    again = invoke(cli, "upload")
    assert again.exit_code == 0 and "nothing to upload" in again.stderr
    status = json.loads(invoke(cli, "upload", "status", "--json").stdout)
    assert status["datasets"][0]["pending"] == [] and status["datasets"][0]["lag_seconds"] is None
    record = end_record(runtime_dir, "upload")
    assert record["event"] == "COMPLETE"
    assert [r["run_id"] for r in record["details"]["uploaded"]] == []  # the second did nothing
    first = next(
        r
        for r in read_records(runtime_dir)
        if r["command"] == "upload" and r["event"] == "COMPLETE"
    )
    assert [r["run_id"] for r in first["details"]["uploaded"]] == [data["run_id"]]


def test_exit_5_in_a_real_process_shows_no_credentials(
    loans: None, cli_env: dict[str, str], runtime_dir: Path, tmp_path: Path, cloud_env: None
) -> None:
    """A destination that is down: exported and published, exit 5, one line, no secret."""
    closed = free_port()
    env = {
        **cli_env,
        "ABACO_UPLOAD__S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}",
        "ABACO_UPLOAD__S3_REGION": "us-east-1",
        "ABACO_UPLOAD__MAX_TOTAL_SECONDS": "1",
        **{k: v for k, v in os.environ.items() if k.startswith("AWS_")},
    }
    done = run_abaco(
        ["export", "dpd", "--as-of", DAY, "--dest", f"s3://{CLOUD_BUCKET}/prod"], env, tmp_path
    )
    assert done.returncode == 5, done.stderr
    errors = [line for line in done.stderr.splitlines() if "abaco: error:" in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert errors[0].startswith(
        f"abaco: error: exported and published locally; upload to s3://{CLOUD_BUCKET}/prod "
        "pending: dpd: "
    )
    assert "`abaco upload` finishes it" in errors[0]
    assert manifest_path(runtime_dir, "dpd", DAY).is_file()
    everything = done.stdout + done.stderr
    for path in runtime_dir.rglob("*"):
        if path.is_file():
            everything += path.read_bytes().decode("utf-8", "replace")
    assert FAKE_AWS_SECRET not in everything and FAKE_AWS_KEY_ID not in everything
    state = state_of(runtime_dir, "dpd")["destinations"][f"s3://{CLOUD_BUCKET}/prod"]
    assert state["runs"][DAY]["status"] == "pending"


# --------------------------------------------------------------------------- the upload lock

# Takes a dataset's upload lock as `abaco upload` does, says "locked", holds it until a line
# arrives on stdin (or it is killed).
_UPLOAD_HOLDER = """
import sys
from pathlib import Path
from abaco_cli.runtime.lock import dataset_lock

with dataset_lock(Path(sys.argv[1]), run_id=sys.argv[2], command="upload", timeout_seconds=5):
    print("locked", flush=True)
    sys.stdin.readline()
"""


class UploadHolder:
    """A real process holding ``locks/upload_<dataset>.lock``, as a long upload would."""

    def __init__(self, runtime_dir: Path, dataset: str = "dpd") -> None:
        import subprocess
        import sys

        path = runtime_dir / "locks" / f"upload_{dataset}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _UPLOAD_HOLDER, str(path), "20250630T120000Z-10a9e5"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.proc.stdin is not None
        if self.proc.poll() is None:
            self.proc.stdin.write("go\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def holder(runtime_dir: Path) -> Iterator[Callable[[], UploadHolder]]:
    made: list[UploadHolder] = []

    def start() -> UploadHolder:
        made.append(UploadHolder(runtime_dir))
        return made[-1]

    yield start
    for item in made:
        item.release()


def test_an_hourly_export_does_not_wait_for_a_long_upload(
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    landing: Path,
    monkeypatch: pytest.MonkeyPatch,
    holder: Callable[[], UploadHolder],
) -> None:
    monkeypatch.setenv("ABACO_LOCK_TIMEOUT_SECONDS", "30")
    monkeypatch.setenv("ABACO_UPLOAD__DESTINATION", str(landing))
    long_upload = holder()
    started = time.monotonic()
    result = invoke(cli, "export", "dpd", "--as-of", DAY)
    elapsed = time.monotonic() - started
    assert elapsed < 15, elapsed  # it never waited for the upload lock (30 s)
    assert result.exit_code == 5, result.stderr
    assert "another upload holds its upload lock" in result.stderr
    assert f"pid {long_upload.proc.pid}" in result.stderr and "`upload`" in result.stderr
    assert manifest_path(runtime_dir, "dpd", DAY).is_file()  # published all the same
    assert not landing.exists()
    status = json.loads(invoke(cli, "upload", "status", "--json").stdout)
    (pending,) = status["datasets"][0]["pending"]
    assert pending["recorded"] is False  # only the upload lock's holder writes the state
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    assert samples[("abaco_upload_pending_runs", (("dataset", "dpd"),))] == 1

    long_upload.release()
    code, payload = upload_json(cli)
    assert code == 0 and payload["uploaded"] == 1
    assert_layout(landing, expected_layout(runtime_dir, [("dpd", DAY)]))


def test_a_second_upload_waits_for_the_first_then_exits_4(
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    landing: Path,
    monkeypatch: pytest.MonkeyPatch,
    holder: Callable[[], UploadHolder],
) -> None:
    assert invoke(cli, "export", "dpd", "--as-of", DAY).exit_code == 0
    monkeypatch.setenv("ABACO_UPLOAD__DESTINATION", str(landing))
    first = holder()
    monkeypatch.setenv("ABACO_LOCK_TIMEOUT_SECONDS", "1")
    started = time.monotonic()
    result = invoke(cli, "upload")
    assert time.monotonic() - started >= 1  # it waited lock_timeout_seconds
    assert result.exit_code == 4, result.stderr
    assert "upload_dpd is locked by" in result.stderr and f"pid {first.proc.pid}" in result.stderr
    assert not landing.exists()
    record = end_record(runtime_dir, "upload")
    assert (record["event"], record["exit_code"]) == ("FAIL", 4)

    # With time enough, it waits for the first and then does the work.
    monkeypatch.setenv("ABACO_LOCK_TIMEOUT_SECONDS", "30")
    threading.Timer(1.0, first.release).start()
    started = time.monotonic()
    code, payload = upload_json(cli)
    assert time.monotonic() - started >= 0.9
    assert code == 0 and payload["uploaded"] == 1


def test_two_real_uploads_at_once_upload_each_run_once(
    loans: None, cli_env: dict[str, str], cli: CliRunner, runtime_dir: Path, landing: Path
) -> None:
    for day in (EARLIER, DAY):
        assert invoke(cli, "export", "dpd", "--as-of", day).exit_code == 0
    env = {**cli_env, "ABACO_LOCK_TIMEOUT_SECONDS": "60", "ABACO_UPLOAD__DESTINATION": str(landing)}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACO_")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "abaco_cli", "upload", "--json"],
            env={**clean, **env},
            cwd=runtime_dir.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [0, 0], outputs
    uploaded = sorted(json.loads(out)["uploaded"] for out, _ in outputs)
    assert uploaded == [0, 2]  # one of them uploaded both runs, the other found them there
    assert_layout(landing, expected_layout(runtime_dir, [("dpd", EARLIER), ("dpd", DAY)]))
    completes = [
        r
        for r in read_records(runtime_dir)
        if r["command"] == "upload" and r["event"] == "COMPLETE"
    ]
    listed = [u["as_of_date"] for r in completes for u in r["details"]["uploaded"]]
    assert sorted(listed) == [EARLIER, DAY]


# ------------------------------------------------------------------------------------ prune


def test_prune_keeps_runs_not_uploaded(
    cli: CliRunner, loans: None, runtime_dir: Path, landing: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = "2025-06-28"
    assert invoke(cli, "export", "dpd", "--as-of", old, "--dest", str(landing)).exit_code == 0
    for day in (EARLIER, DAY):
        assert invoke(cli, "export", "dpd", "--as-of", day).exit_code == 0  # not uploaded
    ago = datetime.now(UTC) - timedelta(days=10)
    for day in (old, EARLIER):
        set_finished_at(manifest_path(runtime_dir, "dpd", day), ago)
    monkeypatch.setenv("ABACO_UPLOAD__DESTINATION", str(landing))

    result = invoke(cli, "prune", "--retention", "1d", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [r["as_of_date"] for r in payload["removed"]] == [old]  # uploaded: it may go
    kept = {k["as_of_date"]: k["reason"] for k in payload["kept"]}
    assert kept[EARLIER] == (
        f"not uploaded to {landing} yet (--include-not-uploaded removes it anyway)"
    )
    assert manifest_path(runtime_dir, "dpd", EARLIER).is_file()
    assert not manifest_path(runtime_dir, "dpd", old).exists()

    dry = json.loads(
        invoke(
            cli, "prune", "--retention", "1d", "--include-not-uploaded", "--dry-run", "--json"
        ).stdout
    )
    assert [r["as_of_date"] for r in dry["removed"]] == [EARLIER]
    result = invoke(cli, "prune", "--retention", "1d", "--include-not-uploaded", "--json")
    assert result.exit_code == 0, result.stderr
    assert [r["as_of_date"] for r in json.loads(result.stdout)["removed"]] == [EARLIER]
    record = end_record(runtime_dir, "prune")
    assert record["arguments"]["include_not_uploaded"] is True
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    assert samples[("abaco_upload_pending_runs", (("dataset", "dpd"),))] == 1  # DAY only


# ------------------------------------------------------------------- audit verify --remote


def test_audit_verify_remote_finds_a_deleted_and_a_modified_object(
    cli: CliRunner, loans: None, runtime_dir: Path, landing: Path
) -> None:
    assert invoke(cli, "export", "dpd", "--as-of", DAY, "--dest", str(landing)).exit_code == 0
    clean = invoke(cli, "audit", "verify", "--remote", "--dest", str(landing))
    assert clean.exit_code == 0, clean.stdout + clean.stderr
    files = len(manifest_of(runtime_dir, "dpd", DAY)["files"])
    assert f"the {files} uploaded objects in {landing} match" in clean.stderr

    data = manifest_of(runtime_dir, "dpd", DAY)
    gone, changed = (f"exports/{f['path']}" for f in data["files"][:2])
    (landing / gone).unlink()
    with open(landing / changed, "ab") as handle:
        handle.write(b"tampered")
    result = invoke(cli, "audit", "verify", "--remote", "--dest", str(landing), "--json")
    assert result.exit_code == 1
    problems = {(p["kind"], p["where"]) for p in json.loads(result.stdout)["problems"]}
    assert problems == {("remote_missing", gone), ("remote_modified", changed)}

    manifest = f"_control/manifests/dpd/dpd_{DAY}.{data['run_id']}.manifest.json"
    (landing / manifest).unlink()
    result = invoke(cli, "audit", "verify", "--remote", "--dest", str(landing), "--json")
    assert result.exit_code == 1
    kinds = {p["kind"]: p["where"] for p in json.loads(result.stdout)["problems"]}
    assert kinds["remote_manifest_missing"] == manifest
    assert kinds["remote_dangling_latest"] == "_control/latest/dpd.json"

    # the repair: `abaco upload` trusts its record; `--again` sends what is missing or changed
    nothing = invoke(cli, "upload", "--dest", str(landing))
    assert nothing.exit_code == 0 and "nothing to upload" in nothing.stderr
    code, payload = upload_json(cli, "--dest", str(landing), "--again")
    assert code == 0, payload
    (run,) = payload["datasets"][0]["runs"]
    assert (run["status"], run["files"], run["skipped"]) == ("uploaded", 2, files - 2)
    assert_layout(landing, expected_layout(runtime_dir, [("dpd", DAY)]))
    fixed = invoke(cli, "audit", "verify", "--remote", "--dest", str(landing))
    assert fixed.exit_code == 0, fixed.stdout + fixed.stderr
    assert end_record(runtime_dir, "upload")["arguments"]["again"] is True

    no_dest = invoke(cli, "audit", "verify", "--remote", "--json")
    assert no_dest.exit_code == 1
    assert [p["kind"] for p in json.loads(no_dest.stdout)["problems"]] == ["no_destination"]


def test_a_modified_manifest_in_the_destination_is_never_overwritten(
    cli: CliRunner, loans: None, runtime_dir: Path, landing: Path
) -> None:
    assert invoke(cli, "export", "dpd", "--as-of", DAY, "--dest", str(landing)).exit_code == 0
    data = manifest_of(runtime_dir, "dpd", DAY)
    manifest = landing / f"_control/manifests/dpd/dpd_{DAY}.{data['run_id']}.manifest.json"
    manifest.write_text(manifest.read_text().replace('"rows"', '"rows" ', 1))
    forged = manifest.read_bytes()
    state = runtime_dir / "upload" / "dpd.state.json"
    body = json.loads(state.read_text())
    body["destinations"][str(landing)]["runs"][DAY]["status"] = "pending"
    state.write_text(json.dumps(body))
    result = invoke(cli, "upload", "--dest", str(landing))
    assert result.exit_code == 1
    assert "exists with other content than the local manifest" in result.stderr
    assert "never overwritten" in result.stderr
    assert manifest.read_bytes() == forged
    assert runs_at(runtime_dir, "dpd", landing)[DAY]["status"] == "pending"


# --------------------------------------------------------------------- the remote pointer


def test_the_remote_pointer_moves_back_when_a_bogus_run_is_removed(
    cli: CliRunner, loans: None, runtime_dir: Path, landing: Path
) -> None:
    future = (datetime.now(UTC).date() + timedelta(days=3)).isoformat()
    assert invoke(cli, "export", "dpd", "--as-of", EARLIER, "--dest", str(landing)).exit_code == 0
    bogus = invoke(
        cli, "export", "dpd", "--as-of", future, "--allow-future", "--dest", str(landing)
    )
    assert bogus.exit_code == 0, bogus.stderr
    pointer = landing / "_control" / "latest" / "dpd.json"
    assert json.loads(pointer.read_text())["as_of_date"] == future

    # Removed by hand as runbooks/export-stale.md says: manifest, files; prune moves latest.json.
    for entry in manifest_of(runtime_dir, "dpd", future)["files"]:
        (runtime_dir / "exports" / entry["path"]).unlink()
    manifest_path(runtime_dir, "dpd", future).unlink()
    assert invoke(cli, "prune", "--retention", "90d").exit_code == 0
    earlier = manifest_of(runtime_dir, "dpd", EARLIER)["run_id"]
    assert json.loads((runtime_dir / "exports/dpd/latest.json").read_text())["run_id"] == earlier

    code, payload = upload_json(cli, "--dest", str(landing))
    assert code == 0, payload
    assert payload["uploaded"] == 0 and payload["datasets"][0]["pointer_moved_to"] == earlier
    body = json.loads(pointer.read_text())
    assert (body["as_of_date"], body["run_id"]) == (EARLIER, earlier)
    assert body["manifest"] == f"_control/manifests/dpd/dpd_{EARLIER}.{earlier}.manifest.json"
    code, payload = upload_json(cli, "--dest", str(landing))
    assert payload["datasets"][0]["pointer_moved_to"] is None  # it is where it should be


# --------------------------------------------------------------------------- the state file

JUNK = {
    "not JSON": "{ not json",
    "a list": "[]",
    "another dataset": json.dumps({"state_version": 1, "dataset": "kpi", "destinations": {}}),
    "a date that is none": json.dumps(
        {
            "state_version": 1,
            "dataset": "dpd",
            "destinations": {"X": {"runs": {"2025-13-45": {"run_id": "x", "status": "uploaded"}}}},
        }
    ),
    "a run id that is none": "RUN_ID",
    "an unknown status": "STATUS",
}


@pytest.mark.parametrize("junk", list(JUNK))
def test_a_state_file_holding_junk_is_reported_and_rebuilt(
    junk: str,
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    landing: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert invoke(cli, "export", "dpd", "--as-of", DAY, "--dest", str(landing)).exit_code == 0
    state = runtime_dir / "upload" / "dpd.state.json"
    good = json.loads(state.read_text())
    text = JUNK[junk]
    if text in ("RUN_ID", "STATUS"):
        entry = good["destinations"][str(landing)]["runs"][DAY]
        entry["run_id" if text == "RUN_ID" else "status"] = (
            "../../etc" if text == "RUN_ID" else "done"
        )
        text = json.dumps(good)
    state.write_text(text)
    before = versions(landing)
    monkeypatch.setenv("ABACO_UPLOAD__DESTINATION", str(landing))

    shown = invoke(cli, "upload", "status")
    assert shown.exit_code == 0
    assert "is not a valid upload state" in shown.stderr and "rebuilds it" in shown.stderr
    health = json.loads(invoke(cli, "healthcheck", "--check", "upload", "--json").stdout)
    assert health["checks"][0]["state"] == "WARNING"

    code, payload = upload_json(cli)
    assert code == 0, payload
    (dataset,) = payload["datasets"]
    assert "is not a valid upload state" in dataset["state_problem"]
    assert payload["uploaded"] == 0 and payload["bytes"] == 0
    assert versions(landing) == before  # nothing sent again
    run_id = manifest_of(runtime_dir, "dpd", DAY)["run_id"]
    entry = runs_at(runtime_dir, "dpd", landing)[DAY]
    assert (entry["run_id"], entry["status"]) == (run_id, "uploaded")
    record = end_record(runtime_dir, "upload")
    assert record["details"]["state_rebuilt"] == ["dpd"]
    health = json.loads(invoke(cli, "healthcheck", "--check", "upload", "--json").stdout)
    assert health["checks"][0]["state"] == "OK"


# ------------------------------------------------------------- status, dry run, no destination


def test_without_a_destination_upload_does_nothing_and_says_so(
    cli: CliRunner, loans: None, runtime_dir: Path
) -> None:
    assert invoke(cli, "export", "dpd", "--as-of", DAY).exit_code == 0
    for args in (["upload"], ["upload", "--dry-run"], ["upload", "status"]):
        result = invoke(cli, *args)
        assert result.exit_code == 0, result.stderr
        assert "no destination configured (upload.destination / --dest)" in result.stderr
    assert not (runtime_dir / "upload").exists()
    assert not [r for r in read_records(runtime_dir) if r["command"] == "upload"]
    health = json.loads(invoke(cli, "healthcheck", "--check", "upload", "--json").stdout)
    assert health["checks"][0]["state"] == "OK"
    assert "no destination configured" in health["checks"][0]["summary"]


def test_dry_run_and_since(cli: CliRunner, loans: None, runtime_dir: Path, landing: Path) -> None:
    for day in (EARLIER, DAY):
        assert invoke(cli, "export", "dpd", "--as-of", day).exit_code == 0
    set_finished_at(
        manifest_path(runtime_dir, "dpd", EARLIER), datetime.now(UTC) - timedelta(days=3)
    )
    records = len(read_records(runtime_dir))
    code, payload = upload_json(cli, "--dest", str(landing), "--dry-run")
    assert code == 0 and payload["dry_run"] is True
    planned = payload["datasets"][0]["runs"]
    assert [(r["as_of_date"], r["status"]) for r in planned] == [
        (EARLIER, "planned"),
        (DAY, "planned"),
    ]  # oldest first
    assert planned[1]["files"] == len(manifest_of(runtime_dir, "dpd", DAY)["files"])
    assert not landing.exists() and not (runtime_dir / "upload").exists()
    assert len(read_records(runtime_dir)) == records  # a dry run is not audited

    code, payload = upload_json(cli, "--dest", str(landing), "--since", "1d")
    assert code == 0 and [r["as_of_date"] for r in payload["datasets"][0]["runs"]] == [DAY]
    status = json.loads(invoke(cli, "upload", "status", "--dest", str(landing), "--json").stdout)
    (pending,) = status["datasets"][0]["pending"]
    assert (pending["as_of_date"], pending["recorded"]) == (EARLIER, False)
    assert status["datasets"][0]["lag_seconds"] >= 3 * 86400 - 60
    bad = invoke(cli, "upload", "--dest", str(landing), "--since", "6m")
    assert bad.exit_code == 2 and "ambiguous" in bad.stderr


# ----------------------------------------------------------------- health check and metrics


@pytest.mark.parametrize(("minutes", "state"), [(30, "OK"), (100, "WARNING"), (400, "CRITICAL")])
def test_the_upload_check_follows_the_oldest_pending_run(
    minutes: int,
    state: str,
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    landing: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert invoke(cli, "export", "dpd", "--as-of", DAY).exit_code == 0
    set_finished_at(
        manifest_path(runtime_dir, "dpd", DAY), datetime.now(UTC) - timedelta(minutes=minutes)
    )
    monkeypatch.setenv("ABACO_UPLOAD__DESTINATION", str(landing))
    result = invoke(cli, "healthcheck", "--check", "upload", "--json")
    assert result.exit_code == {"OK": 0, "WARNING": 1, "CRITICAL": 2}[state]
    (check,) = json.loads(result.stdout)["checks"]
    assert check["state"] == state
    assert "dpd: 1 run(s) pending, the oldest exported" in check["summary"]
    assert invoke(cli, "upload").exit_code == 0
    (check,) = json.loads(invoke(cli, "healthcheck", "--check", "upload", "--json").stdout)[
        "checks"
    ]
    assert check["state"] == "OK" and check["summary"] == f"nothing pending upload to {landing}"


def test_metrics_of_a_failed_then_finished_upload(
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    landing: Path,
    fail_at: Callable[[Failure], Injected],
) -> None:
    injected = fail_at(lambda method, name: name.startswith("_control/manifests/"))
    assert invoke(cli, "export", "dpd", "--as-of", DAY, "--dest", str(landing)).exit_code == 5
    finished = datetime.fromisoformat(
        manifest_of(runtime_dir, "dpd", DAY)["finished_at"].replace("Z", "+00:00")
    )
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    dpd = (("dataset", "dpd"),)
    assert samples[("abaco_upload_pending_runs", dpd)] == 1
    assert samples[("abaco_upload_oldest_pending_timestamp_seconds", dpd)] == pytest.approx(
        finished.timestamp(), abs=0.001
    )
    assert samples[("abaco_upload_last_status", dpd)] == 0
    assert samples[("abaco_export_last_status", dpd)] == 1  # the export itself succeeded
    sent = samples[("abaco_upload_bytes_total", ())]
    data_bytes = sum(f["bytes"] for f in manifest_of(runtime_dir, "dpd", DAY)["files"])
    assert sent == data_bytes  # the files went; the manifest did not

    injected.heal()
    assert invoke(cli, "upload", "--dest", str(landing)).exit_code == 0
    samples = metric_samples(runtime_dir / "metrics" / "abaco.prom")
    assert samples[("abaco_upload_pending_runs", dpd)] == 0
    assert ("abaco_upload_oldest_pending_timestamp_seconds", dpd) not in samples
    assert samples[("abaco_upload_last_status", dpd)] == 1
    assert samples[("abaco_upload_bytes_total", ())] == data_bytes  # nothing sent twice
    assert samples[("abaco_runs_total", (("command", "upload"), ("status", "success")))] == 1
    assert time.time() - samples[("abaco_upload_last_run_timestamp_seconds", ())] < 60


# ------------------------------------------------------------------------ S3 (moto), GCS


def _s3_admin(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
    )


def _bucket_objects(admin: Any, prefix: str) -> dict[str, str]:
    """name (relative to the prefix) -> sha256 of its content, read back from the bucket."""
    found: dict[str, str] = {}
    pages = admin.get_paginator("list_objects_v2").paginate(Bucket=CLOUD_BUCKET, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            body = admin.get_object(Bucket=CLOUD_BUCKET, Key=item["Key"])["Body"].read()
            found[item["Key"][len(prefix) :]] = hashlib.sha256(body).hexdigest()
    return found


def test_export_all_to_s3_end_to_end_and_the_pointer_compare_and_swap(
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    moto_endpoint: str,
    cloud_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from abaco_cli.storage.s3 import S3Destination

    prefix = f"e2e-{uuid.uuid4().hex[:8]}/prod"
    dest = f"s3://{CLOUD_BUCKET}/{prefix}"
    monkeypatch.setenv("ABACO_UPLOAD__S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("ABACO_UPLOAD__S3_REGION", "us-east-1")
    result = invoke(cli, "export", "all", "--as-of", DAY, "--dest", dest)
    assert result.exit_code == 0, result.stderr
    admin = _s3_admin(moto_endpoint)
    datasets = ["analytics", "dpd", "kpi", "pricing"]
    expected = expected_layout(runtime_dir, [(d, DAY) for d in datasets])
    found = _bucket_objects(admin, prefix + "/")
    assert set(found) == set(expected)
    assert all(found[name] == sha for name, sha in expected.items() if sha != "*")
    run_id = manifest_of(runtime_dir, "dpd", DAY)["run_id"]
    key = f"{prefix}/_control/manifests/dpd/dpd_{DAY}.{run_id}.manifest.json"
    head = admin.head_object(Bucket=CLOUD_BUCKET, Key=key)
    assert head["Metadata"] == {"dataset": "dpd", "as_of_date": DAY, "run_id": run_id}
    assert head["ContentType"] == "application/json"

    again = invoke(cli, "upload", "--dest", dest)
    assert again.exit_code == 0 and "nothing to upload" in again.stderr
    verified = invoke(cli, "audit", "verify", "--remote", "--dest", dest)
    assert verified.exit_code == 0, verified.stdout + verified.stderr

    # Another writer moves the pointer between our read and our write: the compare-and-swap
    # is refused (412), abaco reads again and swaps against what is there now.
    pointer = f"{prefix}/_control/latest/dpd.json"
    admin.put_object(Bucket=CLOUD_BUCKET, Key=pointer, Body=b'{"junk": 1}')
    reads: list[str] = []
    original = S3Destination.get_bytes

    def racing(target: S3Destination, name: str) -> Any:
        answer = original(target, name)
        if name == "_control/latest/dpd.json":
            reads.append(answer[1].version)
            if len(reads) == 1:
                admin.put_object(Bucket=CLOUD_BUCKET, Key=pointer, Body=b'{"junk": 2}')
        return answer

    monkeypatch.setattr(S3Destination, "get_bytes", racing)
    code, payload = upload_json(cli, "--dest", dest)
    assert code == 0, payload
    assert len(reads) == 2 and reads[0] != reads[1]  # the stale version, then the current one
    body = json.loads(admin.get_object(Bucket=CLOUD_BUCKET, Key=pointer)["Body"].read())
    assert body["run_id"] == run_id and payload["datasets"][1]["pointer_moved_to"] == run_id

    # Same size, other bytes, put there behind abaco's back: the md5/sha256 S3 keeps says so.
    name = f"exports/{manifest_of(runtime_dir, 'dpd', DAY)['files'][0]['path']}"
    original_body = admin.get_object(Bucket=CLOUD_BUCKET, Key=f"{prefix}/{name}")["Body"].read()
    admin.put_object(Bucket=CLOUD_BUCKET, Key=f"{prefix}/{name}", Body=bytes(len(original_body)))
    tampered = invoke(cli, "audit", "verify", "--remote", "--dest", dest, "--json")
    assert tampered.exit_code == 1
    problems = [(p["kind"], p["where"]) for p in json.loads(tampered.stdout)["problems"]]
    assert problems == [("remote_modified", name)]
    shown = result.stdout + result.stderr + again.stderr + tampered.stdout
    shown += (runtime_dir / "audit" / "audit.jsonl").read_text()
    assert FAKE_AWS_SECRET not in shown and FAKE_AWS_KEY_ID not in shown


def test_upload_to_the_gcs_emulator_end_to_end(
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    gcs_endpoint: str,
    cloud_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    for day in (EARLIER, DAY):
        assert invoke(cli, "export", "dpd", "--as-of", day).exit_code == 0
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    dest = f"gs://{CLOUD_BUCKET}/{prefix}"
    code, payload = upload_json(cli, "--dest", dest)
    assert code == 0, payload
    assert [r["as_of_date"] for r in payload["datasets"][0]["runs"]] == [EARLIER, DAY]
    client = storage.Client(project="test", credentials=AnonymousCredentials())
    found = {
        blob.name[len(prefix) + 1 :]: hashlib.sha256(blob.download_as_bytes()).hexdigest()
        for blob in client.list_blobs(CLOUD_BUCKET, prefix=prefix + "/")
    }
    expected = expected_layout(runtime_dir, [("dpd", EARLIER), ("dpd", DAY)])
    assert set(found) == set(expected)
    assert all(found[name] == sha for name, sha in expected.items() if sha != "*")
    run_id = manifest_of(runtime_dir, "dpd", DAY)["run_id"]
    blob = client.bucket(CLOUD_BUCKET).get_blob(
        f"{prefix}/_control/manifests/dpd/dpd_{DAY}.{run_id}.manifest.json"
    )
    assert blob is not None
    assert blob.metadata == {"dataset": "dpd", "as_of_date": DAY, "run_id": run_id}

    code, payload = upload_json(cli, "--dest", dest)
    assert code == 0 and payload["uploaded"] == 0
    verified = invoke(cli, "audit", "verify", "--remote", "--dest", dest)
    assert verified.exit_code == 0, verified.stdout + verified.stderr


# -------------------------------------------------------------------------------- the demo


def _server_tools() -> bool:
    from abaco_cli.errors import ServerToolsMissingError
    from abaco_cli.pgcluster import find_server_bindir

    try:
        find_server_bindir()
    except ServerToolsMissingError:
        return False
    return True


@pytest.mark.skipif(not _server_tools(), reason="PostgreSQL server programs are not installed")
def test_the_demo_uploads_to_a_local_folder(tmp_path: Path) -> None:
    """`abaco demo --dest DIR`: a newcomer sees the remote layout without a cloud account; a
    bucket is refused (and the configured destination is never used)."""
    work = tmp_path / "work"
    work.mkdir()
    env = {"ABACO_UPLOAD__DESTINATION": str(tmp_path / "production-landing")}
    refused = run_abaco(["demo", "--loans", "300", "--dest", "s3://a-bucket/x"], env, work)
    assert refused.returncode == 2 and "a local folder only" in refused.stderr

    done = run_abaco(["demo", "--loans", "300", "--dest", "landing"], env, work, timeout=600)
    assert done.returncode == 0, done.stderr
    landing, tree = work / "landing", work / "abaco_runtime"
    runs = [(d, "2025-12-31") for d in ("analytics", "dpd", "kpi", "pricing")]
    assert_layout(landing, expected_layout(tree, runs))
    assert f"{landing}/_control/latest/dpd.json" in done.stdout
    assert not (tmp_path / "production-landing").exists()


# -------------------------------------------------------------- raw table extracts go up too


def test_an_extract_uploads_with_dest_and_catches_up_after_a_failure(
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    landing: Path,
    fail_at: Callable[[Failure], Injected],
) -> None:
    """`export table --dest`: the dataset tables in the same remote layout; a failure at the
    destination leaves the extract published and pending (exit 5), `abaco upload` finishes."""
    injected = fail_at(lambda method, name: name.startswith("_control/manifests/"))
    args = ("export", "table", "core_banking.loans", "--format", "parquet,csv")
    result = invoke(cli, *args, "--dest", str(landing))
    assert result.exit_code == 5, result.stderr
    assert injected.failed and "Traceback" not in result.stderr
    assert "upload to" in result.stderr.strip().splitlines()[-1]
    (manifest,) = (runtime_dir / "exports" / "tables" / "_manifests").glob("*.manifest.json")
    day = manifest.name.removeprefix("tables_").removesuffix(".manifest.json")
    data = manifest_of(runtime_dir, "tables", day)
    for entry in data["files"]:  # published locally all the same
        assert (runtime_dir / "exports" / entry["path"]).is_file()
    assert not [n for n in remote_objects(landing) if n.startswith("_control/")]
    record = end_record(runtime_dir, "export table")
    assert (record["event"], record["exit_code"]) == ("FAIL", 5)
    assert record["arguments"]["destination"] == str(landing)
    assert runs_at(runtime_dir, "tables", landing)[day]["status"] == "pending"

    injected.heal()
    code, payload = upload_json(cli, "--dest", str(landing))
    assert code == 0, payload
    assert_layout(landing, expected_layout(runtime_dir, [("tables", day)]))
    folder = f"exports/tables/core_banking.loans/as_of_date={day}"
    assert f"{folder}/tables_core_banking.loans_{day}.parquet" in remote_objects(landing)
    assert runs_at(runtime_dir, "tables", landing)[day]["status"] == "uploaded"

    again = invoke(cli, *args, "--dest", str(landing), "--json")  # a second extract: exit 0
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["upload"]["status"] == "uploaded"
    first = f"_control/manifests/tables/tables_{day}.{data['run_id']}.manifest.json"
    expected = expected_layout(runtime_dir, [("tables", day)]) | {first: "*"}  # kept: history
    assert_layout(landing, expected)


def test_an_upload_killed_at_any_moment_is_finished_by_the_next(
    cli: CliRunner, cli_env: dict[str, str], runtime_dir: Path, tmp_path: Path
) -> None:
    """kill -9 of a real `abaco upload` part way (files sent, manifests or pointers not yet):
    the next `abaco upload` finishes it, and the destination then matches the manifests.
    Tries a few fresh destinations until one kill lands mid-way."""
    assert (
        invoke(cli, "db", "seed", "--loans", "600", "--seed", "5", "--through", DAY).exit_code == 0
    )
    assert invoke(cli, "export", "all", "--as-of", DAY, "--months", "0").exit_code == 0
    datasets = ["analytics", "dpd", "kpi", "pricing"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACO_")}
    mid_way = 0
    for attempt in range(6):
        dest = tmp_path / f"landing-{attempt}"
        env = {**clean, **cli_env, "ABACO_UPLOAD__DESTINATION": str(dest),
               "ABACO_UPLOAD__PARALLEL_FILES": "1"}  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "abaco_cli", "upload"], env=env, cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if (dest / "exports").is_dir() and any((dest / "exports").rglob("*.parquet")):
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        there = remote_objects(dest) if dest.is_dir() else {}
        pointers = [n for n in there if n.startswith("_control/latest/")]
        mid_way += len(pointers) < len(datasets)
        caught_up = run_abaco(["upload"], env, tmp_path)
        assert caught_up.returncode == 0, caught_up.stderr
        assert_layout(dest, expected_layout(runtime_dir, [(d, DAY) for d in datasets]))
        verify = run_abaco(["audit", "verify", "--remote"], env, tmp_path)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        if mid_way >= 2:
            break
    assert mid_way >= 1, "no kill landed before the upload finished"


def test_hostile_names_in_a_listing_are_never_deleted_nor_followed(
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    moto_endpoint: str,
    cloud_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Objects in a date's partition that abaco did not write (a note, a key with `..`, a
    look-alike of a data file): a re-export's upload deletes the previous run's files only,
    and a name that climbs out of its folder is left alone with a warning."""
    prefix = f"hostile-{uuid.uuid4().hex[:8]}"
    dest = f"s3://{CLOUD_BUCKET}/{prefix}"
    monkeypatch.setenv("ABACO_UPLOAD__S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("ABACO_UPLOAD__S3_REGION", "us-east-1")
    assert invoke(cli, "export", "dpd", "--as-of", DAY, "--dest", dest).exit_code == 0
    admin = _s3_admin(moto_endpoint)
    part = f"{prefix}/exports/dpd/loans/as_of_date={DAY}"
    planted = [
        f"{part}/notes.txt",
        f"{part}/../../../../_control/manifests/dpd/dpd_{DAY}.x.manifest.json",
        f"{part}/dpd_loans_{DAY}.parquet.bak",
        f"{part}/sub/dpd_loans_{DAY}.parquet",
    ]
    for key in planted:
        admin.put_object(Bucket=CLOUD_BUCKET, Key=key, Body=b"not abaco's")
    add_loans_more = invoke(cli, "export", "dpd", "--as-of", DAY, "--dest", dest)
    assert add_loans_more.exit_code == 0, add_loans_more.stderr
    assert "Traceback" not in add_loans_more.stderr
    found = _bucket_objects(admin, prefix + "/")
    for key in planted:
        assert key[len(prefix) + 1 :] in found, key  # every planted object is still there
    verified = invoke(cli, "audit", "verify", "--remote", "--dest", dest)
    assert verified.exit_code == 0, verified.stdout + verified.stderr


def test_a_report_goes_up_with_its_content_types(
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    moto_endpoint: str,
    cloud_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dataset reports uploads like the others: the page, its alias and the charts with
    the content type a browser needs (text/html, image/png, image/svg+xml)."""
    prefix = f"report-{uuid.uuid4().hex[:8]}"
    dest = f"s3://{CLOUD_BUCKET}/{prefix}"
    monkeypatch.setenv("ABACO_UPLOAD__S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("ABACO_UPLOAD__S3_REGION", "us-east-1")
    result = invoke(cli, "export", "all", "--as-of", DAY, "--report", "--dest", dest)
    assert result.exit_code == 0, result.stderr
    again = invoke(cli, "upload", "--dest", dest)  # the export uploaded the report too
    assert again.exit_code == 0 and "nothing to upload" in again.stderr, again.stderr
    admin = _s3_admin(moto_endpoint)
    found = _bucket_objects(admin, prefix + "/")
    expected = expected_layout(runtime_dir, [("reports", DAY)])
    assert set(expected) <= set(found), set(expected) - set(found)

    def content_type(name: str) -> str:
        head = admin.head_object(Bucket=CLOUD_BUCKET, Key=f"{prefix}/{name}")
        return str(head["ContentType"])

    page = f"exports/reports/report_{DAY}.html"
    assert content_type(page).startswith("text/html")
    assert content_type("exports/reports/report_latest.html").startswith("text/html")
    charts = [n for n in found if n.startswith("exports/reports/") and n.endswith((".png", ".svg"))]
    assert charts
    for name in charts:
        assert content_type(name) == ("image/png" if name.endswith(".png") else "image/svg+xml")


def test_a_reports_upload_that_fails_is_pending_and_exit_5(
    cli: CliRunner,
    loans: None,
    runtime_dir: Path,
    landing: Path,
    fail_at: Callable[[Failure], Injected],
) -> None:
    injected = fail_at(lambda method, name: name.startswith("exports/reports/"))
    result = invoke(cli, "export", "all", "--as-of", DAY, "--report", "--dest", str(landing))
    assert result.exit_code == 5, result.stderr
    assert injected.failed and "Traceback" not in result.stderr
    assert "the report was written; its upload is pending" in result.stderr.strip().splitlines()[-1]
    assert (runtime_dir / "exports" / "reports" / f"report_{DAY}.html").is_file()
    assert runs_at(runtime_dir, "reports", landing)[DAY]["status"] == "pending"
    injected.heal()
    code, payload = upload_json(cli, "--dest", str(landing))
    assert code == 0, payload
    assert f"exports/reports/report_{DAY}.html" in remote_objects(landing)
    assert runs_at(runtime_dir, "reports", landing)[DAY]["status"] == "uploaded"
