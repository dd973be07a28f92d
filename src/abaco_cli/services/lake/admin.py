"""`abaco lake resync`, `compact` and `drop`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from abaco_cli.lake.lsn import format_lsn
from abaco_cli.lake.slot import (
    drop_publication,
    drop_slot,
    slot_info,
)
from abaco_cli.lake.tables import (
    chosen_tables,
)
from abaco_cli.services.lake.common import (
    Progress,
    audited_lake,
    check_source,
    held,
)
from abaco_cli.services.lake.load import (
    inspect_sources,
    load_tables,
    put_load_manifest,
)
from abaco_cli.services.lake.sync import (
    SyncResult,
    catch_up,
)
from abaco_cli.services.run import Run

log = logging.getLogger("abaco.lake")


# --------------------------------------------------------------------------- resync, compact, drop


def _other_slot(name: str, base: str) -> str:
    return f"{base}_b" if name == base else base


@dataclass
class ResyncResult:
    url: str
    slot: str
    lsn: str
    reloaded: dict[str, int]
    caught_up: SyncResult | None

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.url,
            "slot": self.slot,
            "lsn": self.lsn,
            "reloaded": self.reloaded,
            "caught_up": None if self.caught_up is None else self.caught_up.to_json(),
        }


def resync_lake(
    run: Run, *, dest: str | None, tables: Sequence[str] | None, progress: Progress | None = None
) -> ResyncResult:
    """Reload tables in a new slot's snapshot. With the old slot still usable and only some
    tables named, the others are first brought up to the new slot's start through the old one
    (nothing lost, nothing twice); otherwise every table is reloaded."""
    settings = run.settings
    arguments = {"tables": list(tables or [])}
    with audited_lake(run, dest, arguments) as (lake, conn, audit):
        state, version = lake.state()
        with held(run, lake, conn, state.slot, progress):
            state, version = lake.state()
            check_source(conn, state)
            names = (
                [str(n) for n in chosen_tables(settings, tables)]
                if tables
                else sorted(state.tables)
            )
            # a table named that the lake does not hold yet (added to lake.tables) joins it
            every = sorted(set(state.tables) | set(names))
            old = slot_info(conn, state.slot)
            usable = old is not None and not old.lost and not state.dropped
            partial = usable and set(names) != set(every)
            if not partial:
                names = every
            sources = inspect_sources(conn, settings, every)
            reload_sources = [s for s in sources if s.name in names]
            new_slot = _other_slot(state.slot, settings.lake.slot)
            if slot_info(conn, new_slot) is not None:
                drop_slot(conn, new_slot)
            lsn, states, files = load_tables(
                run,
                lake,
                conn,
                reload_sources,
                new_slot,
                state.publication,
                progress,
                published=sources,
            )
            put_load_manifest(lake, lsn, states, files)
            caught_up = None
            if partial:
                caught_up = SyncResult(lake.store.url, state.slot)
                state, version = catch_up(
                    lake,
                    conn,
                    state,
                    version,
                    lsn,
                    caught_up,
                    None,
                    None,
                    progress,
                    exclude=frozenset(names),
                )
                if state.position < lsn:  # nothing to read up to the new start: move on
                    state = state.model_copy(update={"lsn": format_lsn(lsn)})
            merged = {**state.tables, **states}
            new_state = state.model_copy(
                update={
                    "slot": new_slot,
                    "lsn": format_lsn(lsn),
                    "updated": datetime.now(UTC),
                    "tables": merged,
                    "dropped": False,
                }
            )
            lake.store.write_state(new_state, version=version)
            if old is not None:
                drop_slot(conn, old.name)
            result = ResyncResult(
                lake.store.url,
                new_slot,
                new_state.lsn,
                {n: s.rows for n, s in states.items()},
                caught_up,
            )
            audit.details |= result.to_json()
    return result


def compact_lake(
    run: Run, *, dest: str | None, retention_hours: int, progress: Progress | None = None
) -> dict[str, Any]:
    arguments = {"retention_hours": retention_hours}
    with audited_lake(run, dest, arguments, reads_source=False) as (lake, conn, audit):
        state, _ = lake.state()
        outcomes: dict[str, Any] = {}
        with held(run, lake, conn, state.slot, progress):
            state, version = lake.state()
            for name in sorted(state.tables):
                outcome = lake.table(name).compact(retention_hours=retention_hours)
                outcomes[name] = _plain(outcome)
                if progress:
                    progress(f"{name}: compacted")
            lake.store.write_state(
                state.model_copy(update={"compacted": datetime.now(UTC)}), version=version
            )
        audit.details |= {"tables": outcomes}
    return {"destination": lake.store.url, "tables": outcomes}


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return value


def drop_lake(run: Run, *, dest: str | None, progress: Progress | None = None) -> dict[str, Any]:
    """Drop the slot(s) and the publication, so that the source holds no WAL for the lake;
    the lake's files stay (its state says it was dropped)."""
    settings = run.settings
    with audited_lake(run, dest, {}) as (lake, conn, audit):
        found = lake.store.read_state()
        slot = found[0].slot if found else settings.lake.slot
        publication = found[0].publication if found else settings.lake.publication
        with held(run, lake, conn, slot, progress):
            dropped = [
                name
                for name in dict.fromkeys(
                    [
                        slot,
                        settings.lake.slot,
                        _other_slot(settings.lake.slot, settings.lake.slot),
                    ]
                )
                if drop_slot(conn, name)
            ]
            publication_dropped = drop_publication(conn, publication)
            found = lake.store.read_state()
            if found is not None and not found[0].dropped:
                lake.store.write_state(
                    found[0].model_copy(update={"dropped": True, "updated": datetime.now(UTC)}),
                    version=found[1],
                )
        body = {
            "destination": lake.store.url,
            "slots_dropped": dropped,
            "publication_dropped": publication if publication_dropped else None,
        }
        audit.details |= body
    return body
