"""`abaco audit verify`: is the audit trail intact, and does every export match it?

Checked: the hash chain and its head (audit/chain.py); every file a live manifest names
(present, not a link, its size and sha256 as the manifest says); every live manifest against
the audit trail (its run has a COMPLETE, FAIL, RECOVER or RESTORE record listing that dataset
and date, with the same sha256 for each file); the latest pointers; with
``against_sink``, this host's chain against the rows the PostgreSQL sink holds for it; and with
``remote``, every run recorded as uploaded against the destination: each object there with the
size (and md5 or sha256, where the store gives one) its manifest says (``remote_missing``,
``remote_modified``), the run's remote manifest there and equal to the local one
(``remote_manifest_missing``, ``remote_modified``), the remote pointer naming a manifest that
exists (``remote_dangling_latest``).

Notes, not problems: a publish that was interrupted (its journal; the next run of the dataset
finishes it), a prune that was interrupted, a manifest older than the log's first record (an
archived log, a new VM), a run dated after yesterday (--allow-future).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import psycopg

from abaco_cli.audit import sink
from abaco_cli.audit.actor import host_id
from abaco_cli.audit.chain import check_chain, first_seq
from abaco_cli.audit.recorder import audit_log, sink_conninfo
from abaco_cli.dates import newest_true_day
from abaco_cli.errors import AbacoError, LockedError, UnsafePathError
from abaco_cli.redaction import Redactor
from abaco_cli.runtime import files, journal
from abaco_cli.runtime.inventory import ExportedRun, dataset_dirs, exported_runs, read_pointer
from abaco_cli.runtime.lock import dataset_lock
from abaco_cli.runtime.manifest import ManifestFile, parse_time
from abaco_cli.runtime.tree import Place, RuntimeTree
from abaco_cli.services.upload_state import (
    data_name,
    local_runs,
    manifest_name,
    manifests_prefix,
    pointer_name,
    read_state,
)
from abaco_cli.services.uploading import local_digests, record_found
from abaco_cli.settings import Settings
from abaco_cli.storage import (
    ChecksumMismatch,
    Destination,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    check_name,
    open_destination,
)

RECORDING_EVENTS = ("COMPLETE", "FAIL", "RECOVER", "RESTORE", "MIGRATE")


@dataclass(frozen=True)
class Finding:
    """One problem (or, for notes, one fact) that `audit verify` reports."""

    kind: str
    where: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "message": self.message}


@dataclass
class VerifyResult:
    log_path: Path
    records: int = 0
    manifests: int = 0
    files_checked: int = 0
    sink_rows: int | None = None  # with --against-sink: the sink's rows compared
    remote_objects: int | None = None  # with --remote: the objects compared
    destination: str | None = None  # with --remote: where (credential-free)
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "audit_log": str(self.log_path),
            "records": self.records,
            "manifests": self.manifests,
            "files_checked": self.files_checked,
            "sink_rows": self.sink_rows,
            "destination": self.destination,
            "remote_objects": self.remote_objects,
            "problems": [p.to_json() for p in self.problems],
            "notes": [n.to_json() for n in self.notes],
        }


@dataclass
class Trail:
    """What the chain says about published runs."""

    recorded: dict[tuple[str, str, str], dict[str, str]]  # (run, dataset, date) -> path: sha
    first_time: datetime | None
    records: list[dict[str, Any]]
    first_seq: int | None = None


def read_trail(settings: Settings) -> tuple[Trail, list[Finding], int]:
    """The chain's records indexed by the runs they published, its problems, its length."""
    lines, head, exists = audit_log(settings).read()
    problems = [Finding(p.kind, p.where, p.message) for p in check_chain(lines, head, exists)]
    records = [line.record for line in lines if line.record is not None]
    first = parse_time(records[0].get("time")) if records else None
    return Trail(_published(records), first, records, first_seq(lines)), problems, len(lines)


def _published(records: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, str]]:
    """(run, dataset, date) -> {path: sha256} of the records that say a run published files."""
    recorded: dict[tuple[str, str, str], dict[str, str]] = {}
    for record in records:
        if record.get("event") not in RECORDING_EVENTS:
            continue
        for output in record.get("outputs") or []:
            if not isinstance(output, dict):
                continue
            key = (
                str(record.get("run_id")),
                str(output.get("dataset")),
                str(output.get("as_of_date")),
            )
            recorded.setdefault(key, {})[str(output.get("path"))] = str(output.get("sha256"))
    return recorded


def pending_publishes(tree: RuntimeTree) -> tuple[set[tuple[str, date]], list[Finding]]:
    """(dataset, date) pairs an interrupted publish is still to finish, and untrusted journals."""
    waiting: set[tuple[str, date]] = set()
    problems: list[Finding] = []
    for item in journal.pending(tree):
        if item.record is None:
            problems.append(
                Finding(
                    "bad_journal", str(item.path), f"a publish journal is untrusted: {item.problem}"
                )
            )
            continue
        for dataset in item.waiting:
            waiting.add((dataset, item.record.as_of))
    return waiting, problems


def check_linkage(
    tree: RuntimeTree, run: ExportedRun, trail: Trail, where: str
) -> tuple[list[Finding], list[Finding]]:
    """Does the trail say this run published this manifest, with these checksums?"""
    manifest = run.manifest
    assert manifest is not None
    key = (manifest.run_id, run.dataset, manifest.as_of_date.isoformat())
    recorded = trail.recorded.get(key)
    if recorded is None:
        if trail.first_time is not None and manifest.finished_at < trail.first_time:
            note = Finding(
                "predates_log",
                where,
                f"run {manifest.run_id} ({run.dataset} as of {manifest.as_of_date}) finished "
                "before the audit log's first record (an archived log or a new VM): not checked "
                "against the trail",
            )
            return [], [note]
        problem = Finding(
            "unaudited_run",
            where,
            f"{where} (run {manifest.run_id}) has no COMPLETE, RECOVER or RESTORE record in "
            "the audit log: the log was cut or replaced, or the manifest was put there by hand "
            "(a restored manifest needs `abaco audit record-restore`)",
        )
        return [problem], []
    # Compared by file name, which is unique within a dataset and date whatever the layout
    # (a migrated tree moves CSV and JSON files to folders of their own, names unchanged).
    own = {PurePosixPath(p).name: sha for p, sha in recorded.items()}
    problems: list[Finding] = []
    named = {PurePosixPath(entry.path).name for entry in manifest.files}
    for entry in manifest.files:
        name = PurePosixPath(entry.path).name
        origin = entry.origin(manifest.run_id)
        if name in own:
            if own[name] != entry.sha256:
                problems.append(
                    Finding(
                        "manifest_edited",
                        where,
                        f"{where} was edited: the sha256 it gives {entry.path} differs from the "
                        f"audit record of run {manifest.run_id}",
                    )
                )
            continue
        if origin != manifest.run_id:  # a file of another format that an earlier run wrote
            kept = _check_kept(trail, run.dataset, manifest.as_of_date, entry, origin, where)
            if kept is not None:
                problems.append(kept)
            continue
        problems.append(
            Finding(
                "manifest_edited",
                where,
                f"{where} was edited: it names {entry.path}, a file the audit record of run "
                f"{manifest.run_id} does not list",
            )
        )
    for name in sorted(set(own) - named):
        problems.append(
            Finding(
                "manifest_edited",
                where,
                f"{where} was edited: it no longer names {name}, a file the audit record of run "
                f"{manifest.run_id} lists",
            )
        )
    return problems, []


def _check_kept(
    trail: Trail, dataset: str, day: date, entry: ManifestFile, origin: str, where: str
) -> Finding | None:
    """A file kept from an earlier run must be in that run's record, with the same sha256."""
    recorded = trail.recorded.get((origin, dataset, day.isoformat()))
    if recorded is None:
        moment = entry.snapshot_at
        if trail.first_time is not None and moment is not None and moment < trail.first_time:
            return None  # that run predates the log
        return Finding(
            "manifest_edited",
            where,
            f"{where} keeps {entry.path} from run {origin}, which has no record in the audit log",
        )
    by_name = {PurePosixPath(p).name: sha for p, sha in recorded.items()}
    sha = by_name.get(PurePosixPath(entry.path).name)
    if sha == entry.sha256:
        return None
    what = "a file it does not list" if sha is None else "with another sha256"
    return Finding(
        "manifest_edited",
        where,
        f"{where} keeps {entry.path} from run {origin}, {what} in that run's audit record",
    )


def _check_files(tree: RuntimeTree, run: ExportedRun) -> list[Finding]:
    problems: list[Finding] = []
    manifest = run.manifest
    assert manifest is not None
    where = tree.relative(run.manifest_path)
    for entry in manifest.files:
        label = f"{entry.path} (run {manifest.run_id})"
        try:
            path = tree.data_file(entry.path, run.dataset, manifest.as_of_date)
            size, digest = files.sha256_of(tree, path, Place.DATA)
        except UnsafePathError as exc:
            kind = "symlinked_file" if "symbolic link" in exc.message else "bad_path"
            problems.append(Finding(kind, entry.path, f"{where}: {label}: {exc.message}"))
            continue
        except FileNotFoundError:
            problems.append(Finding("missing_file", entry.path, f"{label} is missing"))
            continue
        if size != entry.bytes or digest != entry.sha256:
            problems.append(
                Finding(
                    "modified_file",
                    entry.path,
                    f"{label} was modified: its size or sha256 no longer matches {where}",
                )
            )
    return problems


@dataclass
class DatasetCheck:
    manifests: int = 0
    files: int = 0
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)


def check_dataset(
    tree: RuntimeTree,
    dataset: str,
    trail: Trail,
    waiting: set[tuple[str, date]],
    newest_day: date,
    *,
    hash_files: bool = True,
) -> DatasetCheck:
    """Every run of one dataset: its manifest, its files (``hash_files``), its audit records."""
    result = DatasetCheck()
    for run in exported_runs(tree, dataset):
        where = tree.relative(run.manifest_path)
        if run.marked:
            left = sum(1 for f in run.files if files.exists(tree.exports / f.path))
            result.notes.append(
                Finding(
                    "prune_incomplete",
                    where,
                    f"the removal of run {run.run_id or '?'} ({dataset} as of "
                    f"{run.as_of_date or '?'}) was interrupted; {left} of its {len(run.files)} "
                    "files remain; the next `abaco prune` finishes it",
                )
            )
            continue
        if run.as_of is not None and (dataset, run.as_of) in waiting:
            result.notes.append(
                Finding(
                    "publish_interrupted",
                    where,
                    f"the publish of {dataset} as of {run.as_of} was interrupted; the next run "
                    f"of {dataset} (any export or prune of it) completes it",
                )
            )
            continue
        if run.manifest is None:
            problem = run.problem
            kind = problem.kind if problem else "bad_manifest"
            message = problem.message if problem else "unreadable"
            result.problems.append(Finding(kind, where, f"{where}: {message}"))
            continue
        result.manifests += 1
        result.files += len(run.manifest.files)
        if hash_files:
            result.problems += _check_files(tree, run)
        problems, notes = check_linkage(tree, run, trail, where)
        result.problems += problems
        result.notes += notes
        if run.manifest.as_of_date > newest_day:
            result.notes.append(
                Finding(
                    "future_run",
                    where,
                    f"{dataset} has a run as of {run.manifest.as_of_date}, a day that is not over "
                    "(exported with --allow-future); it is the dataset's newest until removed",
                )
            )
    seen = {r.as_of for r in exported_runs(tree, dataset)}
    for waiting_dataset, day in sorted(waiting):
        if waiting_dataset == dataset and day not in seen:
            result.notes.append(
                Finding(
                    "publish_interrupted",
                    f"{dataset} as of {day}",
                    f"the publish of {dataset} as of {day} was interrupted; the next run of "
                    f"{dataset} (any export or prune of it) completes it",
                )
            )
    pointer_path = tree.latest_path(dataset)
    if files.exists(pointer_path):
        pointer = read_pointer(tree, dataset)
        if pointer is None or pointer.manifest is None or not files.exists(pointer.manifest):
            result.problems.append(
                Finding(
                    "dangling_latest",
                    tree.relative(pointer_path),
                    f"{dataset}/latest.json points at a manifest that does not exist",
                )
            )
    return result


def verify_audit(
    settings: Settings,
    *,
    against_sink: bool = False,
    remote: bool = False,
    destination: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> VerifyResult:
    """Recompute the whole chain; re-hash every file still present against its manifest; tie
    every manifest to the trail; with ``against_sink``, compare the chain with the sink.

    Files are checked without a lock; a dataset that shows a problem is checked again under its
    lock, so an export publishing at that moment is not mistaken for damage.
    """
    log_file = audit_log(settings)
    result = VerifyResult(log_path=log_file.path)
    trail, chain_problems, result.records = read_trail(settings)
    result.problems += chain_problems
    if not trail.records and not files.exists(log_file.path):
        result.notes.append(Finding("no_audit_log", str(log_file.path), "no audit log yet"))
    if trail.first_seq is not None and trail.first_seq > 1:
        result.notes.append(
            Finding(
                "log_continues",
                str(log_file.path),
                f"the log starts at seq {trail.first_seq}: the records before it were archived "
                "(or removed from the start: that looks the same, also to --against-sink; the "
                "sink keeps every record it received)",
            )
        )
    tree = RuntimeTree.at(settings.runtime_dir)
    for folder in dataset_dirs(tree):
        dataset = folder.name
        newest_day = newest_true_day(settings, dataset)
        if progress is not None:
            progress(f"checking {dataset}")
        waiting, _ = pending_publishes(tree)
        outcome = check_dataset(tree, dataset, trail, waiting, newest_day)
        if outcome.problems:
            try:
                with dataset_lock(
                    tree.lock_path(dataset),
                    run_id="audit-verify",
                    command="audit verify",
                    timeout_seconds=settings.lock_timeout_seconds,
                ):
                    waiting, _ = pending_publishes(tree)
                    outcome = check_dataset(tree, dataset, trail, waiting, newest_day)
            except (LockedError, UnsafePathError, OSError):
                pass  # report what the unlocked pass found
        result.manifests += outcome.manifests
        result.files_checked += outcome.files
        result.problems += outcome.problems
        result.notes += outcome.notes
    result.problems += pending_publishes(tree)[1]
    if against_sink:
        compare_with_sink(settings, trail, result)
    if remote:
        compare_with_remote(settings, destination or settings.upload.destination, result)
    return result


# --------------------------------------------------------------------------------- --remote


def compare_with_remote(settings: Settings, url: str | None, result: VerifyResult) -> None:
    """Every run recorded as uploaded, against the destination (module docstring)."""
    if url is None:
        result.problems.append(
            Finding(
                "no_destination",
                "upload.destination",
                "--remote needs a destination: upload.destination or --dest",
            )
        )
        return
    target = open_destination(url, settings)
    result.destination, result.remote_objects = target.url, 0
    tree = RuntimeTree.at(settings.runtime_dir)
    try:
        for folder in dataset_dirs(tree):
            found = VerifyResult(log_path=result.log_path, remote_objects=0)
            _check_remote_dataset(tree, target, folder.name, found)
            if found.problems:  # an upload may be replacing objects right now: look again
                try:  # under the dataset's upload lock
                    with dataset_lock(
                        tree.upload_lock_path(folder.name),
                        run_id="audit-verify",
                        command="audit verify",
                        timeout_seconds=settings.lock_timeout_seconds,
                    ):
                        found = VerifyResult(log_path=result.log_path, remote_objects=0)
                        _check_remote_dataset(tree, target, folder.name, found)
                except (LockedError, UnsafePathError, OSError):
                    pass  # report what the unlocked pass found
            result.problems += found.problems
            result.notes += found.notes
            result.remote_objects += found.remote_objects or 0
    except StorageError as exc:
        result.problems.append(
            Finding("remote_unreachable", target.url, f"cannot read {target.url}: {exc.message}")
        )
    finally:
        target.close()


def _check_remote_dataset(
    tree: RuntimeTree, target: Destination, dataset: str, result: VerifyResult
) -> None:
    state = read_state(tree, dataset)
    runs = local_runs(tree, dataset)
    dest = state.at(target.url)
    if state.problem:
        result.notes.append(
            Finding(
                "upload_state_rebuilt",
                str(tree.upload_state_path(dataset)),
                f"{state.problem}: the runs whose manifest is in {target.url} count as uploaded "
                "here (the next `abaco upload` rebuilds the file)",
            )
        )
        record_found(tree, target, dataset, dest, runs)
    uploaded = [run for run in runs if dest.uploaded(run)]
    for run in uploaded:
        result.problems += _check_remote_run(tree, target, run, result)
    _check_remote_pointer(target, dataset, bool(uploaded), result)


def _check_remote_run(
    tree: RuntimeTree, target: Destination, run: ExportedRun, result: VerifyResult
) -> list[Finding]:
    manifest = run.manifest
    assert manifest is not None
    problems: list[Finding] = []
    for entry in manifest.files:
        name = data_name(entry.path)
        result.remote_objects = (result.remote_objects or 0) + 1
        info = target.head(name)
        label = f"{target.url}/{name} (run {manifest.run_id})"
        if info is None:
            problems.append(Finding("remote_missing", name, f"{label} is missing"))
            continue
        why = _remote_difference(tree, run, entry, info)
        if why is not None:
            problems.append(Finding("remote_modified", name, f"{label} {why}"))
    name = manifest_name(run.dataset, manifest.as_of_date, manifest.run_id)
    try:
        there, _ = target.get_bytes(name)
    except ObjectNotFound:
        return [
            *problems,
            Finding(
                "remote_manifest_missing",
                name,
                f"{target.url}/{name} is missing, yet the run is recorded as uploaded",
            ),
        ]
    except ChecksumMismatch as exc:
        return [*problems, Finding("remote_modified", name, exc.message)]
    try:
        local = files.read_text(tree, run.manifest_path, Place.MANIFEST).encode("utf-8")
    except (OSError, UnsafePathError):
        local = None
    if local is not None and there != local:
        problems.append(
            Finding(
                "remote_modified",
                name,
                f"{target.url}/{name} differs from the local manifest of run {manifest.run_id}",
            )
        )
    return problems


def _remote_difference(
    tree: RuntimeTree, run: ExportedRun, entry: ManifestFile, info: ObjectInfo
) -> str | None:
    """Why a remote object is not the manifest's file, or None."""
    if info.size != entry.bytes:
        return f"has {info.size} bytes, not the {entry.bytes} of its manifest"
    if info.sha256 is not None:
        return None if info.sha256 == entry.sha256 else "has another sha256 than its manifest"
    if info.md5 is None:
        return None  # the store vouches for no digest: the size is all it can say
    try:
        path = tree.data_file(entry.path, run.dataset, run.as_of)
        _, md5, sha = local_digests(tree, path)
    except (AbacoError, OSError):
        return None  # the local file is the local check's concern
    if sha != entry.sha256:
        return None
    return None if md5 == info.md5 else "has another md5 than the local file of its manifest"


def _check_remote_pointer(
    target: Destination, dataset: str, any_uploaded: bool, result: VerifyResult
) -> None:
    name = pointer_name(dataset)
    try:
        data, _ = target.get_bytes(name)
    except ObjectNotFound:
        if any_uploaded:
            result.notes.append(
                Finding("no_remote_latest", name, f"{target.url}/{name} does not exist yet")
            )
        return
    except ChecksumMismatch:
        data = b""
    manifest = None
    try:
        body = json.loads(data)
        if isinstance(body, dict) and isinstance(body.get("manifest"), str):
            manifest = check_name(body["manifest"])
    except (ValueError, StorageError):
        manifest = None
    known = manifest is not None and manifest.startswith(manifests_prefix(dataset))
    if known and manifest is not None and target.head(manifest) is not None:
        return
    result.problems.append(
        Finding(
            "remote_dangling_latest",
            name,
            f"{target.url}/{name} points at a manifest that does not exist"
            + (f" ({manifest})" if manifest else " (it names none)"),
        )
    )


def compare_with_sink(settings: Settings, trail: Trail, result: VerifyResult) -> None:
    """This host's records against the sink's rows of this host, from the local log's first
    sequence number on: missing, extra and different records are problems.

    Records and rows are matched by (host id, seq): the hosts are this host and every host id
    the local records carry (a renamed VM keeps one chain under two ids). For one host and seq
    the row the sink received first is the one that counts (the sink refuses a second one; a
    table made before that rule may hold several); any other row with a different hash is a
    difference too. A log that continues an archived one must link to the sink's copy of the
    archived log's last record when the sink has it.
    """
    if settings.audit.sink != "postgres":
        result.problems.append(
            Finding(
                "no_sink",
                "audit.sink",
                "--against-sink needs audit.sink = 'postgres' (and audit.database_url)",
            )
        )
        return
    local: dict[tuple[str, int], dict[str, Any]] = {}
    for record in trail.records:
        seq = record.get("seq")
        if isinstance(seq, int) and not isinstance(seq, bool):
            local.setdefault((sink.host_of(record), seq), record)
    hosts = {host_id()} | {host for host, _ in local}
    first = min((seq for _, seq in local), default=1)
    try:
        rows = [
            row
            for host in sorted(hosts)
            for row in sink.rows_of_host(
                sink_conninfo(settings),
                settings.audit.table,
                host,
                from_seq=max(first - 1, 1),
                timeout_seconds=settings.audit.sink_timeout_seconds,
            )
        ]
    except psycopg.Error as exc:
        redactor = Redactor.from_settings(settings)
        message = redactor.text(" ".join(str(exc).split()) or type(exc).__name__)
        result.problems.append(
            Finding("sink_unreachable", settings.audit.table, f"cannot read the sink: {message}")
        )
        return
    remote: dict[tuple[str, int], list[sink.SinkRow]] = {}
    for row in rows:
        remote.setdefault((row.host, row.seq), []).append(row)
    result.sink_rows = sum(1 for row in rows if row.seq >= first)
    if first > 1:
        earliest = min(local.items(), key=lambda item: item[0][1])[1]
        _check_continuation(earliest, first, remote, result)
    for (host, seq), record in sorted(local.items(), key=lambda item: (item[0][1], item[0][0])):
        found = remote.get((host, seq))
        label = f"record seq {seq} (run {record.get('run_id')}, {record.get('event')})"
        if not found:
            result.problems.append(
                Finding(
                    "missing_in_sink",
                    f"seq {seq}",
                    f"{label} is in the local log but not in the sink: appended without abaco "
                    "(forged), or written while the sink was down (never copied later)",
                )
            )
            continue
        kept = found[0]
        others = [row for row in found[1:] if row.hash != kept.hash]
        if kept.hash != record.get("hash"):
            result.problems.append(
                Finding(
                    "differs_from_sink",
                    f"seq {seq}",
                    f"{label} differs from the sink's copy (run {kept.run_id}, {kept.event} "
                    "there): the local record was rewritten, or the log was replaced",
                )
            )
        elif others:
            result.problems.append(
                Finding(
                    "differs_from_sink",
                    f"seq {seq}",
                    f"the sink holds {len(others)} other record(s) seq {seq} of host {host} "
                    f"besides the local one (run {others[0].run_id}, {others[0].event}): a "
                    "second log writes as this host (a cloned VM?) or rows were forged",
                )
            )
    for (host, seq), found in sorted(remote.items(), key=lambda item: (item[0][1], item[0][0])):
        if seq < first or (host, seq) in local:
            continue
        row = found[0]
        result.problems.append(
            Finding(
                "missing_locally",
                f"seq {seq}",
                f"the sink holds record seq {seq} of host {host} (run {row.run_id}, "
                f"{row.event}) that the local log does not have: records were removed or the "
                "log was replaced",
            )
        )
    _check_older_runs(settings, trail, result)


def _check_continuation(
    first_record: dict[str, Any],
    first: int,
    remote: dict[tuple[str, int], list[sink.SinkRow]],
    result: VerifyResult,
) -> None:
    """A log that starts at seq N > 1 says it continues an archived log whose last record N-1
    has the hash in its first record's prev_hash: the sink's copy of record N-1 must agree."""
    before = remote.get((sink.host_of(first_record), first - 1))
    if not before or before[0].hash == first_record.get("prev_hash"):
        return
    result.problems.append(
        Finding(
            "differs_from_sink",
            f"seq {first - 1}",
            f"the log starts at seq {first} as if it continued an archived log, but its first "
            f"record does not link to the sink's record seq {first - 1} (run "
            f"{before[0].run_id}, {before[0].event}): the log was replaced",
        )
    )


def _check_older_runs(settings: Settings, trail: Trail, result: VerifyResult) -> None:
    """A live manifest older than the local log is a note locally (an archived log, a new VM);
    against the sink, which holds the archived records too, its run must have a record there
    (from any host: a new VM's tree may come from an old one) naming the same files."""
    tree = RuntimeTree.at(settings.runtime_dir)
    waiting, _ = pending_publishes(tree)
    older: list[tuple[str, ExportedRun]] = []
    for folder in dataset_dirs(tree):
        for run in exported_runs(tree, folder.name):
            if run.marked or run.manifest is None or (run.dataset, run.as_of) in waiting:
                continue
            where = tree.relative(run.manifest_path)
            _, notes = check_linkage(tree, run, trail, where)
            if any(note.kind == "predates_log" for note in notes):
                older.append((where, run))
    if not older:
        return
    try:
        records = sink.records_of_runs(
            sink_conninfo(settings),
            settings.audit.table,
            sorted({run.run_id for _, run in older}),
            events=RECORDING_EVENTS,
            timeout_seconds=settings.audit.sink_timeout_seconds,
        )
    except psycopg.Error as exc:
        message = Redactor.from_settings(settings).text(" ".join(str(exc).split()))
        result.problems.append(
            Finding("sink_unreachable", settings.audit.table, f"cannot read the sink: {message}")
        )
        return
    anchored = _published(records)
    for where, run in older:
        manifest = run.manifest
        assert manifest is not None
        listed = anchored.get((manifest.run_id, run.dataset, manifest.as_of_date.isoformat()))
        if listed is None:
            result.problems.append(
                Finding(
                    "unanchored_run",
                    where,
                    f"{where} (run {manifest.run_id}) is older than the local audit log and the "
                    "sink holds no record of its run either: the manifest was put there by hand "
                    "(a restored manifest needs `abaco audit record-restore`)",
                )
            )
        elif listed != {entry.path: entry.sha256 for entry in manifest.files}:
            result.problems.append(
                Finding(
                    "manifest_edited",
                    where,
                    f"{where} was edited: the files and sha256 it names differ from the sink's "
                    f"record of run {manifest.run_id}",
                )
            )
