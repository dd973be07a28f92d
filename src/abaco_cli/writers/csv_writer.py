"""CSV: RFC 4180 (CRLF, quotes where needed), UTF-8, a header, exact decimals as a person writes
them (money ``1234.50``, ratios ``0.079570503``: writers/numbers.py), NULL as empty.

Text is always quoted (``"a"``, ``""`` for the empty string), numbers, dates and booleans never;
NULL is an empty field. Arrow's own CSV writer does exactly that for every type but the decimals
finer than money (it writes ``0E-10``), so tables that have such columns are encoded here, row
by row but vectorized, in the same format.
"""

from __future__ import annotations

from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from abaco_cli.writers.base import BatchWriter, FileContext
from abaco_cli.writers.numbers import MONEY_SCALE, plain_decimals

_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"  # %S carries the microseconds


def _fine(kind: pa.DataType) -> bool:
    return bool(pa.types.is_decimal(kind) and kind.scale > MONEY_SCALE)


def _csv_field(field: pa.Field) -> pa.Field:
    return pa.field(field.name, pa.string()) if pa.types.is_timestamp(field.type) else field


def _with_iso_timestamps(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Timestamps as ISO-8601 text with a T and a Z (Arrow puts a space)."""
    arrays = [
        pc.strftime(column, format=_TIMESTAMP) if pa.types.is_timestamp(field.type) else column
        for column, field in zip(batch.columns, batch.schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _quoted(text: pa.Array) -> pa.Array:
    doubled = pc.replace_substring(text, pattern='"', replacement='""')
    return pc.binary_join_element_wise('"', doubled, '"', "")


def _field_text(column: pa.Array, kind: pa.DataType) -> pa.Array:
    """One column as CSV fields, as Arrow's writer would write them (NULL: empty)."""
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = _quoted(column)
    elif pa.types.is_timestamp(kind):
        text = _quoted(pc.strftime(column, format=_TIMESTAMP))
    elif _fine(kind):
        text = plain_decimals(column)
    elif pa.types.is_boolean(kind):
        text = pc.if_else(column, "true", "false")
    else:
        text = pc.cast(column, pa.string())
    return pc.fill_null(text, "")


class CsvWriter(BatchWriter):
    def __init__(self, sink: BinaryIO, schema: pa.Schema, context: FileContext) -> None:
        super().__init__(sink, schema, context)
        self._encode_here = any(_fine(f.type) for f in schema)
        self._csv_schema = pa.schema([_csv_field(f) for f in schema])
        self._has_timestamps = self._csv_schema != schema
        if self._encode_here:
            header = ",".join('"' + f.name.replace('"', '""') + '"' for f in schema)
            self.sink.write((header + "\r\n").encode("utf-8"))
            return
        options = pacsv.WriteOptions(include_header=True, eol="\r\n", quoting_style="needed")
        self._writer = pacsv.CSVWriter(sink, self._csv_schema, write_options=options)

    def write_batch(self, batch: pa.RecordBatch) -> None:
        if self._encode_here:
            self._write_rows(batch)
            return
        if self._has_timestamps:
            batch = _with_iso_timestamps(batch, self._csv_schema)
        self._writer.write_batch(batch)

    def _write_rows(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        fields = [
            _field_text(column, field.type)
            for column, field in zip(batch.columns, batch.schema, strict=True)
        ]
        rows = pc.binary_join_element_wise(*fields, ",") if len(fields) > 1 else fields[0]
        lines = pc.binary_join_element_wise(rows, "\r\n", "")
        self.sink.write("".join(lines.to_pylist()).encode("utf-8"))

    def finish(self) -> None:
        if not self._encode_here:
            self._writer.close()
