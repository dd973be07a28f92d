"""One source table into one zstd Parquet file: its exact types, large row groups, bounded memory.

``TableParquetWriter`` takes the reader's batches and writes row groups of at least
``ROW_GROUP_ROWS`` rows (fewer only when that many would hold more than ``ROW_GROUP_BYTES``),
zstd, decimals of up to 18 digits as plain integers (``store_decimal_as_integer``: INT32 or
INT64 with the DECIMAL logical type, which every engine reads), and dictionary encoding only
for the text columns that repeat (judged on the first batch), where it pays.
``copy_table_to_parquet`` reads a table with ``TableReader`` into one file.

A row group is held as Arrow data until it is written, so its size is the writer's share of
the memory: 65,536 rows (about 10 MB for a 14-column payments table; 131,072 took a whole
table extract over 300 MB). Arrow allocates through jemalloc here (``MEMORY_POOL``), which
gives freed memory back sooner than the default mimalloc under this pattern (batches made
in the reader's threads, freed in the writer's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from abaco_cli.db.binary_copy import TableName, TableReader
from abaco_cli.db.pgbinary import MEMORY_POOL
from abaco_cli.settings import Settings

ROW_GROUP_ROWS = 65536
ROW_GROUP_BYTES = 16 << 20  # Arrow bytes buffered for one row group, at most
SINK_BUFFER_BYTES = 1 << 20  # a Python file is written in pieces this large (fewer GIL handovers)
DICTIONARY_SHARE = 0.05  # a text column whose first batch has at most this share of distinct values


def dictionary_columns(batch: pa.RecordBatch) -> list[str]:
    """The text and binary columns worth dictionary encoding: few distinct values in a batch."""
    chosen = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        kind = field.type
        if not (pa.types.is_string(kind) or pa.types.is_binary(kind)):
            continue
        present = len(column) - column.null_count
        if present == 0:
            continue
        distinct = pc.count_distinct(column).as_py()
        if distinct <= max(1, DICTIONARY_SHARE * present):
            chosen.append(field.name)
    return chosen


def statistics_columns(batch: pa.RecordBatch) -> list[str]:
    """The columns worth min/max statistics in each row group: all but the text and binary
    columns whose first batch is not in ascending order. Ids in table order let a reader
    skip row groups; the min and max of free text or of a few codes span every row group and
    only cost time to work out (Arrow compares every string)."""
    chosen = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        kind = field.type
        if (pa.types.is_string(kind) or pa.types.is_binary(kind)) and len(column) > 1:
            ascending = pc.less_equal(column[:-1], column[1:])
            if not pc.all(ascending).as_py():
                continue
        chosen.append(field.name)
    return chosen


class TableParquetWriter:
    """Batches of one schema into one Parquet file (a path or an open binary file)."""

    def __init__(
        self,
        sink: str | Path | BinaryIO,
        schema: pa.Schema,
        *,
        metadata: Mapping[str, str] | None = None,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        # Parquet writes many small pieces (page headers, pages): gathered natively first, so
        # that a Python file does not take the GIL from the reader's threads for each, and a
        # path is not written (and asked its position) a few thousand times
        self._path = str(sink) if isinstance(sink, str | Path) else None
        self._file: pa.NativeFile | None = None
        self._buffered: pa.BufferedOutputStream | None = None
        if not isinstance(sink, str | Path):
            self._buffered = self._buffer(pa.PythonFile(sink, mode="w"))
        self.schema = schema.with_metadata(dict(metadata)) if metadata else schema
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0

    @staticmethod
    def _buffer(raw: pa.NativeFile) -> pa.BufferedOutputStream:
        return pa.BufferedOutputStream(raw, buffer_size=SINK_BUFFER_BYTES, memory_pool=MEMORY_POOL)

    def _open(self, first: pa.RecordBatch | None) -> pq.ParquetWriter:
        """The Parquet writer, its dictionaries and statistics chosen on the first batch."""
        dictionary = dictionary_columns(first) if first is not None else []
        statistics = statistics_columns(first) if first is not None else True
        if self._path is not None:
            self._file = pa.OSFile(self._path, mode="wb")
            self._buffered = self._buffer(self._file)
        assert self._buffered is not None
        return pq.ParquetWriter(
            self._buffered,
            self.schema,
            compression="zstd",
            use_dictionary=dictionary,
            write_statistics=statistics,
            store_decimal_as_integer=True,
            memory_pool=MEMORY_POOL,
        )

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is None:
            self._writer = self._open(batch)
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._pending_bytes += batch.nbytes
        if self._pending_rows >= self.row_group_rows or self._pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending or self._writer is None:
            return
        table = pa.Table.from_batches(self._pending)
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        self._writer.write_table(table, row_group_size=table.num_rows)
        self.rows += table.num_rows

    def close(self) -> None:
        """Write the last row group and the footer (an empty table: a file with no row group)."""
        if self._writer is None:
            self._writer = self._open(None)
        self._flush()
        self._writer.close()
        if self._file is not None:
            assert self._buffered is not None
            self._buffered.close()  # flushed into the file of the path, which it closes
        elif self._buffered is not None:
            self._buffered.flush()  # into the Python file, which the caller closes


@dataclass(frozen=True)
class CopiedTable:
    """What ``copy_table_to_parquet`` wrote: rows, the schema, and the snapshot it read."""

    table: str
    rows: int
    schema: pa.Schema
    snapshot_at: datetime | None
    snapshot_id: str | None


def copy_table_to_parquet(
    settings: Settings,
    table: str | TableName,
    target: str | Path | BinaryIO,
    columns: Sequence[str] | None = None,
    *,
    snapshot: str | None = None,
    workers: int | None = None,
    metadata: Mapping[str, str] | None = None,
) -> CopiedTable:
    """Read ``table`` (its ``columns``, default all) in one snapshot, or in the exported
    ``snapshot`` given, into one zstd Parquet file at ``target``; the caller makes the target
    durable and moves it into place (a failure leaves a partial file there)."""
    with TableReader(settings, table, columns, snapshot=snapshot, workers=workers) as reader:
        writer = TableParquetWriter(target, reader.schema, metadata=metadata)
        for batch in reader.batches():
            writer.write(batch)
        writer.close()
        return CopiedTable(
            str(reader.table), writer.rows, reader.schema, reader.snapshot_at, reader.snapshot_id
        )
