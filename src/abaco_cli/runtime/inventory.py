"""What the runtime tree holds: the exported runs (one per manifest) of every dataset.

Shared by `prune` (what may go), `audit verify` (does every file match its manifest?) and
`healthcheck` (how old is each dataset's newest export?). Nothing here follows a symbolic link.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from abaco_cli.runtime.tree import PRUNING_SUFFIX, RuntimeTree

MANIFEST_SUFFIX = ".manifest.json"


@dataclass(frozen=True)
class ManifestFile:
    """One file a manifest names."""

    path: str  # relative to the exports folder, as the manifest records it
    table: str
    format: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ExportedRun:
    """One manifest (or the marker of a run whose removal a crash interrupted)."""

    dataset: str
    manifest_path: Path
    marked: bool  # True: prune has begun to remove this run
    run_id: str = ""
    as_of_date: str = ""
    status: str = ""
    finished_at: datetime | None = None
    files: list[ManifestFile] = field(default_factory=list)
    problem: str | None = None  # why the manifest could not be read

    @property
    def usable(self) -> bool:
        return self.problem is None

    @property
    def successful(self) -> bool:
        return self.usable and not self.marked and self.status == "success"


def parse_time(text: object) -> datetime | None:
    """An ISO timestamp such as ``2025-06-30T12:00:00.000Z`` (timezone-aware), else None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def dataset_dirs(tree: RuntimeTree) -> list[Path]:
    """Every real folder directly under exports/ (symbolic links are never entered)."""
    if not tree.exports.is_dir() or tree.exports.is_symlink():
        return []
    return sorted(p for p in tree.exports.iterdir() if p.is_dir() and not p.is_symlink())


def _files(data: dict[str, Any]) -> list[ManifestFile]:
    found: list[ManifestFile] = []
    for item in data.get("files", []):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ValueError("a file entry has no path")
        found.append(
            ManifestFile(
                path=item["path"],
                table=str(item.get("table", "")),
                format=str(item.get("format", "")),
                rows=int(item.get("rows", 0)),
                bytes=int(item.get("bytes", -1)),
                sha256=str(item.get("sha256", "")),
            )
        )
    return found


def read_run(dataset: str, path: Path, *, marked: bool) -> ExportedRun:
    """The run a manifest (or a pruning marker) describes; ``problem`` set when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return ExportedRun(
            dataset=dataset,
            manifest_path=path,
            marked=marked,
            run_id=str(data.get("run_id", "")),
            as_of_date=str(data.get("as_of_date", "")),
            status=str(data.get("status", "")),
            finished_at=parse_time(data.get("finished_at")),
            files=_files(data),
        )
    except (OSError, ValueError, TypeError) as exc:
        return ExportedRun(dataset, path, marked, problem=f"unreadable manifest: {exc}")


def exported_runs(tree: RuntimeTree, dataset: str) -> list[ExportedRun]:
    """Every run of ``dataset``: live manifests and pruning markers, oldest as-of date first."""
    folder = tree.manifests_dir(dataset)
    if not folder.is_dir() or folder.is_symlink():
        return []
    runs: list[ExportedRun] = []
    for path in sorted(folder.iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        name = path.name
        if name.endswith(MANIFEST_SUFFIX) and not name.startswith("."):
            runs.append(read_run(dataset, path, marked=False))
        elif name.startswith(".") and name.endswith(MANIFEST_SUFFIX + PRUNING_SUFFIX):
            runs.append(read_run(dataset, path, marked=True))
    return sorted(runs, key=lambda r: (r.as_of_date, r.manifest_path.name))


def latest_manifest(tree: RuntimeTree, dataset: str) -> Path | None:
    """The manifest latest.json points at (whether or not it still exists)."""
    try:
        data = json.loads(tree.latest_path(dataset).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    target = data.get("manifest") if isinstance(data, dict) else None
    return tree.exports / target if isinstance(target, str) and target else None


def resolve_inside(tree: RuntimeTree, dataset: str, relative: str) -> Path | None:
    """The file a manifest names, or None when the name leaves the dataset's folder.

    Refused: absolute names, ``..``, names outside ``<dataset>/``, and any folder on the way
    that is a symbolic link (which could lead anywhere). The file itself may be a link: callers
    check that with ``is_symlink`` and never follow it.
    """
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or len(pure.parts) < 2:
        return None
    if pure.parts[0] != dataset:
        return None
    current = tree.exports
    for part in pure.parts[:-1]:
        current = current / part
        if current.is_symlink():
            return None
    return tree.exports.joinpath(*pure.parts)
