"""What the runtime tree holds: the exported runs (one per manifest) of every dataset, and the
latest pointer that names the newest of them.

Shared by export (the pointer and the files a re-export replaces), `prune` (what may go),
`audit verify` (does every file match its manifest?) and `healthcheck` (how old is each
dataset's newest export?). Nothing here follows a symbolic link; every manifest and pointer is
parsed as untrusted input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from abaco_cli.errors import UnsafePathError
from abaco_cli.runtime import files
from abaco_cli.runtime.manifest import Manifest, ManifestError, ManifestFile, iso_time
from abaco_cli.runtime.tree import (
    MANIFEST_SUFFIX,
    NAME,
    PRUNING_SUFFIX,
    Place,
    RuntimeTree,
    parse_day,
)


@dataclass(frozen=True)
class ExportedRun:
    """One manifest (or the marker of a run whose removal a crash interrupted)."""

    dataset: str
    manifest_path: Path
    marked: bool  # True: prune has begun to remove this run
    manifest: Manifest | None = None
    problem: ManifestError | None = None  # why the manifest cannot be trusted

    @property
    def successful(self) -> bool:
        return self.manifest is not None and not self.marked and self.manifest.successful

    @property
    def run_id(self) -> str:
        return self.manifest.run_id if self.manifest else ""

    @property
    def as_of(self) -> date | None:
        if self.manifest is not None:
            return self.manifest.as_of_date
        return _day_of(self.manifest_path.name, self.dataset)

    @property
    def as_of_date(self) -> str:
        return self.as_of.isoformat() if self.as_of else ""

    @property
    def finished_at(self) -> datetime | None:
        return self.manifest.finished_at if self.manifest else None

    @property
    def files(self) -> tuple[ManifestFile, ...]:
        return self.manifest.files if self.manifest else ()


def _day_of(name: str, dataset: str) -> date | None:
    """The date in a manifest's (or marker's) name, when the name is well formed."""
    core = name.removeprefix(".").removesuffix(PRUNING_SUFFIX)
    prefix = f"{dataset}_"
    if not core.startswith(prefix) or not core.endswith(MANIFEST_SUFFIX):
        return None
    return parse_day(core[len(prefix) : -len(MANIFEST_SUFFIX)])


def dataset_dirs(tree: RuntimeTree) -> list[Path]:
    """Every real folder directly under exports/ with a dataset's name (links never entered)."""
    if not files.real_folder(tree, tree.exports):
        return []
    entries = sorted(tree.exports.iterdir())
    return [p for p in entries if NAME.match(p.name) and p.is_dir() and not p.is_symlink()]


def linked_folders(tree: RuntimeTree) -> list[str]:
    """Places of the tree that are symbolic links, which abaco never goes through: exports/,
    locks/, journal/ themselves, a dataset folder, a lock file (relative to the root)."""
    found = [name for name in ("exports", "locks", "journal") if (tree.root / name).is_symlink()]
    for folder in (tree.exports, tree.locks):
        if files.real_folder(tree, folder):
            found += [
                p.relative_to(tree.root).as_posix()
                for p in sorted(folder.iterdir())
                if p.is_symlink()
            ]
    return found


def read_run(tree: RuntimeTree, dataset: str, path: Path, *, marked: bool) -> ExportedRun:
    """The run a manifest (or a pruning marker) describes; ``problem`` set when untrusted."""
    day = _day_of(path.name, dataset)
    if day is None:
        problem = ManifestError(
            "bad_manifest", f"its name is not {dataset}_<YYYY-MM-DD>{MANIFEST_SUFFIX}"
        )
        return ExportedRun(dataset, path, marked, problem=problem)
    try:
        text = files.read_text(tree, path, Place.MARKER if marked else Place.MANIFEST)
        manifest = Manifest.from_json(text, tree, dataset=dataset, as_of=day)
    except ManifestError as exc:
        return ExportedRun(dataset, path, marked, problem=exc)
    except (OSError, UnicodeDecodeError, UnsafePathError) as exc:
        problem = ManifestError("bad_manifest", f"unreadable: {exc}")
        return ExportedRun(dataset, path, marked, problem=problem)
    return ExportedRun(dataset, path, marked, manifest=manifest)


def exported_runs(tree: RuntimeTree, dataset: str) -> list[ExportedRun]:
    """Every run of ``dataset``: live manifests and pruning markers, oldest as-of date first."""
    folder = tree.manifests_dir(dataset)
    if not files.real_folder(tree, folder):
        return []  # missing, or reached through a symbolic link: never read
    entries = sorted(folder.iterdir())
    runs: list[ExportedRun] = []
    for path in entries:
        if path.is_symlink() or not path.is_file():
            continue
        name = path.name
        if name.endswith(MANIFEST_SUFFIX) and not name.startswith("."):
            runs.append(read_run(tree, dataset, path, marked=False))
        elif name.startswith(".") and name.endswith(MANIFEST_SUFFIX + PRUNING_SUFFIX):
            runs.append(read_run(tree, dataset, path, marked=True))
    return sorted(runs, key=lambda r: (r.as_of or date.min, r.manifest_path.name))


def newest_run(runs: list[ExportedRun]) -> ExportedRun | None:
    """The successful run with the latest as-of date (then the latest finish): what
    latest.json points at."""
    good = [r for r in runs if r.successful and r.manifest is not None]
    return max(good, key=lambda r: (r.as_of or date.min, r.finished_at or ""), default=None)


# --------------------------------------------------------------------------- the latest pointer


@dataclass(frozen=True)
class Pointer:
    """What latest.json says (parsed as untrusted input)."""

    as_of: date | None
    run_id: str
    manifest: Path | None  # checked: a manifest place of the dataset, else None


def read_pointer(tree: RuntimeTree, dataset: str) -> Pointer | None:
    """latest.json of ``dataset``, or None when there is none or it is unreadable."""
    try:
        data = json.loads(files.read_text(tree, tree.latest_path(dataset), Place.POINTER))
    except (OSError, ValueError, UnsafePathError):
        return None
    if not isinstance(data, dict):
        return None
    day = parse_day(data["as_of_date"]) if isinstance(data.get("as_of_date"), str) else None
    target: Path | None = None
    if isinstance(data.get("manifest"), str):
        try:
            target = tree.check(tree.exports / data["manifest"], Place.MANIFEST)
        except UnsafePathError:
            target = None
        if target is not None and target.parent != tree.manifests_dir(dataset):
            target = None
    return Pointer(day, str(data.get("run_id", "")), target)


def pointer_body(tree: RuntimeTree, run: ExportedRun) -> dict[str, Any]:
    manifest = run.manifest
    assert manifest is not None
    return {
        "dataset": manifest.dataset,
        "as_of_date": manifest.as_of_date.isoformat(),
        "run_id": manifest.run_id,
        "finished_at": iso_time(manifest.finished_at),
        "manifest": tree.relative(run.manifest_path),
        "files": [{"table": f.table, "format": f.format, "path": f.path} for f in manifest.files],
    }


def refresh_latest(tree: RuntimeTree, dataset: str, run_id: str) -> ExportedRun | None:
    """Point latest.json (and the ``*_latest`` aliases) at the dataset's newest successful run;
    remove the pointer when there is none. Idempotent; call under the dataset's lock."""
    newest = newest_run(exported_runs(tree, dataset))
    pointer = tree.latest_path(dataset)
    if newest is None:
        files.remove(tree, pointer, Place.POINTER)
        return None
    body = (json.dumps(pointer_body(tree, newest), indent=2) + "\n").encode("utf-8")
    if _content(tree, pointer, Place.POINTER) != body:
        files.write_atomic(tree, pointer, Place.POINTER, body, run_id)
    for entry in newest.files:
        source = tree.exports / entry.path
        alias = tree.alias_of(source)
        if alias is None:
            continue
        content = _content(tree, source, Place.DATA)
        if content is None or _content(tree, alias, Place.ALIAS) == content:
            continue
        files.write_atomic(tree, alias, Place.ALIAS, content, run_id)
    return newest


def _content(tree: RuntimeTree, path: Path, kind: Place) -> bytes | None:
    try:
        with files.open_read(tree, path, kind) as handle:
            return handle.read()
    except (OSError, UnsafePathError):
        return None
