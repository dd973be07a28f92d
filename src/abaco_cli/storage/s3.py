"""Amazon S3 and S3-compatible stores (MinIO, R2: ``upload.s3_endpoint_url``) through boto3.

Checksums: every PutObject carries ``Content-MD5`` (checked by S3 and every S3-compatible
store) and ``x-amz-checksum-sha256`` (checked and kept by S3, MinIO and R2, so ``head()``
reports the sha256 a manifest records). The ETag of the answer is compared with the md5 sent
where an ETag is an md5 (no server-side encryption reported, or SSE-S3 on AWS itself): a store
that ignores Content-MD5 cannot keep other bytes unnoticed; such an object is deleted again.

Objects above ``multipart_threshold`` (5 GiB, S3's largest single PUT) go up in parts, each
with its Content-MD5; the completed object's ETag must be the md5 of the parts' md5s with
``-<parts>``. Such an object has no whole-object md5 or sha256 (``md5``/``sha256`` None).

Conditions: ``IfNoneMatch="*"`` creates only, ``IfMatch=<ETag>`` replaces (or deletes) only that
version. An ETag is a content hash, not a write counter: compare-and-swap from A back to the
same bytes A succeeds, which is harmless for pointers and manifests.

Credentials come from boto3's usual chain (AWS_* variables, the profile, the instance role);
boto3's own retries are off (one attempt each) so that the one retry policy of
:class:`~abaco_cli.storage.base.RetryPolicy` bounds the total time.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import threading
from contextlib import suppress
from typing import IO, TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ResponseStreamingError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from abaco_cli.storage.base import CHUNK_BYTES, ObjectInfo, RetryPolicy, Scrubber
from abaco_cli.storage.errors import (
    ChecksumMismatch,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
)
from abaco_cli.storage.remote import PutRequest, RemoteDestination

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

SINGLE_PUT_LIMIT = 5 * 1024**3  # S3's largest PutObject
DEFAULT_PART_BYTES = 128 * 1024 * 1024  # 10,000 parts: objects up to 1.2 TiB
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part (but the last)
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60
_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "ConditionalRequestConflict",  # S3: a concurrent conditional write; retry
        "OperationAborted",
    }
)
_CHECKSUM_CODES = frozenset(
    {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch"}
)
_CREDENTIAL_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
    }
)
_CREDENTIAL_HINT = (
    "Check the AWS credentials abaco runs with (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
    "AWS_PROFILE or the instance role) and that they may read, write and list the bucket."
)


class _Part(io.RawIOBase):
    """``length`` bytes of a seekable file from ``start``: one part, streamed, never held."""

    def __init__(self, handle: IO[bytes], start: int, length: int) -> None:
        super().__init__()
        self._handle, self._start, self._length, self._pos = handle, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = min(max(base + offset, 0), self._length)
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._pos
        count = left if size is None or size < 0 else min(size, left)
        if count <= 0:
            return b""
        self._handle.seek(self._start + self._pos)
        data = self._handle.read(count)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _sha256_hex(value: str | None) -> str | None:
    """The hex of a whole-object ChecksumSHA256 (base64); None for a composite one."""
    if not value or "-" in value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else None


class S3Destination(RemoteDestination):
    """``s3://bucket/prefix``."""

    scheme = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str,
        url: str,
        retry: RetryPolicy,
        scrub: Scrubber,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        max_connections: int = 10,
        multipart_threshold: int = SINGLE_PUT_LIMIT,
        part_bytes: int = DEFAULT_PART_BYTES,
    ) -> None:
        super().__init__(bucket, prefix, url, retry, scrub)
        if part_bytes < MIN_PART_BYTES or multipart_threshold > SINGLE_PUT_LIMIT:
            raise ValueError("parts of at least 5 MiB; single PUTs of at most 5 GiB")
        self._endpoint_url = endpoint_url
        self._region = region
        self._max_connections = max_connections
        self._multipart_threshold = multipart_threshold
        self._part_bytes = part_bytes
        self._lock = threading.Lock()
        self._client: S3Client | None = None

    def _s3(self) -> S3Client:
        with self._lock:
            if self._client is None:
                config = Config(
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    read_timeout=READ_TIMEOUT_SECONDS,
                    retries={"total_max_attempts": 1, "mode": "standard"},  # ours retry
                    max_pool_connections=self._max_connections,
                    # The checksums are ours (Content-MD5 and SHA-256, as headers): no
                    # aws-chunked CRC32 trailer, which some S3-compatible stores refuse.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_supported",
                    s3={"addressing_style": "path"} if self._endpoint_url else None,
                )
                self._client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=self._endpoint_url,
                    region_name=self._region,
                    config=config,
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # ------------------------------------------------------------------ checksums

    def _md5_of_etag(self, etag: str, encryption: str | None) -> str | None:
        """The md5 an ETag is, where it is one: a single-part object stored without
        encryption, or with SSE-S3 on AWS itself (other stores' encrypted ETags are not)."""
        bare = etag.strip('"').lower()
        if not _MD5_HEX.match(bare):
            return None
        if encryption is None or (encryption == "AES256" and self._endpoint_url is None):
            return bare
        return None

    def _refuse_stored(self, key: str, etag: str, expected: str, got: str) -> ChecksumMismatch:
        """The store kept other bytes than those sent: delete that version, report it."""
        with suppress(BotoCoreError, ClientError):  # else the retry or verification finds it
            self._s3().delete_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        return ChecksumMismatch(
            f"the store kept other bytes than those sent (md5 {got}, not {expected}); "
            "deleted again",
            transient=True,
        )

    # ---------------------------------------------------------------------- hooks

    def _conditions(self, request: PutRequest) -> dict[str, str]:
        if request.if_absent:
            return {"IfNoneMatch": "*"}
        if request.if_version is not None:
            return {"IfMatch": request.if_version}
        return {}

    def _put_once(self, request: PutRequest) -> ObjectInfo:
        try:
            if request.payload.size > self._multipart_threshold:
                return self._put_parts(request)
            return self._put_single(request)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if request.if_version is not None and code in ("NoSuchKey", "404"):
                raise PreconditionFailed("there is no object to replace") from None
            raise

    def _put_single(self, request: PutRequest) -> ObjectInfo:
        payload = request.payload
        with payload.open() as body:
            response = self._s3().put_object(
                Bucket=self.bucket,
                Key=request.key,
                Body=body,
                ContentLength=payload.size,
                ContentMD5=payload.md5_base64,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=payload.sha256_base64,
                ContentType=request.content_type,
                Metadata=dict(request.metadata),
                **self._conditions(request),  # type: ignore[arg-type]
            )
        etag = response["ETag"]
        md5 = self._md5_of_etag(etag, response.get("ServerSideEncryption"))
        if md5 is not None and md5 != payload.md5_hex:
            raise self._refuse_stored(request.key, etag, payload.md5_hex, md5)
        return ObjectInfo(
            name=request.key,
            size=payload.size,
            md5=md5,
            crc32c=None,
            version=etag,
            metadata=dict(request.metadata),
            sha256=_sha256_hex(response.get("ChecksumSHA256")),
            content_type=request.content_type,
        )

    def _put_parts(self, request: PutRequest) -> ObjectInfo:
        s3, payload = self._s3(), request.payload
        upload_id = s3.create_multipart_upload(
            Bucket=self.bucket,
            Key=request.key,
            ContentType=request.content_type,
            Metadata=dict(request.metadata),
        )["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            digests: list[bytes] = []
            with payload.open() as handle:
                for number, start in enumerate(range(0, payload.size, self._part_bytes), 1):
                    length = min(self._part_bytes, payload.size - start)
                    part = _Part(handle, start, length)
                    digest = hashlib.md5(usedforsecurity=False)
                    while chunk := part.read(CHUNK_BYTES):
                        digest.update(chunk)
                    part.seek(0)
                    answer = s3.upload_part(
                        Bucket=self.bucket,
                        Key=request.key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=cast(IO[bytes], part),  # a raw reader: read, seek, tell
                        ContentLength=length,
                        ContentMD5=base64.b64encode(digest.digest()).decode("ascii"),
                    )
                    digests.append(digest.digest())
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
            response = s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=request.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **self._conditions(request),  # type: ignore[arg-type]
            )
        except BaseException:
            # else a bucket lifecycle rule should abort incomplete uploads after a day
            with suppress(BotoCoreError, ClientError):
                s3.abort_multipart_upload(Bucket=self.bucket, Key=request.key, UploadId=upload_id)
            raise
        etag = response["ETag"]
        expected = (
            f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(parts)}"
        )
        encryption = response.get("ServerSideEncryption")
        if encryption is None or (encryption == "AES256" and self._endpoint_url is None):
            got = etag.strip('"').lower()
            if got != expected:
                raise self._refuse_stored(request.key, etag, expected, got)
        return ObjectInfo(
            name=request.key,
            size=payload.size,
            md5=None,
            crc32c=None,
            version=etag,
            metadata=dict(request.metadata),
            content_type=request.content_type,
        )

    def _info(self, key: str, answer: Any) -> ObjectInfo:
        etag = str(answer["ETag"])
        return ObjectInfo(
            name=key,
            size=int(answer["ContentLength"]),
            md5=self._md5_of_etag(etag, answer.get("ServerSideEncryption")),
            crc32c=None,
            version=etag,
            metadata=dict(answer.get("Metadata") or {}),
            sha256=_sha256_hex(answer.get("ChecksumSHA256")),
            content_type=answer.get("ContentType"),
            updated=answer.get("LastModified"),
        )

    def _head_once(self, key: str) -> ObjectInfo | None:
        try:
            answer = self._s3().head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        return self._info(key, answer)

    def _get_once(self, key: str) -> tuple[bytes, ObjectInfo]:
        try:
            answer = self._s3().get_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound("no such object") from None
            raise
        with answer["Body"] as body:
            data = body.read()  # botocore checks a stored SHA-256 as it reads
        info = self._info(key, answer)
        if len(data) != info.size:
            raise ChecksumMismatch(f"read {len(data)} bytes of {info.size}", transient=True)
        got = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if info.md5 is not None and got != info.md5:
            raise ChecksumMismatch(f"read bytes with md5 {got}, not {info.md5}", transient=True)
        return data, info

    def _list_page(self, prefix: str, token: str | None) -> tuple[list[ObjectInfo], str | None]:
        extra = {"ContinuationToken": token} if token else {}
        answer = self._s3().list_objects_v2(
            Bucket=self.bucket,
            Prefix=prefix,
            MaxKeys=self.page_size,
            **extra,  # type: ignore[arg-type]
        )
        page = [
            ObjectInfo(
                name=item["Key"],
                size=int(item["Size"]),
                md5=None,  # a listing does not say whether an ETag is an md5: head() does
                crc32c=None,
                version=item["ETag"],
                metadata={},  # a listing carries no metadata: head() does
                updated=item.get("LastModified"),
            )
            for item in answer.get("Contents", [])
        ]
        following = answer.get("NextContinuationToken") if answer.get("IsTruncated") else None
        return page, following

    def _delete_once(self, key: str, if_version: str | None) -> bool:
        s3 = self._s3()
        if if_version is None:
            if self._head_once(key) is None:
                return False
            s3.delete_object(Bucket=self.bucket, Key=key)
            return True
        try:
            s3.delete_object(Bucket=self.bucket, Key=key, IfMatch=if_version)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise
        return True

    # ---------------------------------------------------------------------- errors

    def _translate(self, exc: Exception, what: str) -> StorageError:
        if isinstance(exc, ClientError):
            return self._client_error(exc)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StorageError("no usable AWS credentials were found", hint=_CREDENTIAL_HINT)
        if isinstance(exc, FlexibleChecksumError):
            return ChecksumMismatch(f"the download failed its checksum: {exc}", transient=True)
        if isinstance(exc, SSLError):
            return StorageError(f"TLS failed: {exc}")
        transient_types = (
            BotoConnectionError,
            HTTPClientError,
            ResponseStreamingError,
            IncompleteReadError,
            ConnectionError,
            TimeoutError,
        )
        if isinstance(exc, transient_types):
            return StorageError(f"{type(exc).__name__}: {exc}", transient=True)
        return StorageError(f"{type(exc).__name__}: {exc}")

    def _client_error(self, exc: ClientError) -> StorageError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = f"{code or status}: {error.get('Message') or 'no message'}"
        if status == 412 or code == "PreconditionFailed":
            return PreconditionFailed(f"a condition did not hold ({detail})")
        if code == "NoSuchBucket":
            return StorageError(f"the bucket {self.bucket} does not exist ({detail})")
        if code == "NoSuchKey" or (status == 404 and code in ("404", "NotFound", "")):
            return ObjectNotFound("no such object")
        if code in _CHECKSUM_CODES:
            return ChecksumMismatch(f"the store refused the checksum ({detail})", transient=True)
        if status in (408, 429) or status >= 500 or code in _TRANSIENT_CODES:
            return StorageError(detail, transient=True)
        if status in (401, 403) or code in _CREDENTIAL_CODES:
            return StorageError(f"refused ({detail})", hint=_CREDENTIAL_HINT)
        return StorageError(detail)
