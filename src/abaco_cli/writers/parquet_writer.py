"""Parquet: zstd, the declared Arrow types, key-value metadata naming the run.

The partition column (as_of_date) is left to the folder name, as Hive-partitioned tables expect;
``abaco.as_of_date`` in the key-value metadata still names it inside the file.
"""

from __future__ import annotations

from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from abaco_cli.writers.base import BatchWriter, FileContext


class ParquetWriter(BatchWriter):
    def __init__(self, sink: BinaryIO, schema: pa.Schema, context: FileContext) -> None:
        super().__init__(sink, schema, context)
        self._names = [f.name for f in schema if f.name not in context.partition_columns]
        self.file_schema = pa.schema([schema.field(name) for name in self._names])
        with_metadata = self.file_schema.with_metadata(context.as_metadata())
        self._writer = pq.ParquetWriter(sink, with_metadata, compression="zstd")

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch.select(self._names))

    def finish(self) -> None:
        self._writer.close()
