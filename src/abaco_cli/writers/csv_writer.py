"""CSV: RFC 4180 (CRLF, quotes where needed), UTF-8, a header, exact decimals as a person writes
them (money ``1234.50``, ratios ``0.079570503``: writers/numbers.py), NULL as empty."""

from __future__ import annotations

from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from abaco_cli.writers.base import BatchWriter, FileContext
from abaco_cli.writers.numbers import MONEY_SCALE, plain_decimals


def _as_text(field: pa.Field) -> bool:
    """Columns the CSV gets as text of our own: timestamps, and decimals finer than money."""
    kind = field.type
    if pa.types.is_timestamp(kind):
        return True
    return bool(pa.types.is_decimal(kind) and kind.scale > MONEY_SCALE)


def _csv_field(field: pa.Field) -> pa.Field:
    return pa.field(field.name, pa.string()) if _as_text(field) else field


def _as_written(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Timestamps as ISO-8601 text with a T and a Z (Arrow puts a space; %S has the micros);
    ratios and rates as plain decimals (Arrow writes 0E-10)."""
    arrays = []
    for column, field in zip(batch.columns, batch.schema, strict=True):
        if pa.types.is_timestamp(field.type):
            arrays.append(pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ"))
        elif _as_text(field):
            arrays.append(plain_decimals(column))
        else:
            arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class CsvWriter(BatchWriter):
    def __init__(self, sink: BinaryIO, schema: pa.Schema, context: FileContext) -> None:
        super().__init__(sink, schema, context)
        self._csv_schema = pa.schema([_csv_field(f) for f in schema])
        self._has_text = self._csv_schema != schema
        options = pacsv.WriteOptions(include_header=True, eol="\r\n", quoting_style="needed")
        self._writer = pacsv.CSVWriter(sink, self._csv_schema, write_options=options)

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if self._has_text:
            batch = _as_written(batch, self._csv_schema)
        self._writer.write_batch(batch)

    def finish(self) -> None:
        self._writer.close()
