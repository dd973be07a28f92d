"""Google Cloud Storage through google-cloud-storage (the emulator through
``STORAGE_EMULATOR_HOST``).

Checksums: an upload declares the md5 and crc32c of the file in the object's resource, so GCS
refuses other bytes (small files go up in one multipart request; larger ones resumably, in
8 MiB chunks, the last one carrying ``x-goog-hash: crc32c=...``, which the client checks
against the finished object too: a mismatch deletes it). The object's md5 and crc32c in the
answer are compared with those sent as well. Downloads are checked against the crc32c.

Conditions: ``if_generation_match=0`` creates only, ``if_generation_match=<generation>``
replaces (or deletes) only that generation; a generation is unique to one write.

Credentials: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's, or the
VM's service account through the metadata server); with STORAGE_EMULATOR_HOST, none. The
library's own retries are off (``retry=None``) so that one policy bounds the total time.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from contextlib import suppress
from typing import Any

import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import storage  # type: ignore[import-untyped]
from google.cloud.storage.exceptions import (  # type: ignore[import-untyped]
    DataCorruption,
    InvalidResponse,
)

from abaco_cli.storage.base import ObjectInfo, RetryPolicy, Scrubber, crc32c_of
from abaco_cli.storage.errors import (
    ChecksumMismatch,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
)
from abaco_cli.storage.remote import PutRequest, RemoteDestination

CHUNK_BYTES = 8 * 1024 * 1024  # a resumable upload holds one chunk in memory
TIMEOUT_SECONDS = (10.0, 60.0)  # connect, read
_CHECKSUM_WORDS = re.compile(r"(md5|crc32c)\b.*\b(match|mismatch)", re.IGNORECASE)
_CREDENTIAL_HINT = (
    "Check the Google credentials abaco runs with (GOOGLE_APPLICATION_CREDENTIALS, "
    "`gcloud auth application-default login`, or the VM's service account and its scopes) and "
    "that they may create, read, list and delete objects in the bucket."
)


def _hex(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True).hex()
    except ValueError:
        return None


def _generation(version: str) -> int:
    if not version.isdigit():
        raise PreconditionFailed(f"{version[:40]!r} is not a GCS generation")
    return int(version)


class GCSDestination(RemoteDestination):
    """``gs://bucket/prefix``."""

    scheme = "gs"

    def __init__(
        self, bucket: str, prefix: str, url: str, retry: RetryPolicy, scrub: Scrubber
    ) -> None:
        super().__init__(bucket, prefix, url, retry, scrub)
        self._local = threading.local()  # one client per thread (requests sessions)
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = storage.Client(project=None)  # ADC; anonymous with the emulator
            # The library otherwise fetches the bucket's metadata in a background thread on
            # first use, for tracing only: one more request, and one more permission.
            if hasattr(client, "_bucket_metadata_cache"):
                client._bucket_metadata_cache = None
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _bucket(self) -> Any:
        return self._client().bucket(self.bucket)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        self._local = threading.local()

    @staticmethod
    def _info(blob: Any) -> ObjectInfo:
        return ObjectInfo(
            name=str(blob.name),
            size=int(blob.size or 0),
            md5=_hex(blob.md5_hash),
            crc32c=blob.crc32c,
            version=str(blob.generation),
            metadata=dict(blob.metadata or {}),
            content_type=blob.content_type,
            updated=blob.updated,
        )

    # ---------------------------------------------------------------------- hooks

    def _put_once(self, request: PutRequest) -> ObjectInfo:
        payload = request.payload
        match: int | None = None
        if request.if_absent:
            match = 0
        elif request.if_version is not None:
            match = _generation(request.if_version)
        blob = self._bucket().blob(request.key, chunk_size=CHUNK_BYTES)
        if request.metadata:
            blob.metadata = dict(request.metadata)
        blob.content_type = request.content_type
        blob.md5_hash = payload.md5_base64  # declared: GCS refuses other bytes
        blob.crc32c = payload.crc32c_base64
        with payload.open() as handle:
            blob.upload_from_file(
                handle,
                size=payload.size,
                content_type=request.content_type,
                if_generation_match=match,
                checksum="crc32c",
                retry=None,
                timeout=TIMEOUT_SECONDS,
            )
        info = self._info(blob)
        if info.md5 != payload.md5_hex or info.crc32c != payload.crc32c_base64:
            # the retry replaces it, or verification reports it
            with suppress(api_exceptions.GoogleAPIError, requests.RequestException):
                blob.delete(
                    if_generation_match=blob.generation, retry=None, timeout=TIMEOUT_SECONDS
                )
            raise ChecksumMismatch(
                f"the store kept other bytes than those sent (md5 {info.md5}, not "
                f"{payload.md5_hex}); deleted again",
                transient=True,
            )
        return info

    def _head_once(self, key: str) -> ObjectInfo | None:
        blob = self._bucket().get_blob(key, retry=None, timeout=TIMEOUT_SECONDS)
        return None if blob is None else self._info(blob)

    def _get_once(self, key: str) -> tuple[bytes, ObjectInfo]:
        blob = self._bucket().get_blob(key, retry=None, timeout=TIMEOUT_SECONDS)
        if blob is None:
            raise ObjectNotFound("no such object")
        info = self._info(blob)
        try:
            data: bytes = blob.download_as_bytes(
                if_generation_match=blob.generation,  # the bytes of the generation described
                checksum="crc32c",
                retry=None,
                timeout=TIMEOUT_SECONDS,
            )
        except api_exceptions.PreconditionFailed:
            raise StorageError("the object changed while it was read", transient=True) from None
        except api_exceptions.NotFound:
            raise StorageError("the object went while it was read", transient=True) from None
        crc = base64.b64encode(crc32c_of(data)).decode("ascii")
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if (
            len(data) != info.size
            or (info.crc32c and crc != info.crc32c)
            or (info.md5 and md5 != info.md5)
        ):
            raise ChecksumMismatch(
                "the bytes read do not match the object's checksums", transient=True
            )
        return data, info

    def _list_page(self, prefix: str, token: str | None) -> tuple[list[ObjectInfo], str | None]:
        iterator = self._client().list_blobs(
            self.bucket,
            prefix=prefix,
            page_token=token,
            page_size=self.page_size,
            retry=None,
            timeout=TIMEOUT_SECONDS,
        )
        page = next(iterator.pages, None)
        infos = [self._info(blob) for blob in page] if page is not None else []
        return infos, iterator.next_page_token

    def _delete_once(self, key: str, if_version: str | None) -> bool:
        match = None if if_version is None else _generation(if_version)
        try:
            self._bucket().blob(key).delete(
                if_generation_match=match, retry=None, timeout=TIMEOUT_SECONDS
            )
        except api_exceptions.NotFound:
            return False
        return True

    # ---------------------------------------------------------------------- errors

    def _translate(self, exc: Exception, what: str) -> StorageError:
        if isinstance(exc, api_exceptions.GoogleAPICallError):
            return self._call_error(exc, what)
        if isinstance(exc, DataCorruption):
            return ChecksumMismatch(f"the transfer failed its checksum: {exc}", transient=True)
        if isinstance(exc, InvalidResponse):
            status = getattr(getattr(exc, "response", None), "status_code", 0) or 0
            transient = status in (408, 429) or status >= 500
            return StorageError(f"HTTP {status}: {exc}", transient=transient)
        if isinstance(exc, auth_exceptions.DefaultCredentialsError):
            return StorageError("no Google credentials were found", hint=_CREDENTIAL_HINT)
        if isinstance(exc, auth_exceptions.RefreshError):
            return StorageError(
                f"the Google credentials could not be refreshed: {exc}",
                transient=bool(getattr(exc, "retryable", False)),
                hint=_CREDENTIAL_HINT,
            )
        if isinstance(exc, auth_exceptions.TransportError):
            return StorageError(f"{type(exc).__name__}: {exc}", transient=True)
        if isinstance(exc, requests.exceptions.SSLError):
            return StorageError(f"TLS failed: {exc}")
        transient_types = (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
            ConnectionError,
            TimeoutError,
        )
        if isinstance(exc, transient_types):
            return StorageError(f"{type(exc).__name__}: {exc}", transient=True)
        return StorageError(f"{type(exc).__name__}: {exc}")

    def _call_error(self, exc: api_exceptions.GoogleAPICallError, what: str) -> StorageError:
        status = int(exc.code or 0)
        detail = f"{status} {exc.message}"
        if isinstance(exc, api_exceptions.PreconditionFailed):
            return PreconditionFailed(f"a condition did not hold ({detail})")
        if isinstance(exc, api_exceptions.NotFound):
            if what.startswith(("put", "list")):
                return StorageError(f"the bucket {self.bucket} does not exist ({detail})")
            return ObjectNotFound("no such object")
        if status in (400, 409) and _CHECKSUM_WORDS.search(exc.message or ""):
            return ChecksumMismatch(f"the store refused the checksum ({detail})", transient=True)
        if status in (408, 429) or status >= 500:
            return StorageError(detail, transient=True)
        if status in (401, 403):
            return StorageError(f"refused ({detail})", hint=_CREDENTIAL_HINT)
        return StorageError(detail)
