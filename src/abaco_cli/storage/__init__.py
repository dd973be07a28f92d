"""Destinations: where exported runs are uploaded (``gs://``, ``s3://``, a folder).

The word "publish" belongs to the local step (a run's files renamed into the runtime tree);
this package is the remote one, "upload". ``open_destination(url, settings)`` gives a
:class:`Destination`; every backend offers the same operations with the same meaning:

``put_file`` / ``put_bytes``
    Streamed (a file is never held in memory whole), and checked by the store against the
    checksums of the bytes read: GCS gets the md5 and crc32c, S3 Content-MD5 and SHA-256, the
    folder compares the sha256 read back after fsync. ``sha256=`` (hex, e.g. the manifest's)
    refuses a file that does not have it (ChecksumMismatch, permanent). ``if_absent=True``
    creates only; ``if_version=`` replaces only that version (compare-and-swap); losing either
    raises PreconditionFailed. After a retry, a conditional put that finds its own bytes
    already there (the first attempt landed, its answer was lost) succeeds.
``get_bytes``
    A whole (small) object and its description, checked against the stored checksum;
    ObjectNotFound when absent.
``head`` / ``list`` / ``delete``
    ``head`` gives None when absent; ``list(prefix)`` every object whose name starts with
    ``prefix`` (a string prefix, as the stores list), in name order; ``delete`` False when
    absent, PreconditionFailed when ``if_version`` is not the current version.

Names are relative to the destination's prefix and checked (:func:`check_name`): no '..', no
absolute name, no backslash, no empty segment. **Names that come back from** ``list()`` **are
untrusted input** (anyone with write access to the bucket or folder may have put them there):
they are returned as the store gave them; check each with :func:`check_name` before using it
as a path or key.

What ``ObjectInfo.version`` is, per backend:

- ``gs``: the object's generation (decimal). Unique to one write.
- ``s3``: the ETag, quoted as S3 gives it. For a single PUT it is the md5 of the content (no
  encryption, or SSE-S3 on AWS), so writing the same bytes again gives the same version:
  compare-and-swap compares content, which is what pointers and manifests need. A multipart
  object's ETag is ``"<md5 of the parts' md5s>-<parts>"`` (objects over 5 GiB only).
- ``file``: a random token per write, kept in the object's sidecar; ``stat-...`` for a file no
  sidecar describes.

Where each backend is weaker: S3's ``list()`` gives no metadata and no md5 (``head()`` does);
GCS gives no sha256 (compare ``md5``/``crc32c``, or size, with what the upload returned); a
folder cannot hold both ``a`` and ``a/b``. Transient failures (timeouts, 429, 5xx, resets) are
retried with jittered backoff within ``upload.max_total_seconds``; they then surface as
StorageError with ``transient=True``. Error messages never carry credentials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from abaco_cli.errors import UsageError
from abaco_cli.redaction import Redactor
from abaco_cli.storage.base import Destination, ObjectInfo, RetryPolicy, Scrubber
from abaco_cli.storage.errors import (
    ChecksumMismatch,
    InvalidObjectName,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
)
from abaco_cli.storage.names import check_name
from abaco_cli.storage.url import (
    DestinationURL,
    DestinationURLError,
    check_endpoint_url,
    parse_destination,
)

if TYPE_CHECKING:
    from abaco_cli.settings import Settings

__all__ = [
    "ChecksumMismatch",
    "Destination",
    "DestinationURL",
    "InvalidObjectName",
    "ObjectInfo",
    "ObjectNotFound",
    "PreconditionFailed",
    "StorageError",
    "check_name",
    "open_destination",
    "parse_destination",
]

_FORMS_HINT = (
    "Use gs://bucket/prefix, s3://bucket/prefix, file:///absolute/path or a local folder "
    "(--dest, or upload.destination / ABACO_UPLOAD__DESTINATION)."
)


def open_destination(url: str, settings: Settings) -> Destination:
    """The destination a URL names; UsageError (exit 2, one line) for one abaco cannot use.

    Nothing is contacted here: the cloud clients are made, and credentials looked up, on the
    first operation.
    """
    try:
        parsed = parse_destination(url)
        endpoint = settings.upload.s3_endpoint_url
        if endpoint is not None:
            check_endpoint_url(endpoint)
    except DestinationURLError as exc:
        raise UsageError(f"invalid destination: {exc}", hint=_FORMS_HINT) from None
    upload = settings.upload
    if parsed.scheme == "file":
        from abaco_cli.storage.local import LocalDestination

        assert parsed.path is not None
        return LocalDestination(parsed.path, lock_timeout_seconds=upload.max_total_seconds)
    retry = RetryPolicy(max_total_seconds=upload.max_total_seconds)
    scrub = Scrubber(Redactor.from_settings(settings))
    if parsed.scheme == "gs":
        from abaco_cli.storage.gcs import GCSDestination

        return GCSDestination(parsed.bucket, parsed.prefix, parsed.display, retry, scrub)
    from abaco_cli.storage.s3 import S3Destination

    return S3Destination(
        parsed.bucket,
        parsed.prefix,
        parsed.display,
        retry,
        scrub,
        endpoint_url=endpoint,
        region=upload.s3_region,
        max_connections=max(10, upload.parallel_files + 2),
    )
