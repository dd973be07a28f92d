"""The errors of destinations: one base, marked transient or permanent.

A backend translates its library's exceptions into these in one place (``_translate``); the
retry policy looks only at :attr:`StorageError.transient`. Messages never carry credentials:
they name the destination by its display URL and go through the destination's scrubber.
"""

from __future__ import annotations

from abaco_cli.errors import AbacoError, ExitCode


class StorageError(AbacoError):
    """A destination could not do what was asked. ``transient`` errors (timeouts, 429, 5xx,
    connection resets, a checksum the store found wrong in flight) were retried with backoff
    for ``upload.max_total_seconds`` before they reach a caller; permanent ones (refused
    credentials, a missing bucket, a bad name) are raised at once."""

    exit_code = ExitCode.FAILED
    default_hint = (
        "Check the destination (upload.destination), its credentials (the platform's usual "
        "chain: ADC or GOOGLE_APPLICATION_CREDENTIALS; AWS_* or the AWS profile) and the network."
    )

    def __init__(self, message: str, *, transient: bool = False, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.transient = transient


class PreconditionFailed(StorageError):  # noqa: N818 - the storage contract's name
    """A conditional write lost: put-if-absent found an object, or compare-and-swap (or a
    conditional delete) found another version than the one given."""

    default_hint = "Another writer got there first: read the object again and decide."


class ObjectNotFound(StorageError):  # noqa: N818 - the storage contract's name
    """The object does not exist (``get_bytes``)."""

    default_hint = "List the destination to see what is there."


class ChecksumMismatch(StorageError):  # noqa: N818 - named like its siblings
    """The bytes stored (or read back) are not the bytes meant: refused, nothing kept.

    Transient when the store found it (corruption in flight; the retry reads the file again),
    permanent when the file itself does not have the checksum the caller expected."""

    default_hint = "The local file may have changed since its manifest was written; verify it."


class InvalidObjectName(StorageError):  # noqa: N818 - named like its siblings
    """An object name that is not a plain relative key ('..', absolute, backslash, empty
    segment, control character, reserved ``.abaco-`` segment)."""

    default_hint = "Object names are relative keys like exports/dpd/loans/file.parquet."
