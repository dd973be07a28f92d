"""Stream a query into Arrow record batches of bounded size inside the current snapshot."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from abaco_cli.db.typemap import InfiniteValue, schema_of
from abaco_cli.errors import DataError

_cursor_names = itertools.count(1)


def _bad_value(values: Sequence[Any]) -> Any:
    for value in values:
        if isinstance(value, InfiniteValue):
            return value
        if isinstance(value, Decimal) and not value.is_finite():
            return value
    return None


def _to_array(values: Sequence[Any], field: pa.Field) -> pa.Array:
    try:
        return pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        bad = _bad_value(values)
        if bad is not None:
            raise DataError(
                f"column {field.name!r} holds {bad!r}, which {field.type} cannot represent exactly"
            ) from None
        raise DataError(f"column {field.name!r} cannot be exported as {field.type}: {exc}") from None


def rows_to_batch(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.RecordBatch:
    """Turn fetched rows into one record batch with the declared column types."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = [_to_array(col, schema.field(i)) for i, col in enumerate(columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class QueryStream:
    """A server-side cursor over one query: its Arrow schema, then batches of at most N rows."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        query: sql.Composable,
        params: dict[str, Any] | None = None,
        *,
        batch_rows: int = 50_000,
    ) -> None:
        self._conn = conn
        self._batch_rows = batch_rows
        self._cursor = conn.cursor(name=f"abaco_stream_{next(_cursor_names)}", binary=True)
        self._cursor.itersize = batch_rows
        self._cursor.execute(query, params)
        if self._cursor.description is None:
            raise DataError("the query returned no result set")
        self.schema: pa.Schema = schema_of(conn, self._cursor.description)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield record batches until the result is exhausted; memory stays bounded."""
        try:
            while True:
                rows = self._cursor.fetchmany(self._batch_rows)
                if not rows:
                    return
                yield rows_to_batch(rows, self.schema)
        finally:
            self._cursor.close()
