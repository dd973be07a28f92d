"""The dashboard's KPI JSON: ``kpi/json/kpi_<D>.json`` and the stable ``kpi_latest.json``.

One object with snake_case keys: ``schema_version``, the as-of date, the generation time, one
entry per KPI (value, unit, numerator, denominator, status, definition_version) and, when asked
for, the trailing month-end series. Money keeps its exact cents, counts are integers, ratios are
fractions written with their exact digits; an undefined ratio is null, never NaN or Infinity.
``kpi_payload.schema.json`` (shipped beside this module) is the JSON Schema of the payload.
"""

from __future__ import annotations

import json
from decimal import Decimal
from importlib.resources import files
from typing import Any

import pyarrow as pa

from abaco_cli.datasets.base import DeriveContext, DerivedFile
from abaco_cli.writers.json_writer import dumps_strict

SCHEMA_VERSION = 2  # 2: the KPIs of definitions version 2; every key of version 1 kept
SCHEMA_FILE = "kpi_payload.schema.json"
CENT = Decimal("0.01")


def payload_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every dashboard payload satisfies."""
    schema: dict[str, Any] = json.loads(
        files(__package__ or __name__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    )
    return schema


def _number(value: Decimal | None, unit: str | None = None) -> Decimal | int | None:
    """A KPI figure as JSON wants it: cents for money, an integer for a count, else exact."""
    if value is None:
        return None
    if unit == "usd":
        return value.quantize(CENT)
    if unit == "count" and value == value.to_integral_value():
        return int(value)
    normal = value.normalize()
    return normal if normal != 0 else Decimal(0)


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    unit = str(row["unit"])
    return {
        "value": _number(row["value"], unit),
        "unit": unit,
        "numerator": _number(row["numerator"]),
        "denominator": _number(row["denominator"]),
        "status": row["status"],
        "definition_version": int(row["definition_version"]),
    }


def build_payload(
    context: DeriveContext, snapshot: pa.Table, series: pa.Table | None
) -> dict[str, Any]:
    """The dashboard payload for one as-of date (a plain dict; decimals stay Decimal)."""
    kpis = {str(row["kpi"]): _entry(row) for row in snapshot.to_pylist()}
    points: dict[str, dict[str, Any]] = {}
    for row in series.to_pylist() if series is not None else []:
        month_end = row["month_end"].isoformat()
        point = points.setdefault(month_end, {"month_end": month_end, "kpis": {}})
        point["kpis"][str(row["kpi"])] = _number(row["value"], str(row["unit"]))
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": "kpi",
        "as_of_date": context.as_of.isoformat(),
        "generated_at": context.generated_at,
        "run_id": context.run_id,
        "tool_version": context.tool_version,
        "currency": "USD",
        "kpis": kpis,
        "series_months": context.settings.kpi.series_months,
        "series": list(points.values()),
    }


def dashboard_files(context: DeriveContext) -> list[DerivedFile]:
    """The derive hook of the kpi dataset: the dated payload and its stable latest alias."""
    payload = build_payload(context, context.tables["snapshot"], context.tables.get("series"))
    content = dumps_strict(payload).encode("utf-8")
    day = context.as_of.isoformat()
    return [
        DerivedFile(
            path=f"kpi/json/kpi_{day}.json",
            table="dashboard",
            format="json",
            content=content,
            rows=len(payload["kpis"]),
        )
    ]
