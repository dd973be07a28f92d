"""`abaco lake status` and `abaco lake verify`: the lake's state, its slot on the source, the
change log against the manifests and, with --deep, every table against the source."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from abaco_cli.db.binary_copy import TableReader
from abaco_cli.db.connect import Connection
from abaco_cli.errors import AbacoError
from abaco_cli.lake.lsn import format_lsn
from abaco_cli.lake.slot import (
    SlotInfo,
    slot_info,
)
from abaco_cli.lake.store import (
    LakeState,
)
from abaco_cli.services.lake.common import (
    Lake,
    Progress,
    connect_source,
    lsn_of,
)
from abaco_cli.services.run import Run
from abaco_cli.settings import Settings

log = logging.getLogger("abaco.lake")


# ---------------------------------------------------------------------------------- status


@dataclass
class WalFigures:
    """What the slot holds on the source, in bytes."""

    lag: int | None  # WAL flushed now minus the slot's confirmed position
    retained: int | None  # WAL written now minus the slot's restart position
    limit: int | None  # retained + safe_wal_size: where the server drops the slot's WAL
    wal_status: str | None

    @property
    def share(self) -> float | None:
        if self.retained is None or not self.limit:
            return None
        return self.retained / self.limit


def wal_figures(conn: Connection, info: SlotInfo | None) -> WalFigures:
    if info is None:
        return WalFigures(None, None, None, None)
    row = conn.execute(
        "SELECT pg_current_wal_flush_lsn()::text, pg_current_wal_lsn()::text"
    ).fetchone()
    assert row is not None
    flushed, written = lsn_of(str(row[0])), lsn_of(str(row[1]))
    lag = None if info.confirmed_flush is None else max(flushed - info.confirmed_flush, 0)
    retained = None if info.restart is None else max(written - info.restart, 0)
    limit = None
    if retained is not None and info.safe_wal_size is not None:
        limit = retained + max(info.safe_wal_size, 0)
    return WalFigures(lag, retained, limit, info.wal_status)


@dataclass
class StatusResult:
    url: str
    state: LakeState | None
    slot: SlotInfo | None = None
    wal: WalFigures | None = None
    source_error: str | None = None
    checked: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        state = self.state
        body: dict[str, Any] = {"destination": self.url, "initialised": state is not None}
        if state is None:
            return body
        body |= {
            "slot": state.slot,
            "publication": state.publication,
            "dropped": state.dropped,
            "lsn": state.lsn,
            "last_sync": state.updated.isoformat(),
            "seconds_since_sync": round((self.checked - state.updated).total_seconds(), 1),
            "tables": {
                name: {
                    "rows": t.rows,
                    "last_change": t.last_change_time.isoformat() if t.last_change_time else None,
                    "columns": [c.name for c in t.columns],
                    "key": t.key,
                }
                for name, t in sorted(state.tables.items())
            },
        }
        if self.source_error is not None:
            body["source_error"] = self.source_error
        if self.wal is not None:
            body["slot_status"] = {
                "exists": self.slot is not None,
                "wal_status": self.wal.wal_status,
                "lag_bytes": self.wal.lag,
                "wal_retained_bytes": self.wal.retained,
                "wal_limit_bytes": self.wal.limit,
                "wal_retained_share": None if self.wal.share is None else round(self.wal.share, 4),
            }
        return body


def lake_state_for_health(settings: Settings) -> LakeState | None:
    """The lake's state at lake.destination (None when there is none)."""
    lake = Lake.open(settings, None)
    try:
        found = lake.store.read_state()
        return None if found is None else found[0]
    finally:
        lake.close()


def lake_status(settings: Settings, *, dest: str | None) -> StatusResult:
    """The lake's state and its slot on the source (read-only: no lock, no audit record)."""
    lake = Lake.open(settings, dest)
    try:
        found = lake.store.read_state()
        result = StatusResult(lake.store.url, found[0] if found else None)
        if found is None:
            return result
        try:
            with connect_source(settings) as conn:
                result.slot = slot_info(conn, found[0].slot)
                result.wal = wal_figures(conn, result.slot)
        except AbacoError as exc:
            result.source_error = exc.message
        return result
    finally:
        lake.close()


# ----------------------------------------------------------------------------------- verify


@dataclass
class VerifyResult:
    url: str
    manifests: int = 0
    files: int = 0
    findings: list[str] = field(default_factory=list)
    tables: dict[str, str] = field(default_factory=dict)  # table -> verdict of the deep check

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.url,
            "ok": self.ok,
            "manifests": self.manifests,
            "files": self.files,
            "findings": self.findings,
            "tables": self.tables,
        }


def verify_lake(
    run: Run, *, dest: str | None, deep: bool, progress: Progress | None = None
) -> VerifyResult:
    """The change log against the manifests, the Delta tables against the state; with
    ``deep``, every lake table against the source table, row for row."""
    lake = Lake.open(run.settings, dest)
    result = VerifyResult(lake.store.url)
    try:
        state, _ = lake.state()
        note = lake.store.read_note()
        listed: set[str] = set()
        for start, end, name in lake.store.manifests():
            manifest = lake.store.read_manifest(name)
            result.manifests += 1
            if lsn_of(manifest.start) != start or lsn_of(manifest.end) != end:
                result.findings.append(f"{name}: its bounds differ from its name")
            if end > state.position and not (note and lsn_of(note.end) == end):
                result.findings.append(f"{name}: beyond the lake's state {state.lsn}")
            for item in manifest.files:
                listed.add(item.name)
                result.files += 1
                info = lake.store.destination.head(item.name)
                if info is None:
                    result.findings.append(f"{item.name}: listed in {name} but missing")
                elif info.size != item.size or (info.sha256 and info.sha256 != item.sha256):
                    result.findings.append(f"{item.name}: differs from {name} (size or sha256)")
        files, strangers = lake.store.change_files()
        for parsed in files:
            if parsed.name not in listed:
                in_flight = note is not None and parsed.start == lsn_of(note.start)
                why = "a batch in flight (the next sync replays it)" if in_flight else "no manifest"
                result.findings.append(f"{parsed.name}: in no manifest ({why})")
        for name in strangers:
            result.findings.append(f"{name}: not a change file of the lake")
        for name in sorted(state.tables):
            covered = lake.table(name).covered_lsn()
            if covered is None or covered > state.position:
                result.findings.append(
                    f"{name}: the Delta table's last abaco commit "
                    f"({'none' if covered is None else format_lsn(covered)}) does not match the "
                    f"lake's state {state.lsn}"
                )
        if deep:
            _verify_deep(lake, state, result, progress)
        return result
    finally:
        lake.close()


def _verify_deep(
    lake: Lake, state: LakeState, result: VerifyResult, progress: Progress | None
) -> None:
    with connect_source(lake.settings) as conn:
        lag = wal_figures(conn, slot_info(conn, state.slot)).lag
    for name, table_state in sorted(state.tables.items()):
        columns = [c.name for c in table_state.columns]
        with TableReader(lake.settings, name, columns) as reader:
            source = pa.Table.from_batches(list(reader.batches()), schema=reader.schema)
        mine = lake.table(name).read().select(columns)
        key = [(k, "ascending") for k in table_state.key]
        same = source.num_rows == mine.num_rows and source.sort_by(key).cast(mine.schema).equals(
            mine.sort_by(key)
        )
        verdict = (
            "same"
            if same
            else f"differs ({mine.num_rows:,} rows in the lake, {source.num_rows:,} in the source)"
        )
        result.tables[name] = verdict
        if progress:
            progress(f"{name}: {verdict}")
        if not same:
            behind = (
                f" (the lake is {lag:,} bytes of WAL behind: `abaco lake sync` first)"
                if lag
                else ""
            )
            result.findings.append(f"{name}: the lake table differs from the source{behind}")
