"""The manifest: one per dataset and as-of date, written last, naming every file of a run.

One typed model is used by the writer, prune, verify, healthcheck and the publish journal. A
manifest is read as untrusted input: its dates are parsed as dates, its times as aware
timestamps, and every file it names must be a data file of its own dataset and as-of date
(``RuntimeTree.data_place``); anything else raises ManifestError, and the run is then reported
and left alone, never acted on.

Version 2 adds ``snapshot_at`` (the instant of the source the run read: the start of its
snapshot transaction), ``dq`` (the data-quality checks run in that snapshot) and, per file,
the ``run_id`` and ``snapshot_at`` it came from: a run replaces the formats it writes and keeps
the date's files of other formats, which describe an earlier instant. Version 1 manifests (no
such fields: every file is the run's own) are read too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from abaco_cli.runtime.tree import RUN_ID, RuntimeTree, parse_day

MANIFEST_VERSION = 2
READABLE_VERSIONS = frozenset({1, 2})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TEXT_LIMIT = 200


class ManifestError(ValueError):
    """A manifest that cannot be trusted: ``kind`` is bad_manifest or bad_path."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def iso_time(moment: datetime) -> str:
    """``2025-06-30T12:00:00.000Z``: how manifests and audit records write a time."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: object) -> datetime | None:
    """An ISO timestamp with a time zone (``2025-06-30T12:00:00.000Z``), else None."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class ManifestFile:
    """One published file: where (relative to exports/), what, how big, and its checksum."""

    path: str
    table: str
    format: str
    rows: int
    bytes: int
    sha256: str
    columns: tuple[Column, ...] = ()
    run_id: str = ""  # the run that wrote it; "" in version 1: the manifest's own run
    snapshot_at: datetime | None = None  # the source instant it describes (version 2)

    def origin(self, manifest_run: str) -> str:
        """The run that wrote this file."""
        return self.run_id or manifest_run

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "table": self.table,
            "format": self.format,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "columns": [{"name": c.name, "type": c.type} for c in self.columns],
            "run_id": self.run_id,
            "snapshot_at": iso_time(self.snapshot_at) if self.snapshot_at else None,
        }


@dataclass(frozen=True)
class Manifest:
    run_id: str
    dataset: str
    as_of_date: date
    schema_version: int
    tool_version: str
    started_at: datetime
    finished_at: datetime
    source: Mapping[str, str]
    files: tuple[ManifestFile, ...]
    status: str = "success"
    manifest_version: int = MANIFEST_VERSION
    snapshot_at: datetime | None = None
    dq: Mapping[str, Any] | None = None  # the data-quality checks of the snapshot (version 2)
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields of a newer writer, kept

    @property
    def successful(self) -> bool:
        return self.status == "success"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "manifest_version": self.manifest_version,
            "status": self.status,
            "run_id": self.run_id,
            "dataset": self.dataset,
            "as_of_date": self.as_of_date.isoformat(),
            "schema_version": self.schema_version,
            "tool_version": self.tool_version,
            "started_at": iso_time(self.started_at),
            "finished_at": iso_time(self.finished_at),
            "snapshot_at": iso_time(self.snapshot_at) if self.snapshot_at else None,
            "source": dict(self.source),
            "files": [f.to_json() for f in self.files],
            **({"dq": dict(self.dq)} if self.dq is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(
        cls, text: str, tree: RuntimeTree, *, dataset: str, as_of: date | None = None
    ) -> Manifest:
        """Parse and validate; ManifestError(kind, message) when it cannot be trusted.

        ``dataset`` is the folder the manifest was found in and ``as_of`` the date its file
        name gives: a manifest that claims another dataset or date is a bad_manifest.
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ManifestError("bad_manifest", f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ManifestError("bad_manifest", "not a JSON object")
        return cls.from_dict(data, tree, dataset=dataset, as_of=as_of)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], tree: RuntimeTree, *, dataset: str, as_of: date | None
    ) -> Manifest:
        version = data.get("manifest_version")
        if version not in READABLE_VERSIONS:
            raise ManifestError("bad_manifest", f"unknown manifest_version {version!r}")
        if data.get("dataset") != dataset:
            raise ManifestError(
                "bad_manifest", f"it names dataset {data.get('dataset')!r}, not {dataset!r}"
            )
        day = parse_day(data["as_of_date"]) if isinstance(data.get("as_of_date"), str) else None
        if day is None:
            raise ManifestError(
                "bad_manifest", f"as_of_date {data.get('as_of_date')!r} is not a date"
            )
        if as_of is not None and day != as_of:
            raise ManifestError(
                "bad_manifest", f"it says as_of_date {day}, but its name says {as_of}"
            )
        run_id = data.get("run_id")
        if not isinstance(run_id, str) or not RUN_ID.match(run_id):
            raise ManifestError("bad_manifest", f"run_id {run_id!r} is not a run id")
        started, finished = parse_time(data.get("started_at")), parse_time(data.get("finished_at"))
        if started is None or finished is None:
            raise ManifestError("bad_manifest", "started_at or finished_at is not a timestamp")
        files = tuple(_file(item, tree, dataset, day) for item in _list(data.get("files")))
        snapshot = data.get("snapshot_at")
        snapshot_at = parse_time(snapshot)
        if snapshot is not None and snapshot_at is None:
            raise ManifestError("bad_manifest", "snapshot_at is not a timestamp")
        dq = data.get("dq")
        if dq is not None and not isinstance(dq, dict):
            raise ManifestError("bad_manifest", "dq is not an object")
        known = {
            "manifest_version", "status", "run_id", "dataset", "as_of_date", "schema_version",
            "tool_version", "started_at", "finished_at", "snapshot_at", "source", "files", "dq",
        }  # fmt: skip
        return cls(
            run_id=run_id,
            dataset=dataset,
            as_of_date=day,
            schema_version=_int(data.get("schema_version"), "schema_version"),
            tool_version=_text(data.get("tool_version"), "tool_version"),
            started_at=started,
            finished_at=finished,
            source={str(k): str(v) for k, v in _dict(data.get("source")).items()},
            files=files,
            status=_text(data.get("status"), "status"),
            manifest_version=int(version),
            snapshot_at=snapshot_at,
            dq=dq,
            extra={k: v for k, v in data.items() if k not in known},
        )


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ManifestError("bad_manifest", "files is not a list")
    return value


def _dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError("bad_manifest", "source is not an object")
    return value


def _int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError("bad_manifest", f"{name} {value!r} is not a count")
    return value


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) > _TEXT_LIMIT:
        raise ManifestError("bad_manifest", f"{name} is not a short text")
    return value


def _file(item: object, tree: RuntimeTree, dataset: str, day: date) -> ManifestFile:
    if not isinstance(item, dict) or not isinstance(item.get("path"), str):
        raise ManifestError("bad_manifest", "a file entry has no path")
    path = item["path"]
    place = tree.data_place(path)
    if place is None or place.dataset != dataset or place.as_of != day:
        raise ManifestError(
            "bad_path",
            f"it names {path!r}, which is not a data file of {dataset} as of {day}",
        )
    sha = item.get("sha256")
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise ManifestError("bad_manifest", f"the sha256 of {path} is not a sha256")
    columns = item.get("columns", [])
    if not isinstance(columns, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) for c in columns
    ):
        raise ManifestError("bad_manifest", f"the columns of {path} are not a list of columns")
    origin = item.get("run_id", "")
    if origin and (not isinstance(origin, str) or not RUN_ID.match(origin)):
        raise ManifestError("bad_manifest", f"the run_id of {path} is not a run id")
    snapshot = item.get("snapshot_at")
    snapshot_at = parse_time(snapshot)
    if snapshot is not None and snapshot_at is None:
        raise ManifestError("bad_manifest", f"the snapshot_at of {path} is not a timestamp")
    return ManifestFile(
        path=path,
        table=_text(item.get("table"), "table"),
        format=_text(item.get("format"), "format"),
        rows=_int(item.get("rows"), f"rows of {path}"),
        bytes=_int(item.get("bytes"), f"bytes of {path}"),
        sha256=sha,
        columns=tuple(Column(str(c["name"]), str(c.get("type", ""))) for c in columns),
        run_id=str(origin or ""),
        snapshot_at=snapshot_at,
    )
