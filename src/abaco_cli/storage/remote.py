"""The part GCS and S3 share: keys under the prefix, validation, retries, and the one case a
retry makes ambiguous (a conditional put whose first attempt landed but whose answer was lost).

A backend implements the ``_once`` hooks: one attempt each, raising only StorageError (its
``_translate`` sorts the library's exceptions into transient and permanent). Hooks return
ObjectInfo named by the full key; the public methods make names relative to the prefix.
"""

from __future__ import annotations

import dataclasses
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from abaco_cli.storage.base import (
    ObjectInfo,
    Payload,
    RetryPolicy,
    Scrubber,
    check_content_type,
    check_metadata,
    check_preconditions,
    check_sha256,
)
from abaco_cli.storage.errors import InvalidObjectName, PreconditionFailed, StorageError
from abaco_cli.storage.names import MAX_KEY_BYTES, check_name

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class PutRequest:
    """One conditional put, as the hooks receive it."""

    key: str
    payload: Payload
    metadata: Mapping[str, str]
    content_type: str
    if_absent: bool
    if_version: str | None


class RemoteDestination(ABC):
    """A bucket and a prefix on a remote store."""

    scheme: str = ""
    page_size: int = 1000  # objects a listing request asks for

    def __init__(self, bucket: str, prefix: str, url: str, retry: RetryPolicy, scrub: Scrubber):
        self.bucket = bucket
        self.prefix = prefix  # "" or ending with "/"
        self.url = url
        self._retry = retry
        self._scrub = scrub

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # ------------------------------------------------------------------------ hooks

    @abstractmethod
    def _put_once(self, request: PutRequest) -> ObjectInfo: ...

    @abstractmethod
    def _head_once(self, key: str) -> ObjectInfo | None: ...

    @abstractmethod
    def _get_once(self, key: str) -> tuple[bytes, ObjectInfo]: ...

    @abstractmethod
    def _list_page(self, prefix: str, token: str | None) -> tuple[list[ObjectInfo], str | None]:
        """One page of the objects whose keys start with ``prefix``, and the next token."""

    @abstractmethod
    def _delete_once(self, key: str, if_version: str | None) -> bool: ...

    @abstractmethod
    def _translate(self, exc: Exception, what: str) -> StorageError:
        """The StorageError for a library exception (transient or permanent)."""

    @abstractmethod
    def close(self) -> None:
        """Let go of connections (the destination may still be used: they reopen)."""

    # ---------------------------------------------------------------------- helpers

    def _key(self, name: str) -> str:
        key = self.prefix + check_name(name)
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise InvalidObjectName(
                f"{self.url}: {name!r} with the prefix is over {MAX_KEY_BYTES} bytes"
            )
        return key

    def _relative(self, info: ObjectInfo) -> ObjectInfo:
        return dataclasses.replace(info, name=info.name[len(self.prefix) :])

    def _guard(self, what: str, job: Callable[[], T]) -> T:
        """One attempt; library exceptions become StorageError with a scrubbed message."""
        try:
            return job()
        except StorageError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - every library error is sorted by _translate
            error = self._translate(exc, what)
        raise type(error)(
            self._scrub(f"{self.url}: {what}: {error.message}"),
            transient=error.transient,
            hint=error.hint,
        ) from None

    def _run(self, what: str, job: Callable[[], T]) -> T:
        """``job`` with retries of transient failures, within ``upload.max_total_seconds``."""
        return self._retry.run(what, lambda: self._guard(what, job), self._scrub)

    @staticmethod
    def _same_content(info: ObjectInfo, payload: Payload) -> bool:
        if info.size != payload.size:
            return False
        if info.sha256 is not None:
            return info.sha256 == payload.sha256.hex()
        if info.md5 is not None:
            return info.md5 == payload.md5_hex
        return False

    # ----------------------------------------------------------------------- public

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
        """Upload a file, streamed, its md5 and crc32c/sha256 checked by the store."""
        request = self._request(name, metadata, content_type, if_absent, if_version, sha256)
        return self._put(name, request(Payload.of_file(Path(path), sha256)))

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
        """Upload bytes (a manifest, a pointer), checked like a file."""
        request = self._request(name, metadata, content_type, if_absent, if_version, sha256)
        return self._put(name, request(Payload.of_bytes(data, sha256)))

    def _request(
        self,
        name: str,
        metadata: Mapping[str, str] | None,
        content_type: str | None,
        if_absent: bool,
        if_version: str | None,
        sha256: str | None,
    ) -> Callable[[Payload], PutRequest]:
        """Check a put's arguments (before any payload is read); the request for a payload."""
        key = self._key(name)
        meta, ctype = check_metadata(metadata), check_content_type(content_type)
        check_preconditions(if_absent, if_version)
        check_sha256(sha256)
        return lambda payload: PutRequest(key, payload, meta, ctype, if_absent, if_version)

    def _put(self, name: str, request: PutRequest) -> ObjectInfo:
        what = f"put {name}"
        sent = False  # an attempt failed after it may have reached the store

        def attempt() -> ObjectInfo:
            nonlocal sent
            try:
                return self._guard(what, lambda: self._put_once(request))
            except PreconditionFailed:
                if sent and (request.if_absent or request.if_version is not None):
                    # The earlier attempt may have landed and this one found its own object:
                    # the same bytes there mean the put succeeded.
                    current = self._guard(what, lambda: self._head_once(request.key))
                    if current is not None and self._same_content(current, request.payload):
                        return current
                raise
            except StorageError as exc:
                sent = sent or exc.transient
                raise

        return self._relative(self._retry.run(what, attempt, self._scrub))

    def head(self, name: str) -> ObjectInfo | None:
        """The object's description, or None when there is none."""
        key = self._key(name)
        info = self._run(f"head {name}", lambda: self._head_once(key))
        return None if info is None else self._relative(info)

    def get_bytes(self, name: str) -> tuple[bytes, ObjectInfo]:
        """The whole object (for small objects: manifests, pointers) and its description;
        ObjectNotFound when absent. The download is checked against the store's checksum."""
        key = self._key(name)
        data, info = self._run(f"get {name}", lambda: self._get_once(key))
        return data, self._relative(info)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose name starts with ``prefix`` (a string prefix, as the stores
        list), in name order, page by page (each page retried on its own).

        The names are untrusted input, returned as the store gave them: validate them with
        ``check_name`` before using them as paths or keys.
        """
        if prefix and ("\x00" in prefix or prefix.startswith("/")):
            raise StorageError(f"{self.url}: list prefix {prefix[:80]!r} refused")
        full = self.prefix + prefix
        what = f"list {prefix or '(everything)'}"
        token: str | None = None
        while True:
            page, token = self._run(what, functools.partial(self._list_page, full, token))
            for info in page:
                if info.name.startswith(self.prefix) and len(info.name) > len(self.prefix):
                    yield self._relative(info)
            if not token:
                return

    def delete(self, name: str, *, if_version: str | None = None) -> bool:
        """Delete the object (only that version, if given: PreconditionFailed otherwise);
        False when there was none."""
        key = self._key(name)
        check_preconditions(False, if_version)
        return self._run(f"delete {name}", lambda: self._delete_once(key, if_version))
