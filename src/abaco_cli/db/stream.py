"""Stream a query into Arrow record batches of bounded size inside the current snapshot."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from abaco_cli.db.typemap import schema_of
from abaco_cli.errors import DataError

_cursor_names = itertools.count(1)


def _non_finite(values: Sequence[Any]) -> Decimal | None:
    for value in values:
        if isinstance(value, Decimal) and not value.is_finite():
            return value
    return None


def _to_array(values: Sequence[Any], field: pa.Field) -> pa.Array:
    try:
        return pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        bad = _non_finite(values)
        if bad is not None:
            raise DataError(
                f"column {field.name!r} holds {bad}, which {field.type} cannot represent exactly"
            ) from None
        raise DataError(
            f"column {field.name!r} cannot be exported as {field.type}: {exc}"
        ) from None


def rows_to_batch(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.RecordBatch:
    """Turn fetched rows into one record batch with the declared column types."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = [_to_array(col, schema.field(i)) for i, col in enumerate(columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _find_infinite_column(
    conn: psycopg.Connection[Any], query: sql.Composed | sql.SQL, params: Any, schema: pa.Schema
) -> str | None:
    """Which date or timestamp column holds +/-infinity (only asked after a load failed)."""
    for field in schema:
        if not (pa.types.is_date(field.type) or pa.types.is_timestamp(field.type)):
            continue
        probe = sql.SQL("SELECT 1 FROM ({}) AS q WHERE NOT isfinite(q.{}) LIMIT 1").format(
            query, sql.Identifier(field.name)
        )
        if conn.execute(probe, params).fetchone() is not None:
            return str(field.name)
    return None


class QueryStream:
    """A server-side cursor over one query: its Arrow schema, then batches of at most N rows."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        query: sql.Composed | sql.SQL,
        params: dict[str, Any] | None = None,
        *,
        batch_rows: int = 20_000,
    ) -> None:
        self._conn = conn
        self._query = query
        self._params = params
        self._batch_rows = batch_rows
        # Text results: psycopg's C loaders parse numeric text faster than binary numeric.
        self._cursor = conn.cursor(name=f"abaco_stream_{next(_cursor_names)}")
        self._cursor.itersize = batch_rows
        self._cursor.execute(query, params)
        if self._cursor.description is None:
            raise DataError("the query returned no result set")
        self.schema: pa.Schema = schema_of(conn, self._cursor.description)

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield record batches until the result is exhausted; memory stays bounded."""
        try:
            while True:
                try:
                    rows = self._cursor.fetchmany(self._batch_rows)
                except psycopg.DataError as exc:
                    column = _find_infinite_column(
                        self._conn, self._query, self._params, self.schema
                    )
                    if column is None:
                        raise DataError(f"a value could not be loaded: {exc}") from None
                    raise DataError(
                        f"column {column!r} holds an infinite date or timestamp, "
                        "which Arrow cannot represent"
                    ) from None
                if not rows:
                    return
                yield rows_to_batch(rows, self.schema)
        finally:
            self._cursor.close()
