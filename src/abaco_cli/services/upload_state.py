"""What has been uploaded where: the remote names of a run, and a small state file per dataset.

The remote layout (names relative to the destination's prefix):

- ``exports/<path>``: every data file at the path it has locally below ``exports/``;
  ``exports/<dataset>/json/<dataset>_latest.json`` is the stable alias of the newest run;
- ``_control/manifests/<dataset>/<dataset>_<D>.<run_id>.manifest.json``: one per run, created
  once (custom metadata ``dataset``, ``as_of_date``, ``run_id``);
- ``_control/latest/<dataset>.json``: the run the dataset's local ``latest.json`` names (the
  remote manifest's name and the remote names of its files).

``<runtime_dir>/upload/<dataset>.state.json`` says, per destination, which run of each as-of
date is uploaded or pending, and how the last upload ended. It is written atomically under the
dataset's upload lock and read as untrusted input: a file that is not exactly what abaco writes
(dates, run ids, statuses, times) is reported and treated as empty; `abaco upload` then rebuilds
it from the local manifests and the destination's manifests. Nothing here opens a destination.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import PurePosixPath
from typing import Any

from abaco_cli.errors import UnsafePathError, UsageError
from abaco_cli.runtime import files, journal
from abaco_cli.runtime.inventory import ExportedRun, exported_runs
from abaco_cli.runtime.manifest import iso_time, parse_time
from abaco_cli.runtime.tree import DERIVED_FOLDERS, RUN_ID, Place, RuntimeTree, parse_day

log = logging.getLogger("abaco.upload")

STATE_VERSION = 1
UPLOADED, PENDING = "uploaded", "pending"
STATE_LIMIT = 4 * 1024 * 1024  # bytes of a state file read at most
EXPORTS = "exports/"
MANIFESTS = "_control/manifests/"
LATEST = "_control/latest/"
_TEXT_LIMIT = 2000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ------------------------------------------------------------------------------ remote names


def destination_key(url: str) -> str:
    """How the state names a destination: its display URL (never a credential in it)."""
    from abaco_cli.storage.url import parse_destination

    try:
        return parse_destination(url).display
    except ValueError as exc:
        raise UsageError(f"invalid destination: {exc}") from None


def data_name(path: str) -> str:
    """The remote name of a data file a manifest names (``dpd/loans/...`` -> ``exports/...``)."""
    return EXPORTS + path


def manifests_prefix(dataset: str) -> str:
    return f"{MANIFESTS}{dataset}/"


def manifest_name(dataset: str, as_of: date, run_id: str) -> str:
    return f"{manifests_prefix(dataset)}{dataset}_{as_of.isoformat()}.{run_id}.manifest.json"


def pointer_name(dataset: str) -> str:
    return f"{LATEST}{dataset}.json"


def parse_manifest_name(name: str, dataset: str) -> tuple[date, str] | None:
    """(as-of date, run id) of a remote manifest's name (an untrusted listing), else None."""
    prefix = f"{manifests_prefix(dataset)}{dataset}_"
    suffix = ".manifest.json"
    if not name.startswith(prefix) or not name.endswith(suffix):
        return None
    core = name[len(prefix) : -len(suffix)]
    day, dot, run_id = core[:10], core[10:11], core[11:]
    parsed = parse_day(day)
    if parsed is None or dot != "." or not RUN_ID.match(run_id):
        return None
    return parsed, run_id


def in_date(tree: RuntimeTree, name: str, dataset: str, as_of: date) -> bool:
    """Is a remote name (already checked with ``check_name``) a data file of this dataset and
    as-of date, below ``exports/<dataset>/``, named as abaco names its files
    (``<dataset>_<table>_<D>.<format>``, ``json/<dataset>_<D>.json``)? Only such objects are
    ever deleted: anything else someone put in a partition (a note, a copy, a ``.bak``) stays."""
    if not name.startswith(f"{EXPORTS}{dataset}/"):
        return False
    place = tree.data_place(name[len(EXPORTS) :])
    if place is None or place.dataset != dataset or place.as_of != as_of:
        return False
    base = PurePosixPath(name).name
    day = as_of.isoformat()
    if place.table in DERIVED_FOLDERS:
        return base == f"{dataset}_{day}.json"
    formats = (place.folder_format,) if place.folder_format else FILE_FORMATS
    return base in {f"{dataset}_{place.table}_{day}.{fmt}" for fmt in formats}


# the formats a plain table folder held before one format a folder
FILE_FORMATS = ("parquet", "csv", "json")


def date_prefixes(dataset: str, as_of: date, folders: Iterable[str]) -> list[str]:
    """The listing prefixes that hold a date's objects: each table folder's partition, and the
    derived files of the date (``exports/<dataset>/json/<dataset>_<D>.``)."""
    day = as_of.isoformat()
    found = {f"{EXPORTS}{dataset}/json/{dataset}_{day}."}
    for folder in folders:
        if folder != "json":
            found.add(f"{EXPORTS}{dataset}/{folder}/as_of_date={day}/")
    return sorted(found)


def table_folders(paths: Iterable[str]) -> set[str]:
    """The table folders (``loans``, ``loans.csv``, ``json``) of manifest paths."""
    return {PurePosixPath(p).parts[1] for p in paths if len(PurePosixPath(p).parts) >= 3}


# ----------------------------------------------------------------------------------- the state


class StateError(ValueError):
    """A state file that is not exactly what abaco writes (reported, then rebuilt)."""


@dataclass(frozen=True)
class RunEntry:
    """What the state says of one as-of date's run at one destination."""

    run_id: str
    status: str  # uploaded | pending
    finished_at: datetime | None  # when the run finished exporting (its manifest says)
    updated_at: datetime | None  # when this entry was written
    error: str | None = None  # why its last upload did not finish

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "finished_at": iso_time(self.finished_at) if self.finished_at else None,
            "updated_at": iso_time(self.updated_at) if self.updated_at else None,
            "error": self.error,
        }


@dataclass(frozen=True)
class LastUpload:
    """How the last upload of the dataset to one destination ended."""

    at: datetime
    status: str  # ok | failed
    run_id: str  # the command's run (audit show RUN_ID)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso_time(self.at),
            "status": self.status,
            "run_id": self.run_id,
            "error": self.error,
        }


@dataclass
class DestinationState:
    runs: dict[date, RunEntry] = field(default_factory=dict)
    last_upload: LastUpload | None = None

    def uploaded(self, run: ExportedRun) -> bool:
        """Is this very run (its as-of date and run id) recorded as uploaded?"""
        entry = self.runs.get(run.as_of) if run.as_of is not None else None
        return entry is not None and entry.status == UPLOADED and entry.run_id == run.run_id

    def recorded(self, run: ExportedRun) -> RunEntry | None:
        """The entry of this very run, if the state has one."""
        entry = self.runs.get(run.as_of) if run.as_of is not None else None
        return entry if entry is not None and entry.run_id == run.run_id else None


@dataclass
class UploadState:
    dataset: str
    destinations: dict[str, DestinationState] = field(default_factory=dict)
    problem: str | None = None  # the file could not be trusted: it was read as empty

    def at(self, destination: str) -> DestinationState:
        return self.destinations.setdefault(destination, DestinationState())

    def to_json(self) -> dict[str, Any]:
        return {
            "state_version": STATE_VERSION,
            "dataset": self.dataset,
            "destinations": {
                key: {
                    "runs": {
                        day.isoformat(): entry.to_json() for day, entry in sorted(dest.runs.items())
                    },
                    "last_upload": dest.last_upload.to_json() if dest.last_upload else None,
                }
                for key, dest in sorted(self.destinations.items())
            },
        }


def _text(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _TEXT_LIMIT:
        raise StateError(f"{what} is not a short text")
    return value


def _time(value: object, what: str, *, required: bool = False) -> datetime | None:
    if value is None and not required:
        return None
    moment = parse_time(value)
    if moment is None:
        raise StateError(f"{what} is not a timestamp")
    return moment


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StateError(f"{what} is not an object")
    return value


def _entry(value: object, where: str) -> RunEntry:
    item = _object(value, where)
    run_id, status = item.get("run_id"), item.get("status")
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise StateError(f"{where}: run_id {str(run_id)[:40]!r} is not a run id")
    if status not in (UPLOADED, PENDING):
        raise StateError(f"{where}: status {str(status)[:40]!r} is not uploaded or pending")
    return RunEntry(
        run_id=run_id,
        status=status,
        finished_at=_time(item.get("finished_at"), f"{where}: finished_at"),
        updated_at=_time(item.get("updated_at"), f"{where}: updated_at"),
        error=_text(item.get("error"), f"{where}: error"),
    )


def _last(value: object, where: str) -> LastUpload | None:
    if value is None:
        return None
    item = _object(value, where)
    status, run_id = item.get("status"), item.get("run_id")
    if status not in ("ok", "failed"):
        raise StateError(f"{where}: status {str(status)[:40]!r} is not ok or failed")
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise StateError(f"{where}: run_id is not a run id")
    at = _time(item.get("at"), f"{where}: at", required=True)
    assert at is not None
    return LastUpload(at, status, run_id, _text(item.get("error"), f"{where}: error"))


def parse_state(text: str, dataset: str) -> UploadState:
    """The state of ``dataset`` from its file's text; StateError when it cannot be trusted."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(f"not JSON: {exc}") from None
    top = _object(data, "the file")
    if top.get("state_version") != STATE_VERSION:
        raise StateError(f"unknown state_version {str(top.get('state_version'))[:20]!r}")
    if top.get("dataset") != dataset:
        raise StateError(f"it names dataset {str(top.get('dataset'))[:40]!r}, not {dataset!r}")
    state = UploadState(dataset)
    for key, value in _object(top.get("destinations"), "destinations").items():
        if not isinstance(key, str) or not key or len(key) > _TEXT_LIMIT or _CONTROL.search(key):
            raise StateError("a destination is not a short line of text")
        item = _object(value, f"destination {key}")
        dest = state.at(key)
        for day_text, entry in _object(item.get("runs"), f"{key}: runs").items():
            day = parse_day(day_text) if isinstance(day_text, str) else None
            if day is None:
                raise StateError(f"{key}: {str(day_text)[:40]!r} is not a date")
            dest.runs[day] = _entry(entry, f"{key}: {day}")
        dest.last_upload = _last(item.get("last_upload"), f"{key}: last_upload")
    return state


def read_state(tree: RuntimeTree, dataset: str) -> UploadState:
    """The dataset's upload state; empty when there is none; empty with ``problem`` set when the
    file cannot be trusted (never used as it is)."""
    path = tree.upload_state_path(dataset)
    try:
        with files.open_read(tree, path, Place.UPLOAD_STATE) as handle:
            raw = handle.read(STATE_LIMIT + 1)
    except FileNotFoundError:
        return UploadState(dataset)
    except (OSError, UnsafePathError) as exc:
        return UploadState(dataset, problem=f"{path} cannot be read: {exc}")
    try:
        if len(raw) > STATE_LIMIT:
            raise StateError(f"larger than {STATE_LIMIT} bytes")
        return parse_state(raw.decode("utf-8"), dataset)
    except (StateError, UnicodeDecodeError) as exc:
        return UploadState(dataset, problem=f"{path} is not a valid upload state: {exc}")


def write_state(tree: RuntimeTree, state: UploadState, run_id: str) -> None:
    """Write the state atomically (call under the dataset's upload lock). Entries of dates no
    local manifest has any more (pruned) are dropped: the file stays small."""
    live = {run.as_of for run in exported_runs(tree, state.dataset) if run.as_of is not None}
    for dest in state.destinations.values():
        dest.runs = {day: entry for day, entry in dest.runs.items() if day in live}
    body = (json.dumps(state.to_json(), indent=2) + "\n").encode("utf-8")
    files.write_atomic(
        tree, tree.upload_state_path(state.dataset), Place.UPLOAD_STATE, body, run_id
    )
    state.problem = None


def sweep_state_temps(tree: RuntimeTree, dataset: str) -> None:
    """Temporary files of the dataset's state left by a crash (call under its upload lock)."""
    folder = tree.upload_dir
    if not files.real_folder(tree, folder):
        return
    prefix = f".{tree.upload_state_path(dataset).name}."
    for path in sorted(folder.iterdir()):
        if path.name.startswith(prefix) and files.is_temp_name(path.name):
            try:
                files.remove(tree, path, Place.TEMP)
            except (OSError, UnsafePathError):
                continue


# ------------------------------------------------------------------------------- local runs


def local_runs(
    tree: RuntimeTree, dataset: str, *, skip_publishing: bool = True
) -> list[ExportedRun]:
    """The dataset's successful runs that could be uploaded, oldest first (by the time they
    finished exporting, then by date). ``skip_publishing`` leaves out dates whose publish is in
    progress or was interrupted (their files may not match their manifest yet)."""
    waiting: set[date] = set()
    if skip_publishing:
        for item in journal.pending(tree):
            if item.record is not None and dataset in item.waiting:
                waiting.add(item.record.as_of)
    runs = [
        run
        for run in exported_runs(tree, dataset)
        if run.successful and run.manifest is not None and run.as_of not in waiting
    ]
    return sorted(runs, key=_age_order)


def _age_order(run: ExportedRun) -> tuple[datetime, date]:
    assert run.manifest is not None
    return run.manifest.finished_at, run.manifest.as_of_date


def pending_runs(tree: RuntimeTree, dataset: str, dest: DestinationState) -> list[ExportedRun]:
    """Local runs not recorded as uploaded to the destination (pending, or never recorded),
    oldest first, a run still being published included. Local only: nothing is asked of the
    destination."""
    runs = local_runs(tree, dataset, skip_publishing=False)
    return [run for run in runs if not dest.uploaded(run)]


# ------------------------------------------------------------------------------- status


@dataclass(frozen=True)
class PendingRun:
    dataset: str
    as_of: date
    run_id: str
    finished_at: datetime  # when it finished exporting
    recorded: bool  # False: never recorded (an export without a destination, a new one)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "as_of_date": self.as_of.isoformat(),
            "run_id": self.run_id,
            "exported_at": iso_time(self.finished_at),
            "recorded": self.recorded,
            "error": self.error,
        }


@dataclass
class DatasetStatus:
    dataset: str
    pending: list[PendingRun] = field(default_factory=list)
    uploaded: int = 0  # local runs recorded as uploaded
    last_upload: LastUpload | None = None
    last_uploaded_at: datetime | None = None  # when a run of it was last recorded uploaded
    problem: str | None = None  # the state file is not trusted (the next upload rebuilds it)

    @property
    def oldest_pending(self) -> datetime | None:
        return min((p.finished_at for p in self.pending), default=None)

    def lag_seconds(self, now: datetime) -> float | None:
        """Age of the oldest pending run (None when nothing is pending)."""
        oldest = self.oldest_pending
        return max((now - oldest).total_seconds(), 0.0) if oldest is not None else None

    def to_json(self, now: datetime) -> dict[str, Any]:
        lag = self.lag_seconds(now)
        return {
            "dataset": self.dataset,
            "pending": [p.to_json() for p in self.pending],
            "uploaded": self.uploaded,
            "last_upload": self.last_upload.to_json() if self.last_upload else None,
            "last_uploaded_at": iso_time(self.last_uploaded_at) if self.last_uploaded_at else None,
            "lag_seconds": round(lag, 1) if lag is not None else None,
            "state_problem": self.problem,
        }


def dataset_status(tree: RuntimeTree, dataset: str, destination: str) -> DatasetStatus:
    """What is pending for one dataset at one destination, from the local tree and the state
    alone (nothing is asked of the destination)."""
    state = read_state(tree, dataset)
    dest = state.at(destination)
    status = DatasetStatus(dataset, last_upload=dest.last_upload, problem=state.problem)
    for run in local_runs(tree, dataset, skip_publishing=False):
        assert run.manifest is not None and run.as_of is not None
        entry = dest.recorded(run)
        if entry is not None and entry.status == UPLOADED:
            status.uploaded += 1
            if entry.updated_at is not None and (
                status.last_uploaded_at is None or entry.updated_at > status.last_uploaded_at
            ):
                status.last_uploaded_at = entry.updated_at
            continue
        status.pending.append(
            PendingRun(
                dataset,
                run.as_of,
                run.run_id,
                run.manifest.finished_at,
                recorded=entry is not None,
                error=entry.error if entry is not None else None,
            )
        )
    return status
