"""Destination URLs: ``gs://bucket/prefix``, ``s3://bucket/prefix``, ``file:///abs/path`` or a
plain local path; anything else is refused with one line that never repeats a credential.

Pure parsing (no cloud library is imported here): settings validate ``upload.destination``
with it when they load, and :func:`abaco_cli.storage.open_destination` uses the same rules.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from abaco_cli.storage.names import name_problem

SCHEMES = ("gs", "s3", "file")
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<slashes>//)?")
_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FORMS = "gs://bucket/prefix, s3://bucket/prefix, file:///absolute/path or a local folder"


class DestinationURLError(ValueError):
    """A destination URL abaco does not accept; the message is safe to show (no secrets)."""


@dataclass(frozen=True)
class DestinationURL:
    """A parsed destination: ``scheme`` gs, s3 or file; ``bucket`` and ``prefix`` (empty, or
    ending with '/') for the stores; ``path`` (absolute) for a folder."""

    scheme: str
    bucket: str = ""
    prefix: str = ""
    path: Path | None = None

    @property
    def display(self) -> str:
        """The URL to show: no credentials can be in it (they are refused)."""
        if self.scheme == "file":
            return str(self.path)
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")


def _prefix(path: str, scheme: str) -> str:
    """``a/b/`` from ``/a/b`` or ``/a/b/``; empty for no prefix."""
    trimmed = path[1:] if path.startswith("/") else path
    trimmed = trimmed[:-1] if trimmed.endswith("/") else trimmed
    if not trimmed:
        return ""
    problem = name_problem(trimmed)
    if problem is not None:
        raise DestinationURLError(
            f"the prefix of the {scheme}:// destination is refused: {problem}"
        )
    return trimmed + "/"


def _bucket(netloc: str, scheme: str) -> str:
    if "@" in netloc:
        raise DestinationURLError(
            f"the {scheme}:// destination must not carry credentials (user:secret@): abaco takes "
            "them from the platform's usual chain (ADC, GOOGLE_APPLICATION_CREDENTIALS or the "
            "VM's service account; AWS_* variables, the AWS profile or the instance role)"
        )
    if ":" in netloc:
        raise DestinationURLError(
            f"the {scheme}:// destination names a bucket, not a host and port"
            + ("; an S3-compatible endpoint is upload.s3_endpoint_url" if scheme == "s3" else "")
        )
    if not netloc:
        raise DestinationURLError(f"the {scheme}:// destination names no bucket ({_FORMS})")
    pattern = _GCS_BUCKET if scheme == "gs" else _S3_BUCKET
    ip_like = True
    try:
        ipaddress.ip_address(netloc)
    except ValueError:
        ip_like = False
    if not pattern.match(netloc) or ".." in netloc or ip_like:
        rules = (
            "3-222 lowercase letters, digits, dots, hyphens and underscores"
            if scheme == "gs"
            else "3-63 lowercase letters, digits, dots and hyphens"
        )
        raise DestinationURLError(
            f"the bucket name of the {scheme}:// destination is not valid: it must be {rules}, "
            "starting and ending with a letter or digit"
        )
    return netloc


def parse_destination(url: str) -> DestinationURL:
    """Parse a destination URL or path; DestinationURLError (a ValueError) when refused."""
    if not isinstance(url, str) or not url.strip():
        raise DestinationURLError(f"the destination is empty ({_FORMS})")
    if url != url.strip() or _CONTROL.search(url):
        raise DestinationURLError(
            "the destination has leading or trailing spaces or a control character"
        )
    found = _SCHEME.match(url)
    scheme = found.group("scheme").lower() if found else ""
    if found is None or (not found.group("slashes") and scheme not in SCHEMES):
        return DestinationURL("file", path=Path(os.path.abspath(url)))  # a plain path
    if scheme not in SCHEMES:
        raise DestinationURLError(
            f"the destination scheme {scheme}:// is not supported; use {_FORMS}"
        )
    if not found.group("slashes"):
        raise DestinationURLError(f"write the destination as {scheme}://...; use {_FORMS}")
    rest = url[found.end() :]
    if "?" in rest or "#" in rest:
        raise DestinationURLError("the destination URL must not have a query (?) or fragment (#)")
    netloc, slash, path = rest.partition("/")
    if scheme == "file":
        if netloc not in ("", "localhost"):
            raise DestinationURLError(
                "a file:// destination names a folder on this machine: file:///absolute/path"
            )
        folder = unquote(slash + path)
        if not folder.startswith("/") or folder == "/":
            raise DestinationURLError("a file:// destination needs an absolute folder below /")
        if "\x00" in folder:
            raise DestinationURLError("the file:// destination holds a NUL character")
        return DestinationURL("file", path=Path(os.path.normpath(folder)))
    return DestinationURL(
        scheme, bucket=_bucket(netloc, scheme), prefix=_prefix(slash + path, scheme)
    )


def check_endpoint_url(url: str) -> str:
    """An S3-compatible endpoint (``https://host[:port]``): http or https, no credentials, no
    query; DestinationURLError otherwise."""
    found = re.match(r"^(?P<scheme>https?)://(?P<netloc>[^/?#]*)(?P<path>[^?#]*)$", url)
    if found is None:
        raise DestinationURLError(
            "upload.s3_endpoint_url must be an http:// or https:// URL without query or fragment"
        )
    if "@" in found.group("netloc"):
        raise DestinationURLError(
            "upload.s3_endpoint_url must not carry credentials (user:secret@): abaco takes them "
            "from AWS_* variables, the AWS profile or the instance role"
        )
    if not found.group("netloc"):
        raise DestinationURLError("upload.s3_endpoint_url names no host")
    return url
