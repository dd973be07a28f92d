"""Stream a query into Arrow record batches of bounded size inside the current snapshot.

The query runs as ``COPY (...) TO STDOUT (FORMAT csv)`` and Arrow's C++ CSV reader parses the
stream with the column types declared by the explicit type map: no Python object is made per
value, so an export goes about as fast as PostgreSQL can produce the rows, and memory is bounded
by the block size, never by the size of the result.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from abaco_cli.db.typemap import schema_of
from abaco_cli.errors import DataError

_BLOCK_BYTES = 1 << 20
_COLUMN_IN_ERROR = re.compile(r"CSV column #(\d+)")
_NON_FINITE = re.compile(r"'(-?infinity|NaN|-?Infinity)'", re.IGNORECASE)


class _CopyReader(io.RawIOBase):
    """A read-only file over the chunks of a COPY TO STDOUT, for Arrow's CSV reader."""

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        # Fill the whole request: COPY yields one row per chunk, Arrow asks for megabytes.
        view = memoryview(target).cast("B")
        filled = 0
        while filled < len(view):
            if not self._buffer:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buffer = memoryview(chunk).cast("B")
            size = min(len(view) - filled, len(self._buffer))
            view[filled : filled + size] = self._buffer[:size]
            self._buffer = self._buffer[size:]
            filled += size
        return filled


def _projection(query: sql.Composed | sql.SQL, schema: pa.Schema) -> sql.Composed:
    """The query's columns as COPY should print them (timestamps as ISO text in UTC)."""
    columns: list[sql.Composable] = []
    for field in schema:
        name = sql.Identifier(field.name)
        if pa.types.is_timestamp(field.type):
            # ISO text in UTC; an infinite value stays 'infinity' so that Arrow refuses it.
            value = sql.SQL("q.{} AT TIME ZONE 'UTC'" if field.type.tz else "q.{}").format(name)
            pattern = 'YYYY-MM-DD"T"HH24:MI:SS.US' + ('"Z"' if field.type.tz else "")
            columns.append(
                sql.SQL(
                    "CASE WHEN isfinite(q.{}) THEN to_char({}, {}) ELSE q.{}::text END AS {}"
                ).format(name, value, sql.Literal(pattern), name, name)
            )
        else:
            columns.append(sql.SQL("q.{}").format(name))
    return sql.SQL("COPY (SELECT {} FROM ({}) AS q) TO STDOUT (FORMAT csv)").format(
        sql.SQL(", ").join(columns), query
    )


def _data_error(exc: Exception, schema: pa.Schema) -> DataError:
    """Name the column of an Arrow conversion failure (NaN, infinity, out of range)."""
    text = str(exc)
    found = _COLUMN_IN_ERROR.search(text)
    column = schema.field(int(found.group(1))).name if found else "?"
    field_type = schema.field(int(found.group(1))).type if found else "its type"
    bad = _NON_FINITE.search(text)
    if bad:
        return DataError(
            f"column {column!r} holds {bad.group(1)}, which {field_type} cannot represent exactly",
            hint="The column may be derived from the source (outstanding from principal): "
            "`abaco db check --data` names the source column and the rows "
            "(check non_finite_number).",
        )
    return DataError(f"column {column!r} cannot be exported as {field_type}: {text}")


class QueryStream:
    """One query's Arrow schema, then its rows as record batches of at most ``batch_rows``."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        query: sql.Composed | sql.SQL,
        params: dict[str, Any] | None = None,
        *,
        batch_rows: int = 20_000,
    ) -> None:
        self._conn = conn
        self._params = params
        self._batch_rows = batch_rows
        with conn.cursor() as cursor:
            cursor.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(query), params)
            if cursor.description is None:
                raise DataError("the query returned no result set")
            self.schema: pa.Schema = schema_of(conn, cursor.description)
        self._copy_statement = _projection(query, self.schema)

    def _reader(self, source: _CopyReader) -> pacsv.CSVStreamingReader:
        string_like = {f.name: f.type for f in self.schema}
        return pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(
                column_names=self.schema.names, block_size=_BLOCK_BYTES, use_threads=True
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=string_like,
                null_values=[""],
                true_values=["t"],
                false_values=["f"],
                strings_can_be_null=True,  # NULL is an unquoted empty field ...
                quoted_strings_can_be_null=False,  # ... an empty string is "".
            ),
        )

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield record batches until the result is exhausted; memory stays bounded."""
        with self._conn.cursor() as cursor, cursor.copy(self._copy_statement, self._params) as copy:
            chunks = iter(copy)
            first = next(chunks, None)
            if first is None:  # no rows: Arrow's reader refuses an empty file
                return
            source = _CopyReader(itertools.chain([first], chunks))
            try:
                reader = self._reader(source)
                for batch in reader:
                    for start in range(0, batch.num_rows, self._batch_rows):
                        yield batch.slice(start, self._batch_rows).cast(self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise _data_error(exc, self.schema) from None
            # Drain what Arrow did not ask for, so the COPY ends cleanly.
            for _ in copy:
                pass
