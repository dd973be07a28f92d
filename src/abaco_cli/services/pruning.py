"""`abaco prune`: remove whole exported runs older than a retention, safely.

A run is one manifest and the files it names. Its age is the time its manifest records
(``finished_at``), never a file's mtime. Never removed: the ``keep_last`` newest successful runs
of a dataset (by as-of date; at least 1), the run ``latest.json`` points at, a run whose
manifest cannot be trusted (unreadable, no date or time, or naming any path that is not a data
file of its own dataset and date: ``bad_path``), a file some remaining manifest still names, a
file no manifest names (listed as unknown), anything reached through a symbolic link, and
``.gitkeep``. Every deletion goes through runtime/files.py, which refuses any path outside the
tree's data places. With an upload destination configured (``upload.destination``), a run not
recorded as uploaded there is kept too ("not uploaded to <dest> yet"), unless
``include_not_uploaded``: it may exist nowhere else.

Crash safety, "mark first": the manifest is first renamed to a hidden marker
(``_manifests/.<name>.manifest.json.pruning``, one atomic rename), then the files go, then the
marker. A crash at any point leaves either a whole live run or a marked one: readers (exports,
`latest.json`, query engines) skip hidden names, `audit verify` and `healthcheck` report a
marker as an interrupted prune rather than missing files, and the next prune finishes it.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from abaco_cli import metrics
from abaco_cli.audit.recorder import AuditedRun
from abaco_cli.datasets import REGISTRY
from abaco_cli.durations import format_duration, parse_duration
from abaco_cli.errors import ExitCode, LockedError, UnsafePathError, UsageError, WriteError
from abaco_cli.runtime import files
from abaco_cli.runtime.inventory import (
    ExportedRun,
    dataset_dirs,
    exported_runs,
    linked_folders,
    read_pointer,
    refresh_latest,
)
from abaco_cli.runtime.tree import Place, RuntimeTree
from abaco_cli.services.run import Run, iso
from abaco_cli.services.upload_state import (
    DestinationState,
    destination_key,
    pending_runs,
    read_state,
)
from abaco_cli.settings import Settings

KEEP = ".gitkeep"
log = logging.getLogger("abaco.prune")
UploadGuard = Callable[[ExportedRun], str | None]  # why a run must stay (not uploaded), or None


@dataclass
class PrunedRun:
    """A run prune removes (or, with --dry-run, would remove)."""

    dataset: str
    run_id: str
    as_of_date: str
    finished_at: str
    reason: str
    manifest: str  # relative to exports/
    files: list[str] = field(default_factory=list)  # removed (dry run: would be)
    bytes: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)  # files left, with why

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "run_id": self.run_id,
            "as_of_date": self.as_of_date,
            "finished_at": self.finished_at,
            "reason": self.reason,
            "manifest": self.manifest,
            "files": self.files,
            "bytes": self.bytes,
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class KeptRun:
    dataset: str
    run_id: str
    as_of_date: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {
            "dataset": self.dataset,
            "run_id": self.run_id,
            "as_of_date": self.as_of_date,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class UnknownFile:
    """A file under exports/ that no manifest names: listed, never deleted."""

    path: str  # relative to exports/
    reason: str
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, "bytes": self.bytes}


@dataclass
class PruneResult:
    dry_run: bool
    keep_last: int
    retention: dict[str, str]  # dataset -> duration applied
    run_id: str | None = None
    removed: list[PrunedRun] = field(default_factory=list)
    kept: list[KeptRun] = field(default_factory=list)
    unknown: list[UnknownFile] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)  # datasets skipped: another run held them

    @property
    def count(self) -> int:
        return len(self.removed)

    @property
    def bytes(self) -> int:
        return sum(run.bytes for run in self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "keep_last": self.keep_last,
            "retention": self.retention,
            "count": self.count,
            "bytes": self.bytes,
            "removed": [r.to_json() for r in self.removed],
            "kept": [k.to_json() for k in self.kept],
            "unknown": [u.to_json() for u in self.unknown],
            "locked": self.locked,
        }


def parse_retention(text: str, option: str = "--retention") -> timedelta:
    """A retention from the command line; UsageError that says why anything else is refused."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _retentions(
    settings: Settings, datasets: list[str], retention: timedelta | None
) -> dict[str, timedelta]:
    """The retention of each dataset: --retention, else prune.datasets.<name>, else
    prune.retention; a dataset with none is left alone."""
    chosen: dict[str, timedelta] = {}
    for name in datasets:
        if retention is not None:
            chosen[name] = retention
        elif name in settings.prune.datasets:
            chosen[name] = parse_duration(settings.prune.datasets[name])
        elif settings.prune.retention is not None:
            chosen[name] = parse_duration(settings.prune.retention)
    if not chosen:
        raise UsageError(
            "no retention given: pass --retention (e.g. --retention 90d) "
            "or set prune.retention in abaco.toml"
        )
    return chosen


def _age_text(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def _judge(
    tree: RuntimeTree,
    dataset: str,
    runs: list[ExportedRun],
    retention: timedelta,
    keep_last: int,
    now: datetime,
    guard: UploadGuard | None = None,
) -> tuple[list[tuple[ExportedRun, str]], list[KeptRun]]:
    """Which runs go (with the reason) and which stay (with the reason)."""
    successful = sorted(
        (r for r in runs if r.successful),
        key=lambda r: (r.as_of_date, r.finished_at or datetime.min.replace(tzinfo=now.tzinfo)),
        reverse=True,
    )
    newest = {id(r) for r in successful[:keep_last]}
    pointer = read_pointer(tree, dataset)
    pointed = pointer.manifest if pointer is not None else None
    going: list[tuple[ExportedRun, str]] = []
    kept: list[KeptRun] = []
    for run in runs:
        if run.marked:
            going.append((run, "finishing the removal of this run, which a crash interrupted"))
            continue

        def keep(reason: str, run: ExportedRun = run) -> None:
            kept.append(KeptRun(dataset, run.run_id, run.as_of_date, reason))

        if run.problem is not None:
            keep(f"{run.problem.kind}: {run.problem.message}: never removed")
        elif id(run) in newest:
            keep(f"one of the {keep_last} newest successful runs (--keep-last {keep_last})")
        elif pointed is not None and run.manifest_path == pointed:
            keep("latest.json points at it")
        elif run.finished_at is None:
            keep("its manifest records no finish time (file times are never used)")
        elif now - run.finished_at > retention and (held := guard and guard(run)):
            keep(held)
        elif now - run.finished_at > retention:
            age = now - run.finished_at
            going.append(
                (
                    run,
                    f"finished {iso(run.finished_at)}, {_age_text(age)} ago: older than the "
                    f"{format_duration(retention)} retention",
                )
            )
        else:
            keep(f"within the {format_duration(retention)} retention")
    return going, kept


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _delete(tree: RuntimeTree, path: Path) -> None:
    """Remove one file of a run (a seam for the crash tests)."""
    files.remove(tree, path, Place.DATA)


def _remove_run(
    tree: RuntimeTree,
    run: ExportedRun,
    reason: str,
    staying: set[str],
    *,
    dry_run: bool,
) -> PrunedRun:
    """Mark, delete the files, delete the marker (the dry run only measures)."""
    pruned = PrunedRun(
        dataset=run.dataset,
        run_id=run.run_id,
        as_of_date=run.as_of_date,
        finished_at=iso(run.finished_at) if run.finished_at else "",
        reason=reason,
        manifest=tree.relative(run.manifest_path),
    )
    marker = run.manifest_path
    if not run.marked and not dry_run:
        marker = tree.pruning_marker(run.manifest_path)
        # from here on the run is no longer published
        files.replace(tree, run.manifest_path, Place.MANIFEST, marker, Place.MARKER)
    folders: set[Path] = set()
    for entry in run.files:
        why = None
        try:
            path = tree.data_file(entry.path, run.dataset, run.as_of)
        except UnsafePathError as exc:
            path, why = None, exc.message
        if path is None:
            pass
        elif path.name == KEEP:
            why = f"{KEEP} is never removed"
        elif entry.path in staying:
            why = "another manifest still names it"
        if why is not None or path is None:
            pruned.skipped.append({"path": entry.path, "reason": why or "refused"})
            continue
        if not _is_file(path):
            continue  # already gone (an interrupted prune removed it)
        size = _size(path)
        if not dry_run:
            _delete(tree, path)
            folders.add(path.parent)
        pruned.files.append(entry.path)
        pruned.bytes += size
    pruned.bytes += _size(marker)
    if dry_run:
        return pruned
    for folder in sorted(folders, reverse=True):
        files.remove_empty_folder(tree, folder)
    files.remove(tree, marker, Place.MARKER)  # last: until now it said what was still to go
    return pruned


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _unknown(tree: RuntimeTree, folder: Path, known: set[str]) -> list[UnknownFile]:
    """Every file under a dataset's folder that no manifest names (never followed, never
    deleted): stray files, temporary files of interrupted exports, symbolic links."""
    found: list[UnknownFile] = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        here = Path(root)
        for name in sorted(dirs):
            if (here / name).is_symlink():
                found.append(
                    UnknownFile(
                        tree.relative(here / name),
                        "symbolic link to a folder: never followed",
                        0,
                    )
                )
        dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink())
        for name in sorted(names):
            path = here / name
            relative = tree.relative(path)
            if relative in known or name == KEEP:
                continue
            if here == folder and name == "latest.json":
                continue
            in_manifests = here.name == "_manifests" and here.parent == folder
            if in_manifests and not path.is_symlink() and name.endswith((".json", ".pruning")):
                continue
            stem = Path(name).stem
            if (stem == "latest" or stem.endswith("_latest")) and not path.is_symlink():
                continue  # a stable alias of the newest file (kpi/json/kpi_latest.json)
            if path.is_symlink():
                reason = "symbolic link: never followed"
            elif files.is_temp_name(name):
                reason = "temporary file of an interrupted export (its next export removes it)"
            else:
                reason = "no manifest names this file"
            found.append(UnknownFile(relative, reason, _size(path)))
    return found


def _prune_dataset(
    tree: RuntimeTree,
    folder: Path,
    retention: timedelta | None,
    keep_last: int,
    now: datetime,
    result: PruneResult,
    *,
    dry_run: bool,
    guard: UploadGuard | None = None,
) -> None:
    dataset = folder.name
    runs = exported_runs(tree, dataset)
    if retention is None:
        going: list[tuple[ExportedRun, str]] = [
            (r, "finishing the removal of this run, which a crash interrupted")
            for r in runs
            if r.marked
        ]
        result.kept += [
            KeptRun(dataset, r.run_id, r.as_of_date, "no retention configured for this dataset")
            for r in runs
            if not r.marked
        ]
    else:
        going, kept = _judge(tree, dataset, runs, retention, keep_last, now, guard)
        result.kept += kept
    leaving = {id(run) for run, _ in going}
    staying = {f.path for r in runs if id(r) not in leaving for f in r.files}
    for run, reason in going:
        result.removed.append(_remove_run(tree, run, reason, staying, dry_run=dry_run))
    named = {f.path for r in runs for f in r.files}
    if not dry_run:
        named = staying
    result.unknown += _unknown(tree, folder, named)


def prune(
    run: Run,
    *,
    retention: timedelta | None = None,
    dataset: str | None = None,
    keep_last: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    on_wait: Callable[[str], None] | None = None,
    include_not_uploaded: bool = False,
) -> PruneResult:
    """Remove (or with ``dry_run`` list) every run older than its dataset's retention (with a
    destination configured, only runs uploaded there, unless ``include_not_uploaded``)."""
    settings, tree = run.settings, run.tree
    keep = keep_last if keep_last is not None else settings.prune.keep_last
    if keep < 1:
        raise UsageError(
            f"--keep-last must be at least 1, not {keep}: "
            "the newest successful run of a dataset is never removed"
        )
    folders = dataset_dirs(tree)
    if dataset is not None:
        if dataset not in REGISTRY and dataset not in {f.name for f in folders}:
            known = ", ".join(sorted(set(REGISTRY) | {f.name for f in folders}))
            raise UsageError(f"unknown dataset {dataset!r}; known datasets: {known}")
        folders = [f for f in folders if f.name == dataset]
    names = [dataset] if dataset is not None else sorted({*REGISTRY, *(f.name for f in folders)})
    retentions = _retentions(settings, names, retention)
    moment = now or run.started
    result = PruneResult(
        dry_run=dry_run,
        keep_last=keep,
        retention={name: format_duration(value) for name, value in retentions.items()},
    )
    if tree.exports.is_symlink():
        result.unknown.append(
            UnknownFile("exports", "symbolic link: never followed, nothing under it pruned", 0)
        )
        return result
    result.unknown += [
        UnknownFile(path.removeprefix("exports/"), "symbolic link: never followed", 0)
        for path in linked_folders(tree)
        if path.startswith("exports/") and (dataset is None or path == f"exports/{dataset}")
    ]
    guards = _upload_guards(settings, tree, folders, include_not_uploaded)
    if dry_run:
        for folder in folders:
            _prune_dataset(
                tree,
                folder,
                retentions.get(folder.name),
                keep,
                moment,
                result,
                dry_run=True,
                guard=guards.get(folder.name),
            )
        return result
    result.run_id = run.run_id
    succeeded = False
    try:
        with run.audited(
            arguments={
                "retention": format_duration(retention) if retention else None,
                "dataset": dataset,
                "keep_last": keep,
                "include_not_uploaded": include_not_uploaded,
            },
            datasets=[f.name for f in folders],
            reads_source=False,
        ) as audit:
            _prune_locked(run, folders, retentions, keep, moment, result, on_wait, guards)
            _describe(audit, result)
        succeeded = not result.locked
    finally:
        deleted = {name: 0 for name in retentions}
        for item in result.removed:
            deleted[item.dataset] = deleted.get(item.dataset, 0) + 1
        run.metrics(metrics.prune_update(time.time(), deleted, result.bytes, success=succeeded))
        if settings.upload.destination is not None and result.removed:
            run.metrics(_pending_gauges(settings, tree, sorted(deleted)))
    return result


def _upload_guards(
    settings: Settings, tree: RuntimeTree, folders: list[Path], include_not_uploaded: bool
) -> dict[str, UploadGuard]:
    """Per dataset: why a run must stay because it is not uploaded to the configured
    destination yet (none without a destination, or with ``include_not_uploaded``)."""
    url = settings.upload.destination
    if url is None or include_not_uploaded:
        return {}
    key = destination_key(url)
    guards: dict[str, UploadGuard] = {}
    for folder in folders:
        state = read_state(tree, folder.name)
        if state.problem:
            log.warning("%s: every run counts as not uploaded", state.problem)
        dest = state.at(key)

        def guard(run: ExportedRun, dest: DestinationState = dest) -> str | None:
            if dest.uploaded(run):
                return None
            return f"not uploaded to {key} yet (--include-not-uploaded removes it anyway)"

        guards[folder.name] = guard
    return guards


def _pending_gauges(
    settings: Settings, tree: RuntimeTree, datasets: list[str]
) -> metrics.MetricsUpdate:
    """What is pending upload once runs are gone (a run pruned with --include-not-uploaded is
    pending no more)."""
    key = destination_key(settings.upload.destination or "")
    gauges = []
    for name in datasets:
        left = pending_runs(tree, name, read_state(tree, name).at(key))
        oldest = min((r.manifest.finished_at for r in left if r.manifest), default=None)
        gauges.append(metrics.UploadGauge(name, len(left), oldest.timestamp() if oldest else None))
    return metrics.upload_update(gauges)


def _prune_locked(
    run: Run,
    folders: list[Path],
    retentions: dict[str, timedelta],
    keep: int,
    moment: datetime,
    result: PruneResult,
    on_wait: Callable[[str], None] | None,
    guards: dict[str, UploadGuard],
) -> None:
    """One dataset at a time under its lock (an interrupted publish is finished first); a
    dataset another run holds is skipped."""
    for folder in folders:
        try:
            with run.lock(folder.name, on_wait):
                _prune_dataset(
                    run.tree,
                    folder,
                    retentions.get(folder.name),
                    keep,
                    moment,
                    result,
                    dry_run=False,
                    guard=guards.get(folder.name),
                )
                refresh_latest(run.tree, folder.name, run.run_id)
        except LockedError as exc:
            result.locked.append(exc.message)
        except OSError as exc:
            raise WriteError(
                f"prune of {folder.name} stopped: {exc}; the run being removed stays marked "
                "and the next `abaco prune` finishes it"
            ) from None


def _describe(run: AuditedRun, result: PruneResult) -> None:
    """What went, for the audit record; a dataset skipped for its lock makes the run FAIL."""
    run.details |= {
        "removed": [r.to_json() for r in result.removed],
        "count": result.count,
        "bytes": result.bytes,
        "unknown_files": len(result.unknown),
        "locked": result.locked,
        "retention": result.retention,
        "keep_last": result.keep_last,
    }
    if result.locked:
        run.exit_code = int(ExitCode.LOCKED)
        run.error = {"type": "LockedError", "message": "; ".join(result.locked)}
