"""The lake's own objects under ``<dest>/lake/``: its state, the batch notes and manifests, and
the names of the change files.

``_state/lake.json`` is the lake's state: the last LSN whose changes are committed to the store
(the source of truth; the slot is only a cursor), the captured tables and their columns. It is
replaced by compare-and-swap only, so two writers never both win.
``_state/batch.json`` names the batch being written (its start and end LSN) before any of its
change files: a sync that dies half-way is replayed exactly (same bounds, same bytes).
``_batches/<start>_<end>.json`` is a batch's manifest, created once (create-only).
Everything read back is untrusted input: parsed strictly, names checked against their patterns.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from abaco_cli.errors import AbacoError
from abaco_cli.lake.lsn import format_lsn, lsn_key, parse_lsn, parse_lsn_key
from abaco_cli.storage import Destination, ObjectInfo, ObjectNotFound, PreconditionFailed

STATE_NAME = "lake/_state/lake.json"
BATCH_NOTE_NAME = "lake/_state/batch.json"
BATCHES_PREFIX = "lake/_batches/"
CHANGES_PREFIX = "lake/changes/"
TABLES_PREFIX = "lake/tables/"
FORMAT: Literal[1] = 1
M = TypeVar("M", bound=BaseModel)
_TABLE = r"[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}"
_CHANGE_FILE = re.compile(
    rf"^lake/changes/(?P<table>{_TABLE})/commit_date=(?P<date>\d{{4}}-\d{{2}}-\d{{2}})/"
    r"changes_(?P<start>[0-9A-F]{16})_(?P<end>[0-9A-F]{16})\.parquet$"
)
_MANIFEST = re.compile(r"^lake/_batches/(?P<start>[0-9A-F]{16})_(?P<end>[0-9A-F]{16})\.json$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class LakeStateError(AbacoError):
    """A lake object is not what abaco writes (edited, truncated, foreign)."""

    default_hint = "Run `abaco lake verify`; `abaco lake resync` rebuilds the lake from the source."


def _lsn_text(value: str) -> str:
    parse_lsn(value)  # ValueError -> a validation error
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnState(_Strict):
    name: str
    type_oid: int = Field(ge=0, lt=2**32)
    typmod: int

    @field_validator("name")
    @classmethod
    def _plain(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a plain column name")
        return value


class TableState(_Strict):
    """One captured table: its columns (with their source types, to notice a retyping), its
    key, its Arrow schema (Arrow IPC, base64), when it was loaded and what it holds."""

    columns: list[ColumnState]
    key: list[str]
    arrow_schema: str
    loaded_lsn: str
    rows: int = Field(ge=0)
    last_change_time: datetime | None = None

    @field_validator("loaded_lsn")
    @classmethod
    def _lsn(cls, value: str) -> str:
        return _lsn_text(value)

    @property
    def schema(self) -> pa.Schema:
        try:
            return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.arrow_schema)))
        except (ValueError, pa.ArrowException) as exc:
            raise LakeStateError(
                f"the lake state's schema of a table is unreadable: {exc}"
            ) from None

    @staticmethod
    def encode_schema(schema: pa.Schema) -> str:
        return base64.b64encode(schema.remove_metadata().serialize().to_pybytes()).decode("ascii")


class SourceState(_Strict):
    system_identifier: str
    database: str


class LakeState(_Strict):
    format: Literal[1] = FORMAT
    slot: str
    publication: str
    source: SourceState
    lsn: str
    updated: datetime
    tables: dict[str, TableState]
    dropped: bool = False
    compacted: datetime | None = None  # the last compaction (lake compact, or a sync's)

    @field_validator("lsn")
    @classmethod
    def _lsn(cls, value: str) -> str:
        return _lsn_text(value)

    @field_validator("slot", "publication")
    @classmethod
    def _plain(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a plain name")
        return value

    @field_validator("tables")
    @classmethod
    def _table_names(cls, value: dict[str, TableState]) -> dict[str, TableState]:
        for name in value:
            if not re.fullmatch(_TABLE, name):
                raise ValueError(f"{name!r} is not a table name like schema.table")
        return value

    @property
    def position(self) -> int:
        return parse_lsn(self.lsn)


class BatchNote(_Strict):
    """The batch being written: replayed with exactly these bounds after a crash."""

    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _lsn(cls, value: str) -> str:
        return _lsn_text(value)


class ManifestFile(_Strict):
    name: str
    table: str
    rows: int = Field(ge=0)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("name")
    @classmethod
    def _a_change_file(cls, value: str) -> str:
        if parse_change_file(value) is None:  # read back from a file: only the log's names
            raise ValueError(f"{value!r} is not the name of a change file")
        return value


class BatchManifest(_Strict):
    """What one batch wrote to the change log: deterministic (no run id, no clock), so a replay
    writes identical bytes."""

    format: Literal[1] = FORMAT
    kind: Literal["load", "changes"]
    start: str
    end: str
    transactions: int = Field(ge=0)
    last_commit_time: datetime | None
    changes: dict[str, dict[str, int]]
    files: list[ManifestFile]

    @field_validator("start", "end")
    @classmethod
    def _lsn(cls, value: str) -> str:
        return _lsn_text(value)


# ------------------------------------------------------------------------------------- names


def change_file_name(table: str, commit_date: date, start: int, end: int) -> str:
    return (
        f"{CHANGES_PREFIX}{table}/commit_date={commit_date.isoformat()}/"
        f"changes_{lsn_key(start)}_{lsn_key(end)}.parquet"
    )


def manifest_name(start: int, end: int) -> str:
    return f"{BATCHES_PREFIX}{lsn_key(start)}_{lsn_key(end)}.json"


@dataclass(frozen=True)
class ChangeFileName:
    """A change file's name, parsed (from a listing: untrusted until it parses)."""

    name: str
    table: str
    commit_date: date
    start: int
    end: int


def parse_change_file(name: str) -> ChangeFileName | None:
    """The parts of a change file's name; None for any other name."""
    found = _CHANGE_FILE.match(name)
    if found is None:
        return None
    try:
        day = date.fromisoformat(found["date"])
    except ValueError:
        return None
    return ChangeFileName(
        name, found["table"], day, parse_lsn_key(found["start"]), parse_lsn_key(found["end"])
    )


def parse_manifest_name(name: str) -> tuple[int, int] | None:
    found = _MANIFEST.match(name)
    if found is None:
        return None
    return parse_lsn_key(found["start"]), parse_lsn_key(found["end"])


def _dump(model: BaseModel) -> bytes:
    return (json.dumps(model.model_dump(mode="json"), sort_keys=True, indent=1) + "\n").encode()


# ------------------------------------------------------------------------------------ the store


class LakeStore:
    """The lake's objects on one destination (a folder, gs:// or s3://)."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination

    @property
    def url(self) -> str:
        return self.destination.url

    def _read(self, name: str) -> tuple[bytes, ObjectInfo] | None:
        try:
            return self.destination.get_bytes(name)
        except ObjectNotFound:
            return None

    def read_state(self) -> tuple[LakeState, str] | None:
        """The state and its version (for the compare-and-swap), or None when there is none."""
        found = self._read(STATE_NAME)
        if found is None:
            return None
        data, info = found
        return _parse(LakeState, data, f"{self.url}/{STATE_NAME}"), info.version

    def write_state(self, state: LakeState, *, version: str | None) -> str:
        """Replace the state only if it is still at ``version`` (None: only if there is none);
        LakeStateError when another writer changed it meanwhile."""
        try:
            info = self.destination.put_bytes(
                STATE_NAME,
                _dump(state),
                content_type="application/json",
                if_absent=version is None,
                if_version=version,
            )
        except PreconditionFailed:
            raise LakeStateError(
                f"the lake state at {self.url} changed while this run held it: another "
                "consumer wrote to the same lake",
                hint="Only one `abaco lake` command may write a lake; check `abaco lake status` "
                "on every machine that points at it.",
            ) from None
        return info.version

    def read_note(self) -> BatchNote | None:
        found = self._read(BATCH_NOTE_NAME)
        return None if found is None else _parse(BatchNote, found[0], BATCH_NOTE_NAME)

    def write_note(self, start: int, end: int) -> None:
        note = BatchNote(start=format_lsn(start), end=format_lsn(end))
        self.destination.put_bytes(BATCH_NOTE_NAME, _dump(note), content_type="application/json")

    def clear_note(self) -> None:
        self.destination.delete(BATCH_NOTE_NAME)

    def put_manifest(self, manifest: BatchManifest) -> None:
        """Create the batch's manifest; an identical one already there (a replay) is fine, a
        different one is an error (the log would say two things about one batch)."""
        start, end = parse_lsn(manifest.start), parse_lsn(manifest.end)
        name = manifest_name(start, end)
        data = _dump(manifest)
        try:
            self.destination.put_bytes(name, data, content_type="application/json", if_absent=True)
        except PreconditionFailed:
            existing = self._read(name)
            if existing is None or existing[0] != data:
                raise LakeStateError(
                    f"the batch manifest {name} already exists with other contents"
                ) from None

    def read_manifest(self, name: str) -> BatchManifest:
        found = self._read(name)
        if found is None:
            raise LakeStateError(f"the batch manifest {name} is missing")
        return _parse(BatchManifest, found[0], name)

    def manifests(self) -> list[tuple[int, int, str]]:
        """Every batch manifest as (start, end, name), in LSN order; other names are skipped."""
        found = []
        for info in self.destination.list(BATCHES_PREFIX):
            bounds = parse_manifest_name(info.name)
            if bounds is not None:
                found.append((*bounds, info.name))
        return sorted(found)

    def change_files(self, table: str | None = None) -> tuple[list[ChangeFileName], list[str]]:
        """The change files (of one table, or all), and the names under changes/ that are not
        change files (reported by verify, never used)."""
        prefix = CHANGES_PREFIX + (f"{table}/" if table else "")
        files, strangers = [], []
        for info in self.destination.list(prefix):
            parsed = parse_change_file(info.name)
            if parsed is None:
                strangers.append(info.name)
            else:
                files.append(parsed)
        return files, strangers


def _parse(model: type[M], data: bytes, where: str) -> M:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first.get("loc", ())) or "(the document)"
        raise LakeStateError(
            f"{where} is not a valid lake object: {place}: {first['msg']}"
        ) from None
    except ValueError as exc:
        raise LakeStateError(f"{where} is not a valid lake object: {exc}") from None
