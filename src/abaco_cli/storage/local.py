"""A folder as a destination (local or mounted): objects are plain files below its root, so
the folder mirrors the remote layout.

- Writes are atomic: a hidden temporary file beside the target, fsync, read back and checked
  (sha256), renamed into place, the folder fsynced. Nothing half-written is ever an object.
- Conditions (put-if-absent, compare-and-swap, conditional delete) are decided under an
  exclusive flock on ``<root>/.abaco-storage/lock``, held only for the check and the renames;
  readers hold it shared, so they never see an object beside another object's metadata.
- Each object's metadata lives in ``<root>/.abaco-storage/meta/<name>.json``: its version (a
  random token per write, so compare-and-swap has no ABA), sha256, md5, content type, custom
  metadata, and the identity (inode, size, mtime) of the file it describes. A file that no
  sidecar describes (put there by hand, or a crash between the two renames) is still an
  object: its version is ``stat-<inode>-<mtime_ns>-<size>`` and it has no metadata.
- The root itself may be a symbolic link; nothing below it is followed: every folder is opened
  relative to its parent with O_NOFOLLOW, and a link where a folder or an object should be is
  refused. Only the root's last component is created; a missing parent is an error (a mount
  point that is not mounted should not fill the disk below it).
- A name cannot be both an object and a folder here ("a" and "a/b"), as it can on GCS and S3.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from abaco_cli.storage.base import (
    CHUNK_BYTES,
    ObjectInfo,
    check_content_type,
    check_metadata,
    check_preconditions,
    check_sha256,
    sorted_by_key,
)
from abaco_cli.storage.errors import (
    ChecksumMismatch,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
)
from abaco_cli.storage.names import RESERVED_PREFIX, check_name

STATE_DIR = ".abaco-storage"
META_DIR = "meta"
LOCK_FILE = "lock"
TEMP_PREFIX = ".abaco-tmp-"
SIDECAR_LIMIT = 64 * 1024
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LOCK_POLL_SECONDS = 0.05


def _fsync_dir(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a folder
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise


class LocalDestination:
    """``file:///abs/path`` or a plain path."""

    scheme = "file"

    def __init__(self, root: Path, *, lock_timeout_seconds: float = 120.0) -> None:
        self.root = root
        self.url = str(root)
        self._lock_timeout = lock_timeout_seconds

    def __repr__(self) -> str:
        return f"LocalDestination({self.url!r})"

    def close(self) -> None:
        """Nothing stays open between calls."""

    # ----------------------------------------------------------------- folders

    def _error(self, what: str, exc: OSError | str) -> StorageError:
        reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
        return StorageError(f"{self.url}: {what}: {reason}")

    def _open_root(self, create: bool) -> int | None:
        """The root's descriptor (the root may be a link); None when it does not exist."""
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as exc:
            raise self._error("cannot open the folder", exc) from None
        try:
            os.mkdir(self.root, 0o750)
        except FileExistsError:
            pass
        except FileNotFoundError:
            raise self._error(
                "cannot create the folder", "its parent folder does not exist"
            ) from None
        except OSError as exc:
            raise self._error("cannot create the folder", exc) from None
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._error("cannot open the folder", exc) from None

    def _refuse_entry(self, parent: int, entry: str, shown: str) -> StorageError:
        try:
            mode = os.stat(entry, dir_fd=parent, follow_symlinks=False).st_mode
        except OSError:
            mode = 0
        if stat.S_ISLNK(mode):
            return self._error(
                shown, "is a symbolic link: refused (nothing below the root is followed)"
            )
        return self._error(shown, "is an object (or not a folder), so it cannot hold objects")

    def _open_dir(self, parent: int, parts: list[str], *, create: bool) -> int | None:
        """The folder ``parts`` below ``parent``, never through a link; None when missing
        (and not ``create``)."""
        fd = os.dup(parent)
        try:
            for index, part in enumerate(parts):
                shown = "/".join(parts[: index + 1])
                try:
                    child = os.open(part, _DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    try:
                        os.mkdir(part, 0o750, dir_fd=fd)
                        _fsync_dir(fd)
                    except FileExistsError:
                        pass
                    try:
                        child = os.open(part, _DIR, dir_fd=fd)
                    except OSError as exc:
                        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                            raise self._refuse_entry(fd, part, shown) from None
                        raise self._error(shown, exc) from None
                except OSError as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                        raise self._refuse_entry(fd, part, shown) from None
                    raise self._error(shown, exc) from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    @contextmanager
    def _locked(self, root: int, *, exclusive: bool) -> Iterator[None]:
        """The destination's flock; a shared one is skipped while nothing was ever written."""
        state = self._open_dir(root, [STATE_DIR], create=exclusive)
        if state is None:
            yield
            return
        try:
            fd = os.open(
                LOCK_FILE,
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o640,
                dir_fd=state,
            )
        except OSError as exc:
            os.close(state)
            raise self._error("cannot open its lock", exc) from None
        os.close(state)
        try:
            deadline = time.monotonic() + self._lock_timeout
            while True:
                try:
                    fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StorageError(
                            f"{self.url}: its lock stayed busy for {self._lock_timeout:g}s",
                            transient=True,
                        ) from None
                    time.sleep(_LOCK_POLL_SECONDS)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    # ----------------------------------------------------------------- sidecars

    def _read_sidecar(self, root: int, parts: list[str]) -> dict[str, Any] | None:
        folder = self._open_dir(root, [STATE_DIR, META_DIR, *parts[:-1]], create=False)
        if folder is None:
            return None
        try:
            fd = os.open(parts[-1] + ".json", _READ, dir_fd=folder)
        except OSError:
            return None  # none, or not ours (a link): the object has no metadata
        finally:
            os.close(folder)
        try:
            text = os.read(fd, SIDECAR_LIMIT + 1)
        finally:
            os.close(fd)
        try:
            side = json.loads(text) if len(text) <= SIDECAR_LIMIT else None
        except ValueError:
            return None
        if not isinstance(side, dict):
            return None
        ints = ("ino", "size", "mtime_ns")
        texts = ("version", "sha256", "md5", "content_type")
        if not all(isinstance(side.get(k), int) for k in ints):
            return None
        if not all(isinstance(side.get(k), str) for k in texts):
            return None
        meta = side.get("metadata")
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            return None
        return side

    def _write_sidecar(self, root: int, parts: list[str], side: dict[str, Any]) -> None:
        folder = self._open_dir(root, [STATE_DIR, META_DIR, *parts[:-1]], create=True)
        assert folder is not None
        temp = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            fd = os.open(temp, _NEW, 0o640, dir_fd=folder)
            try:
                os.write(fd, json.dumps(side, sort_keys=True).encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, parts[-1] + ".json", src_dir_fd=folder, dst_dir_fd=folder)
            _fsync_dir(folder)
        except BaseException:
            with suppress(OSError):
                os.unlink(temp, dir_fd=folder)
            raise
        finally:
            os.close(folder)

    def _remove_sidecar(self, root: int, parts: list[str]) -> None:
        folder = self._open_dir(root, [STATE_DIR, META_DIR, *parts[:-1]], create=False)
        if folder is None:
            return
        try:
            os.unlink(parts[-1] + ".json", dir_fd=folder)
        except FileNotFoundError:
            pass
        finally:
            os.close(folder)

    # ------------------------------------------------------------------ objects

    @staticmethod
    def _parts(name: str) -> list[str]:
        return check_name(name).split("/")

    def _entry(self, folder: int, base: str, name: str) -> os.stat_result | None:
        """The object's lstat; None when absent or a folder; a link is refused."""
        try:
            found = os.stat(base, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(name, exc) from None
        if stat.S_ISLNK(found.st_mode):
            raise self._error(
                name, "is a symbolic link: refused (nothing below the root is followed)"
            )
        if stat.S_ISDIR(found.st_mode):
            return None
        if not stat.S_ISREG(found.st_mode):
            raise self._error(name, "is not a regular file: refused")
        return found

    def _info(self, root: int, parts: list[str], found: os.stat_result) -> ObjectInfo:
        side = self._read_sidecar(root, parts)
        updated = datetime.fromtimestamp(found.st_mtime_ns / 1e9, UTC)
        name = "/".join(parts)
        if side is not None and (side["ino"], side["size"], side["mtime_ns"]) == (
            found.st_ino,
            found.st_size,
            found.st_mtime_ns,
        ):
            return ObjectInfo(
                name=name,
                size=found.st_size,
                md5=side["md5"],
                crc32c=None,
                version=side["version"],
                metadata=dict(side["metadata"]),
                sha256=side["sha256"],
                content_type=side["content_type"],
                updated=updated,
            )
        return ObjectInfo(
            name=name,
            size=found.st_size,
            md5=None,
            crc32c=None,
            version=f"stat-{found.st_ino}-{found.st_mtime_ns}-{found.st_size}",
            metadata={},
            updated=updated,
        )

    def put_file(
        self,
        name: str,
        path: Path,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
        if_absent: bool = False,
        if_version: str | None = None,
        sha256: str | None = None,
    ) -> ObjectInfo:
        """Copy a file in (streamed), checked by its sha256 after the write."""
        self._parts(name)  # a bad name is refused before the file is opened
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
        with source:
            return self._put(
                name, source.read, str(path), metadata, content_type, if_absent, if_version, sha256
            )

    def put_bytes(
        self,
        name: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
        if_absent: bool = False,
        if_version: str | None = None,
        sha256: str | None = None,
    ) -> ObjectInfo:
        """Write bytes in, checked like a file."""
        view = memoryview(bytes(data))
        offset = 0

        def read(size: int) -> bytes:
            nonlocal offset
            chunk = bytes(view[offset : offset + size])
            offset += len(chunk)
            return chunk

        return self._put(
            name, read, "the bytes given", metadata, content_type, if_absent, if_version, sha256
        )

    def _put(
        self,
        name: str,
        read: Callable[[int], bytes],
        source: str,
        metadata: Mapping[str, str] | None,
        content_type: str | None,
        if_absent: bool,
        if_version: str | None,
        expected: str | None,
    ) -> ObjectInfo:
        parts = self._parts(name)
        meta, ctype = check_metadata(metadata), check_content_type(content_type)
        check_preconditions(if_absent, if_version)
        check_sha256(expected)
        root = self._open_root(create=True)
        assert root is not None
        try:
            folder = self._open_dir(root, parts[:-1], create=True)
            assert folder is not None
            try:
                return self._write(
                    root, folder, parts, read, source, meta, ctype, if_absent, if_version, expected
                )
            finally:
                os.close(folder)
        finally:
            os.close(root)

    def _write(
        self,
        root: int,
        folder: int,
        parts: list[str],
        read: Callable[[int], bytes],
        source: str,
        meta: dict[str, str],
        ctype: str,
        if_absent: bool,
        if_version: str | None,
        expected: str | None,
    ) -> ObjectInfo:
        name, base = "/".join(parts), parts[-1]
        temp = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            fd = os.open(temp, _NEW, 0o640, dir_fd=folder)
        except OSError as exc:
            raise self._error(f"cannot write {name}", exc) from None
        renamed = False
        try:
            sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
            try:
                while chunk := read(CHUNK_BYTES):
                    sha.update(chunk)
                    md5.update(chunk)
                    size += len(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError as exc:
                raise self._error(f"cannot write {name}", exc) from None
            written = self._sha256_of(fd)
            if written != sha.hexdigest():
                raise ChecksumMismatch(
                    f"{self.url}: {name} reads back with sha256 {written}, not the "
                    f"{sha.hexdigest()} written: not kept",
                    transient=True,
                )
            if expected is not None and sha.hexdigest() != expected:
                raise ChecksumMismatch(
                    f"{source} has sha256 {sha.hexdigest()}, not the expected {expected}: "
                    "not uploaded"
                )
            written_stat = os.fstat(fd)
            with self._locked(root, exclusive=True):
                found = self._entry(folder, base, name)
                if found is None and self._is_dir(folder, base):
                    raise self._error(name, "is a folder of other objects: cannot be an object too")
                current = None if found is None else self._info(root, parts, found)
                if if_absent and current is not None:
                    raise PreconditionFailed(
                        f"{self.url}: {name} exists (version {current.version})"
                    )
                if if_version is not None and (current is None or current.version != if_version):
                    now = "absent" if current is None else f"at version {current.version}"
                    raise PreconditionFailed(f"{self.url}: {name} is {now}, not at {if_version}")
                side = {
                    "version": uuid.uuid4().hex,
                    "sha256": sha.hexdigest(),
                    "md5": md5.hexdigest(),
                    "size": size,
                    "ino": written_stat.st_ino,
                    "mtime_ns": written_stat.st_mtime_ns,
                    "content_type": ctype,
                    "metadata": meta,
                }
                try:
                    os.replace(temp, base, src_dir_fd=folder, dst_dir_fd=folder)
                    renamed = True
                    _fsync_dir(folder)
                    self._write_sidecar(root, parts, side)
                except OSError as exc:
                    raise self._error(f"cannot write {name}", exc) from None
            return ObjectInfo(
                name=name,
                size=size,
                md5=md5.hexdigest(),
                crc32c=None,
                version=str(side["version"]),
                metadata=dict(meta),
                sha256=sha.hexdigest(),
                content_type=ctype,
                updated=datetime.fromtimestamp(written_stat.st_mtime_ns / 1e9, UTC),
            )
        finally:
            os.close(fd)
            if not renamed:
                with suppress(OSError):
                    os.unlink(temp, dir_fd=folder)

    @staticmethod
    def _sha256_of(fd: int) -> str:
        digest, offset = hashlib.sha256(), 0
        while chunk := os.pread(fd, CHUNK_BYTES, offset):
            digest.update(chunk)
            offset += len(chunk)
        return digest.hexdigest()

    @staticmethod
    def _is_dir(folder: int, base: str) -> bool:
        try:
            return stat.S_ISDIR(os.stat(base, dir_fd=folder, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def head(self, name: str) -> ObjectInfo | None:
        """The object's description, or None."""
        parts = self._parts(name)
        root = self._open_root(create=False)
        if root is None:
            return None
        try:
            folder = self._open_dir(root, parts[:-1], create=False)
            if folder is None:
                return None
            try:
                with self._locked(root, exclusive=False):
                    found = self._entry(folder, parts[-1], name)
                    return None if found is None else self._info(root, parts, found)
            finally:
                os.close(folder)
        finally:
            os.close(root)

    def get_bytes(self, name: str) -> tuple[bytes, ObjectInfo]:
        """The whole object and its description, its sha256 checked against the one recorded
        when it was written; ObjectNotFound when absent."""
        parts = self._parts(name)
        root = self._open_root(create=False)
        if root is None:
            raise ObjectNotFound(f"{self.url}: no object {name}")
        try:
            folder = self._open_dir(root, parts[:-1], create=False)
            if folder is None:
                raise ObjectNotFound(f"{self.url}: no object {name}")
            try:
                with self._locked(root, exclusive=False):
                    found = self._entry(folder, parts[-1], name)
                    if found is None:
                        raise ObjectNotFound(f"{self.url}: no object {name}")
                    info = self._info(root, parts, found)
                    data = self._read(folder, parts[-1], name, found)
            finally:
                os.close(folder)
        finally:
            os.close(root)
        if info.sha256 is not None and hashlib.sha256(data).hexdigest() != info.sha256:
            raise ChecksumMismatch(
                f"{self.url}: {name} no longer has the sha256 it was written with: changed or "
                "damaged on disk"
            )
        return data, info

    def _read(self, folder: int, base: str, name: str, found: os.stat_result) -> bytes:
        try:
            fd = os.open(base, _READ, dir_fd=folder)
        except OSError as exc:
            raise self._error(f"cannot read {name}", exc) from None
        try:
            if os.fstat(fd).st_ino != found.st_ino:
                raise StorageError(f"{self.url}: {name} changed while it was read", transient=True)
            chunks, offset = [], 0
            while chunk := os.pread(fd, CHUNK_BYTES, offset):
                chunks.append(chunk)
                offset += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose name starts with ``prefix``, in name order (symbolic links and
        abaco's own ``.abaco-`` entries are skipped). The names are untrusted input (files may
        have been put here by hand): validate them with ``check_name`` before using them."""
        if "\x00" in prefix or prefix.startswith("/") or "\\" in prefix:
            raise StorageError(f"{self.url}: list prefix {prefix[:80]!r} refused")
        folder_parts = prefix.rpartition("/")[0].split("/") if "/" in prefix else []
        if any(part in ("", ".", "..") for part in folder_parts):
            raise StorageError(f"{self.url}: list prefix {prefix[:80]!r} refused")
        root = self._open_root(create=False)
        if root is None:
            return
        found: builtins.list[ObjectInfo] = []
        try:
            with self._locked(root, exclusive=False):
                start = self._open_dir(root, folder_parts, create=False)
                if start is not None:
                    self._walk(root, start, folder_parts, prefix, found)  # closes start
        finally:
            os.close(root)
        yield from sorted_by_key(found)  # the lock is not held while the caller iterates

    def _walk(
        self,
        root: int,
        folder: int,
        parts: builtins.list[str],
        prefix: str,
        found: builtins.list[ObjectInfo],
    ) -> None:
        try:
            with os.scandir(folder) as entries:
                listed = [(e.name, e.stat(follow_symlinks=False)) for e in entries]
        except OSError as exc:
            os.close(folder)
            raise self._error("cannot list " + ("/".join(parts) or "the folder"), exc) from None
        try:
            for entry, mode in ((n, s.st_mode) for n, s in listed):
                if entry.startswith(RESERVED_PREFIX) or stat.S_ISLNK(mode):
                    continue
                name = "/".join([*parts, entry])
                if stat.S_ISDIR(mode):
                    if (name + "/").startswith(prefix) or prefix.startswith(name + "/"):
                        child = self._open_dir(folder, [entry], create=False)
                        if child is not None:
                            self._walk(root, child, [*parts, entry], prefix, found)
                elif stat.S_ISREG(mode) and name.startswith(prefix):
                    result = self._entry(folder, entry, name)
                    if result is not None:
                        found.append(self._info(root, [*parts, entry], result))
        finally:
            os.close(folder)

    def delete(self, name: str, *, if_version: str | None = None) -> bool:
        """Delete the object (only that version, if given); False when there was none."""
        parts = self._parts(name)
        check_preconditions(False, if_version)
        root = self._open_root(create=False)
        if root is None:
            return False
        try:
            folder = self._open_dir(root, parts[:-1], create=False)
            if folder is None:
                return False
            try:
                with self._locked(root, exclusive=True):
                    found = self._entry(folder, parts[-1], name)
                    if found is None:
                        return False
                    if if_version is not None:
                        current = self._info(root, parts, found)
                        if current.version != if_version:
                            raise PreconditionFailed(
                                f"{self.url}: {name} is at version {current.version}, "
                                f"not {if_version}"
                            )
                    try:
                        os.unlink(parts[-1], dir_fd=folder)
                        _fsync_dir(folder)
                        self._remove_sidecar(root, parts)
                    except OSError as exc:
                        raise self._error(f"cannot delete {name}", exc) from None
                    return True
            finally:
                os.close(folder)
        finally:
            os.close(root)
