"""Nothing half-written: temporary files beside their targets, fsync, rename into place."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_path_for(target: Path, run_id: str) -> Path:
    """A hidden name beside the target; query engines skip files that start with a dot."""
    return target.with_name(f".{target.name}.{run_id}{TEMP_SUFFIX}")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: Path, target: Path) -> None:
    """Rename a finished, fsynced file over its target and make the rename durable."""
    os.replace(temp, target)
    fsync_path(target.parent)


def write_text_atomic(target: Path, text: str, run_id: str) -> None:
    """Write a small text file (manifest, pointer) atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(target, run_id)
    try:
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        publish(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files a crashed run left behind (call only while holding the lock)."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.rglob(f".*{TEMP_SUFFIX}"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
