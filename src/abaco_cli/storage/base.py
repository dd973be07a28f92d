"""What every destination shares: the object description, the protocol, the payload's
checksums, metadata rules, the retry policy and the scrubbing of error text."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, TypeVar

import google_crc32c
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from abaco_cli.redaction import MARK, Redactor
from abaco_cli.storage.errors import ChecksumMismatch, StorageError

log = logging.getLogger("abaco.storage")
T = TypeVar("T")

CHUNK_BYTES = 1024 * 1024  # what one read of a file holds in memory
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_METADATA_BYTES = 2048  # S3's limit for all user metadata (keys and values)
_METADATA_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_METADATA_VALUE = re.compile(r"^[\x20-\x7e]{0,1024}$")
_CONTENT_TYPE = re.compile(r"^[\x21-\x7e]+/[\x21-\x7e]+(?:;[\x20-\x7e]*)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Environment variables whose values are cloud secrets (or identify them): scrubbed from every
# error text even where they do not stand as a whole token.
CLOUD_SECRET_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object as the store reports it.

    ``name`` is relative to the destination's prefix. From ``list()`` it is untrusted input:
    returned as the store gave it, so callers check it (``check_name``) before using it.
    ``md5`` and ``sha256`` are hex and set only when the store vouches for the whole object's
    digest; ``crc32c`` is GCS's base64 of the big-endian CRC32C (as GCS reports it).
    ``version`` is an opaque token for compare-and-swap (``if_version=``): the GCS generation,
    the S3 ETag (quoted, as S3 gives it), or the local backend's write token.
    """

    name: str
    size: int
    md5: str | None
    crc32c: str | None
    version: str
    metadata: Mapping[str, str]
    sha256: str | None = None
    content_type: str | None = None
    updated: datetime | None = None


class Destination(Protocol):
    """A place runs are uploaded to. Every method is safe to call from several threads.

    Writes are streamed and checksum-verified by the store; ``if_absent`` creates only,
    ``if_version`` replaces only that version (compare-and-swap); both raise PreconditionFailed
    when they lose. Errors are StorageError (``transient`` ones already retried).
    """

    url: str  # for display: never a credential in it
    scheme: str  # "gs", "s3" or "file": what ``version`` means

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
    ) -> ObjectInfo: ...

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
    ) -> ObjectInfo: ...

    def get_bytes(self, name: str) -> tuple[bytes, ObjectInfo]: ...

    def head(self, name: str) -> ObjectInfo | None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, name: str, *, if_version: str | None = None) -> bool: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- payloads


class Crc32c:
    """CRC32C (Castagnoli), as GCS computes it, through google-crc32c's C code."""

    def __init__(self, data: bytes = b"") -> None:
        self._sum = google_crc32c.Checksum(data)  # type: ignore[no-untyped-call]

    def update(self, data: bytes) -> None:
        self._sum.update(data)  # type: ignore[no-untyped-call]

    def digest(self) -> bytes:
        return bytes(self._sum.digest())  # type: ignore[no-untyped-call]


def crc32c_of(data: bytes) -> bytes:
    """The big-endian CRC32C of ``data`` (4 bytes)."""
    return Crc32c(data).digest()


@dataclass(frozen=True)
class Payload:
    """What one put sends: a file or bytes, with the checksums of one reading of it.

    The stores are given these checksums and refuse bytes that do not match them, so the object
    stored is exactly what was read here (and, with ``expected_sha256``, what the caller
    expected: a manifest's sha256).
    """

    size: int
    md5: bytes
    sha256: bytes
    crc32c: bytes
    path: Path | None = None
    data: bytes | None = None

    @classmethod
    def of_file(cls, path: Path, expected_sha256: str | None = None) -> Payload:
        """Read ``path`` once, in chunks, for its size and checksums."""
        md5, sha, crc = hashlib.md5(usedforsecurity=False), hashlib.sha256(), Crc32c()
        size = 0
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    md5.update(chunk)
                    sha.update(chunk)
                    crc.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
        payload = cls(size, md5.digest(), sha.digest(), crc.digest(), path=path)
        payload.expect(expected_sha256, str(path))
        return payload

    @classmethod
    def of_bytes(cls, data: bytes, expected_sha256: str | None = None) -> Payload:
        payload = cls(
            len(data),
            hashlib.md5(data, usedforsecurity=False).digest(),
            hashlib.sha256(data).digest(),
            crc32c_of(data),
            data=bytes(data),
        )
        payload.expect(expected_sha256, "the bytes given")
        return payload

    def expect(self, sha256: str | None, what: str) -> None:
        """ChecksumMismatch (permanent) unless the content has ``sha256`` (hex), if given."""
        if sha256 is None:
            return
        check_sha256(sha256)
        if self.sha256.hex() != sha256:
            raise ChecksumMismatch(
                f"{what} has sha256 {self.sha256.hex()}, not the expected {sha256}: not uploaded"
            )

    def open(self) -> BinaryIO:
        """A fresh reader of the content, from its start."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise StorageError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    @property
    def md5_hex(self) -> str:
        return self.md5.hex()

    @property
    def md5_base64(self) -> str:
        return base64.b64encode(self.md5).decode("ascii")

    @property
    def sha256_base64(self) -> str:
        return base64.b64encode(self.sha256).decode("ascii")

    @property
    def crc32c_base64(self) -> str:
        return base64.b64encode(self.crc32c).decode("ascii")


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Custom metadata every backend keeps alike: keys of lowercase letters, digits, '-' and
    '_' (S3 folds case), printable ASCII values, at most 2 KiB in all (S3's limit)."""
    checked: dict[str, str] = {}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not _METADATA_KEY.match(key):
            raise StorageError(
                f"metadata key {str(key)[:80]!r} refused: use 1-64 lowercase letters, digits, "
                "'-' and '_', starting with a letter or digit"
            )
        if not isinstance(value, str) or not _METADATA_VALUE.match(value):
            raise StorageError(
                f"metadata value of {key!r} refused: printable ASCII, at most 1024 characters"
            )
        checked[key] = value
    if sum(len(k) + len(v) for k, v in checked.items()) > MAX_METADATA_BYTES:
        raise StorageError(f"metadata refused: more than {MAX_METADATA_BYTES} bytes in all")
    return checked


def check_content_type(content_type: str | None) -> str:
    """``type/subtype[; parameters]`` in printable ASCII; application/octet-stream if None."""
    if content_type is None:
        return DEFAULT_CONTENT_TYPE
    if not _CONTENT_TYPE.match(content_type) or len(content_type) > 200:
        raise StorageError(f"content type {content_type[:80]!r} refused: not type/subtype")
    return content_type


def check_sha256(sha256: str | None) -> None:
    """An expected sha256 is 64 lowercase hex digits (as manifests write it)."""
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.match(sha256)):
        raise StorageError(f"{str(sha256)[:80]!r} is not a sha256 (64 lowercase hex digits)")


def check_preconditions(if_absent: bool, if_version: str | None) -> None:
    if if_absent and if_version is not None:
        raise StorageError("if_absent and if_version exclude each other: choose one")
    if if_version is not None and (not isinstance(if_version, str) or not if_version):
        raise StorageError("if_version must be a version token from ObjectInfo.version")


# ------------------------------------------------------------------------- scrubbing


class Scrubber:
    """Takes secrets out of any text that may reach a user: the configuration's DSN secrets
    (by the project's Redactor) and the cloud credentials of the environment, wherever they
    stand (they are long random tokens, never a part of a path)."""

    def __init__(self, redactor: Redactor, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        found = {env.get(name, "") for name in CLOUD_SECRET_VARIABLES}
        self._redactor = Redactor([*redactor.secrets, *found])
        self._cloud = sorted((s for s in found if len(s.strip()) >= 8), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        text = self._redactor.text(text)
        for secret in self._cloud:
            text = text.replace(secret, MARK)
        return text


# ---------------------------------------------------------------------------- retries


@dataclass
class RetryPolicy:
    """Transient failures of one operation are retried with jittered exponential backoff
    (0.25 s doubling, at most 8 s a wait) until ``max_total_seconds`` would be passed."""

    max_total_seconds: float
    initial_wait_seconds: float = 0.25
    max_wait_seconds: float = 8.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def run(self, what: str, job: Callable[[], T], scrub: Callable[[str], str]) -> T:
        """``job()``, retried while it raises a transient StorageError; the last error is
        raised with the number of attempts and the time spent."""
        start = time.monotonic()
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            return job()

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "transient storage failure (attempt %d), retrying in %.1fs: %s",
                state.attempt_number,
                wait,
                scrub(str(exc)),
            )

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, StorageError) and e.transient),
            stop=stop_before_delay(self.max_total_seconds),
            wait=wait_exponential(multiplier=self.initial_wait_seconds, max=self.max_wait_seconds)
            + wait_random(0, self.initial_wait_seconds),
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except StorageError as exc:
            if exc.transient and attempts > 1:
                spent = time.monotonic() - start
                raise type(exc)(
                    f"{exc.message} (gave up after {attempts} attempts in {spent:.1f}s)",
                    transient=True,
                    hint=exc.hint,
                ) from None
            raise


def sorted_by_key(infos: Iterable[ObjectInfo]) -> list[ObjectInfo]:
    """Name order as the stores list: by the UTF-8 bytes of the name."""
    return sorted(infos, key=lambda info: info.name.encode("utf-8", "surrogateescape"))
