"""Prometheus metrics in node_exporter's textfile format, shared by every abaco process.

Exports, prunes and healthchecks run as separate processes and each knows only its own
figures, so a write is a merge: under an flock beside the file, read the current file, change
only the samples this process knows (the rest stays as it was), then write a temporary file
and rename it over the old one (``prometheus_client.write_to_textfile``): node_exporter never
reads half a file. ``abaco_runs_total`` is a counter kept across processes by adding to the
value in the file (a lost or corrupt file restarts it at 0, which Prometheus reads as a reset).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from abaco_cli.runtime.inventory import read_pointer, read_run
from abaco_cli.runtime.manifest import ManifestFile
from abaco_cli.runtime.tree import RuntimeTree
from abaco_cli.settings import Settings

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from abaco_cli.quality.checks import QualityReport

# prometheus_client (with its HTTP server, WSGI and urllib: 25 ms) is imported where a file is
# read or written, not by every command that imports this module, e.g. under metrics.enabled=false

log = logging.getLogger("abaco.metrics")
LabelKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Family:
    name: str  # as exposed (a counter's ends in _total)
    kind: str  # gauge | counter
    help: str
    labels: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        """The family name prometheus_client uses (a counter's without _total)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


_FAMILIES = (
    Family(
        "abaco_export_last_success_timestamp_seconds",
        "gauge",
        "Unix time the dataset's last successful export finished.",
        ("dataset",),
    ),
    Family(
        "abaco_export_last_run_timestamp_seconds",
        "gauge",
        "Unix time the dataset's last export ended, successful or not.",
        ("dataset",),
    ),
    Family(
        "abaco_export_last_status",
        "gauge",
        "Outcome of the dataset's last export: 1 success, 0 failure.",
        ("dataset",),
    ),
    Family(
        "abaco_export_duration_seconds",
        "gauge",
        "Wall time of the dataset's last export run.",
        ("dataset",),
    ),
    Family(
        "abaco_export_rows",
        "gauge",
        "Rows per table of the dataset's newest as-of date (what latest.json names; a "
        "backfill of older dates leaves it).",
        ("dataset", "table"),
    ),
    Family(
        "abaco_export_bytes",
        "gauge",
        "Bytes of every file of the dataset's newest as-of date (what latest.json names).",
        ("dataset",),
    ),
    Family(
        "abaco_export_freshness_limit_seconds",
        "gauge",
        "Configured age after which the dataset's newest successful export is stale.",
        ("dataset",),
    ),
    Family(
        "abaco_runs_total",
        "counter",
        "Runs of abaco commands by outcome (success or failure).",
        ("command", "status"),
    ),
    Family("abaco_prune_last_run_timestamp_seconds", "gauge", "Unix time the last prune ended."),
    Family(
        "abaco_prune_deleted_runs",
        "gauge",
        "Runs the last prune removed, per dataset.",
        ("dataset",),
    ),
    Family("abaco_prune_freed_bytes", "gauge", "Bytes the last prune freed."),
    Family(
        "abaco_healthcheck_status",
        "gauge",
        "State of each health check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        ("check",),
    ),
    Family(
        "abaco_healthcheck_last_run_timestamp_seconds",
        "gauge",
        "Unix time the last healthcheck ran.",
    ),
    Family(
        "abaco_disk_free_ratio",
        "gauge",
        "Free share of the file system holding the runtime tree (0 to 1).",
    ),
    Family(
        "abaco_dq_last_run_timestamp_seconds",
        "gauge",
        "Unix time the last data-quality run (db check --data, or an export's) ended.",
    ),
    Family(
        "abaco_dq_last_status",
        "gauge",
        "Verdict of the last data-quality run: 1 the figures may go out (nothing found, or only "
        "what dq.on_error / dq.on_warning let through), 0 the policy stops them.",
    ),
    Family(
        "abaco_dq_duration_seconds",
        "gauge",
        "Wall time of the last data-quality run.",
    ),
    Family(
        "abaco_dq_failed_checks",
        "gauge",
        "Checks of the last data-quality run that found rows, per severity (error, warning).",
        ("severity",),
    ),
    Family(
        "abaco_dq_rows",
        "gauge",
        "Rows each check of the last data-quality run found (checks turned off are absent).",
        ("check", "severity"),
    ),
    Family(
        "abaco_upload_last_run_timestamp_seconds",
        "gauge",
        "Unix time the last upload (abaco upload, or an export's own upload) ended.",
    ),
    Family(
        "abaco_upload_bytes_total",
        "counter",
        "Bytes of data files sent to the upload destination (files skipped because they were "
        "there already are not counted, nor manifests and pointers).",
    ),
    Family(
        "abaco_upload_pending_runs",
        "gauge",
        "Successful runs of the dataset published locally but not yet uploaded.",
        ("dataset",),
    ),
    Family(
        "abaco_upload_oldest_pending_timestamp_seconds",
        "gauge",
        "Unix time the dataset's oldest run pending upload finished exporting (absent when "
        "nothing is pending).",
        ("dataset",),
    ),
    Family(
        "abaco_upload_last_status",
        "gauge",
        "Outcome of the dataset's last upload: 1 every run uploaded, 0 failed.",
        ("dataset",),
    ),
    Family(
        "abaco_lake_changes_total",
        "counter",
        "Source changes the lake captured (abaco lake sync), by table and operation.",
        ("table", "op"),
    ),
    Family(
        "abaco_lake_rows",
        "gauge",
        "Rows in the lake's Delta table after the last sync.",
        ("table",),
    ),
    Family(
        "abaco_lake_last_success_timestamp_seconds",
        "gauge",
        "Unix time the last successful lake sync ended.",
    ),
    Family("abaco_lake_last_run_timestamp_seconds", "gauge", "Unix time the last lake sync ended."),
    Family(
        "abaco_lake_last_status", "gauge", "Outcome of the last lake sync: 1 success, 0 failure."
    ),
    Family(
        "abaco_lake_stale_limit_seconds",
        "gauge",
        "How old the last successful lake sync may be (lake.stale_critical_minutes).",
    ),
    Family(
        "abaco_lake_slot_lag_bytes",
        "gauge",
        "WAL flushed on the source past the lake slot's confirmed position.",
    ),
    Family(
        "abaco_lake_wal_retained_bytes",
        "gauge",
        "WAL the source keeps for the lake's slot (current LSN minus its restart LSN).",
    ),
    Family(
        "abaco_lake_wal_limit_bytes",
        "gauge",
        "WAL retained at which the source drops the slot's WAL (retained + safe_wal_size); "
        "absent when max_slot_wal_keep_size is -1 (no limit).",
    ),
    Family(
        "abaco_lake_slot_lost",
        "gauge",
        "1 when the lake's slot is missing or its WAL was removed (wal_status lost), else 0.",
    ),
    Family(
        "abaco_lake_batch_duration_seconds", "gauge", "Duration of the last lake batch's commit."
    ),
    Family("abaco_lake_sync_duration_seconds", "gauge", "Duration of the last lake sync."),
)
FAMILIES: dict[str, Family] = {f.name: f for f in _FAMILIES}
_BY_BASE: dict[str, Family] = {f.base: f for f in _FAMILIES}


def _key(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


@dataclass
class MetricsUpdate:
    """What one process changes: samples to drop, gauges to set, counters to add to."""

    cleared: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    gauges: list[tuple[str, dict[str, str], float]] = field(default_factory=list)
    increments: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def clear(self, name: str, **labels: str) -> None:
        """Drop every sample of ``name`` whose labels include ``labels`` (all when none)."""
        self.cleared.append((FAMILIES[name].name, labels))

    def gauge(self, name: str, value: float, **labels: str) -> None:
        self._check(name, labels, "gauge")
        self.gauges.append((name, labels, float(value)))

    def count(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._check(name, labels, "counter")
        self.increments.append((name, labels, float(amount)))

    @staticmethod
    def _check(name: str, labels: dict[str, str], kind: str) -> None:
        family = FAMILIES[name]
        if family.kind != kind or set(labels) != set(family.labels):
            raise ValueError(f"{name} is a {family.kind} with labels {family.labels}")


class _State:
    """The file's content: known families by name, and any other family verbatim."""

    def __init__(self) -> None:
        self.samples: dict[str, dict[LabelKey, float]] = {f.name: {} for f in _FAMILIES}
        self.foreign: list[Metric] = []

    @classmethod
    def parse(cls, text: str) -> _State:
        from prometheus_client.parser import text_string_to_metric_families

        state = cls()
        for metric in text_string_to_metric_families(text):
            family = _BY_BASE.get(metric.name)
            if family is None:
                state.foreign.append(metric)
                continue
            for sample in metric.samples:
                if sample.name == family.name:
                    state.samples[family.name][_key(dict(sample.labels))] = float(sample.value)
        return state

    def apply(self, update: MetricsUpdate) -> None:
        for name, labels in update.cleared:
            wanted = set(labels.items())
            table = self.samples[name]
            for key in [k for k in table if wanted <= set(k)]:
                del table[key]
        for name, labels, value in update.gauges:
            self.samples[name][_key(labels)] = value
        for name, labels, amount in update.increments:
            table = self.samples[name]
            table[_key(labels)] = table.get(_key(labels), 0.0) + amount

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        for family in _FAMILIES:
            table = self.samples[family.name]
            if not table:
                continue
            metric: GaugeMetricFamily | CounterMetricFamily
            if family.kind == "counter":
                metric = CounterMetricFamily(family.base, family.help, labels=family.labels)
            else:
                metric = GaugeMetricFamily(family.name, family.help, labels=family.labels)
            for key, value in sorted(table.items()):
                labels = dict(key)
                metric.add_metric([labels[n] for n in family.labels], value)
            yield metric
        yield from self.foreign


class _Collector:
    def __init__(self, state: _State) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        return list(self.state.collect())


def metrics_path(settings: Settings) -> Path:
    return settings.metrics.path or RuntimeTree(settings.runtime_dir).metrics_file


def _lock(handle: int, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def write_metrics(path: Path, update: MetricsUpdate, *, lock_timeout_seconds: float = 10) -> None:
    """Merge ``update`` into the textfile at ``path`` (created if missing), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o640)
    try:
        if not _lock(fd, lock_timeout_seconds):
            raise TimeoutError(f"{path}.lock is held by another process")
        try:
            state = _State.parse(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            state = _State()
        except (OSError, ValueError) as exc:
            log.warning("starting %s afresh: the current file cannot be read (%s)", path, exc)
            state = _State()
        state.apply(update)
        from prometheus_client import CollectorRegistry, write_to_textfile

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(state))
        write_to_textfile(str(path), registry)
    finally:
        os.close(fd)


def record(settings: Settings, update: MetricsUpdate) -> None:
    """Write ``update`` unless metrics are off; a failure is logged, never raised: metrics must
    not fail the job they describe."""
    if not settings.metrics.enabled:
        return
    path = metrics_path(settings)
    try:
        write_metrics(path, update)
    except (OSError, ValueError) as exc:
        log.warning("could not write the metrics file %s: %s", path, exc)


# ------------------------------------------------------------------------- what each job reports


@dataclass(frozen=True)
class DatasetRun:
    """One dataset's part of an export run, as metrics describe it."""

    dataset: str
    success: bool
    finished: float  # unix time
    duration_seconds: float
    freshness_limit_seconds: float
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows (newest_sizes)
    bytes: int = 0


def newest_sizes(
    settings: Settings, dataset: str, as_of: date | None, files: Sequence[ManifestFile]
) -> tuple[dict[str, int], int]:
    """Rows per table and bytes of the dataset's newest as-of date: the files of this run's
    newest date, unless latest.json names a newer date (a backfill of older dates), whose
    manifest then gives them. Gauges describe the newest date, never the last one written."""
    tree = RuntimeTree.at(settings.runtime_dir)
    pointer = read_pointer(tree, dataset)
    if (
        pointer is not None
        and pointer.as_of is not None
        and pointer.manifest is not None
        and (as_of is None or pointer.as_of > as_of)
    ):
        latest = read_run(tree, dataset, pointer.manifest, marked=False).manifest
        if latest is not None:
            files = latest.files
    rows: dict[str, int] = {}
    for entry in files:
        rows[entry.table] = max(rows.get(entry.table, 0), entry.rows)
    return rows, sum(entry.bytes for entry in files)


def export_update(runs: list[DatasetRun]) -> MetricsUpdate:
    update = MetricsUpdate()
    for run in runs:
        labels = {"dataset": run.dataset}
        update.gauge("abaco_export_last_run_timestamp_seconds", run.finished, **labels)
        update.gauge("abaco_export_last_status", 1 if run.success else 0, **labels)
        update.gauge("abaco_export_duration_seconds", run.duration_seconds, **labels)
        update.gauge("abaco_export_freshness_limit_seconds", run.freshness_limit_seconds, **labels)
        if run.success:
            update.gauge("abaco_export_last_success_timestamp_seconds", run.finished, **labels)
            update.gauge("abaco_export_bytes", run.bytes, **labels)
            update.clear("abaco_export_rows", **labels)
            for table, rows in run.rows.items():
                update.gauge("abaco_export_rows", rows, dataset=run.dataset, table=table)
    success = all(run.success for run in runs)
    update.count("abaco_runs_total", command="export", status="success" if success else "failure")
    return update


def prune_update(
    finished: float, deleted_runs: dict[str, int], freed_bytes: int, *, success: bool
) -> MetricsUpdate:
    update = MetricsUpdate()
    update.gauge("abaco_prune_last_run_timestamp_seconds", finished)
    update.clear("abaco_prune_deleted_runs")
    for dataset, count in deleted_runs.items():
        update.gauge("abaco_prune_deleted_runs", count, dataset=dataset)
    update.gauge("abaco_prune_freed_bytes", freed_bytes)
    update.count("abaco_runs_total", command="prune", status="success" if success else "failure")
    return update


def health_update(
    finished: float,
    statuses: dict[str, int],
    *,
    disk_free_ratio: float | None,
    freshness_limits: dict[str, float],
) -> MetricsUpdate:
    update = MetricsUpdate()
    update.gauge("abaco_healthcheck_last_run_timestamp_seconds", finished)
    for check, status in statuses.items():
        update.gauge("abaco_healthcheck_status", status, check=check)
    if disk_free_ratio is not None:
        update.gauge("abaco_disk_free_ratio", disk_free_ratio)
    for dataset, seconds in freshness_limits.items():
        update.gauge("abaco_export_freshness_limit_seconds", seconds, dataset=dataset)
    return update


def dq_update(report: QualityReport, finished: float) -> MetricsUpdate:
    """The data-quality families from one run of the checks (``finished``: unix time). The
    rows of every check are replaced, so a check turned off disappears."""
    update = MetricsUpdate()
    update.gauge("abaco_dq_last_run_timestamp_seconds", finished)
    update.gauge("abaco_dq_last_status", 0 if report.blocking else 1)
    update.gauge("abaco_dq_duration_seconds", report.seconds)
    for severity in ("error", "warning"):
        failed = [c for c in report.checks if c.severity == severity and c.failed]
        update.gauge("abaco_dq_failed_checks", len(failed), severity=severity)
    update.clear("abaco_dq_rows")
    for check in report.checks:
        update.gauge("abaco_dq_rows", check.count, check=check.name, severity=check.severity)
    return update


@dataclass(frozen=True)
class UploadGauge:
    """One dataset after an upload (or after anything that changes what is pending)."""

    dataset: str
    pending: int
    oldest_pending: float | None  # unix time the oldest pending run finished exporting
    ok: bool | None = None  # how its upload ended; None: not attempted (last status unchanged)


def upload_update(
    gauges: Sequence[UploadGauge],
    *,
    finished: float | None = None,
    sent_bytes: int = 0,
    command_success: bool | None = None,
) -> MetricsUpdate:
    """The upload families: per dataset what is pending and since when (the oldest-pending
    gauge disappears when nothing is), how its upload ended; when an upload ran (``finished``),
    the bytes it sent; ``command_success`` counts a run of `abaco upload` itself."""
    update = MetricsUpdate()
    if finished is not None:
        update.gauge("abaco_upload_last_run_timestamp_seconds", finished)
        update.count("abaco_upload_bytes_total", float(sent_bytes))
    for item in gauges:
        labels = {"dataset": item.dataset}
        update.gauge("abaco_upload_pending_runs", item.pending, **labels)
        if item.oldest_pending is None:
            update.clear("abaco_upload_oldest_pending_timestamp_seconds", **labels)
        else:
            update.gauge(
                "abaco_upload_oldest_pending_timestamp_seconds", item.oldest_pending, **labels
            )
        if item.ok is not None:
            update.gauge("abaco_upload_last_status", 1 if item.ok else 0, **labels)
    if command_success is not None:
        status = "success" if command_success else "failure"
        update.count("abaco_runs_total", command="upload", status=status)
    return update


@dataclass(frozen=True)
class LakeSlotGauge:
    """The lake's slot as the source reports it (None: unknown, not written)."""

    lost: bool
    lag_bytes: int | None
    retained_bytes: int | None
    limit_bytes: int | None


def lake_update(
    *,
    finished: float,
    success: bool | None,
    changes: dict[tuple[str, str], int] | None = None,
    rows: dict[str, int] | None = None,
    slot: LakeSlotGauge | None = None,
    stale_limit_seconds: float | None = None,
    batch_seconds: float | None = None,
    sync_seconds: float | None = None,
) -> MetricsUpdate:
    """The lake families after a sync (``success`` set) or a health check (``success`` None:
    the slot's figures only)."""
    update = MetricsUpdate()
    if success is not None:
        update.gauge("abaco_lake_last_run_timestamp_seconds", finished)
        update.gauge("abaco_lake_last_status", 1 if success else 0)
        if success:
            update.gauge("abaco_lake_last_success_timestamp_seconds", finished)
        update.count(
            "abaco_runs_total", command="lake sync", status="success" if success else "failure"
        )
    for (table, op), count in sorted((changes or {}).items()):
        update.count("abaco_lake_changes_total", float(count), table=table, op=op)
    for table, count in sorted((rows or {}).items()):
        update.gauge("abaco_lake_rows", count, table=table)
    if stale_limit_seconds is not None:
        update.gauge("abaco_lake_stale_limit_seconds", stale_limit_seconds)
    if batch_seconds is not None:
        update.gauge("abaco_lake_batch_duration_seconds", batch_seconds)
    if sync_seconds is not None:
        update.gauge("abaco_lake_sync_duration_seconds", sync_seconds)
    if slot is not None:
        update.gauge("abaco_lake_slot_lost", 1 if slot.lost else 0)
        for name, value in (
            ("abaco_lake_slot_lag_bytes", slot.lag_bytes),
            ("abaco_lake_wal_retained_bytes", slot.retained_bytes),
            ("abaco_lake_wal_limit_bytes", slot.limit_bytes),
        ):
            if value is None:
                update.clear(name)
            else:
                update.gauge(name, value)
    return update
