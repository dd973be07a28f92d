"""The explicit PostgreSQL-to-Arrow type map: every exported column has a declared type, and
no binary float reaches a writer (ratios are numeric(18,10), money numeric(18,2))."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from psycopg import Connection

from abaco_cli.errors import DataError

_SIMPLE: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "text": pa.string(),
    "varchar": pa.string(),
    "bpchar": pa.string(),
    "name": pa.string(),
    "date": pa.date32(),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "timestamp": pa.timestamp("us"),
}


def arrow_type(
    type_name: str, precision: int | None, scale: int | None, column: str
) -> pa.DataType:
    """The Arrow type of one result column; numeric needs a declared precision and scale."""
    if type_name == "numeric":
        if precision is None or scale is None:
            raise DataError(
                f"column {column!r} is numeric without precision and scale; "
                "cast it to numeric(p,s) in the query so that it exports exactly"
            )
        if precision > 38:
            raise DataError(
                f"column {column!r} is numeric({precision},{scale}); Arrow holds 38 digits"
            )
        return pa.decimal128(precision, scale)
    if type_name in ("float4", "float8"):
        raise DataError(
            f"column {column!r} is a binary float ({type_name}); exports carry exact decimals: "
            "cast it to numeric(18,10) (a ratio or rate) or numeric(18,2) (money) in the query"
        )
    found = _SIMPLE.get(type_name)
    if found is None:
        raise DataError(
            f"column {column!r} has PostgreSQL type {type_name}, which abaco does not map"
        )
    return found


def schema_of(conn: Connection[Any], description: Any) -> pa.Schema:
    """The Arrow schema of a cursor's description, through the explicit map above."""
    fields = []
    for col in description:
        info = conn.adapters.types.get(col.type_code)
        type_name = info.name if info is not None else f"oid {col.type_code}"
        fields.append(pa.field(col.name, arrow_type(type_name, col.precision, col.scale, col.name)))
    return pa.schema(fields)
