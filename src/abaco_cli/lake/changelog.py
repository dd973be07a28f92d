"""The change log's files of one batch, staged on local disk before they are sent.

A batch writes one Parquet file per table and commit date (UTC):
``lake/changes/<schema>.<table>/commit_date=<D>/changes_<start>_<end>.parquet``. The end of a
batch is known only when its last change has been read, so the files are staged under
provisional names and named in ``finish``. Writing is streamed (a row group per chunk), so a
transaction of any size is written in bounded memory; the bytes depend only on the changes
(no clock, no run id), so a replayed batch gives identical files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from abaco_cli.lake.store import change_file_name

_READ_BYTES = 1 << 20


def parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(str(path), schema, compression="zstd", store_decimal_as_integer=True)


@dataclass
class _Part:
    path: Path
    schema: pa.Schema
    writer: pq.ParquetWriter | None
    rows: int = 0


@dataclass
class _File:
    table: str
    day: date
    parts: list[_Part] = field(default_factory=list)


@dataclass(frozen=True)
class StagedFile:
    """A finished change file: its object name, where it is staged, rows, size, sha256."""

    name: str
    table: str
    path: Path
    rows: int
    size: int
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


class ChangeLogWriter:
    """The change files of one batch, staged in ``folder`` (which the caller removes)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[tuple[str, date], _File] = {}
        self._count = 0

    def write(self, table: str, changes: pa.Table) -> None:
        """Append a table's changes (CHANGE_COLUMNS then its columns), split by commit date."""
        if changes.num_rows == 0:
            return
        days = pc.cast(changes["_commit_time"], pa.date32())
        distinct = days.unique().to_pylist()
        for day in sorted(distinct):
            piece = changes if len(distinct) == 1 else changes.filter(pc.equal(days, day))
            self._append(table, day, piece)

    def _append(self, table: str, day: date, piece: pa.Table) -> None:
        entry = self._files.setdefault((table, day), _File(table, day))
        part = entry.parts[-1] if entry.parts else None
        if part is None or not part.schema.equals(piece.schema):
            if part is not None and part.writer is not None:
                part.writer.close()
                part.writer = None
            self._count += 1
            path = self.folder / f"part-{self._count:06d}.parquet"
            part = _Part(path, piece.schema, parquet_writer(path, piece.schema))
            entry.parts.append(part)
        assert part.writer is not None
        part.writer.write_table(piece, row_group_size=max(piece.num_rows, 1))
        part.rows += piece.num_rows

    @property
    def empty(self) -> bool:
        return not self._files

    def finish(self, start: int, end: int) -> list[StagedFile]:
        """Close every file and give each its name in the log; files in name order."""
        staged = []
        for (table, day), entry in sorted(self._files.items()):
            for part in entry.parts:
                if part.writer is not None:
                    part.writer.close()
                    part.writer = None
            path = entry.parts[0].path if len(entry.parts) == 1 else self._combine(entry)
            rows = sum(p.rows for p in entry.parts)
            staged.append(
                StagedFile(
                    change_file_name(table, day, start, end),
                    table,
                    path,
                    rows,
                    path.stat().st_size,
                    sha256_of(path),
                )
            )
        return sorted(staged, key=lambda f: f.name)

    def _combine(self, entry: _File) -> Path:
        """One file of parts whose schemas differ (a column added during the batch): the
        widest schema, earlier rows NULL in the new columns; read part by part."""
        schema = pa.unify_schemas([p.schema for p in entry.parts])
        self._count += 1
        path = self.folder / f"part-{self._count:06d}.parquet"
        writer = parquet_writer(path, schema)
        for part in entry.parts:
            for batch in _batches(part.path):
                table = pa.Table.from_batches([batch])
                for missing in schema:
                    if missing.name not in table.column_names:
                        table = table.append_column(missing, pa.nulls(len(table), missing.type))
                writer.write_table(table.select(schema.names).cast(schema))
        writer.close()
        return path


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(str(path)).iter_batches(batch_size=65_536)
