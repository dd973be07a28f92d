"""What the lake's commands share: the Lake (its store and how deltalake reaches it), the
source connection, the locks, the audit of a command that changes the lake."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abaco_cli.audit.recorder import AuditedRun
from abaco_cli.db.connect import Connection, connect
from abaco_cli.errors import AbacoError, UsageError
from abaco_cli.lake import delta
from abaco_cli.lake.changelog import StagedFile
from abaco_cli.lake.slot import (
    source_lock,
)
from abaco_cli.lake.store import (
    LakeState,
    LakeStore,
    ManifestFile,
    SourceState,
)
from abaco_cli.runtime.lock import dataset_lock
from abaco_cli.services.run import Run
from abaco_cli.settings import Settings
from abaco_cli.storage import open_destination

log = logging.getLogger("abaco.lake")
Progress = Callable[[str], None]
LOCK_NAME = "lake"
ALL_CHANGES = 2**31 - 1  # upto_nchanges is an int4: "every change up to the LSN"
# Test-only: SIGKILL this process right after the named step of a batch (files, manifest,
# merge, state, advance), so that a test can check the next sync repairs it. Never set in
# production.
TEST_KILL_ENV = "ABACO_TEST_LAKE_KILL_AFTER"


TEST_PAUSE_ENV = "ABACO_TEST_LAKE_PAUSE_LOCKED"  # test-only: seconds to hold the locks


def checkpoint(step: str) -> None:
    if os.environ.get(TEST_KILL_ENV) == step:
        log.warning("test kill after %s", step)
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get(TEST_PAUSE_ENV) if step == "locked" else None
    if pause:
        time.sleep(float(pause))


SCHEMA_RUNBOOK = "runbooks/lake-schema-change.md"


class SlotAheadError(AbacoError):
    """The slot is past the lake's state: another consumer took changes the lake never got."""

    default_hint = (
        "Something other than this lake consumed the slot (pg_logical_slot_get_changes, "
        "another tool): the changes in between are lost to the lake. Run `abaco lake resync`."
    )


# ---------------------------------------------------------------------------------- the lake


@dataclass
class Lake:
    """One lake: its settings, its store and how deltalake reaches it."""

    settings: Settings
    url: str
    store: LakeStore
    storage_options: dict[str, str]

    @classmethod
    def open(cls, settings: Settings, dest: str | None) -> Lake:
        url = dest or settings.lake.destination or str(Path(settings.runtime_dir).absolute())
        destination = open_destination(url, settings)
        return cls(settings, url, LakeStore(destination), delta.storage_options(settings, url))

    def table(self, name: str) -> delta.LakeTable:
        return delta.LakeTable(delta.table_uri(self.url, name), self.storage_options)

    def close(self) -> None:
        self.store.destination.close()

    def state(self) -> tuple[LakeState, str]:
        found = self.store.read_state()
        if found is None:
            raise UsageError(
                f"no lake at {self.store.url}: run `abaco lake init`",
                hint="Or point at the lake: --dest, or lake.destination (ABACO_LAKE__DESTINATION).",
            )
        return found

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        root = Path(self.settings.runtime_dir)
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".lake-staging-", dir=root) as folder:
            yield Path(folder)


def lake_settings(settings: Settings) -> Settings:
    """The settings the lake's commands run with: the source reached as lake.database_url's
    role (REPLICATION) when it is set, else as database_url's."""
    if settings.lake.database_url is None:
        return settings
    return settings.model_copy(update={"database_url": settings.lake.database_url})


@contextlib.contextmanager
def audited_lake(
    run: Run, dest: str | None, arguments: dict[str, Any], *, reads_source: bool = True
) -> Iterator[tuple[Lake, Connection, AuditedRun]]:
    """The lake, a connection to the source and the run's audit (START now, COMPLETE or FAIL
    when the block ends), for a command that changes the lake."""
    lake = Lake.open(run.settings, dest)
    try:
        conn = connect_source(run.settings)
        with (
            conn,
            run.audited(
                arguments={"destination": lake.store.url, **arguments}, reads_source=reads_source
            ) as audit,
        ):
            yield lake, conn, audit
    finally:
        lake.close()


def connect_source(settings: Settings) -> Connection:
    conn = connect(settings, read_only=False)
    conn.autocommit = True
    return conn


def source_state(conn: Connection) -> SourceState:
    row = conn.execute("SELECT current_database()").fetchone()
    database = str(row[0]) if row else "?"
    try:
        ident = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()
        system = str(ident[0]) if ident else "unknown"
    except Exception:  # noqa: BLE001 - a role without pg_monitor may not read it
        system = "unknown"
    return SourceState(system_identifier=system, database=database)


def check_source(conn: Connection, state: LakeState) -> None:
    now = source_state(conn)
    same_system = "unknown" in (now.system_identifier, state.source.system_identifier) or (
        now.system_identifier == state.source.system_identifier
    )
    if now.database != state.source.database or not same_system:
        raise UsageError(
            f"this lake follows the database {state.source.database} (system "
            f"{state.source.system_identifier}), but the source is {now.database} (system "
            f"{now.system_identifier})",
            hint="Point abaco at the lake's own source, or start a new lake elsewhere (--dest).",
        )


@contextlib.contextmanager
def held(
    run: Run, lake: Lake, conn: Connection, slot: str, on_wait: Progress | None
) -> Iterator[None]:
    """The lake lock of this machine, then the source's advisory lock for the slot."""
    with ExitStack() as stack:
        stack.enter_context(
            dataset_lock(
                run.tree.lock_path(LOCK_NAME),
                run_id=run.run_id,
                command=run.command,
                timeout_seconds=run.settings.lock_timeout_seconds,
                on_wait=(lambda who: on_wait(f"waiting for the lake lock held by {who}"))
                if on_wait
                else None,
            )
        )
        stack.enter_context(source_lock(conn, slot))
        yield


def lsn_of(text: str) -> int:
    from abaco_cli.lake.lsn import parse_lsn

    return parse_lsn(text)


def send_files(lake: Lake, files: Sequence[StagedFile]) -> list[ManifestFile]:
    entries = []
    for item in files:
        lake.store.destination.put_file(item.name, item.path, sha256=item.sha256)
        entries.append(
            ManifestFile(
                name=item.name, table=item.table, rows=item.rows, size=item.size, sha256=item.sha256
            )
        )
    return entries
