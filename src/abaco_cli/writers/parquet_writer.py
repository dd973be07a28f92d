"""Parquet: zstd, the declared Arrow types, key-value metadata naming the run."""

from __future__ import annotations

from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from abaco_cli.writers.base import BatchWriter, FileContext


class ParquetWriter(BatchWriter):
    extension = "parquet"

    def __init__(self, sink: BinaryIO, schema: pa.Schema, context: FileContext) -> None:
        super().__init__(sink, schema, context)
        with_metadata = schema.with_metadata(context.as_metadata())
        self._writer = pq.ParquetWriter(sink, with_metadata, compression="zstd")

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def finish(self) -> None:
        self._writer.close()
