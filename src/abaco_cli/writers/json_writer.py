"""JSON: strict (no NaN or Infinity), streamed row by row, money as exact decimal literals.

A file is one object: a header (schema version, dataset, table, as-of date, run id, the columns
and their types), then ``"rows": [...]``. Decimals are JSON numbers written with their exact
digits, as the CSV writes them (money with two places, ratios without exponent or trailing
zeros: writers/numbers.py); read them with a decimal-aware parser (Python:
``json.loads(text, parse_float=Decimal)``).
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any, BinaryIO

import pyarrow as pa

from abaco_cli.errors import DataError
from abaco_cli.writers.base import BatchWriter, FileContext
from abaco_cli.writers.numbers import decimal_text


def json_value(value: Any) -> str:
    """One value as strict JSON text; non-finite numbers are refused, never written."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise DataError(f"refusing to write {value} to JSON")
        return decimal_text(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(f"refusing to write {value} to JSON (strict JSON has no NaN/Infinity)")
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return json.dumps(value.isoformat().replace("+00:00", "Z"))
    if isinstance(value, date):
        return json.dumps(value.isoformat())
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def dumps_strict(payload: Any, *, indent: int | None = 2) -> str:
    """Serialize a JSON document of dicts and lists; decimals keep their exact digits."""
    pad = "" if indent is None else "\n"

    def render(node: Any, depth: int) -> str:
        inner = "" if indent is None else " " * (indent * (depth + 1))
        outer = "" if indent is None else " " * (indent * depth)
        sep = ":" if indent is None else ": "
        if isinstance(node, dict):
            if not node:
                return "{}"
            items = [
                f"{inner}{json.dumps(str(k))}{sep}{render(v, depth + 1)}" for k, v in node.items()
            ]
            return "{" + pad + ("," + pad).join(items) + pad + outer + "}"
        if isinstance(node, list | tuple):
            if not node:
                return "[]"
            items = [f"{inner}{render(v, depth + 1)}" for v in node]
            return "[" + pad + ("," + pad).join(items) + pad + outer + "]"
        return json_value(node)

    return render(payload, 0) + "\n"


class JsonWriter(BatchWriter):
    def __init__(self, sink: BinaryIO, schema: pa.Schema, context: FileContext) -> None:
        super().__init__(sink, schema, context)
        self._names = schema.names
        self._first = True
        header = {
            "schema_version": context.schema_version,
            "dataset": context.dataset,
            "table": context.table,
            "as_of_date": context.as_of_date,
            "run_id": context.run_id,
            "generated_at": context.generated_at,
            "tool_version": context.tool_version,
            "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
        }
        head = dumps_strict(header, indent=None).rstrip("\n")[:-1]  # drop the closing brace
        self.sink.write((head + ',"rows":[').encode())

    def write_batch(self, batch: pa.RecordBatch) -> None:
        parts = []
        for row in batch.to_pylist():
            body = ",".join(f"{json.dumps(k)}:{json_value(row[k])}" for k in self._names)
            parts.append(("\n" if self._first else ",\n") + "{" + body + "}")
            self._first = False
        self.sink.write("".join(parts).encode())

    def finish(self) -> None:
        self.sink.write(b"\n]}\n")
