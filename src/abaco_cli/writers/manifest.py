"""Manifests (written last, one per dataset and as-of date) and the latest pointer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from abaco_cli.runtime.atomic import write_text_atomic
from abaco_cli.runtime.tree import RuntimeTree

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FileRecord:
    """One published file: where, what, how big, and its checksum."""

    path: str  # relative to the exports folder
    table: str
    format: str
    rows: int
    bytes: int
    sha256: str
    columns: list[dict[str, str]]


@dataclass(frozen=True)
class Manifest:
    run_id: str
    dataset: str
    as_of_date: str
    schema_version: int
    tool_version: str
    started_at: str
    finished_at: str
    source: dict[str, str]
    files: list[FileRecord]

    def to_json(self) -> str:
        payload: dict[str, Any] = {"manifest_version": MANIFEST_VERSION, "status": "success"}
        payload.update(asdict(self))
        return json.dumps(payload, indent=2, allow_nan=False) + "\n"


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A manifest's content, or None when there is none (or it is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def update_latest(tree: RuntimeTree, manifest: Manifest, manifest_path: Path) -> bool:
    """Point latest.json at this run unless a newer as-of date is already published."""
    pointer = tree.latest_path(manifest.dataset)
    current = read_manifest(pointer)
    if current and str(current.get("as_of_date", "")) > manifest.as_of_date:
        return False
    body = {
        "dataset": manifest.dataset,
        "as_of_date": manifest.as_of_date,
        "run_id": manifest.run_id,
        "finished_at": manifest.finished_at,
        "manifest": tree.relative(manifest_path),
        "files": [{"table": f.table, "format": f.format, "path": f.path} for f in manifest.files],
    }
    write_text_atomic(pointer, json.dumps(body, indent=2) + "\n", manifest.run_id)
    return True


def previous_files(manifest_path: Path) -> set[str]:
    data = read_manifest(manifest_path)
    if not data:
        return set()
    return {str(f["path"]) for f in data.get("files", []) if isinstance(f, dict) and "path" in f}


def as_of_text(as_of: date) -> str:
    return as_of.isoformat()
