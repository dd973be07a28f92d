"""Destinations (abaco_cli.storage): one contract, run against a folder, S3 on moto's standalone
server and GCS on gcp-storage-emulator. Everything is real: real clients, real servers on local
ports, real files; no mocks.

gcp-storage-emulator does not implement preconditions (it ignores ifGenerationMatch), so the
cases where a condition must fail are skipped there; they run against the folder and S3.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import struct
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from abaco_cli.errors import ConfigurationError, ExitCode, UsageError
from abaco_cli.redaction import Redactor
from abaco_cli.settings import Settings, UploadSettings, load_settings
from abaco_cli.storage import (
    ChecksumMismatch,
    Destination,
    InvalidObjectName,
    ObjectNotFound,
    PreconditionFailed,
    StorageError,
    check_name,
    open_destination,
    parse_destination,
)
from abaco_cli.storage.base import Payload, RetryPolicy, Scrubber
from abaco_cli.storage.remote import PutRequest, RemoteDestination
from abaco_cli.storage.s3 import S3Destination
from tests.conftest import CLOUD_BUCKET, FAKE_AWS_KEY_ID, FAKE_AWS_SECRET, free_port

NO_PRECONDITIONS = (
    "gcp-storage-emulator ignores ifGenerationMatch (no preconditions): create-only and "
    "compare-and-swap losing are covered by the folder and S3 (moto) backends"
)
MiB = 1024 * 1024
# the servers (moto_endpoint, gcs_endpoint) and cloud_env are the suite's, in conftest.py
BUCKET = CLOUD_BUCKET
FAKE_KEY_ID = FAKE_AWS_KEY_ID
FAKE_SECRET = FAKE_AWS_SECRET


def _closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def _settings(tmp_path: Path, **upload: object) -> Settings:
    return Settings(runtime_dir=tmp_path / "runtime", upload=UploadSettings(**upload))


def _open(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    **upload: object,
) -> Destination:
    if kind == "file":
        return open_destination(str(tmp_path / prefix), _settings(tmp_path, **upload))
    if kind == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        settings = _settings(tmp_path, s3_endpoint_url=endpoint, s3_region="us-east-1", **upload)
        return open_destination(f"s3://{BUCKET}/{prefix}", settings)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", request.getfixturevalue("gcs_endpoint"))
    return open_destination(f"gs://{BUCKET}/{prefix}", _settings(tmp_path, **upload))


@pytest.fixture(params=["file", "s3", "gs"])
def dest(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cloud_env: None,
) -> Iterator[Destination]:
    """A fresh destination of each kind (its own folder, or its own prefix in the bucket)."""
    destination = _open(request.param, request, tmp_path, monkeypatch, f"t-{uuid.uuid4().hex}")
    yield destination
    destination.close()


def _needs_preconditions(destination: Destination) -> None:
    if destination.scheme == "gs":
        pytest.skip(NO_PRECONDITIONS)


def _random_file(path: Path, size: int) -> str:
    """A file of random bytes; its sha256, worked out while writing it."""
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(left, MiB))
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(MiB):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


# --------------------------------------------------------------------------- the contract


def test_round_trip_of_a_file_larger_than_a_chunk(dest: Destination, tmp_path: Path) -> None:
    """20 MiB: more than one read of the payload, more than one GCS resumable chunk (8 MiB)."""
    source = tmp_path / "loans.parquet"
    _random_file(source, 20 * MiB)
    md5, sha = _digests(source)
    name = "exports/dpd/loans/as_of_date=2025-12-31/part-0.parquet"

    put = dest.put_file(name, source, metadata={"run-id": "r1"}, sha256=sha)
    assert (put.name, put.size, put.md5) == (name, 20 * MiB, md5)
    assert put.version
    head = dest.head(name)
    assert head is not None
    assert (head.name, head.size, head.md5, head.version) == (name, 20 * MiB, md5, put.version)
    assert dict(head.metadata) == {"run-id": "r1"}
    if dest.scheme in ("file", "s3"):
        assert put.sha256 == head.sha256 == sha  # the store keeps the manifest's checksum
    else:
        assert head.crc32c and head.sha256 is None

    data, info = dest.get_bytes(name)
    assert hashlib.sha256(data).hexdigest() == sha
    assert info.version == put.version
    assert [i.name for i in dest.list("exports/dpd/")] == [name]

    assert dest.delete(name) is True
    assert dest.head(name) is None
    assert dest.delete(name) is False
    assert list(dest.list()) == []
    with pytest.raises(ObjectNotFound):
        dest.get_bytes(name)


def test_the_folder_backend_streams_a_file(tmp_path: Path, cloud_env: None) -> None:
    """Peak memory of a 20 MiB put into a folder stays a small fraction of its size (the
    servers of the other backends run in this process, so their memory is not measurable
    here; their clients stream in 1 MiB reads, 8 MiB GCS chunks)."""
    source = tmp_path / "big.csv"
    _random_file(source, 20 * MiB)
    destination = open_destination(str(tmp_path / "dest"), _settings(tmp_path))
    tracemalloc.start()
    try:
        destination.put_file("big.csv", source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB, f"peak {peak / MiB:.1f} MiB for a 20 MiB file"


def test_metadata_and_content_type_round_trip(dest: Destination) -> None:
    metadata = {"dataset": "dpd", "as-of-date": "2025-12-31", "run_id": "20251231T010203Z-ab12"}
    dest.put_bytes(
        "_control/manifests/dpd/m.json", b"{}", metadata=metadata, content_type="application/json"
    )
    head = dest.head("_control/manifests/dpd/m.json")
    assert head is not None
    assert dict(head.metadata) == metadata
    assert head.content_type == "application/json"
    listed = list(dest.list("_control/"))
    assert [i.name for i in listed] == ["_control/manifests/dpd/m.json"]
    # S3's listing carries no metadata (documented: head() has it)
    assert dict(listed[0].metadata) == ({} if dest.scheme == "s3" else metadata)


def test_metadata_that_a_store_would_mangle_is_refused(dest: Destination) -> None:
    for metadata in ({"Run-Id": "x"}, {"run id": "x"}, {"k": "señal"}, {"k": "x" * 1025}):
        with pytest.raises(StorageError, match="metadata"):
            dest.put_bytes("m.json", b"{}", metadata=metadata)
    assert dest.head("m.json") is None


def test_put_if_absent_twice(dest: Destination) -> None:
    _needs_preconditions(dest)
    first = dest.put_bytes("manifest.json", b"first", if_absent=True)
    with pytest.raises(PreconditionFailed) as lost:
        dest.put_bytes("manifest.json", b"second", if_absent=True)
    assert lost.value.transient is False
    assert lost.value.exit_code == ExitCode.FAILED
    data, info = dest.get_bytes("manifest.json")
    assert (data, info.version) == (b"first", first.version)


def test_compare_and_swap_with_the_current_version(dest: Destination) -> None:
    v1 = dest.put_bytes("latest.json", b'{"run": 1}')
    v2 = dest.put_bytes("latest.json", b'{"run": 2}', if_version=v1.version)
    assert v2.version != v1.version
    data, info = dest.get_bytes("latest.json")
    assert (data, info.version) == (b'{"run": 2}', v2.version)


def test_compare_and_swap_with_a_stale_version_fails(dest: Destination) -> None:
    _needs_preconditions(dest)
    v1 = dest.put_bytes("latest.json", b'{"run": 1}')
    v2 = dest.put_bytes("latest.json", b'{"run": 2}', if_version=v1.version)
    with pytest.raises(PreconditionFailed):
        dest.put_bytes("latest.json", b'{"run": 3}', if_version=v1.version)
    with pytest.raises(PreconditionFailed):
        dest.put_bytes("absent.json", b"{}", if_version=v2.version)
    assert dest.head("absent.json") is None
    data, info = dest.get_bytes("latest.json")
    assert (data, info.version) == (b'{"run": 2}', v2.version)


def test_delete_if_version(dest: Destination) -> None:
    v1 = dest.put_bytes("old/run.csv", b"a,b\n")
    if dest.scheme != "gs":
        v2 = dest.put_bytes("old/run.csv", b"a,b\n1,2\n")
        with pytest.raises(PreconditionFailed):
            dest.delete("old/run.csv", if_version=v1.version)
        assert dest.head("old/run.csv") is not None
        v1 = v2
    assert dest.delete("old/run.csv", if_version=v1.version) is True
    assert dest.head("old/run.csv") is None
    assert dest.delete("old/run.csv", if_version=v1.version) is False


def test_listing_under_a_prefix(dest: Destination) -> None:
    names = [
        "exports/dpd/a.csv",
        "exports/dpd/b/c.parquet",
        "exports/dpdx/d.csv",
        "exports/kpi/e.json",
        "_control/m.json",
    ]
    for name in names:
        dest.put_bytes(name, name.encode())
    assert [i.name for i in dest.list("exports/dpd/")] == names[:2]
    assert [i.name for i in dest.list("exports/dp")] == names[:3]
    assert [i.name for i in dest.list()] == sorted(names)
    assert list(dest.list("nothing/")) == []
    assert {i.name: i.size for i in dest.list("exports/kpi/")} == {"exports/kpi/e.json": 18}


def test_a_prefix_is_a_folder_not_a_string_prefix(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cloud_env: None
) -> None:
    """``.../run1`` never lists the objects of ``.../run10``."""
    for kind in ("file", "s3", "gs"):
        base = f"{kind}-{uuid.uuid4().hex[:8]}"
        (tmp_path / base).mkdir()  # the folder backend creates only its last component
        one = _open(kind, request, tmp_path, monkeypatch, f"{base}/run1")
        ten = _open(kind, request, tmp_path, monkeypatch, f"{base}/run10")
        one.put_bytes("x.csv", b"1")
        ten.put_bytes("x.csv", b"10")
        assert [(i.name, i.size) for i in one.list()] == [("x.csv", 1)], kind
        assert one.get_bytes("x.csv")[0] == b"1"


BAD_NAMES = [
    "../x",
    "a/../../x",
    "/etc/passwd",
    "a\\b",
    "a//b",
    "a/",
    "",
    ".",
    "a/./b",
    "x\x00y",
    "new\nline",
    ".abaco-storage/lock",
    "a/.abaco-tmp-1",
    "x" * 1025,
]


def test_names_that_would_escape_are_refused(dest: Destination, tmp_path: Path) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    for name in BAD_NAMES:
        with pytest.raises(InvalidObjectName):
            dest.put_bytes(name, b"x")
        with pytest.raises(InvalidObjectName):
            dest.head(name)
        with pytest.raises(InvalidObjectName):
            dest.get_bytes(name)
        with pytest.raises(InvalidObjectName):
            dest.delete(name)
        with pytest.raises(InvalidObjectName):
            check_name(name)
    assert list(dest.list()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written anywhere


def test_listed_names_are_returned_as_the_store_has_them(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cloud_env: None
) -> None:
    """A key someone else put in the bucket (``a/../evil``) comes back unchanged; callers
    validate listed names with check_name."""
    prefix = f"untrusted-{uuid.uuid4().hex[:8]}"
    destination = _open("s3", request, tmp_path, monkeypatch, prefix)
    other = boto3.session.Session().client(
        "s3", endpoint_url=request.getfixturevalue("moto_endpoint"), region_name="us-east-1"
    )
    other.put_object(Bucket=BUCKET, Key=f"{prefix}/a/../evil", Body=b"x")
    listed = [i.name for i in destination.list()]
    assert listed == ["a/../evil"]
    with pytest.raises(InvalidObjectName):
        check_name(listed[0])


# ------------------------------------------------------------------------------ checksums


def test_a_file_without_the_expected_sha256_is_not_uploaded(
    dest: Destination, tmp_path: Path
) -> None:
    source = tmp_path / "changed.csv"
    source.write_bytes(b"a,b\n1,2\n")
    wrong = hashlib.sha256(b"a,b\n1,3\n").hexdigest()
    with pytest.raises(ChecksumMismatch) as refused:
        dest.put_file("changed.csv", source, sha256=wrong)
    assert refused.value.transient is False
    assert dest.head("changed.csv") is None
    with pytest.raises(StorageError, match="sha256"):
        dest.put_file("changed.csv", source, sha256="not-a-sha")
    if dest.scheme == "file":
        leftovers = [p for p in (tmp_path).rglob("*") if ".abaco-tmp-" in p.name]
        assert leftovers == []


def test_the_store_refuses_bytes_that_do_not_match_their_declared_checksum(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cloud_env: None
) -> None:
    """One put whose declared md5 is not that of the bytes sent (what a file changing during
    the upload, or corruption in flight, looks like to the store): GCS refuses it (400), and
    on S3 the ETag check catches it where the store does not (moto ignores Content-MD5); the
    object is not kept, and the error is a transient ChecksumMismatch (retried, then raised)."""
    for kind in ("s3", "gs"):
        destination = _open(
            kind,
            request,
            tmp_path,
            monkeypatch,
            f"corrupt-{uuid.uuid4().hex[:8]}",
            max_total_seconds=1,
        )
        assert isinstance(destination, RemoteDestination)
        good = Payload.of_bytes(b"the real bytes")
        bad = Payload(
            good.size,
            hashlib.md5(b"other bytes!!!", usedforsecurity=False).digest(),
            good.sha256,
            good.crc32c,
            data=good.data,
        )
        request_ = PutRequest(destination.prefix + "x.csv", bad, {}, "text/csv", False, None)
        with pytest.raises(ChecksumMismatch) as refused:
            destination._put("x.csv", request_)
        assert refused.value.transient is True, kind
        assert destination.head("x.csv") is None, kind


def test_a_file_damaged_at_rest_is_detected_on_read(tmp_path: Path, cloud_env: None) -> None:
    destination = open_destination(str(tmp_path / "dest"), _settings(tmp_path))
    destination.put_bytes("m.json", b'{"run": 1}')
    stored = tmp_path / "dest" / "m.json"
    stored.write_bytes(b'{"run": 2}')  # same size, other bytes, by hand
    info = destination.head("m.json")
    assert info is not None and info.version.startswith("stat-")  # no longer abaco's write
    destination.put_bytes("n.json", b'{"run": 1}')
    target = tmp_path / "dest" / "n.json"
    with open(target, "r+b") as handle:  # in place: same inode; mtime kept below
        stat_before = os.stat(target)
        handle.write(b"X")
    os.utime(target, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    with pytest.raises(ChecksumMismatch, match="sha256"):
        destination.get_bytes("n.json")


# ------------------------------------------------------------------------------ the folder


def test_the_folder_never_follows_a_symbolic_link_below_its_root(
    tmp_path: Path, cloud_env: None
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("x")
    real_root = tmp_path / "real"
    real_root.mkdir()
    (tmp_path / "root-link").symlink_to(real_root)  # the root itself may be a link
    destination = open_destination(str(tmp_path / "root-link"), _settings(tmp_path))
    destination.put_bytes("ok/file.csv", b"1")
    assert (real_root / "ok" / "file.csv").read_bytes() == b"1"

    (real_root / "exports").symlink_to(outside)
    (real_root / "ok" / "alias.csv").symlink_to(outside / "secret.txt")
    with pytest.raises(StorageError, match="symbolic link"):
        destination.put_bytes("exports/x.csv", b"x")
    with pytest.raises(StorageError, match="symbolic link"):
        destination.head("exports/secret.txt")
    with pytest.raises(StorageError, match="symbolic link"):
        destination.get_bytes("ok/alias.csv")
    with pytest.raises(StorageError, match="symbolic link"):
        destination.put_bytes("ok/alias.csv", b"x")
    with pytest.raises(StorageError, match="symbolic link"):
        destination.delete("ok/alias.csv")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "x"
    assert [i.name for i in destination.list()] == ["ok/file.csv"]  # links are not listed


def test_the_folder_backend_creates_only_its_last_component(
    tmp_path: Path, cloud_env: None
) -> None:
    destination = open_destination(str(tmp_path / "missing" / "dest"), _settings(tmp_path))
    with pytest.raises(StorageError, match="parent folder does not exist"):
        destination.put_bytes("x", b"x")
    assert not (tmp_path / "missing").exists()
    assert destination.head("x") is None
    assert list(destination.list()) == []


def test_the_folder_backend_serialises_compare_and_swap(tmp_path: Path, cloud_env: None) -> None:
    """Eight threads add to one counter by read, compare-and-swap, retry: no update is lost."""
    destination = open_destination(str(tmp_path / "dest"), _settings(tmp_path))
    destination.put_bytes("counter", b"0")
    done: list[int] = []

    def worker() -> None:
        for _ in range(10):
            while True:
                data, info = destination.get_bytes("counter")
                try:
                    destination.put_bytes(
                        "counter", str(int(data) + 1).encode(), if_version=info.version
                    )
                except PreconditionFailed:
                    continue
                done.append(1)
                break

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert destination.get_bytes("counter")[0] == b"80"
    assert len(done) == 80


def test_a_name_cannot_be_an_object_and_a_folder_in_a_folder(
    tmp_path: Path, cloud_env: None
) -> None:
    destination = open_destination(str(tmp_path / "dest"), _settings(tmp_path))
    destination.put_bytes("a/b", b"1")
    with pytest.raises(StorageError, match="folder"):
        destination.put_bytes("a", b"2")
    destination.put_bytes("c", b"3")
    with pytest.raises(StorageError, match="not a folder"):
        destination.put_bytes("c/d", b"4")


# ------------------------------------------------------------------------------- S3 parts


def test_s3_uploads_a_large_file_in_parts(
    request: pytest.FixtureRequest, tmp_path: Path, cloud_env: None
) -> None:
    """Above the threshold a file goes up in parts (each with its Content-MD5); the object's
    ETag is the md5 of the parts' md5s with -<parts>, and create-only still holds."""
    source = tmp_path / "big.parquet"
    _random_file(source, 18 * MiB)
    md5, sha = _digests(source)
    destination = S3Destination(
        BUCKET,
        f"parts-{uuid.uuid4().hex[:8]}/",
        "s3://test",
        RetryPolicy(max_total_seconds=5),
        Scrubber(Redactor()),
        endpoint_url=request.getfixturevalue("moto_endpoint"),
        region="us-east-1",
        multipart_threshold=8 * MiB,
        part_bytes=5 * MiB,
    )
    parts = []
    with open(source, "rb") as handle:
        while chunk := handle.read(5 * MiB):
            parts.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    expected = f'"{hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"'
    put = destination.put_file("big.parquet", source, if_absent=True, sha256=sha)
    assert (put.version, put.size, put.md5, put.sha256) == (expected, 18 * MiB, None, None)
    data, info = destination.get_bytes("big.parquet")
    assert hashlib.md5(data, usedforsecurity=False).hexdigest() == md5
    assert info.version == expected
    with pytest.raises(PreconditionFailed):
        destination.put_file("big.parquet", source, if_absent=True)
    destination.close()


# ------------------------------------------------------------------- failures and secrets


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_a_down_endpoint_is_transient_bounded_and_shows_no_credentials(
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cloud_env: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    settings = _settings(tmp_path, max_total_seconds=1.5, s3_endpoint_url=endpoint)
    if kind == "gs":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    destination = open_destination(f"{kind}://{BUCKET}/exports", settings)
    caplog.set_level(logging.WARNING, logger="abaco.storage")
    operations = {
        "put": lambda: destination.put_bytes("x.csv", b"x"),
        "head": lambda: destination.head("x.csv"),
        "list": lambda: list(destination.list()),
        "delete": lambda: destination.delete("x.csv"),
    }
    for what, operation in operations.items():
        started = time.monotonic()
        with pytest.raises(StorageError) as failed:
            operation()
        spent = time.monotonic() - started
        error = failed.value
        assert error.transient is True, what
        assert error.exit_code == ExitCode.FAILED
        assert "attempts" in error.message, error.message
        assert spent < 10, f"{what} took {spent:.1f}s"
        shown = f"{error} {error.hint} {error!r}"
        assert "\n" not in str(error)
        assert FAKE_KEY_ID not in shown and FAKE_SECRET not in shown
        assert destination.url in str(error)
    assert "retrying" in caplog.text
    assert FAKE_KEY_ID not in caplog.text and FAKE_SECRET not in caplog.text


def test_the_scrubber_takes_cloud_secrets_out_wherever_they_stand() -> None:
    scrub = Scrubber(
        Redactor(["dbpassword1"]),
        {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET},
    )
    text = f"Credential={FAKE_KEY_ID}/2025 sig:{FAKE_SECRET}x postgresql://u:dbpassword1@h/db"
    cleaned = scrub(text)
    assert FAKE_KEY_ID not in cleaned and FAKE_SECRET not in cleaned
    assert "dbpassword1" not in cleaned


# ------------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/x",
        "ftp://host/p",
        "az://container/p",
        "gs://",
        "gs://B/x",
        "s3://ab/x",
        "s3://192.168.1.1/x",
        "s3://AKIAFAKE0STORAGE0KEY:SECRETFAKE0storage0secret0never0shown00@bucket/x",
        "gs://bucket/a//b",
        "gs://bucket/../x",
        "gs://bucket/a/./b",
        "s3://bucket:9000/x",
        "s3://bucket/p?versionId=1",
        "gs://bucket/p#frag",
        "file://host/x",
        "file:relative",
        "file:///",
        "gs:bucket/x",
        "",
        " /tmp/x",
        "/tmp/x\n",
    ],
)
def test_bad_destination_urls_are_usage_errors(url: str, tmp_path: Path, cloud_env: None) -> None:
    with pytest.raises(UsageError) as refused:
        open_destination(url, _settings(tmp_path))
    error = refused.value
    assert error.exit_code == ExitCode.USAGE
    assert "\n" not in str(error)
    assert FAKE_SECRET not in str(error) and FAKE_KEY_ID not in str(error)


def test_good_destination_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_destination("gs://abaco-landing/prod/").display == "gs://abaco-landing/prod"
    gs = parse_destination("gs://abaco-landing/prod/eu")
    assert (gs.scheme, gs.bucket, gs.prefix) == ("gs", "abaco-landing", "prod/eu/")
    s3 = parse_destination("s3://my.bucket-1")
    assert (s3.scheme, s3.bucket, s3.prefix, s3.display) == (
        "s3",
        "my.bucket-1",
        "",
        "s3://my.bucket-1",
    )
    assert parse_destination("file:///srv/abaco%20copy").path == Path("/srv/abaco copy")
    assert parse_destination("file://localhost/srv/x").path == Path("/srv/x")
    assert parse_destination("backup").path == tmp_path / "backup"
    assert parse_destination("backup:2025").path == tmp_path / "backup:2025"


def test_the_destination_setting_is_checked_when_settings_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("ABACO_"):
            monkeypatch.delenv(key)
    assert load_settings().upload.destination is None
    monkeypatch.setenv("ABACO_UPLOAD__DESTINATION", "gs://abaco-landing/prod")
    settings = load_settings()
    assert (settings.upload.destination, settings.upload.parallel_files) == (
        "gs://abaco-landing/prod",
        4,
    )
    assert (settings.upload.max_total_seconds, settings.upload.pending_warning_minutes) == (120, 90)
    assert settings.upload.pending_critical_minutes == 360

    monkeypatch.setenv("ABACO_UPLOAD__DESTINATION", f"s3://{FAKE_KEY_ID}:{FAKE_SECRET}@bucket/p")
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    message = str(refused.value)
    assert "ABACO_UPLOAD__DESTINATION" in message and "credentials" in message
    assert FAKE_SECRET not in message and FAKE_KEY_ID not in message
    assert refused.value.exit_code == ExitCode.USAGE

    monkeypatch.setenv("ABACO_UPLOAD__DESTINATION", "https://storage.example.com/bucket")
    with pytest.raises(ConfigurationError, match="not supported"):
        load_settings()
    monkeypatch.delenv("ABACO_UPLOAD__DESTINATION")
    monkeypatch.setenv("ABACO_UPLOAD__S3_ENDPOINT_URL", f"https://user:{FAKE_SECRET}@minio:9000")
    with pytest.raises(ConfigurationError) as endpoint:
        load_settings()
    assert FAKE_SECRET not in str(endpoint.value)
    monkeypatch.delenv("ABACO_UPLOAD__S3_ENDPOINT_URL")
    for key, value in (
        ("PARALLEL_FILES", "0"),
        ("PARALLEL_FILES", "33"),
        ("PENDING_CRITICAL_MINUTES", "30"),
    ):
        monkeypatch.setenv(f"ABACO_UPLOAD__{key}", value)
        with pytest.raises(ConfigurationError):
            load_settings()
        monkeypatch.delenv(f"ABACO_UPLOAD__{key}")


def test_opening_a_destination_contacts_nothing(tmp_path: Path, cloud_env: None) -> None:
    """No credentials and no network are needed to open one: the client is made on first use."""
    for url in ("gs://abaco-landing/prod", "s3://abaco-landing/prod", str(tmp_path / "d")):
        destination = open_destination(url, _settings(tmp_path))
        assert destination.url == (url if "://" in url else str(tmp_path / "d"))
        destination.close()
    assert not (tmp_path / "d").exists()


# ----------------------------------------------------------------- retries that are ambiguous


class ResponseDroppingProxy:
    """A TCP proxy in front of a server: it forwards every request, but of the first
    ``drop`` connections it throws the server's answer away and resets the client, as a
    network that fails after the server acted does."""

    def __init__(self, upstream_port: int, drop: int) -> None:
        self.upstream_port = upstream_port
        self.drop = drop
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            dropping = self.connections <= self.drop
            threading.Thread(target=self._relay, args=(client, dropping), daemon=True).start()

    def _relay(self, client: socket.socket, dropping: bool) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))

        def pump(source: socket.socket, target: socket.socket | None) -> None:
            try:
                while data := source.recv(65536):
                    if target is not None:
                        target.sendall(data)
            except OSError:
                pass
            if target is not None:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)

        forward = threading.Thread(target=pump, args=(client, upstream), daemon=True)
        forward.start()
        if not dropping:
            pump(upstream, client)
        else:  # read the server's answer (it acted), then reset the client instead
            answer = b""
            with contextlib.suppress(OSError):
                while b"\r\n\r\n" not in answer and (data := upstream.recv(65536)):
                    answer += data
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        upstream.close()

    def close(self) -> None:
        self._listener.close()


def test_a_create_only_put_whose_answer_was_lost_succeeds_on_retry(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    cloud_env: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first PUT lands but its answer is lost; the retry finds the object (412) and, as its
    bytes are the ones sent, the put succeeds instead of reporting a conflict. Other bytes there
    are still a conflict."""
    endpoint = request.getfixturevalue("moto_endpoint")
    proxy = ResponseDroppingProxy(int(endpoint.rsplit(":", 1)[1]), drop=1)
    try:
        settings = _settings(
            tmp_path, s3_endpoint_url=f"http://127.0.0.1:{proxy.port}", max_total_seconds=10
        )
        destination = open_destination(f"s3://{BUCKET}/lost-{uuid.uuid4().hex[:8]}", settings)
        caplog.set_level(logging.WARNING, logger="abaco.storage")
        put = destination.put_bytes("manifest.json", b'{"run": 1}', if_absent=True)
        assert "retrying" in caplog.text  # the first answer was lost
        assert put.md5 == hashlib.md5(b'{"run": 1}', usedforsecurity=False).hexdigest()
        assert destination.get_bytes("manifest.json")[0] == b'{"run": 1}'
        proxy.drop = proxy.connections + 1  # lose the next answer too
        with pytest.raises(PreconditionFailed):
            destination.put_bytes("manifest.json", b'{"run": 2}', if_absent=True)
        destination.close()
    finally:
        proxy.close()


# ------------------------------------------------------------------------ more of the stores


def test_a_listing_of_several_pages(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cloud_env: None
) -> None:
    destination = _open("s3", request, tmp_path, monkeypatch, f"pages-{uuid.uuid4().hex[:8]}")
    assert isinstance(destination, RemoteDestination)
    destination.page_size = 2
    names = [f"exports/dpd/{n:02d}.csv" for n in range(7)]
    for name in names:
        destination.put_bytes(name, b"x")
    assert [i.name for i in destination.list("exports/")] == names


def test_many_threads_share_one_destination(dest: Destination, tmp_path: Path) -> None:
    """The upload service sends several files at once through one destination."""
    sources = []
    for n in range(12):
        source = tmp_path / f"f{n}.csv"
        source.write_bytes(os.urandom(50_000 + n))
        sources.append(source)
    errors: list[BaseException] = []

    def send(chunk: list[Path]) -> None:
        try:
            for source in chunk:
                dest.put_file(f"run/{source.name}", source, sha256=_digests(source)[1])
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(sources[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    listed = {i.name: i.size for i in dest.list("run/")}
    assert listed == {f"run/{s.name}": s.stat().st_size for s in sources}


def test_missing_aws_credentials_fail_at_once(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cloud_env: None
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    destination = _open("s3", request, tmp_path, monkeypatch, "nocreds", max_total_seconds=30)
    started = time.monotonic()
    with pytest.raises(StorageError) as refused:
        destination.put_bytes("x.csv", b"x")
    assert time.monotonic() - started < 5  # permanent: not retried
    assert refused.value.transient is False
    assert "credentials" in str(refused.value) and "AWS" in refused.value.hint
