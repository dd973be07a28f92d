"""`abaco healthcheck`: is abaco able to do its job, and has it been doing it?

Each check ends in a monitoring-plugin state: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (could
not tell). The overall state is the worst, ranked CRITICAL > WARNING > UNKNOWN > OK (the
order of monitoring-plugins' ``max_state_alt``), and is the command's exit code.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

import psycopg

from abaco_cli import metrics
from abaco_cli.audit.recorder import audit_log_path
from abaco_cli.datasets import REGISTRY
from abaco_cli.dates import newest_true_day
from abaco_cli.db.classify import classify
from abaco_cli.db.connect import Connection, connect
from abaco_cli.db.contract import check_contract
from abaco_cli.db.snapshot import ping
from abaco_cli.errors import AbacoError
from abaco_cli.redaction import Redactor
from abaco_cli.runtime import journal
from abaco_cli.runtime.inventory import dataset_dirs, exported_runs, linked_folders, newest_run
from abaco_cli.runtime.lock import probe_locks
from abaco_cli.runtime.tree import RuntimeTree
from abaco_cli.services.run import iso, utc_now
from abaco_cli.services.upload_state import dataset_status, destination_key
from abaco_cli.services.verifying import (
    VerifyResult,
    check_dataset,
    compare_with_sink,
    pending_publishes,
    read_trail,
)
from abaco_cli.settings import Settings

CHECKS = (
    "config", "db", "contract", "freshness", "dq", "runtime", "disk", "audit", "sink", "locks",
    "upload", "lake",
)  # fmt: skip


class State(IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


_RANK = {State.OK: 0, State.UNKNOWN: 1, State.WARNING: 2, State.CRITICAL: 3}


@dataclass(frozen=True)
class Check:
    name: str
    state: State
    summary: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "state": self.state.name,
            "code": int(self.state),
            "summary": self.summary,
            "details": self.details,
        }


@dataclass
class HealthReport:
    checks: list[Check]
    checked_at: str
    perfdata: list[str] = field(default_factory=list)

    @property
    def state(self) -> State:
        if not self.checks:
            return State.UNKNOWN
        return max((c.state for c in self.checks), key=lambda s: _RANK[s])

    def line(self) -> str:
        """One monitoring-plugin line: ``ABACO OK - ... | perfdata``."""
        bad = [c for c in self.checks if c.state != State.OK]
        if bad:
            worst_first = sorted(bad, key=lambda c: -_RANK[c.state])
            text = "; ".join(f"{c.name} {c.state.name}: {c.summary}" for c in worst_first)
        else:
            names = ", ".join(c.name for c in self.checks)
            text = f"all {len(self.checks)} checks OK ({names})"
        perf = f" | {' '.join(self.perfdata)}" if self.perfdata else ""
        return f"ABACO {self.state.name} - {text}{perf}"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.state.name,
            "code": int(self.state),
            "checked_at": self.checked_at,
            "summary": self.line(),
            "checks": [c.to_json() for c in self.checks],
        }


def parse_checks(text: str | None) -> list[str]:
    """``db,freshness`` -> the checks in their usual order; ValueError naming an unknown one."""
    if text is None:
        return list(CHECKS)
    wanted = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in wanted if name not in CHECKS]
    if unknown or not wanted:
        raise ValueError(
            f"unknown check {', '.join(unknown) or '(none given)'}; choose from {', '.join(CHECKS)}"
        )
    return [name for name in CHECKS if name in wanted]


# ------------------------------------------------------------------------------------- checks


class _Context:
    """What several checks share: the settings, the clock, one database connection."""

    def __init__(self, settings: Settings, now: datetime) -> None:
        self.settings = settings
        self.now = now
        self.tree = RuntimeTree.at(settings.runtime_dir)
        self.redactor = Redactor.from_settings(settings)
        self.conn: Connection | None = None
        self.db_error: str | None = None
        self.disk_free_ratio: float | None = None
        self.perfdata: list[str] = []

    def connection(self) -> Connection | None:
        if self.conn is None and self.db_error is None:
            quick = self.settings.model_copy(
                update={"connect_timeout_seconds": self.settings.health.db_timeout_seconds}
            )
            try:
                self.conn = connect(quick, read_only=True)
            except AbacoError as exc:
                self.db_error = exc.message
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def _config(ctx: _Context) -> Check:
    settings = ctx.settings
    notes: list[str] = []
    unknown = [d for d in settings.health.datasets if d not in REGISTRY]
    if unknown:
        notes.append(f"health.datasets names unknown dataset(s): {', '.join(unknown)}")
    unknown = [d for d in settings.prune.datasets if d not in REGISTRY]
    if unknown:
        notes.append(f"prune.datasets names unknown dataset(s): {', '.join(unknown)}")
    if notes:
        return Check("config", State.WARNING, "; ".join(notes))
    return Check("config", State.OK, "configuration is valid")


def _db(ctx: _Context) -> Check:
    started = time.monotonic()
    conn = ctx.connection()
    if conn is None:
        return Check("db", State.CRITICAL, f"unreachable: {ctx.db_error}")
    connect_ms = (time.monotonic() - started) * 1000
    try:
        started = time.monotonic()
        ping(conn, ctx.settings.health.db_timeout_seconds)
        latency_ms = (time.monotonic() - started) * 1000
    except psycopg.Error as exc:
        error = classify(exc, redactor=ctx.redactor, during="SELECT 1")
        return Check("db", State.CRITICAL, f"no answer: {error.message}")
    details = {"latency_ms": round(latency_ms, 1), "connect_ms": round(connect_ms, 1)}
    limit = ctx.settings.health.db_latency_warning_ms
    ctx.perfdata.append(f"db_latency={latency_ms / 1000:.4f}s;{limit / 1000:g};;0")
    if latency_ms > limit:
        return Check("db", State.WARNING, f"slow: SELECT 1 took {latency_ms:.0f} ms", details)
    return Check(
        "db",
        State.OK,
        f"reachable: SELECT 1 in {latency_ms:.1f} ms (connect {connect_ms:.0f} ms)",
        details,
    )


def _contract(ctx: _Context) -> Check:
    conn = ctx.connection()
    if conn is None:
        return Check("contract", State.UNKNOWN, "cannot tell: the database is unreachable")
    try:
        problems = check_contract(conn, ctx.settings.tables)
        conn.rollback()
    except psycopg.Error as exc:
        error = classify(exc, redactor=ctx.redactor, during="checking the contract")
        return Check("contract", State.UNKNOWN, error.message)
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        return Check(
            "contract",
            State.CRITICAL,
            f"not satisfied: {problems[0]}{more} (`abaco db check` lists them)",
            {"problems": [str(p) for p in problems]},
        )
    return Check("contract", State.OK, "source contract satisfied")


def freshness_datasets(settings: Settings) -> list[str]:
    return list(settings.health.datasets) or sorted(REGISTRY)


def _freshness(ctx: _Context) -> Check:
    parts: list[str] = []
    details: dict[str, Any] = {}
    worst = State.OK
    for dataset in freshness_datasets(ctx.settings):
        limit = ctx.settings.health.freshness_hours.hours(dataset)
        finished = [
            r.finished_at
            for r in exported_runs(ctx.tree, dataset)
            if r.successful and r.finished_at is not None
        ]
        if not finished:
            worst = State.CRITICAL
            parts.append(f"{dataset} never exported successfully (limit {limit:g}h)")
            details[dataset] = {"limit_hours": limit, "age_hours": None, "last_success": None}
            continue
        newest = max(finished)
        age = max((ctx.now - newest).total_seconds() / 3600, 0.0)
        details[dataset] = {
            "limit_hours": limit,
            "age_hours": round(age, 2),
            "last_success": iso(newest),
        }
        ctx.perfdata.append(f"age_{dataset}={age * 3600:.0f}s;;{limit * 3600:.0f};0")
        if age > limit:
            worst = State.CRITICAL
            parts.append(f"{dataset} stale: last success {age:.1f}h ago (limit {limit:g}h)")
        else:
            parts.append(f"{dataset} {age:.1f}h old (limit {limit:g}h)")
    if not parts:
        return Check("freshness", State.OK, "no dataset to check")
    return Check("freshness", worst, ", ".join(parts), details)


def _dq(ctx: _Context) -> Check:
    """The data-quality checks recorded in each dataset's newest manifest (`dq` section)."""
    warnings: list[str] = []
    failures: list[str] = []
    for dataset in freshness_datasets(ctx.settings):
        newest = newest_run(exported_runs(ctx.tree, dataset))
        section = newest.manifest.dq if newest is not None and newest.manifest else None
        if not section:
            continue
        outcome = section.get("outcome")
        failed = [
            f"{c.get('name')} {c.get('count')}"
            for c in section.get("checks", [])
            if isinstance(c, dict) and c.get("count")
        ]
        text = f"{dataset} as of {section.get('as_of')}: {', '.join(failed) or outcome}"
        if outcome == "fail":
            failures.append(text)
        elif outcome == "warn":
            warnings.append(text)
    details = {"warnings": warnings, "failures": failures}
    if failures:
        return Check(
            "dq",
            State.CRITICAL,
            f"a published run failed its data-quality checks ({'; '.join(failures)}): a normal "
            "run never publishes one; `abaco audit verify` (runbooks/data-quality.md)",
            details,
        )
    if warnings:
        return Check(
            "dq",
            State.WARNING,
            f"data-quality findings in the newest exports: {'; '.join(warnings)} "
            "(runbooks/data-quality.md)",
            details,
        )
    return Check("dq", State.OK, "the newest exports passed their data-quality checks", details)


_PROBE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _probe(folder: Path) -> str | None:
    """None when a file can be created, written, synced and removed in ``folder``. The probe is
    a new file of its own (O_EXCL, O_NOFOLLOW, an unguessable name): never a file or link that
    someone put there, which it would otherwise truncate or follow."""
    probe = folder / f".abaco-healthcheck-{os.getpid()}-{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(probe, _PROBE_FLAGS, 0o600)
    except OSError as exc:
        return f"{folder} is not writable: {exc.strerror or exc}"
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("ok\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        return f"{folder} is not writable: {exc.strerror or exc}"
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)  # the file this call created (O_EXCL), never a link
    return None


def _runtime(ctx: _Context) -> Check:
    root = ctx.settings.runtime_dir
    if not root.exists():
        parent = next((p for p in root.absolute().parents if p.exists()), None)
        if parent is None or _probe(parent) is not None:
            return Check("runtime", State.CRITICAL, f"{root} does not exist and cannot be created")
        return Check(
            "runtime", State.WARNING, f"{root} does not exist yet (the first export creates it)"
        )
    if not root.is_dir():
        return Check("runtime", State.CRITICAL, f"{root} is not a folder")
    folders = [root, ctx.tree.exports, audit_log_path(ctx.settings).parent]
    folders.append(metrics.metrics_path(ctx.settings).parent)
    for folder in folders:
        if folder.is_dir():
            problem = _probe(folder)
            if problem is not None:
                return Check("runtime", State.CRITICAL, problem)
    runs = [
        run for folder in dataset_dirs(ctx.tree) for run in exported_runs(ctx.tree, folder.name)
    ]
    marked = [f"{run.dataset} as of {run.as_of_date}" for run in runs if run.marked]
    future = [
        f"{run.dataset} as of {run.as_of}"
        for run in runs
        if run.successful
        and run.as_of is not None
        and run.as_of > newest_true_day(ctx.settings, run.dataset)
    ]
    waiting = [
        f"{dataset} as of {item.record.as_of} (run {item.record.run_id})"
        for item in journal.pending(ctx.tree)
        if item.record is not None
        for dataset in item.waiting
    ]
    linked = linked_folders(ctx.tree)
    if linked:
        return Check(
            "runtime",
            State.CRITICAL,
            f"symbolic link(s) in the runtime tree: {', '.join(linked)}: abaco never writes, "
            "reads or prunes through one, so exports there fail; make each a real folder or "
            "file (runbooks/disk-filling.md)",
            {"linked": linked},
        )
    if waiting:
        return Check(
            "runtime",
            State.WARNING,
            f"a publish was interrupted ({', '.join(waiting)}); the next run of the dataset "
            "(any export or prune of it) completes it",
            {"interrupted_publish": waiting},
        )
    if future:
        return Check(
            "runtime",
            State.WARNING,
            f"run(s) dated after yesterday hold the latest pointers: {', '.join(future)}; "
            "remove them (runbooks/export-stale.md) unless they are meant",
            {"future_runs": future},
        )
    if marked:
        return Check(
            "runtime",
            State.WARNING,
            f"an interrupted prune left {len(marked)} run(s) half-removed "
            f"({', '.join(marked)}); the next `abaco prune` finishes them",
            {"interrupted_prune": marked},
        )
    return Check("runtime", State.OK, f"{root} is writable")


def _disk(ctx: _Context) -> Check:
    target = ctx.settings.runtime_dir.absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    usage = shutil.disk_usage(target)
    ratio = usage.free / usage.total if usage.total else 0.0
    ctx.disk_free_ratio = ratio
    health = ctx.settings.health
    # Plugin thresholds are ranges of good values: "10:" alerts below 10 (not above it).
    ctx.perfdata.append(
        f"disk_free={ratio * 100:.1f}%;{health.disk_free_warning_ratio * 100:g}:;"
        f"{health.disk_free_critical_ratio * 100:g}:;0;100"
    )
    text = f"{ratio:.1%} free on {target} ({usage.free / 2**30:.1f} GiB)"
    details = {"free_ratio": round(ratio, 4), "free_bytes": usage.free, "path": str(target)}
    if ratio < health.disk_free_critical_ratio:
        return Check("disk", State.CRITICAL, text, details)
    if ratio < health.disk_free_warning_ratio:
        return Check("disk", State.WARNING, text, details)
    return Check("disk", State.OK, text, details)


def _audit(ctx: _Context) -> Check:
    """The chain, and every live manifest tied to a record of its run (no file hashing)."""
    trail, problems, records = read_trail(ctx.settings)
    chain_broken = bool(problems)
    waiting, journal_problems = pending_publishes(ctx.tree)
    problems += journal_problems
    for folder in dataset_dirs(ctx.tree):
        newest_day = newest_true_day(ctx.settings, folder.name)
        outcome = check_dataset(ctx.tree, folder.name, trail, waiting, newest_day, hash_files=False)
        problems += outcome.problems
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        what = "chain broken" if chain_broken else problems[0].kind
        return Check(
            "audit",
            State.CRITICAL,
            f"{what}: {problems[0].message}{more}; run `abaco audit verify`",
            {"problems": [p.message for p in problems]},
        )
    if not records:
        return Check("audit", State.OK, "no audit records yet")
    return Check("audit", State.OK, f"chain intact ({records} records), every run recorded")


def _sink(ctx: _Context) -> Check:
    """This host's chain against the PostgreSQL sink (when one is configured)."""
    if ctx.settings.audit.sink != "postgres":
        return Check("sink", State.OK, "no audit sink configured (audit.sink = none)")
    trail, _, _ = read_trail(ctx.settings)
    result = VerifyResult(log_path=audit_log_path(ctx.settings))
    compare_with_sink(ctx.settings, trail, result)
    if not result.problems:
        return Check(
            "sink", State.OK, f"the local chain matches the sink ({result.sink_rows} rows)"
        )
    kinds = {p.kind for p in result.problems}
    state = State.WARNING if kinds <= {"missing_in_sink", "sink_unreachable"} else State.CRITICAL
    more = f" (and {len(result.problems) - 1} more)" if len(result.problems) > 1 else ""
    return Check(
        "sink",
        state,
        f"{result.problems[0].message}{more}; run `abaco audit verify --against-sink`",
        {"problems": [p.message for p in result.problems]},
    )


def _locks(ctx: _Context) -> Check:
    probe = probe_locks(ctx.tree.locks)
    if probe.stale:
        return Check(
            "locks",
            State.WARNING,
            f"stale lock(s) left by a process that died: {'; '.join(probe.stale)}",
            {"stale": probe.stale, "held": probe.held},
        )
    summary = f"held now: {', '.join(probe.held)}" if probe.held else "no lock held"
    return Check("locks", State.OK, f"no stale lock; {summary}", {"held": probe.held})


def _upload(ctx: _Context) -> Check:
    """Runs waiting for their upload: WARNING past upload.pending_warning_minutes, CRITICAL
    past upload.pending_critical_minutes (from the local tree and the upload state alone)."""
    upload = ctx.settings.upload
    if upload.destination is None:
        return Check("upload", State.OK, "no destination configured (uploads are off)")
    key = destination_key(upload.destination)
    worst = State.OK
    parts: list[str] = []
    details: dict[str, Any] = {"destination": key}
    for folder in dataset_dirs(ctx.tree):
        status = dataset_status(ctx.tree, folder.name, key)
        lag = status.lag_seconds(ctx.now)
        details[folder.name] = status.to_json(ctx.now)
        if status.problem:
            worst = max(worst, State.WARNING, key=lambda s: _RANK[s])
            parts.append(f"{folder.name}: {status.problem} (the next `abaco upload` rebuilds it)")
            continue
        if lag is None:
            continue
        minutes = lag / 60
        if minutes > upload.pending_critical_minutes:
            state = State.CRITICAL
        elif minutes > upload.pending_warning_minutes:
            state = State.WARNING
        else:
            state = State.OK
        worst = max(worst, state, key=lambda s: _RANK[s])
        parts.append(
            f"{folder.name}: {len(status.pending)} run(s) pending, the oldest exported "
            f"{minutes:.0f} min ago"
        )
    if not parts:
        return Check("upload", State.OK, f"nothing pending upload to {key}", details)
    limits = f"(limits {upload.pending_warning_minutes}/{upload.pending_critical_minutes} min)"
    hint = "; `abaco upload status` (runbooks/upload-pending.md)" if worst != State.OK else ""
    return Check("upload", worst, f"{'; '.join(parts)} {limits}{hint}", details)


def _lake(ctx: _Context) -> Check:
    """The lake (abaco lake): its last sync against lake.stale_*_minutes, and its slot on the
    source: missing or lost is CRITICAL, WAL retained above 50 % / 80 % of the limit at which
    the source drops it is WARNING / CRITICAL (runbooks/lake-*.md)."""
    from abaco_cli.services.lake import lake_state_for_health, wal_figures

    lake = ctx.settings.lake
    found = lake_state_for_health(ctx.settings)
    if found is None:
        return Check("lake", State.OK, "no lake initialised (abaco lake init)")
    if found.dropped:
        return Check("lake", State.OK, "the lake was dropped (abaco lake drop): nothing to follow")
    minutes = (ctx.now - found.updated).total_seconds() / 60
    states: list[tuple[State, str]] = []
    if minutes > lake.stale_critical_minutes:
        states.append((State.CRITICAL, f"last sync {minutes:.0f} min ago"))
    elif minutes > lake.stale_warning_minutes:
        states.append((State.WARNING, f"last sync {minutes:.0f} min ago"))
    details: dict[str, Any] = {
        "slot": found.slot,
        "lsn": found.lsn,
        "minutes_since_sync": round(minutes, 1),
    }
    conn = ctx.connection()
    if conn is None:
        states.append((State.UNKNOWN, f"slot not checked: {ctx.db_error}"))
    else:
        from abaco_cli.lake.slot import slot_info

        info = slot_info(conn, found.slot)
        wal = wal_figures(conn, info)
        details |= {
            "wal_status": wal.wal_status,
            "lag_bytes": wal.lag,
            "wal_retained_bytes": wal.retained,
            "wal_limit_bytes": wal.limit,
        }
        metrics.record(
            ctx.settings,
            metrics.lake_update(
                finished=time.time(),
                success=None,
                slot=metrics.LakeSlotGauge(
                    info is None or info.lost, wal.lag, wal.retained, wal.limit
                ),
                stale_limit_seconds=lake.stale_critical_minutes * 60.0,
            ),
        )
        share = wal.share
        if info is None:
            states.append(
                (State.CRITICAL, f"slot {found.slot} is missing (runbooks/lake-slot-lost.md)")
            )
        elif info.lost or wal.wal_status == "unreserved":
            states.append(
                (
                    State.CRITICAL,
                    f"slot {found.slot} is {wal.wal_status} (runbooks/lake-slot-lost.md)",
                )
            )
        elif share is not None and share > 0.8:
            states.append(
                (
                    State.CRITICAL,
                    f"WAL retained is {share:.0%} of the limit (runbooks/lake-wal-growing.md)",
                )
            )
        elif share is not None and share > 0.5:
            states.append(
                (
                    State.WARNING,
                    f"WAL retained is {share:.0%} of the limit (runbooks/lake-wal-growing.md)",
                )
            )
    if not states:
        return Check(
            "lake", State.OK, f"lake at {found.lsn}, last sync {minutes:.0f} min ago", details
        )
    worst = max((s for s, _ in states), key=lambda s: _RANK[s])
    return Check("lake", worst, "; ".join(m for _, m in states), details)


_RUNNERS: dict[str, Callable[[_Context], Check]] = {
    "config": _config,
    "db": _db,
    "contract": _contract,
    "freshness": _freshness,
    "dq": _dq,
    "runtime": _runtime,
    "disk": _disk,
    "audit": _audit,
    "sink": _sink,
    "locks": _locks,
    "upload": _upload,
    "lake": _lake,
}


def run_healthcheck(
    settings: Settings | None,
    *,
    checks: list[str] | None = None,
    config_error: str | None = None,
    now: datetime | None = None,
) -> HealthReport:
    """Run the chosen checks; ``settings`` is None when the configuration is invalid (then
    config is CRITICAL and every other check UNKNOWN). Writes the metrics file."""
    chosen = checks or list(CHECKS)
    moment = now or utc_now()
    if settings is None:
        results = [
            Check("config", State.CRITICAL, config_error or "invalid configuration")
            if name == "config"
            else Check(name, State.UNKNOWN, "cannot tell: the configuration is invalid")
            for name in chosen
        ]
        return HealthReport(results, iso(moment))
    ctx = _Context(settings, moment)
    results = []
    try:
        for name in chosen:
            try:
                results.append(_RUNNERS[name](ctx))
            except (OSError, ValueError, AbacoError, psycopg.Error) as exc:
                message = exc.message if isinstance(exc, AbacoError) else str(exc)
                results.append(
                    Check(name, State.UNKNOWN, f"check failed: {ctx.redactor.text(message)}")
                )
    finally:
        ctx.close()
    report = HealthReport(results, iso(moment), ctx.perfdata)
    limits = {
        d: settings.health.freshness_hours.hours(d) * 3600 for d in freshness_datasets(settings)
    }
    metrics.record(
        settings,
        metrics.health_update(
            time.time(),
            {c.name: int(c.state) for c in results},
            disk_free_ratio=ctx.disk_free_ratio,
            freshness_limits=limits,
        ),
    )
    return report
