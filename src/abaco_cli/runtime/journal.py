"""The publish journal: a redo log that makes publishing a date all-or-nothing, even under
kill -9.

Publishing one as-of date of a run: every file is staged under a temporary name and fsynced;
then one journal ``journal/<run_id>_<D>.publish.json`` lists, per dataset, every rename, every
file of the date's previous manifest that the new one no longer names, and the new manifest; it
is written atomically and fsynced (the commit point); then the renames, the removals, the
manifests and the latest pointers follow. A crash before the journal exists leaves only
temporary files (swept by the dataset's next run): the previous run stays whole. A crash after
it is finished by ``recover``: under a dataset's lock, the dataset's part of every journal is
applied again (each step is idempotent), a ``<run_id>_<D>.<dataset>.done`` marker records it,
and the journal goes once every part is done. The journal is read as untrusted input: every
path in it is checked against the tree's allow-list.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from abaco_cli.errors import UnsafePathError
from abaco_cli.runtime import files
from abaco_cli.runtime.inventory import refresh_latest
from abaco_cli.runtime.manifest import Manifest, ManifestError
from abaco_cli.runtime.tree import (
    JOURNAL_SUFFIX,
    NAME,
    RUN_ID,
    DataPlace,
    Place,
    RuntimeTree,
    parse_day,
)

JOURNAL_VERSION = 1
_NOWHERE = DataPlace("", "", date.min)
DONE_SUFFIX = ".done"

Checkpoint = Callable[[str], None]  # called after every step (tests pause there to kill)


class JournalError(ValueError):
    """A journal that cannot be trusted or applied."""


PUBLISH, MIGRATE = "publish", "migrate"


@dataclass(frozen=True)
class Move:
    """Rename ``source`` over ``target`` (paths relative to exports/): in a publish, the hidden
    temporary file of the target; in a layout migration, the same file in its old folder."""

    source: str
    target: str
    bytes: int


@dataclass(frozen=True)
class DatasetPart:
    dataset: str
    moves: tuple[Move, ...]
    obsolete: tuple[str, ...]  # files of the date's previous manifest that are no longer named
    manifest: Manifest


@dataclass(frozen=True)
class PublishRecord:
    run_id: str
    as_of: date
    parts: tuple[DatasetPart, ...]
    kind: str = PUBLISH  # or MIGRATE: files moved to the one-format-a-folder layout, or
    # rewritten with the column types of this version (the manifest keeps its own run id)

    @property
    def datasets(self) -> list[str]:
        return [p.dataset for p in self.parts]

    def part(self, dataset: str) -> DatasetPart | None:
        return next((p for p in self.parts if p.dataset == dataset), None)

    def to_json(self) -> bytes:
        payload = {
            "journal_version": JOURNAL_VERSION,
            "kind": self.kind,
            "run_id": self.run_id,
            "as_of_date": self.as_of.isoformat(),
            "parts": [
                {
                    "dataset": p.dataset,
                    "moves": [
                        {"source": m.source, "target": m.target, "bytes": m.bytes} for m in p.moves
                    ],
                    "obsolete": list(p.obsolete),
                    "manifest": p.manifest.to_dict(),
                }
                for p in self.parts
            ],
        }
        return (json.dumps(payload, indent=1) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, text: str, tree: RuntimeTree) -> PublishRecord:
        """Parse and check every path; JournalError when anything is out of place."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("journal_version") != JOURNAL_VERSION:
                raise JournalError("not a publish journal of version 1")
            run_id, day = data.get("run_id"), parse_day(str(data.get("as_of_date", "")))
            if not isinstance(run_id, str) or not RUN_ID.match(run_id) or day is None:
                raise JournalError("bad run id or as-of date")
            kind = data.get("kind", PUBLISH)
            if kind not in (PUBLISH, MIGRATE):
                raise JournalError(f"unknown kind {kind!r}")
            parts = tuple(_part(item, tree, run_id, day, kind) for item in data.get("parts", []))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            if isinstance(exc, JournalError):
                raise
            raise JournalError(f"unreadable: {exc}") from None
        return cls(run_id, day, parts, kind)


def _part(item: Any, tree: RuntimeTree, run_id: str, day: date, kind: str) -> DatasetPart:
    dataset = item["dataset"]
    if not isinstance(dataset, str) or not NAME.match(dataset):
        raise JournalError(f"bad dataset {dataset!r}")
    try:
        manifest = Manifest.from_dict(item["manifest"], tree, dataset=dataset, as_of=day)
    except ManifestError as exc:
        raise JournalError(f"{dataset}: {exc.message}") from None
    if kind == PUBLISH and manifest.run_id != run_id:
        raise JournalError(f"{dataset}: the manifest is of another run")
    moves: list[Move] = []
    for move in item["moves"]:
        source, target = str(move["source"]), str(move["target"])
        target_path = _checked(tree, target, dataset, day)
        temp = tree.relative(RuntimeTree.temp_path(target_path, run_id))
        if Path(source) == Path(temp):
            pass  # a new file (a publish), or a file rewritten with its new types (a migration)
        elif kind == PUBLISH:
            raise JournalError(f"{source!r} is not the temporary name of {target!r}")
        else:  # the same file (same name) of the same table, in its old folder
            source_path = _checked(tree, source, dataset, day)
            same_table = tree.data_place(source) == replace(
                tree.data_place(target) or _NOWHERE, folder_format=None
            )
            if source_path.name != target_path.name or not same_table:
                raise JournalError(f"{source!r} is not the old place of {target!r}")
        moves.append(Move(source, target, int(move["bytes"])))
    obsolete = tuple(str(p) for p in item["obsolete"])
    for path in obsolete:
        _checked(tree, path, dataset, day)
    return DatasetPart(dataset, tuple(moves), obsolete, manifest)


def _checked(tree: RuntimeTree, relative: str, dataset: str, day: date) -> Path:
    try:
        return tree.data_file(relative, dataset, day)
    except UnsafePathError as exc:
        raise JournalError(exc.message) from None


def write(tree: RuntimeTree, record: PublishRecord) -> Path:
    """Write the journal durably: from here on, the publish is committed."""
    path = tree.journal_path(record.run_id, record.as_of)
    files.write_atomic(tree, path, Place.JOURNAL, record.to_json(), record.run_id)
    return path


def apply_moves(
    tree: RuntimeTree, part: DatasetPart, checkpoint: Checkpoint, *, recovering: bool = False
) -> None:
    """Rename the part's temporary files into place. When ``recovering``, a move whose
    temporary file is gone counts as done only if the target is the file the new manifest
    names (size and sha256): a stale target is never published under a new manifest."""
    expected = {f.path: (f.bytes, f.sha256) for f in part.manifest.files}
    for move in part.moves:
        source, target = tree.exports / move.source, tree.exports / move.target
        kind = Place.TEMP if source.name.startswith(".") else Place.DATA
        if _is_file(source):
            files.make_folders(tree, target, Place.DATA)
            files.replace(tree, source, kind, target, Place.DATA)
            if kind is Place.DATA:  # a migrated file: its old partition folder may be empty
                files.remove_empty_folder(tree, source.parent)
        elif not _is_file(target):
            raise JournalError(f"neither {move.source} nor {move.target} exists")
        elif recovering and files.sha256_of(tree, target, Place.DATA) != expected.get(move.target):
            raise JournalError(
                f"{move.source} is gone and {move.target} is not the file the new manifest names"
            )
        checkpoint(f"renamed {move.target}")


def apply_rest(tree: RuntimeTree, record: PublishRecord, part: DatasetPart,
               checkpoint: Checkpoint) -> None:  # fmt: skip
    """Remove the files no longer named, write the manifest, move the pointer."""
    for relative in part.obsolete:
        files.remove(tree, tree.exports / relative, Place.DATA)
        checkpoint(f"removed {relative}")
    for folder in {(tree.exports / r).parent for r in part.obsolete}:
        files.remove_empty_folder(tree, folder)
    manifest_path = tree.manifest_path(part.dataset, record.as_of)
    content = part.manifest.to_json().encode("utf-8")
    files.write_atomic(tree, manifest_path, Place.MANIFEST, content, record.run_id)
    checkpoint(f"wrote the manifest of {part.dataset}")
    refresh_latest(tree, part.dataset, record.run_id)
    checkpoint(f"moved the latest pointer of {part.dataset}")


def remove(tree: RuntimeTree, record: PublishRecord) -> None:
    """The publish is complete: the journal (then its done markers) goes."""
    path = tree.journal_path(record.run_id, record.as_of)
    files.remove(tree, path, Place.JOURNAL)
    for dataset in record.datasets:
        files.remove(tree, _done_path(path, dataset), Place.JOURNAL)


def _done_path(journal: Path, dataset: str) -> Path:
    return journal.with_name(journal.name.removesuffix(JOURNAL_SUFFIX) + f".{dataset}{DONE_SUFFIX}")


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------------- recovery


@dataclass(frozen=True)
class Pending:
    """A journal found in the tree, with the datasets whose part is not done yet."""

    path: Path
    record: PublishRecord | None  # None: the journal cannot be trusted (``problem`` says why)
    waiting: tuple[str, ...]
    problem: str | None = None


def pending(tree: RuntimeTree) -> list[Pending]:
    """Every journal in the tree (read-only: for recovery, verify and healthcheck)."""
    found: list[Pending] = []
    try:
        if stat.S_ISLNK(os.lstat(tree.journal).st_mode):
            return found
        names = sorted(os.listdir(tree.journal))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for name in names:
        path = tree.journal / name
        if not name.endswith(JOURNAL_SUFFIX) or name.startswith("."):
            continue
        try:
            record = PublishRecord.from_json(files.read_text(tree, path, Place.JOURNAL), tree)
        except (JournalError, OSError, UnicodeDecodeError, UnsafePathError) as exc:
            found.append(Pending(path, None, (), f"{name}: {exc}"))
            continue
        waiting = tuple(d for d in record.datasets if not _is_file(_done_path(path, d)))
        found.append(Pending(path, record, waiting))
    return found


def recover(tree: RuntimeTree, dataset: str, checkpoint: Checkpoint) -> list[PublishRecord]:
    """Finish every interrupted publish of ``dataset`` (call first, under its lock); the
    records whose part was finished here. A journal that cannot be trusted is left alone."""
    finished: list[PublishRecord] = []
    for item in pending(tree):
        record = item.record
        if record is None or dataset not in item.waiting:
            continue
        part = record.part(dataset)
        assert part is not None
        apply_moves(tree, part, checkpoint, recovering=True)
        apply_rest(tree, record, part, checkpoint)
        files.write_atomic(
            tree, _done_path(item.path, dataset), Place.JOURNAL, b"done\n", record.run_id
        )
        if all(_is_file(_done_path(item.path, d)) for d in record.datasets):
            remove(tree, record)
        finished.append(record)
    _sweep_done_markers(tree)
    return finished


def _sweep_done_markers(tree: RuntimeTree) -> None:
    """Done markers whose journal is gone (a crash between the two removals)."""
    try:
        names = os.listdir(tree.journal)
    except (FileNotFoundError, NotADirectoryError):
        return
    journals = {n.removesuffix(JOURNAL_SUFFIX) for n in names if n.endswith(JOURNAL_SUFFIX)}
    for name in names:
        if name.endswith(DONE_SUFFIX) and name.split(".", 1)[0] not in journals:
            with contextlib.suppress(UnsafePathError):
                files.remove(tree, tree.journal / name, Place.JOURNAL)
