"""The one-format-a-folder layout, and moving an older tree to it.

Until version 0.2 a table's partition folders held every format (``dpd/loans/as_of_date=D/``
with ``.csv``, ``.parquet`` and ``.json`` side by side), which no engine reads with its
defaults. Now Parquet stays in ``<table>/`` and CSV and JSON have ``<table>.csv/`` and
``<table>.json/``. Under a dataset's lock (every command that takes it, after the recovery of
interrupted publishes), each manifest that still names a CSV or JSON file in a Parquet folder is
migrated: a journal of kind ``migrate`` lists the renames and the rewritten manifest (file names,
sizes and checksums unchanged), so a crash half-way is finished like any publish.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from abaco_cli.runtime import journal
from abaco_cli.runtime.inventory import ExportedRun, exported_runs
from abaco_cli.runtime.journal import MIGRATE, Checkpoint, DatasetPart, Move, PublishRecord
from abaco_cli.runtime.manifest import ManifestFile
from abaco_cli.runtime.tree import DERIVED_FOLDERS, FOLDER_FORMATS, RuntimeTree


@dataclass(frozen=True)
class Migration:
    """One manifest moved (or, in a dry run, to move) to the new layout."""

    dataset: str
    as_of_date: str
    run_id: str
    moves: tuple[Move, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "as_of_date": self.as_of_date,
            "run_id": self.run_id,
            "files": [{"from": m.source, "to": m.target} for m in self.moves],
        }


def _new_place(tree: RuntimeTree, entry: ManifestFile) -> str | None:
    """Where a file of the old layout goes, or None when it is in its place already."""
    place = tree.data_place(entry.path)
    if place is None or place.folder_format is not None or entry.format not in FOLDER_FORMATS:
        return None
    path = PurePosixPath(entry.path)
    if len(path.parts) == 3 and place.table in DERIVED_FOLDERS:
        return None  # a derived file (kpi/json/kpi_<D>.json) has its own folder already
    name = path.name
    target = tree.partition_dir(place.dataset, place.table, place.as_of, entry.format) / name
    return tree.relative(target)


def plan(tree: RuntimeTree, run: ExportedRun) -> tuple[PublishRecord, Migration] | None:
    """The migration of one run (None when it needs none, or cannot be trusted)."""
    manifest = run.manifest
    if manifest is None or run.marked:
        return None
    moves: list[Move] = []
    entries: list[ManifestFile] = []
    for entry in manifest.files:
        target = _new_place(tree, entry)
        if target is None:
            entries.append(entry)
            continue
        moves.append(Move(entry.path, target, entry.bytes))
        entries.append(replace(entry, path=target))
    if not moves:
        return None
    part = DatasetPart(run.dataset, tuple(moves), (), replace(manifest, files=tuple(entries)))
    return (
        PublishRecord("", manifest.as_of_date, (part,), MIGRATE),
        Migration(run.dataset, manifest.as_of_date.isoformat(), manifest.run_id, tuple(moves)),
    )


def migrate_dataset(
    tree: RuntimeTree, dataset: str, run_id: str, checkpoint: Checkpoint, *, dry_run: bool = False
) -> list[Migration]:
    """Move every run of ``dataset`` to the one-format-a-folder layout (call under its lock,
    after recovery); what moved (or would move)."""
    done: list[Migration] = []
    for run in exported_runs(tree, dataset):
        planned = plan(tree, run)
        if planned is None:
            continue
        draft, migration = planned
        done.append(migration)
        if dry_run:
            continue
        record = replace(draft, run_id=run_id)
        journal.write(tree, record)
        for part in record.parts:
            journal.apply_moves(tree, part, checkpoint)
            journal.apply_rest(tree, record, part, checkpoint)
        journal.remove(tree, record)
    return done
