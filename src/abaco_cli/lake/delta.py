"""The lake's Delta Lake tables: one per source table, one MERGE per batch, each commit an LSN.

``<dest>/lake/tables/<schema>.<table>/`` holds the current rows of a source table as a Delta
Lake table, written with deltalake (delta-rs: no JVM, local folders, S3 and GCS natively).
Every commit abaco writes for a batch carries in its commit metadata ``abaco.lsn`` (``X/Y``),
``abaco.lsn_int`` (decimal) and ``abaco.commit_time`` (the batch's last source commit, ISO 8601
UTC), so that each Delta version maps to a source LSN and time travel to "the book at 09:00" is
a version lookup (:meth:`LakeTable.version_at`).

The same commit also records the LSN as the version of the Delta transaction identifier
``abaco.lake`` (a ``txn`` action, the Delta protocol's own mark for idempotent writers). Unlike
commit metadata, a ``txn`` is kept in checkpoints, so :meth:`LakeTable.covered_lsn` answers from
the table's snapshot without reading old commit files, and still answers after the log cleanup
removed them. Compaction commits (``lake compact``) carry neither.

Types: delta-rs keeps every type of the source contract exactly, and reading back gives the
same Arrow types (checked in tests/test_lake_delta.py): decimal128(p, s) is Delta
``decimal(p,s)`` (Parquet INT64 up to precision 18, FIXED_LEN_BYTE_ARRAY(16) beyond), a
timestamp in UTC microseconds is Delta ``timestamp`` (Parquet INT64, isAdjustedToUTC), int16
is ``short``, date32 ``date``, binary ``binary``. Money is never a float.

S3 commits are safe with concurrent writers without a locking table: delta-rs writes each
commit file with a conditional put (``If-None-Match: *``), which S3 (since 2024), MinIO, R2
and moto honour; a second writer of the same version fails and retries on the next one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import (
    CommitProperties,
    DeltaTable,
    Field,
    QueryBuilder,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import DeltaError, TableNotFoundError

from abaco_cli.errors import NotFoundError, UsageError, WriteError
from abaco_cli.lake.lsn import format_lsn
from abaco_cli.redaction import Redactor
from abaco_cli.settings import Settings
from abaco_cli.storage.base import Scrubber
from abaco_cli.storage.url import DestinationURL, parse_destination

T = TypeVar("T")

LSN_KEY = "abaco.lsn"  # commit metadata: the batch's end LSN as PostgreSQL writes it, X/Y
LSN_INT_KEY = "abaco.lsn_int"  # the same LSN as a decimal integer
COMMIT_TIME_KEY = "abaco.commit_time"  # the batch's last source commit time, ISO 8601 UTC
PART_KEY = "abaco.part"  # a commit of part of a batch (no LSN: the batch's last commit has it)
LAKE_APP_ID = "abaco.lake"  # the Delta transaction identifier whose version is the LSN
OP_COLUMN = "_op"  # in apply()'s input: "upsert" or "delete"
MIN_RETENTION_HOURS = 168  # vacuum keeps 7 days of removed files: readers and time travel
_MAX_LSN = 2**63 - 1  # a Delta txn version is a signed 64-bit integer
_QUALIFIED = re.compile(r"^[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_WRITER = WriterProperties(compression="ZSTD")  # as abaco's Parquet exports


def _utc_text(moment: datetime) -> str:
    """``2026-03-03T09:00:00.000000Z``: fixed width, so the texts sort as the moments do."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def table_uri(dest: DestinationURL | str, table: str) -> str:
    """Where the Delta table of ``table`` (``schema.table``) lives under a lake destination:
    ``<dest>/lake/tables/<schema>.<table>``, as deltalake wants it (an absolute local path,
    ``s3://bucket/prefix/...`` or ``gs://bucket/prefix/...``)."""
    if not _QUALIFIED.match(table):
        raise ValueError(f"{table!r} is not a table name like schema.table")
    parsed = parse_destination(dest) if isinstance(dest, str) else dest
    if parsed.scheme == "file":
        assert parsed.path is not None
        return os.path.join(parsed.path, "lake", "tables", table)
    return f"{parsed.scheme}://{parsed.bucket}/{parsed.prefix}lake/tables/{table}"


def storage_options(settings: Settings, dest_url: str) -> dict[str, str]:
    """deltalake's storage options for a destination; they never hold a secret.

    S3: the endpoint and region of ``upload.s3_endpoint_url`` / ``upload.s3_region`` (plain
    http allowed only for an http:// endpoint, such as a local MinIO or moto) and conditional
    puts for the commit files. Credentials are left to delta-rs's usual chain, like boto3's:
    AWS_* variables, the AWS profile, the instance role. GCS: nothing; delta-rs takes
    GOOGLE_APPLICATION_CREDENTIALS or the VM's service account. A folder: nothing.
    """
    scheme = parse_destination(dest_url).scheme
    if scheme != "s3":
        return {}
    options = {"aws_conditional_put": "etag"}
    endpoint = settings.upload.s3_endpoint_url
    if endpoint is not None:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.lower().startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if settings.upload.s3_region is not None:
        options["AWS_REGION"] = settings.upload.s3_region
    return options


@dataclass(frozen=True)
class LakeCommit:
    """What a Delta commit written by abaco carries: the batch's end LSN and the commit time
    of its last source transaction (UTC; None when the batch had none, e.g. an initial load)."""

    lsn: int
    commit_time: datetime | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.lsn <= _MAX_LSN:
            raise ValueError(f"LSN {self.lsn} is outside 0..2**63-1")
        if self.commit_time is not None and self.commit_time.utcoffset() is None:
            raise ValueError("commit_time must carry a time zone (UTC)")

    @property
    def lsn_text(self) -> str:
        return format_lsn(self.lsn)

    def metadata(self) -> dict[str, str]:
        """The commit metadata: abaco.lsn, abaco.lsn_int and (when known) abaco.commit_time."""
        found = {LSN_KEY: self.lsn_text, LSN_INT_KEY: str(self.lsn)}
        if self.commit_time is not None:
            found[COMMIT_TIME_KEY] = _utc_text(self.commit_time)
        return found

    def properties(self) -> CommitProperties:
        """Commit metadata plus the ``abaco.lake`` transaction at this LSN, in one commit."""
        return CommitProperties(
            custom_metadata=dict(self.metadata()),
            app_transactions=[Transaction(app_id=LAKE_APP_ID, version=self.lsn)],
        )


@dataclass(frozen=True)
class MergeOutcome:
    """One batch applied: rows inserted, updated and deleted, and the table's version after
    (``committed`` False: nothing to write, ``version`` is the current one)."""

    version: int
    inserted: int
    updated: int
    deleted: int
    committed: bool = True


@dataclass(frozen=True)
class CompactOutcome:
    """``lake compact`` on one table: files rewritten by optimize, files vacuumed, and the
    version after (these commits carry no abaco.lsn)."""

    version: int
    files_added: int
    files_removed: int
    files_vacuumed: int


@dataclass(frozen=True)
class _Stamp:
    """What one commit of the history says about the source (absent: not written by sync)."""

    version: int
    lsn: int | None
    commit_time: datetime | None


def _stamp(entry: Mapping[str, Any]) -> _Stamp:
    lsn_text = entry.get(LSN_INT_KEY)
    time_text = entry.get(COMMIT_TIME_KEY)
    return _Stamp(
        version=int(entry["version"]),
        lsn=int(lsn_text) if isinstance(lsn_text, str) and lsn_text.isdigit() else None,
        commit_time=datetime.fromisoformat(time_text) if isinstance(time_text, str) else None,
    )


class LakeTable:
    """One Delta table of the lake. Every method opens the table's latest state (or the version
    asked for) afresh, so that a LakeTable never acts on a stale snapshot."""

    def __init__(self, uri: str, storage_options: Mapping[str, str]) -> None:
        self.uri = uri
        self._options = dict(storage_options)
        self._scrub = Scrubber(Redactor())

    def __repr__(self) -> str:  # never the storage options
        return f"LakeTable({self.uri!r})"

    # ------------------------------------------------------------------ reading the log

    def exists(self) -> bool:
        """Whether a Delta table is at the URI (its ``_delta_log`` has a commit)."""
        # (Not DeltaTable.is_deltatable: it keeps the GIL while it waits for the store, which
        # stalls an S3 server that runs in this process, such as the tests' moto.)
        try:
            self._open()
        except NotFoundError:
            return False
        return True

    def version(self) -> int:
        """The table's latest version."""
        return self._open().version()

    def covered_lsn(self) -> int | None:
        """The LSN of the latest commit written for a batch (abaco.lsn): a batch whose end LSN
        is at or below it is already in the table and must not be merged again. Commits without
        one (compaction, schema changes) are skipped. None when no commit has one, or no table
        is there."""
        try:
            table = self._open()
        except NotFoundError:
            return None
        found = self._delta("read", lambda: table.transaction_version(LAKE_APP_ID))
        return None if found is None else int(found)

    def history(self) -> list[dict[str, Any]]:
        """Every commit's information, newest first (commitInfo plus ``version``). delta-rs
        1.6 keeps the GIL while it lists the log here (not in the other calls used here): fine
        for abaco, but an S3 server in the same process (the tests' moto) stalls meanwhile."""
        return self._delta("read the history of", lambda: list(self._open().history()))

    def version_at(self, *, lsn: int | None = None, moment: datetime | None = None) -> int | None:
        """Time travel: the newest version whose abaco.lsn is at or below ``lsn``, or whose
        abaco.commit_time is at or before ``moment``; None when none is (or the log that held
        it has been cleaned up: 30 days by default). Reads the commit history."""
        if (lsn is None) == (moment is None):
            raise ValueError("give exactly one of lsn or moment")
        if moment is not None and moment.utcoffset() is None:
            raise ValueError("moment must carry a time zone")
        for stamp in map(_stamp, self.history()):
            if lsn is not None and stamp.lsn is not None and stamp.lsn <= lsn:
                return stamp.version
            if moment is not None and stamp.commit_time is not None and stamp.commit_time <= moment:
                return stamp.version
        return None

    def read(self, version: int | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """The rows of the latest version (or of ``version``), with the source's Arrow types
        (for verify and tests; a whole table in memory). A version whose files the vacuum has
        removed (older than its 7-day retention) cannot be read."""
        table = self._open(version)
        return self._delta("read", lambda: _query(table, columns))

    def schema(self) -> pa.Schema:
        """The table's columns as Arrow types."""
        table = self._open()
        return self._delta("read the schema of", lambda: pa.schema(table.schema().to_arrow()))

    def count_rows(self) -> int:
        """The number of rows, from the log's per-file statistics (no data file is read); a
        scan only for files written without statistics."""
        table = self._open()

        def count() -> int:
            records = pa.table(table.get_add_actions(flatten=True)).column("num_records")
            if records.null_count:
                counted = _query(table, None, "SELECT count(*) AS n FROM t")
                return int(counted.column("n")[0].as_py())
            return int(pc.sum(records).as_py() or 0)

        return self._delta("count the rows of", count)

    # ------------------------------------------------------------------ writing

    def create(
        self, data: pa.RecordBatchReader, commit: LakeCommit, *, replace: bool = False
    ) -> int:
        """Version 0 of the table from a stream of batches (written as they come: never the
        whole table in memory), its commit carrying ``commit``'s LSN. ``replace`` (a resync)
        overwrites an existing table's rows and schema in one commit instead. Returns the new
        version."""
        if not replace and self.exists():
            raise WriteError(
                f"a Delta table is already at {self.uri}",
                hint="`abaco lake resync --table SCHEMA.TABLE` replaces a table's contents.",
            )
        self._delta(
            "write",
            lambda: write_deltalake(
                self.uri,
                data,
                mode="overwrite" if replace else "error",
                schema_mode="overwrite" if replace else None,
                storage_options=self._options,
                writer_properties=_WRITER,
                commit_properties=commit.properties(),
            ),
        )
        return self.version()

    def apply(
        self, net: pa.Table, *, key: Sequence[str], truncated: bool, commit: LakeCommit | None
    ) -> MergeOutcome:
        """One batch in ONE commit (one MERGE) carrying ``commit``'s LSN.

        ``net`` holds one row per key (the batch's last change of each key), the table's
        columns and ``_op``: ``upsert`` rows update the matched row (all columns) or are
        inserted, ``delete`` rows delete it (a missing key is fine). ``truncated``: the table was
        truncated earlier in the batch, so every row whose key is not upserted here goes too.
        Applying the same batch twice gives the same rows (full rows, last change wins); the
        caller skips a batch that :meth:`covered_lsn` already covers. An empty ``net`` without
        a truncate writes nothing. ``commit`` None: a part of a batch too large to merge at
        once (its keys so far); the commit carries ``abaco.part`` and no LSN, and only the
        batch's last commit moves :meth:`covered_lsn`.
        """
        if net.num_rows == 0 and not truncated:
            return MergeOutcome(self.version(), 0, 0, 0, committed=False)
        table = self._open()
        target = pa.schema(table.schema().to_arrow())
        source = _checked_source(net, target, list(key), self.uri)
        on = " AND ".join(f"t.`{name}` = s.`{name}`" for name in key)
        values = {f"`{name}`": f"s.`{name}`" for name in target.names}

        def merge() -> dict[str, Any]:
            merger = (
                table.merge(
                    source,
                    on,
                    source_alias="s",
                    target_alias="t",
                    writer_properties=_WRITER,
                    streamed_exec=False,  # the source is in memory: prune files by its keys
                    commit_properties=(
                        commit.properties()
                        if commit is not None
                        else CommitProperties(custom_metadata={PART_KEY: "true"})
                    ),
                )
                .when_matched_update(values, predicate=f"s.{OP_COLUMN} = 'upsert'")
                .when_matched_delete(predicate=f"s.{OP_COLUMN} = 'delete'")
                .when_not_matched_insert(values, predicate=f"s.{OP_COLUMN} = 'upsert'")
            )
            if truncated:
                merger = merger.when_not_matched_by_source_delete()
            return merger.execute()

        metrics = self._delta("merge into", merge)
        return MergeOutcome(
            version=table.version(),
            inserted=int(metrics.get("num_target_rows_inserted", 0)),
            updated=int(metrics.get("num_target_rows_updated", 0)),
            deleted=int(metrics.get("num_target_rows_deleted", 0)),
        )

    def add_columns(self, fields: Sequence[pa.Field]) -> None:
        """Columns added at the source join the table's schema (existing rows NULL); a column
        the table already has is left alone. One commit, without an abaco.lsn."""
        table = self._open()
        present = set(pa.schema(table.schema().to_arrow()).names)
        new = [Field.from_arrow(f.with_nullable(True)) for f in fields if f.name not in present]
        if new:
            self._delta("add columns to", lambda: table.alter.add_columns(new))

    def compact(self, *, retention_hours: int = MIN_RETENTION_HOURS) -> CompactOutcome:
        """``lake compact``: small files rewritten into large ones (optimize), files no version
        of the last ``retention_hours`` needs deleted (vacuum; at least 7 days, so that readers
        and time travel of the last week keep working), and a checkpoint of the log. Its
        commits carry no abaco.lsn: :meth:`covered_lsn` is unchanged."""
        if retention_hours < MIN_RETENTION_HOURS:
            raise UsageError(
                f"a vacuum retention of {retention_hours} hours is below "
                f"{MIN_RETENTION_HOURS} (7 days)",
                hint="Readers of older versions and time travel need the files of the last "
                "7 days; use 168 hours or more.",
            )
        table = self._open()

        def run() -> tuple[dict[str, Any], list[str]]:
            optimized = table.optimize.compact(writer_properties=_WRITER)
            vacuumed = table.vacuum(
                retention_hours=retention_hours, dry_run=False, enforce_retention_duration=True
            )
            table.create_checkpoint()
            return optimized, vacuumed

        optimized, vacuumed = self._delta("compact", run)
        return CompactOutcome(
            version=self.version(),
            files_added=int(optimized.get("numFilesAdded", 0)),
            files_removed=int(optimized.get("numFilesRemoved", 0)),
            files_vacuumed=len(vacuumed),
        )

    # ------------------------------------------------------------------ helpers

    def _open(self, version: int | None = None) -> DeltaTable:
        """The table at its latest version, or at ``version`` (NotFoundError when the table,
        or that version, is not there)."""

        def load() -> DeltaTable:
            try:
                return DeltaTable(self.uri, storage_options=self._options)
            except TableNotFoundError:
                raise NotFoundError(
                    f"no Delta table at {self.uri}",
                    hint="`abaco lake init` creates the lake's tables; `abaco lake resync "
                    "--table SCHEMA.TABLE` recreates one.",
                ) from None

        table = self._delta("open", load)
        if version is not None and version != table.version():
            if not 0 <= version < table.version():
                raise NotFoundError(
                    f"the Delta table {self.uri} has no version {version} "
                    f"(the latest is {table.version()})",
                    hint="`abaco lake status` shows the tables; versions start at 0.",
                )
            self._delta("open a version of", lambda: table.load_as_version(version))
        return table

    def _delta(self, action: str, call: Callable[[], T]) -> T:
        with self._errors(action):
            return call()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """delta-rs and I/O failures as one line naming the table, without secrets."""
        try:
            yield
        except (DeltaError, OSError) as error:
            raise WriteError(
                f"could not {action} the Delta table {self.uri}: {self._scrub(_one_line(error))}",
                hint="Check the lake destination (lake.destination) is reachable and writable "
                "with abaco's credentials; a retry of `abaco lake sync` resumes safely.",
            ) from None


def _query(table: DeltaTable, columns: Sequence[str] | None, statement: str = "") -> pa.Table:
    """A whole table (or ``statement`` over it, as ``t``) through DataFusion (QueryBuilder).
    Not ``to_pyarrow_table()`` nor ``to_pyarrow_dataset()``: with deltalake 1.6 those leave a
    thread behind that aborts the process at exit ("terminate called without an active
    exception") in about half the runs here, which would turn a good run's exit code into 134."""
    names = "*" if columns is None else ", ".join(f'"{c}"' for c in columns)
    query = statement or f"SELECT {names} FROM t"
    reader = QueryBuilder().register("t", table).execute(query)
    result = pa.table(reader.read_all())
    if statement:
        return result
    # DataFusion hands text and bytes back as string_view / binary_view: the table's own types
    schema = pa.schema(table.schema().to_arrow())
    wanted = pa.schema([schema.field(c) for c in (columns or schema.names)])
    return result.select(wanted.names).cast(wanted)


def _one_line(error: BaseException) -> str:
    """delta-rs's chain of causes (one per line, ANSI-coloured arrows) as one short line."""
    text = _ANSI.sub("", str(error)).replace("\u21b3", " ")
    causes = [part.strip() for part in text.splitlines() if part.strip()]
    return (": ".join(causes) or type(error).__name__)[:500]


def _checked_source(net: pa.Table, target: pa.Schema, key: list[str], uri: str) -> pa.Table:
    """``net`` in the table's column order and types, plus ``_op``; ValueError when it does
    not have the table's columns, has a NULL key, repeats a key or an unknown ``_op``."""
    if OP_COLUMN not in net.column_names:
        raise ValueError(f"{uri}: the net changes have no {OP_COLUMN} column")
    columns = [name for name in net.column_names if name != OP_COLUMN]
    missing = [name for name in target.names if name not in columns]
    extra = [name for name in columns if name not in target.names]
    if missing or extra:
        raise ValueError(
            f"{uri}: the net changes' columns differ from the table's "
            f"(missing {missing}, not in the table {extra}); add_columns() first"
        )
    absent = [name for name in key if name not in target.names]
    if not key or absent:
        raise ValueError(f"{uri}: key columns {absent or key} are not in the table")
    ops = net[OP_COLUMN]
    if (
        ops.null_count
        or not pc.all(pc.is_in(ops, pa.array(["upsert", "delete"])), min_count=0).as_py()
    ):
        raise ValueError(f"{uri}: {OP_COLUMN} must be 'upsert' or 'delete'")
    if any(net[name].null_count for name in key):
        raise ValueError(f"{uri}: a key column is NULL in the net changes")
    if net.num_rows and net.group_by(key).aggregate([]).num_rows != net.num_rows:
        raise ValueError(f"{uri}: the net changes hold a key more than once")
    types = [pa.field(f.name, f.type) for f in target]  # nullable: a delete's values are NULL
    return net.select([*target.names, OP_COLUMN]).cast(
        pa.schema([*types, pa.field(OP_COLUMN, pa.string())])
    )
