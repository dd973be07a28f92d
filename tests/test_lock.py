"""The per-dataset lock across real processes (flock), and through the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from abaco_cli.errors import ExitCode, LockedError
from abaco_cli.runtime.lock import dataset_lock
from abaco_cli.runtime.tree import RuntimeTree

HOLDER_RUN_ID = "20250630T120000Z-h01d3r"

# Takes the lock, says "locked", holds it until a line arrives on stdin (or it is killed).
HOLDER = """
import sys
from pathlib import Path
from abaco_cli.runtime.lock import dataset_lock

with dataset_lock(Path(sys.argv[1]), run_id=sys.argv[2], command="export dpd", timeout_seconds=5):
    print("locked", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


class Holder:
    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), HOLDER_RUN_ID],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return RuntimeTree(tmp_path / "abaco_runtime").lock_path("dpd")


@pytest.fixture
def holder(lock_path: Path) -> Iterator[Holder]:
    held = Holder(lock_path)
    try:
        yield held
    finally:
        held.stop()


def test_waiter_gives_up_with_locked_error_naming_the_holder(
    lock_path: Path, holder: Holder
) -> None:
    waits: list[str] = []
    started = time.monotonic()
    with (
        pytest.raises(LockedError) as caught,
        dataset_lock(
            lock_path,
            run_id="waiter",
            command="export dpd",
            timeout_seconds=0.6,
            on_wait=waits.append,
            poll_seconds=0.05,
        ),
    ):
        pytest.fail("the lock was taken while another process held it")
    waited = time.monotonic() - started
    assert waited >= 0.6
    assert waited < 5
    error = caught.value
    assert error.exit_code == ExitCode.LOCKED == 4
    assert f"pid {holder.pid}" in error.message
    assert HOLDER_RUN_ID in error.message
    assert len(waits) == 1  # announced once, naming the holder
    assert f"pid {holder.pid}" in waits[0]


def test_waiter_gets_the_lock_when_the_holder_releases_in_time(
    lock_path: Path, holder: Holder
) -> None:
    timer = threading.Timer(0.4, holder.release)
    timer.start()
    started = time.monotonic()
    try:
        with dataset_lock(
            lock_path,
            run_id="waiter-run",
            command="export dpd",
            timeout_seconds=10,
            poll_seconds=0.05,
        ):
            waited = time.monotonic() - started
            content = lock_path.read_text(encoding="utf-8")
            assert f'"pid": {os.getpid()}' in content
            assert "waiter-run" in content
    finally:
        timer.cancel()
    assert 0.3 <= waited < 10
    assert holder.proc.stdout is not None
    assert holder.proc.stdout.readline().strip() == "released"


def test_lock_of_a_killed_process_is_free_at_once(lock_path: Path, holder: Holder) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.proc.wait(timeout=10)
    assert holder.proc.returncode == -signal.SIGKILL
    started = time.monotonic()
    with dataset_lock(lock_path, run_id="after-crash", command="export dpd", timeout_seconds=0):
        assert time.monotonic() - started < 0.5
        assert "after-crash" in lock_path.read_text(encoding="utf-8")


def test_lock_is_reentrant_for_nobody_in_one_process(lock_path: Path) -> None:
    """A second open of the same lock file conflicts even inside one process (flock)."""
    with (
        dataset_lock(lock_path, run_id="first", command="a", timeout_seconds=0),
        pytest.raises(LockedError),
        dataset_lock(lock_path, run_id="second", command="b", timeout_seconds=0),
    ):
        pytest.fail("taken twice")
    with dataset_lock(lock_path, run_id="third", command="c", timeout_seconds=0):
        pass


def test_cli_export_while_locked_exits_4_with_one_line(
    db_conninfo: str, runtime_dir: Path, tmp_path: Path
) -> None:
    held = Holder(RuntimeTree(runtime_dir).lock_path("dpd"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ABACO_")}
        env.update(
            ABACO_DATABASE_URL=db_conninfo,
            ABACO_RUNTIME_DIR=str(runtime_dir),
            ABACO_LOCK_TIMEOUT_SECONDS="1",
        )
        done = subprocess.run(
            [sys.executable, "-m", "abaco_cli", "export", "dpd", "--as-of", "2025-06-30"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        held.stop()
    assert done.returncode == 4, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("abaco: error")]
    assert len(errors) == 1, done.stderr
    assert f"pid {held.pid}" in errors[0]
    assert HOLDER_RUN_ID in errors[0]
    # besides the error, stderr may carry only log lines (the "waiting for ..." notice)
    others = [line for line in done.stderr.splitlines() if line not in errors]
    assert all(" INFO " in line or " WARNING " in line for line in others), done.stderr
    assert not (runtime_dir / "exports" / "dpd" / "_manifests").exists()
