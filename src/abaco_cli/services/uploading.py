"""Uploading runs to a destination (`abaco upload`, and an export with a destination).

One run (a dataset's manifest of one as-of date) goes up in this order, each step idempotent,
so that a run whose upload stopped anywhere is finished by uploading it again:

1. its files, several at once (``upload.parallel_files``), at the paths they have locally below
   ``exports/``; a file already there with the same size and md5 or sha256 is skipped; each put
   carries the manifest's sha256, so a file replaced locally by a newer run meanwhile is refused
   (the run is then superseded: the newer run's upload sends the date);
2. its manifest, ``_control/manifests/<dataset>/<dataset>_<D>.<run_id>.manifest.json``,
   created only if absent: a replay finds it and compares (the same bytes: nothing written;
   other bytes: an error, never an overwrite);
3. the objects of the date's previous run that the new manifest does not name are deleted
   (only names below ``exports/<dataset>/`` in that date's partitions, each checked);
4. when the run is the one the local ``latest.json`` names: the remote pointer
   ``_control/latest/<dataset>.json``, by compare-and-swap, and the stable alias
   (``kpi/json/kpi_latest.json``).

Which runs are uploaded or pending is the upload state (services/upload_state.py), written
under the dataset's upload lock (``locks/upload_<dataset>.lock``), never the export lock: a long
catch-up never holds up an export. Transient errors were already retried by the storage layer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from abaco_cli import metrics
from abaco_cli.datasets import REGISTRY
from abaco_cli.durations import format_duration
from abaco_cli.errors import (
    AbacoError,
    ExitCode,
    LockedError,
    UnsafePathError,
    UsageError,
    WriteError,
)
from abaco_cli.runtime import files
from abaco_cli.runtime.inventory import (
    ExportedRun,
    dataset_dirs,
    read_pointer,
    read_run,
)
from abaco_cli.runtime.lock import dataset_lock, describe_holder
from abaco_cli.runtime.manifest import Manifest, ManifestError, ManifestFile, iso_time
from abaco_cli.runtime.tree import Place, RuntimeTree, table_folder
from abaco_cli.services.run import Run, utc_now
from abaco_cli.services.upload_state import (
    PENDING,
    UPLOADED,
    DestinationState,
    LastUpload,
    RunEntry,
    UploadState,
    data_name,
    date_prefixes,
    in_date,
    local_runs,
    manifest_name,
    manifests_prefix,
    parse_manifest_name,
    pending_runs,
    pointer_name,
    read_state,
    sweep_state_temps,
    table_folders,
    write_state,
)
from abaco_cli.settings import Settings
from abaco_cli.storage import (
    ChecksumMismatch,
    Destination,
    InvalidObjectName,
    ObjectInfo,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    check_name,
    open_destination,
)

log = logging.getLogger("abaco.upload")
Progress = Callable[[str], None]

CONTENT_TYPES = {
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "json": "application/json",
    "html": "text/html; charset=utf-8",  # the report (dataset reports) and its charts
    "png": "image/png",
    "svg": "image/svg+xml",
}
JSON = "application/json"
CHUNK = 1024 * 1024
MAX_PASSES = 10  # `abaco upload` looks again for runs published while it uploaded, this often
POINTER_ATTEMPTS = 3
NO_DESTINATION = "no destination configured (upload.destination / --dest)"
LOCAL_HINT = "Run `abaco audit verify`: the local file does not match its manifest."


# ------------------------------------------------------------------------------------ results


@dataclass
class RunUpload:
    """One run's upload: what was sent, skipped and deleted, and how it ended."""

    dataset: str
    as_of: date
    run_id: str
    finished_at: datetime  # when the run finished exporting
    status: str = PENDING  # uploaded | pending | superseded | found (already there) | planned
    files: int = 0  # objects sent
    skipped: int = 0  # objects already there with the same content
    bytes: int = 0  # bytes sent
    deleted: list[str] = field(default_factory=list)
    manifest: str = ""
    pointer_moved: bool = False
    error: str | None = None
    transient: bool = False
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.dataset} as of {self.as_of} (run {self.run_id})"

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "as_of_date": self.as_of.isoformat(),
            "run_id": self.run_id,
            "finished_at": iso_time(self.finished_at),
            "status": self.status,
            "files": self.files,
            "skipped": self.skipped,
            "bytes": self.bytes,
            "deleted": self.deleted,
            "manifest": self.manifest,
            "pointer_moved": self.pointer_moved,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class DatasetUpload:
    """One dataset's share of an upload."""

    dataset: str
    runs: list[RunUpload] = field(default_factory=list)
    already: int = 0  # runs that were uploaded before
    locked: str | None = None  # another upload held the dataset: not attempted
    state_problem: str | None = None  # the state file was not trusted (and was rebuilt)
    pointer_moved: str | None = None  # the run the remote pointer was moved to
    pending: int = 0  # runs still pending afterwards
    oldest_pending: datetime | None = None
    error: str | None = None  # a failure outside any one run (a listing, the pointer)
    transient: bool = False  # a transient failure stopped the dataset's upload

    @property
    def failed(self) -> list[RunUpload]:
        return [r for r in self.runs if r.status == PENDING]

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None

    def gauge(self) -> metrics.UploadGauge:
        oldest = self.oldest_pending.timestamp() if self.oldest_pending else None
        return metrics.UploadGauge(
            self.dataset, self.pending, oldest, None if self.locked else self.ok
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "runs": [r.to_json() for r in self.runs],
            "already_uploaded": self.already,
            "locked": self.locked,
            "state_problem": self.state_problem,
            "pointer_moved_to": self.pointer_moved,
            "pending": self.pending,
            "oldest_pending": iso_time(self.oldest_pending) if self.oldest_pending else None,
            "error": self.error,
        }


@dataclass
class UploadResult:
    """What `abaco upload` did (or, with ``dry_run``, would do)."""

    destination: str | None  # None: no destination configured
    dry_run: bool = False
    run_id: str | None = None
    datasets: list[DatasetUpload] = field(default_factory=list)
    stopped: str | None = None  # a transient failure stopped the upload here

    @property
    def runs(self) -> list[RunUpload]:
        return [r for d in self.datasets for r in d.runs]

    @property
    def uploaded(self) -> list[RunUpload]:
        return [r for r in self.runs if r.status == UPLOADED]

    @property
    def failed(self) -> list[RunUpload]:
        return [r for r in self.runs if r.status == PENDING]

    @property
    def locked(self) -> list[str]:
        return [d.locked for d in self.datasets if d.locked]

    @property
    def errors(self) -> list[str]:
        """Every failure: of a run (its label first) or of a dataset's upload."""
        found = [f"{r.label}: {r.error}" for r in self.failed]
        return found + [f"{d.dataset}: {d.error}" for d in self.datasets if d.error]

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.runs)

    @property
    def exit_code(self) -> int:
        if self.errors or self.stopped:
            return int(ExitCode.FAILED)
        return int(ExitCode.LOCKED) if self.locked else int(ExitCode.OK)

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "configured": self.destination is not None,
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "uploaded": len(self.uploaded),
            "pending": len(self.failed),
            "bytes": self.bytes,
            "locked": self.locked,
            "stopped": self.stopped,
            "datasets": [d.to_json() for d in self.datasets],
        }


@dataclass
class UploadOutcome:
    """An export's upload of the runs it published (the ``upload`` of its audit record)."""

    destination: str
    status: str  # uploaded | pending
    error: str | None = None
    runs: list[RunUpload] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return self.status != UPLOADED

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "status": self.status,
            "error": self.error,
            "runs": [
                {
                    "dataset": r.dataset,
                    "as_of_date": r.as_of.isoformat(),
                    "run_id": r.run_id,
                    "status": r.status,
                    "files": r.files,
                    "skipped": r.skipped,
                    "bytes": r.bytes,
                    "seconds": round(r.seconds, 3),
                }
                for r in self.runs
            ],
        }


# ------------------------------------------------------------------------------------ session


class _Session:
    """One command's uploads to one destination."""

    def __init__(self, run: Run, destination: Destination, progress: Progress | None) -> None:
        self.run = run
        self.tree: RuntimeTree = run.tree
        self.dest = destination
        self.key = destination.url  # credential-free: the state's key for the destination
        self.parallel = run.settings.upload.parallel_files
        self.progress = progress

    def say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)
        else:
            log.info(message)

    def text(self, exc: BaseException) -> str:
        message = exc.message if isinstance(exc, AbacoError) else str(exc)
        return self.run.redactor.text(message)

    def save(self, state: UploadState) -> None:
        try:
            write_state(self.tree, state, self.run.run_id)
        except (OSError, UnsafePathError) as exc:
            raise WriteError(
                f"cannot write the upload state {self.tree.upload_state_path(state.dataset)}: {exc}"
            ) from None


def destination_url(settings: Settings, given: str | None) -> str | None:
    """--dest, else upload.destination; None when neither is set."""
    return given if given is not None else settings.upload.destination


@contextmanager
def upload_lock(run: Run, dataset: str, wait_seconds: float) -> Iterator[None]:
    """The dataset's upload lock (never its export lock); LockedError after ``wait_seconds``."""
    path = files.make_folders(run.tree, run.tree.upload_lock_path(dataset), Place.LOCK)
    with dataset_lock(path, run_id=run.run_id, command=run.command, timeout_seconds=wait_seconds):
        yield


# -------------------------------------------------------------------------------- local side


def _manifest_bytes(tree: RuntimeTree, run: ExportedRun) -> tuple[bytes, Manifest]:
    """The local manifest as it is now (bytes and parsed); StorageError when unreadable."""
    try:
        with files.open_read(tree, run.manifest_path, Place.MANIFEST) as handle:
            data = handle.read()
        manifest = Manifest.from_json(
            data.decode("utf-8"), tree, dataset=run.dataset, as_of=run.as_of
        )
    except FileNotFoundError:
        raise _Superseded() from None
    except (OSError, UnicodeDecodeError, ManifestError, UnsafePathError) as exc:
        raise StorageError(
            f"the local manifest {tree.relative(run.manifest_path)} cannot be used: {exc}",
            hint=LOCAL_HINT,
        ) from None
    if manifest.run_id != run.run_id:
        raise _Superseded()
    return data, manifest


class _Superseded(Exception):  # noqa: N818 - an outcome, not an error
    """The local manifest of the date now belongs to another run (a re-export)."""


def _superseded(tree: RuntimeTree, run: ExportedRun) -> bool:
    current = read_run(tree, run.dataset, run.manifest_path, marked=False)
    return current.manifest is None or current.manifest.run_id != run.run_id


def local_digests(tree: RuntimeTree, path: Path) -> tuple[int, str, str]:
    """Size, md5 and sha256 of a local data file."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    size = 0
    try:
        with files.open_read(tree, path, Place.DATA) as handle:
            while chunk := handle.read(CHUNK):
                md5.update(chunk)
                sha.update(chunk)
                size += len(chunk)
    except (OSError, UnsafePathError) as exc:
        raise StorageError(f"cannot read {path}: {exc}", hint=LOCAL_HINT) from None
    return size, md5.hexdigest(), sha.hexdigest()


# -------------------------------------------------------------------------------- one run


def _folders(dataset: str, manifest: Manifest) -> set[str]:
    """Every table folder a date of the dataset may have objects in."""
    found = table_folders(f.path for f in manifest.files)
    spec = REGISTRY.get(dataset)
    if spec is not None:
        for table in spec.tables:
            found |= {table_folder(table.name, fmt) for fmt in ("parquet", "csv", "json")}
    return found


def _list_date(s: _Session, dataset: str, as_of: date, manifest: Manifest) -> dict[str, ObjectInfo]:
    """The objects in the date's partitions of the dataset (untrusted names, each checked)."""
    found: dict[str, ObjectInfo] = {}
    for prefix in date_prefixes(dataset, as_of, _folders(dataset, manifest)):
        for info in s.dest.list(prefix):
            try:
                check_name(info.name)
            except InvalidObjectName as exc:
                log.warning("%s: left alone: %s", s.dest.url, exc.message)
                continue
            if in_date(s.tree, info.name, dataset, as_of):
                found[info.name] = info
    return found


def _already_there(s: _Session, there: ObjectInfo | None, entry: ManifestFile, path: Path) -> bool:
    """Is the object there the manifest's file (same size, and sha256 or md5)?"""
    if there is None or there.size != entry.bytes:
        return False
    if there.sha256 is None and there.md5 is None:  # an S3 listing: ask for the object itself
        there = s.dest.head(there.name)
        if there is None or there.size != entry.bytes:
            return False
    if there.sha256 is not None:
        return there.sha256 == entry.sha256
    _, md5, sha = local_digests(s.tree, path)
    if sha != entry.sha256:
        raise ChecksumMismatch(f"{path} no longer has the sha256 its manifest gives")
    return there.md5 == md5


def _send_file(
    s: _Session, manifest: Manifest, entry: ManifestFile, there: ObjectInfo | None
) -> int | None:
    """Upload one file unless it is there already; the bytes sent (None: skipped)."""
    name = check_name(data_name(entry.path))
    try:
        path = s.tree.data_file(entry.path, manifest.dataset, manifest.as_of_date)
    except UnsafePathError as exc:
        raise StorageError(exc.message, hint=LOCAL_HINT) from None
    if _already_there(s, there, entry, path):
        return None
    info = s.dest.put_file(
        name,
        path,
        sha256=entry.sha256,
        content_type=CONTENT_TYPES.get(entry.format),
        metadata={
            "dataset": manifest.dataset,
            "as_of_date": manifest.as_of_date.isoformat(),
            "run_id": entry.origin(manifest.run_id),
        },
    )
    return info.size


def _send_files(
    s: _Session, manifest: Manifest, listing: dict[str, ObjectInfo], result: RunUpload
) -> None:
    """Every file of the run, ``upload.parallel_files`` at once; the first error stops the
    rest (files in flight finish) and is raised."""
    entries = list(manifest.files)
    if not entries:
        return
    with ThreadPoolExecutor(max_workers=min(s.parallel, len(entries))) as pool:
        futures: list[Future[int | None]] = [
            pool.submit(_send_file, s, manifest, e, listing.get(data_name(e.path))) for e in entries
        ]
        try:
            for future in as_completed(futures):
                sent = future.result()
                if sent is None:
                    result.skipped += 1
                else:
                    result.files += 1
                    result.bytes += sent
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _put_manifest(s: _Session, manifest: Manifest, data: bytes) -> str:
    """Create the run's remote manifest; a replay that finds the same bytes is reconciled."""
    name = manifest_name(manifest.dataset, manifest.as_of_date, manifest.run_id)
    try:
        s.dest.put_bytes(
            name,
            data,
            if_absent=True,
            content_type=JSON,
            sha256=hashlib.sha256(data).hexdigest(),
            metadata={
                "dataset": manifest.dataset,
                "as_of_date": manifest.as_of_date.isoformat(),
                "run_id": manifest.run_id,
            },
        )
    except PreconditionFailed:
        there, _ = s.dest.get_bytes(name)
        if there != data:
            raise StorageError(
                f"{s.dest.url}: {name} exists with other content than the local manifest of "
                f"run {manifest.run_id}: it is never overwritten",
                hint="Keep it; run `abaco audit verify --remote` and see runbooks/"
                "upload-pending.md (412 / PreconditionFailed: another writer).",
            ) from None
    return name


def _delete_leftovers(s: _Session, manifest: Manifest, listing: dict[str, ObjectInfo]) -> list[str]:
    """Delete the date's objects the new manifest does not name (a previous run's)."""
    named = {data_name(f.path) for f in manifest.files}
    deleted: list[str] = []
    for name in sorted(listing):
        if name in named or not in_date(s.tree, name, manifest.dataset, manifest.as_of_date):
            continue
        if s.dest.delete(name):
            deleted.append(name)
    return deleted


def pointer_body(manifest: Manifest) -> bytes:
    """The remote pointer: the run, its remote manifest and the remote names of its files
    (relative to the destination's prefix, like the pointer's own name)."""
    body = {
        "dataset": manifest.dataset,
        "as_of_date": manifest.as_of_date.isoformat(),
        "run_id": manifest.run_id,
        "finished_at": iso_time(manifest.finished_at),
        "manifest": manifest_name(manifest.dataset, manifest.as_of_date, manifest.run_id),
        "files": [
            {"table": f.table, "format": f.format, "path": data_name(f.path)}
            for f in manifest.files
        ],
    }
    return (json.dumps(body, indent=2) + "\n").encode("utf-8")


def _move_pointer(s: _Session, manifest: Manifest) -> bool:
    """Compare-and-swap the remote pointer to this run (True when it moved), then the alias."""
    name = pointer_name(manifest.dataset)
    body = pointer_body(manifest)
    moved = False
    for _ in range(POINTER_ATTEMPTS):
        try:
            current, info = s.dest.get_bytes(name)
        except ObjectNotFound:
            current, info = None, None
        if current == body:
            break
        try:
            if info is None:
                s.dest.put_bytes(name, body, if_absent=True, content_type=JSON)
            else:
                s.dest.put_bytes(name, body, if_version=info.version, content_type=JSON)
            moved = True
            break
        except PreconditionFailed:
            continue  # another writer moved it in between: read it again
    else:
        raise StorageError(
            f"{s.dest.url}: {name} changed under every compare-and-swap: another writer",
            hint="One VM per destination: see runbooks/upload-pending.md (412).",
        )
    _put_alias(s, manifest)
    return moved


def _put_alias(s: _Session, manifest: Manifest) -> None:
    """The stable ``*_latest`` copy of the run's derived files (kpi/json/kpi_latest.json)."""
    for entry in manifest.files:
        alias = s.tree.alias_of(s.tree.exports / entry.path)
        if alias is None:
            continue
        name = check_name(data_name(s.tree.relative(alias)))
        try:
            path = s.tree.data_file(entry.path, manifest.dataset, manifest.as_of_date)
        except UnsafePathError as exc:
            raise StorageError(exc.message, hint=LOCAL_HINT) from None
        there = s.dest.head(name)
        if there is not None and _already_there(s, there, entry, path):
            continue
        content_type = CONTENT_TYPES.get(entry.format, JSON)
        s.dest.put_file(name, path, sha256=entry.sha256, content_type=content_type)


def _points_at(tree: RuntimeTree, run: ExportedRun) -> bool:
    """Does the local latest.json name this run?"""
    pointer = read_pointer(tree, run.dataset)
    return (
        pointer is not None
        and pointer.manifest == run.manifest_path
        and pointer.run_id == run.run_id
    )


def _send_run(s: _Session, run: ExportedRun, result: RunUpload) -> None:
    """The four steps of one run (module docstring)."""
    data, manifest = _manifest_bytes(s.tree, run)
    listing = _list_date(s, run.dataset, manifest.as_of_date, manifest)
    _send_files(s, manifest, listing, result)
    result.manifest = _put_manifest(s, manifest, data)
    result.deleted = _delete_leftovers(s, manifest, listing)
    if _points_at(s.tree, run):
        result.pointer_moved = _move_pointer(s, manifest)


def _upload_run(s: _Session, state: UploadState, run: ExportedRun) -> RunUpload:
    """Upload one run, recording it as pending first and as uploaded once done."""
    assert run.manifest is not None and run.as_of is not None
    dest = state.at(s.key)
    result = RunUpload(run.dataset, run.as_of, run.run_id, run.manifest.finished_at)
    previous = dest.recorded(run)
    dest.runs[run.as_of] = RunEntry(
        run.run_id,
        PENDING,
        run.manifest.finished_at,
        utc_now(),
        previous.error if previous else None,
    )
    s.save(state)
    s.say(f"uploading {result.label}: {len(run.manifest.files)} file(s)")
    clock = time.monotonic()
    try:
        _send_run(s, run, result)
    except _Superseded:
        result.status = "superseded"
    except StorageError as exc:
        if _superseded(s.tree, run):
            result.status = "superseded"
        else:
            result.error, result.transient = s.text(exc), exc.transient
    result.seconds = time.monotonic() - clock
    if result.status == "superseded":
        dest.runs.pop(run.as_of, None)
        s.say(f"{result.label} was re-exported or removed meanwhile: left to the new run")
    elif result.error is not None:
        dest.runs[run.as_of] = RunEntry(
            run.run_id, PENDING, run.manifest.finished_at, utc_now(), result.error
        )
        log.warning("upload of %s to %s failed: %s", result.label, s.key, result.error)
    else:
        result.status = UPLOADED
        dest.runs[run.as_of] = RunEntry(run.run_id, UPLOADED, run.manifest.finished_at, utc_now())
        s.say(
            f"uploaded {result.label}: {result.files} sent, {result.skipped} already there, "
            f"{result.bytes:,} bytes in {result.seconds:.1f}s"
        )
    s.save(state)
    return result


# ----------------------------------------------------------------------------- a dataset


def _remote_manifests(
    target: Destination, dataset: str, days: set[date]
) -> dict[tuple[date, str], int]:
    """(date, run id) -> size of the dataset's remote manifests of these dates."""
    prefixes = (
        [manifests_prefix(dataset)]
        if len(days) > 20
        else [f"{manifests_prefix(dataset)}{dataset}_{d.isoformat()}." for d in sorted(days)]
    )
    found: dict[tuple[date, str], int] = {}
    for prefix in prefixes:
        for info in target.list(prefix):
            parsed = parse_manifest_name(info.name, dataset)
            if parsed is not None and parsed[0] in days:
                found[parsed] = info.size
    return found


def record_found(
    tree: RuntimeTree,
    target: Destination,
    dataset: str,
    dest: DestinationState,
    runs: list[ExportedRun],
) -> list[ExportedRun]:
    """Runs the state does not record whose manifest is in the destination already (their
    upload got that far): recorded as uploaded in ``dest``, nothing sent. Returns them."""
    unrecorded = [r for r in runs if dest.recorded(r) is None and r.as_of is not None]
    if not unrecorded:
        return []
    remote = _remote_manifests(target, dataset, {r.as_of for r in unrecorded if r.as_of})
    found: list[ExportedRun] = []
    for run in unrecorded:
        assert run.as_of is not None and run.manifest is not None
        size = remote.get((run.as_of, run.run_id))
        if size is None or size != _size(tree, run):
            continue
        dest.runs[run.as_of] = RunEntry(run.run_id, UPLOADED, run.manifest.finished_at, utc_now())
        found.append(run)
    return found


def _size(tree: RuntimeTree, run: ExportedRun) -> int:
    try:
        with files.open_read(tree, run.manifest_path, Place.MANIFEST) as handle:
            return len(handle.read())
    except (OSError, UnsafePathError):
        return -1


def _state_for_plan(s: _Session, dataset: str) -> tuple[UploadState, str | None]:
    """The dataset's state for a dry run: one that cannot be trusted is rebuilt in memory."""
    state = read_state(s.tree, dataset)
    problem = state.problem
    if problem is None:
        return state, None
    state = UploadState(dataset)
    runs = local_runs(s.tree, dataset, skip_publishing=False)
    record_found(s.tree, s.dest, dataset, state.at(s.key), runs)
    return state, problem


def _follow_pointer(s: _Session, dataset: str, dest: DestinationState) -> str | None:
    """Move the remote pointer to the run the local latest.json names, when that run is
    uploaded (the local pointer may have moved back: a bogus run removed). The run it moved
    to, or None."""
    pointer = read_pointer(s.tree, dataset)
    if pointer is None or pointer.manifest is None:
        return None
    target = read_run(s.tree, dataset, pointer.manifest, marked=False)
    if target.manifest is None or not dest.uploaded(target):
        return None
    try:
        _, manifest = _manifest_bytes(s.tree, target)
    except _Superseded:
        return None
    return manifest.run_id if _move_pointer(s, manifest) else None


def _finish(s: _Session, state: UploadState, outcome: DatasetUpload) -> None:
    """What stays pending afterwards, and how the dataset's last upload ended."""
    dest = state.at(s.key)
    left = pending_runs(s.tree, outcome.dataset, dest)
    outcome.pending = len(left)
    outcome.oldest_pending = min(
        (r.manifest.finished_at for r in left if r.manifest is not None), default=None
    )
    errors = [r.error for r in outcome.runs if r.error]
    dest.last_upload = LastUpload(
        utc_now(), "failed" if errors else "ok", s.run.run_id, errors[0] if errors else None
    )
    s.save(state)


Select = Callable[[list[ExportedRun]], list[ExportedRun]]


def _upload_dataset(
    s: _Session,
    dataset: str,
    select: Select,
    *,
    wait_seconds: float,
    passes: int,
    export: bool = False,
    again: bool = False,
) -> DatasetUpload:
    """Upload the selected runs of one dataset, oldest first, under its upload lock; then
    follow the local pointer. A transient failure stops the dataset (``transient``); a
    permanent one leaves that run pending and goes on. ``export``: the runs an export just
    published (its journal is still there; none of them can be in the destination yet).
    ``again``: the selected runs recorded as uploaded are sent once more (what is there with
    the same checksum is skipped), for objects deleted or changed at the destination."""
    outcome = DatasetUpload(dataset)
    with upload_lock(s.run, dataset, wait_seconds):
        sweep_state_temps(s.tree, dataset)
        state = read_state(s.tree, dataset)
        outcome.state_problem = state.problem
        candidates: list[ExportedRun] = []
        attempted: set[tuple[date | None, str]] = set()
        try:
            if state.problem is not None:
                state = _rebuild(s, state)
            dest = state.at(s.key)
            for _ in range(passes):
                candidates = select(local_runs(s.tree, dataset, skip_publishing=not export))
                if not export:
                    record_found(s.tree, s.dest, dataset, dest, candidates)
                todo = [
                    r
                    for r in candidates
                    if (again or not dest.uploaded(r)) and (r.as_of, r.run_id) not in attempted
                ]
                if not attempted:
                    outcome.already = len(candidates) - len(todo)
                if not todo:
                    break
                for run in todo:
                    attempted.add((run.as_of, run.run_id))
                    result = _upload_run(s, state, run)
                    outcome.runs.append(result)
                    if result.transient:
                        raise _Stop(result)
            outcome.pointer_moved = _follow_pointer(s, dataset, dest)
        except _Stop:
            outcome.transient = True
        except StorageError as exc:  # a listing, or the pointer's move
            outcome.error, outcome.transient = s.text(exc), exc.transient
            log.warning("upload of %s to %s failed: %s", dataset, s.key, outcome.error)
            _mark_pending(state.at(s.key), candidates, outcome.error)
        finally:
            _finish(s, state, outcome)
    return outcome


def _rebuild(s: _Session, bad: UploadState) -> UploadState:
    """A state file that cannot be trusted, rebuilt from the local manifests and the
    destination's: the runs whose manifest is there count as uploaded."""
    log.warning("%s; rebuilding it from the manifests here and in %s", bad.problem, s.key)
    state = UploadState(bad.dataset)
    runs = local_runs(s.tree, bad.dataset, skip_publishing=False)
    record_found(s.tree, s.dest, bad.dataset, state.at(s.key), runs)
    s.save(state)
    return state


def _mark_pending(dest: DestinationState, runs: list[ExportedRun], error: str) -> None:
    """Runs a failure stopped before their upload began: pending, and why."""
    for run in runs:
        if run.as_of is None or run.manifest is None or dest.uploaded(run):
            continue
        dest.runs[run.as_of] = RunEntry(
            run.run_id, PENDING, run.manifest.finished_at, utc_now(), error
        )


class _Stop(Exception):  # noqa: N818 - control flow
    def __init__(self, result: RunUpload) -> None:
        super().__init__(result.error)
        self.result = result


# --------------------------------------------------------------------------- `abaco upload`


def _datasets(tree: RuntimeTree, dataset: str | None) -> list[str]:
    names = [folder.name for folder in dataset_dirs(tree)]
    if dataset is None:
        return names
    if dataset not in REGISTRY and dataset not in names:
        known = ", ".join(sorted(set(REGISTRY) | set(names)))
        raise UsageError(f"unknown dataset {dataset!r}; known datasets: {known}")
    return [dataset] if dataset in names else []


def _since(since: timedelta | None, now: datetime) -> Select:
    def select(runs: list[ExportedRun]) -> list[ExportedRun]:
        if since is None:
            return runs
        cutoff = now - since
        return [r for r in runs if r.manifest is not None and r.manifest.finished_at >= cutoff]

    return select


def upload(
    run: Run,
    *,
    destination: str | None = None,
    dataset: str | None = None,
    since: timedelta | None = None,
    dry_run: bool = False,
    again: bool = False,
    progress: Progress | None = None,
) -> UploadResult:
    """Upload every successful run not yet uploaded (pending, or never recorded and missing
    from the destination), dataset by dataset, oldest first; idempotent. Without a destination
    nothing happens (``destination`` None in the result). ``again``: the runs recorded as
    uploaded too (objects deleted or changed at the destination are sent again)."""
    url = destination_url(run.settings, destination)
    names = _datasets(run.tree, dataset)
    if url is None:
        return UploadResult(None, dry_run)
    target = open_destination(url, run.settings)
    try:
        if dry_run:
            return _plan(run, target, names, since, progress, again=again)
        return _upload_audited(run, target, names, dataset, since, progress, again=again)
    finally:
        target.close()


def _upload_audited(
    run: Run,
    target: Destination,
    names: list[str],
    dataset: str | None,
    since: timedelta | None,
    progress: Progress | None,
    *,
    again: bool = False,
) -> UploadResult:
    s = _Session(run, target, progress)
    result = UploadResult(s.key, run_id=run.run_id)
    select = _since(since, run.started)
    succeeded = False
    try:
        with run.audited(
            arguments={
                "destination": s.key,
                "dataset": dataset,
                "since": format_duration(since) if since else None,
                "again": again,
            },
            datasets=names,
            reads_source=False,
        ) as audit:
            for name in names:
                if result.stopped:
                    break
                try:
                    outcome = _upload_dataset(
                        s,
                        name,
                        select,
                        wait_seconds=run.settings.lock_timeout_seconds,
                        passes=MAX_PASSES,
                        again=again,
                    )
                except LockedError as exc:
                    outcome = DatasetUpload(name, locked=exc.message)
                result.datasets.append(outcome)
                if outcome.transient:
                    result.stopped = name
            audit.details |= _details(result)
            if result.exit_code:
                audit.exit_code = result.exit_code
                audit.error = {"type": "UploadFailed", "message": summary(result)}
        succeeded = not result.exit_code
    finally:
        run.metrics(
            metrics.upload_update(
                [d.gauge() for d in result.datasets if not d.locked],
                finished=time.time(),
                sent_bytes=result.bytes,
                command_success=succeeded,
            )
        )
    return result


def _details(result: UploadResult) -> dict[str, Any]:
    """What the audit record of `abaco upload` keeps."""
    return {
        "destination": result.destination,
        "uploaded": [
            {
                "dataset": r.dataset,
                "as_of_date": r.as_of.isoformat(),
                "run_id": r.run_id,
                "files": r.files,
                "skipped": r.skipped,
                "bytes": r.bytes,
                "deleted": len(r.deleted),
            }
            for r in result.uploaded
        ],
        "pending": [
            {"dataset": r.dataset, "as_of_date": r.as_of.isoformat(), "run_id": r.run_id,
             "error": r.error}
            for r in result.failed
        ],
        "errors": result.errors,
        "locked": result.locked,
        "state_rebuilt": [d.dataset for d in result.datasets if d.state_problem],
        "pointers_moved": {d.dataset: d.pointer_moved for d in result.datasets if d.pointer_moved},
    }  # fmt: skip


def summary(result: UploadResult) -> str:
    """One line on how an upload ended."""
    dest = result.destination or "(none)"
    errors = result.errors
    if errors or result.stopped:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        first = errors[0] if errors else result.stopped
        return (
            f"upload to {dest}: {len(result.failed)} run(s) still pending; {first}{more}; "
            "`abaco upload` tries again"
        )
    if result.locked:
        return f"upload to {dest}: skipped {'; '.join(result.locked)}"
    return f"uploaded {len(result.uploaded)} run(s) to {dest}"


def _plan(
    run: Run,
    target: Destination,
    names: list[str],
    since: timedelta | None,
    progress: Progress | None,
    *,
    again: bool = False,
) -> UploadResult:
    """What an upload would send: read-only, here and in the destination."""
    s = _Session(run, target, progress)
    result = UploadResult(s.key, dry_run=True)
    select = _since(since, run.started)
    for name in names:
        state, problem = _state_for_plan(s, name)
        dest = state.at(s.key)
        outcome = DatasetUpload(name, state_problem=problem)
        candidates = select(local_runs(s.tree, name))
        found = {id(r) for r in record_found(s.tree, s.dest, name, dest, candidates)}
        for item in candidates:
            assert item.manifest is not None and item.as_of is not None
            if dest.uploaded(item) and id(item) not in found and not again:
                outcome.already += 1
                continue
            there = id(item) in found and not again
            outcome.runs.append(
                RunUpload(
                    name,
                    item.as_of,
                    item.run_id,
                    item.manifest.finished_at,
                    status="found" if there else "planned",
                    files=0 if there else len(item.manifest.files),
                    bytes=0 if there else sum(f.bytes for f in item.manifest.files),
                )
            )
        outcome.pending = len(pending_runs(s.tree, name, dest))
        result.datasets.append(outcome)
    return result


# ------------------------------------------------------------------------- an export's upload


def upload_published(
    run: Run, published: list[tuple[str, date]], target: Destination, progress: Progress | None
) -> UploadOutcome:
    """After an export published: upload the runs it published, dataset by dataset, each
    under the dataset's upload lock taken without waiting (a long `abaco upload` holding it
    never makes the export wait: the run stays pending and that upload, or the next, sends
    it). Never raises for a failed upload: the outcome says pending and why, the audit record
    of the export carries it (``details.upload``) and the metrics are written."""
    s = _Session(run, target, progress)
    outcome = UploadOutcome(s.key, UPLOADED)
    reasons: list[str] = []
    gauges: list[metrics.UploadGauge] = []
    mine = set(published)
    stopped = False
    for dataset in sorted({name for name, _ in published}):

        def select(runs: list[ExportedRun], name: str = dataset) -> list[ExportedRun]:
            return [r for r in runs if (name, r.as_of) in mine and r.run_id == run.run_id]

        if stopped:
            reasons.append(f"{dataset}: not tried after that failure")
            gauges.append(_pending_gauge(s, dataset))
            continue
        try:
            done = _upload_dataset(s, dataset, select, wait_seconds=0, passes=1, export=True)
        except LockedError:
            holder = describe_holder(run.tree.upload_lock_path(dataset))
            reasons.append(
                f"{dataset}: another upload holds its upload lock ({holder}); it, or the next "
                "`abaco upload`, uploads this run"
            )
            gauges.append(_pending_gauge(s, dataset))
            continue
        except AbacoError as exc:  # the upload state could not be written
            reasons.append(f"{dataset}: {s.text(exc)}")
            gauges.append(_pending_gauge(s, dataset))
            continue
        outcome.runs += done.runs
        gauges.append(done.gauge())
        reasons += [f"{dataset}: {r.error}" for r in done.failed]
        reasons += [f"{dataset}: {done.error}"] if done.error else []
        stopped = done.transient
    run.metrics(
        metrics.upload_update(
            gauges, finished=time.time(), sent_bytes=sum(r.bytes for r in outcome.runs)
        )
    )
    if reasons:
        outcome.status = PENDING
        outcome.error = "; ".join(reasons)
    return outcome


def _pending_gauge(s: _Session, dataset: str) -> metrics.UploadGauge:
    """What is pending for a dataset this upload did not touch (read without its lock)."""
    dest = read_state(s.tree, dataset).at(s.key)
    left = pending_runs(s.tree, dataset, dest)
    oldest = min((r.manifest.finished_at for r in left if r.manifest), default=None)
    return metrics.UploadGauge(dataset, len(left), oldest.timestamp() if oldest else None)


def pending_message(outcome: UploadOutcome) -> str:
    """The one line of an export whose upload did not finish (exit 5)."""
    return (
        f"exported and published locally; upload to {outcome.destination} pending: "
        f"{outcome.error}; `abaco upload` finishes it"
    )
