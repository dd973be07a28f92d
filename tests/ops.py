"""Helpers shared by the operations tests (audit, prune, healthcheck, metrics, monitoring)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SECRET = "S3cret-Pa55-never-shown"


def add_loans(dsn: str, count: int = 3) -> None:
    """A few loans with one installment each (ids only), enough for non-empty exports."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO core_banking.customers (customer_id) VALUES ('C1') ON CONFLICT DO NOTHING"
        )
        for n in range(1, count + 1):
            conn.execute(
                "INSERT INTO core_banking.loans (loan_id, customer_id, disbursement_date,"
                " principal) VALUES (%s, 'C1', '2025-05-01', 1000.00)",
                (f"L{n}",),
            )
            conn.execute(
                "INSERT INTO core_banking.payment_schedule (loan_id, installment_no, due_date,"
                " principal_due) VALUES (%s, 1, '2025-06-01', 1000.00)",
                (f"L{n}",),
            )


def dsn_with_secret(dsn: str) -> tuple[str, str]:
    """The test database's conninfo with a password in it, and that password.

    The suite's own server trusts local connections, so any password works and SECRET is
    added; an external server's DSN (ABACO_TEST_DATABASE_URL) keeps the password it has.
    """
    given = conninfo_to_dict(dsn).get("password")
    if given:
        return dsn, str(given)
    return make_conninfo(dsn, password=SECRET), SECRET


def audit_path(runtime_dir: Path) -> Path:
    return runtime_dir / "audit" / "audit.jsonl"


def read_records(runtime_dir: Path) -> list[dict[str, Any]]:
    lines = audit_path(runtime_dir).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def expected_hash(record: dict[str, Any]) -> str:
    """The documented rule, computed here by hand: sha256 of the sorted, compact JSON."""
    body = {k: v for k, v in record.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def manifest_path(runtime_dir: Path, dataset: str, day: str) -> Path:
    return runtime_dir / "exports" / dataset / "_manifests" / f"{dataset}_{day}.manifest.json"


def set_finished_at(manifest: Path, moment: datetime) -> None:
    """Rewrite the time a manifest records (prune and freshness judge runs by it)."""
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["finished_at"] = (
        moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
    manifest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def files_of(manifest: Path) -> list[Path]:
    data = json.loads(manifest.read_text(encoding="utf-8"))
    exports = manifest.parents[2]
    return [exports / f["path"] for f in data["files"]]


def tree_snapshot(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` with its sha256 (symlinks by their target text)."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_file():
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def metric_samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, parsed by prometheus_client."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def run_abaco(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The real program in its own process (exit codes as a shell sees them)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ABACO_")}
    return subprocess.run(
        [sys.executable, "-m", "abaco_cli", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Takes the dataset lock like an export does, says "locked", then holds it until a line arrives
# on stdin, or until it is killed (then the kernel drops the flock but the holder info stays).
_HOLDER = """
import sys
from pathlib import Path
from abaco_cli.runtime.lock import dataset_lock

with dataset_lock(Path(sys.argv[1]), run_id=sys.argv[2], command="export dpd", timeout_seconds=5):
    print("locked", flush=True)
    sys.stdin.readline()
"""


class LockHolder:
    """A real process holding ``locks/<dataset>.lock`` as an export would."""

    def __init__(self, lock_path: Path, run_id: str = "20250630T120000Z-h01d3r") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(lock_path), run_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """Die without releasing: the flock goes, the holder info stays (a stale lock)."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
