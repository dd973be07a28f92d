"""One lifecycle for every file format: open with a schema, write batches, close."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import BinaryIO

import pyarrow as pa


@dataclass(frozen=True)
class FileContext:
    """What a writer may record inside the file (Parquet metadata, the JSON header)."""

    dataset: str
    table: str
    as_of_date: str
    run_id: str
    tool_version: str
    schema_version: int
    generated_at: str
    # Columns whose value is in the Hive partition folder (as_of_date=...): Parquet files leave
    # them out, as query engines expect; CSV and JSON keep them for people and spreadsheets.
    partition_columns: tuple[str, ...] = ()

    def as_metadata(self) -> dict[str, str]:
        return {
            "abaco.dataset": self.dataset,
            "abaco.table": self.table,
            "abaco.as_of_date": self.as_of_date,
            "abaco.run_id": self.run_id,
            "abaco.tool_version": self.tool_version,
            "abaco.schema_version": str(self.schema_version),
            "abaco.generated_at": self.generated_at,
        }


class BatchWriter(ABC):
    """Writes Arrow record batches of one schema to a binary sink."""

    def __init__(self, sink: BinaryIO, schema: pa.Schema, context: FileContext) -> None:
        self.sink = sink
        self.schema = schema
        self.context = context
        self.rows = 0
        self.closed = False
        self.file_schema = schema  # the columns the file really holds

    def write(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        self.write_batch(batch)

    @abstractmethod
    def write_batch(self, batch: pa.RecordBatch) -> None: ...

    def close(self) -> None:
        """Finish the file (footer, closing brackets) once; the sink itself stays open."""
        if not self.closed:
            self.closed = True
            self.finish()

    @abstractmethod
    def finish(self) -> None: ...

    def abort(self) -> None:
        """Release the writer after a failure; the half-written file is discarded anyway."""
        with contextlib.suppress(Exception):
            self.close()
