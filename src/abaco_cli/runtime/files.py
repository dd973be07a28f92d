"""Every delete, overwrite and rename abaco does in the runtime tree.

Each operation first asks ``RuntimeTree.check`` whether the path is a place of the expected kind
below the root, with no symbolic link on the way; files are opened with ``O_NOFOLLOW``. A path
that comes from a file (a manifest, a pointer, a journal) is therefore never trusted: at worst
the operation is refused with UnsafePathError and nothing is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from abaco_cli import libc
from abaco_cli.errors import UnsafePathError
from abaco_cli.libc import SYNC_FILE_RANGE_WRITE
from abaco_cli.runtime.tree import TEMP_SUFFIX, Place, RuntimeTree

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def real_folder(tree: RuntimeTree, folder: Path) -> bool:
    """Is ``folder`` a folder below the root reached without any symbolic link?"""
    try:
        parts = Path(os.path.abspath(folder)).relative_to(tree.root).parts
    except ValueError:
        return False
    current = tree.root
    for part in ("", *parts):
        current = current / part if part else current
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            return False
    return True


def make_folders(tree: RuntimeTree, path: Path, kind: Place) -> Path:
    """Check ``path`` as a place of ``kind`` and create its missing folders (never through a
    link: each folder made is checked with lstat); the checked path."""
    checked = tree.check(path, kind)
    current = tree.root
    if not current.is_dir():
        current.mkdir(parents=True, exist_ok=True)
    for part in checked.relative_to(tree.root).parts[:-1]:
        current = current / part
        with contextlib.suppress(FileExistsError):
            os.mkdir(current, 0o750)
        mode = os.lstat(current).st_mode
        if not stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
            raise UnsafePathError(f"{current} is not a folder (or is a symbolic link)")
    return checked


WRITEBACK_BYTES = 8 << 20  # what a new file was written is handed to the disk this much at a time


class ChecksummedFile(io.FileIO):
    """A file written front to back whose size and sha256 are taken from the bytes as they go
    to the operating system, so that a staged export is not read back whole to be listed in
    its manifest (for 135 MB, 0.14 s of the end of a run). A seek to anywhere but the end
    makes the checksum unknown; ``written`` then says so.

    Every ``WRITEBACK_BYTES`` written are handed to the disk at once (sync_file_range, which
    does not wait), so that the fsync before publishing finds little left to write (135 MB:
    48 -> 4 ms) and a large export does not pile up dirty memory. The fsync stays what makes
    the file durable."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd, "wb", closefd=True)
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._handed = 0  # bytes handed to the disk
        self._moved = False

    def write(self, data: ReadableBuffer, /) -> int:
        count = super().write(data)
        if count:
            self._sha256.update(memoryview(data).cast("B")[:count])
            self._size += count
            if self._size - self._handed >= WRITEBACK_BYTES and not self._moved:
                self._write_back()
        return count

    def _write_back(self) -> None:
        function = libc.sync_file_range()
        if function is not None:  # a hint: a failure leaves the work to the fsync
            function(self.fileno(), self._handed, self._size - self._handed, SYNC_FILE_RANGE_WRITE)
        self._handed = self._size

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        position = super().seek(offset, whence)
        if position != self._size:
            self._moved = True
        return position

    def truncate(self, size: int | None = None, /) -> int:
        self._moved = True
        return super().truncate(size)

    def written(self) -> tuple[int, str] | None:
        """Size and sha256 of what was written, or None after a seek or a truncate."""
        return None if self._moved else (self._size, self._sha256.hexdigest())


def open_new(tree: RuntimeTree, path: Path, kind: Place) -> BinaryIO:
    """A new file at a checked place (its folders created); it must not exist yet. Its size and
    sha256 are kept as it is written: ``written_checksum`` once it is flushed."""
    checked = make_folders(tree, path, kind)
    try:
        fd = os.open(checked, _CREATE, 0o640)
    except FileExistsError:
        raise UnsafePathError(f"{checked} exists already; refusing to overwrite it") from None
    try:
        return io.BufferedWriter(ChecksummedFile(fd))
    except BaseException:
        os.close(fd)
        raise


def written_checksum(sink: BinaryIO) -> tuple[int, str] | None:
    """Size and sha256 of what went through a flushed ``open_new`` file, or None when they are
    not known (another kind of file, or one that was sought or truncated)."""
    raw = getattr(sink, "raw", None)
    return raw.written() if isinstance(raw, ChecksummedFile) else None


@contextlib.contextmanager
def open_read(tree: RuntimeTree, path: Path, kind: Place) -> Iterator[BinaryIO]:
    """Read a checked file without following a link; OSError when it is missing."""
    checked = tree.check(path, kind)
    try:
        fd = os.open(checked, _READ)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the file became a link between the check and the open
            raise UnsafePathError(f"{checked} is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise UnsafePathError(f"{checked} is not a regular file")
        yield handle


def read_text(tree: RuntimeTree, path: Path, kind: Place) -> str:
    with open_read(tree, path, kind) as handle:
        return handle.read().decode("utf-8")


def checksum_of_staged(
    tree: RuntimeTree, path: Path, kind: Place, written: tuple[int, str] | None
) -> tuple[int, str]:
    """Size and sha256 of a staged file: those taken as it was ``written`` while the file still
    has that size, else read from the file (``sha256_of``)."""
    if written is not None:
        with contextlib.suppress(OSError):
            if os.lstat(tree.check(path, kind)).st_size == written[0]:
                return written
    return sha256_of(tree, path, kind)


def sha256_of(tree: RuntimeTree, path: Path, kind: Place) -> tuple[int, str]:
    """Size and sha256 of a checked file."""
    digest = hashlib.sha256()
    size = 0
    with open_read(tree, path, kind) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def remove(tree: RuntimeTree, path: Path, kind: Place) -> bool:
    """Delete one file at a checked place (a link is refused, never followed); True when it
    existed. The folder is synced, so the removal survives a crash."""
    checked = tree.check(path, kind)
    try:
        os.unlink(checked)
    except FileNotFoundError:
        return False
    fsync_dir(checked.parent)
    return True


def replace(tree: RuntimeTree, source: Path, kind: Place, target: Path, target_kind: Place) -> None:
    """Rename ``source`` over ``target`` (both checked), durably."""
    checked_source = tree.check(source, kind)
    checked_target = tree.check(target, target_kind)
    os.replace(checked_source, checked_target)
    fsync_dir(checked_target.parent)


def write_atomic(tree: RuntimeTree, target: Path, kind: Place, content: bytes, run_id: str) -> None:
    """Write a small file (manifest, pointer, alias, journal): a temporary file beside it,
    fsync, rename over it. A crash leaves the old file or the new one, never half of one."""
    temp = RuntimeTree.temp_path(target, run_id)
    make_folders(tree, target, kind)
    with contextlib.suppress(FileNotFoundError):
        remove(tree, temp, Place.TEMP)  # left by an earlier attempt of this same run
    try:
        with open_new(tree, temp, Place.TEMP) as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        replace(tree, temp, Place.TEMP, target, kind)
    except BaseException:
        with contextlib.suppress(OSError, UnsafePathError):
            remove(tree, temp, Place.TEMP)
        raise


def remove_empty_folder(tree: RuntimeTree, folder: Path) -> bool:
    """Remove a partition folder (``as_of_date=...``) once it is empty; True when removed."""
    try:
        relative = folder.relative_to(tree.exports).parts
    except ValueError:
        return False
    if len(relative) != 3 or not relative[2].startswith("as_of_date="):
        return False
    try:
        if stat.S_ISLNK(os.lstat(folder).st_mode):
            return False
        os.rmdir(folder)
    except OSError:
        return False  # not empty, or already gone
    fsync_dir(folder.parent)
    return True


def walk_files(folder: Path) -> Iterator[tuple[Path, bool]]:
    """Every entry below ``folder`` that is not a folder, as (path, is_link); folders that are
    links are yielded as entries and never entered."""
    try:
        if stat.S_ISLNK(os.lstat(folder).st_mode):
            return
    except FileNotFoundError:
        return
    for root, dirs, names in os.walk(folder, followlinks=False):
        here = Path(root)
        for name in sorted(dirs):
            if (here / name).is_symlink():
                yield here / name, True
        dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink())
        for name in sorted(names):
            yield here / name, (here / name).is_symlink()


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and (
        name.endswith(TEMP_SUFFIX) or name.endswith(TEMP_SUFFIX + ".previous")
    )


def sweep_temps(tree: RuntimeTree, dataset: str) -> list[Path]:
    """Delete the temporary files a crashed run left in a dataset's folder (call only while
    holding the dataset's lock, after the journal's recovery); links are never touched."""
    removed: list[Path] = []
    for path, is_link in walk_files(tree.dataset_dir(dataset)):
        if is_link or not is_temp_name(path.name):
            continue
        try:
            if remove(tree, path, Place.TEMP):
                removed.append(path)
        except UnsafePathError:
            continue  # not one of abaco's temporary names: left for `prune` to list
    for folder in {p.parent for p in removed}:
        remove_empty_folder(tree, folder)
    return removed


def exists(path: Path) -> bool:
    """Is there an entry (of any kind, a link included) at ``path``?"""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    return True
