"""`abaco kpi definitions`: the KPI catalogue (key, formula, unit, thresholds, version)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from abaco_cli.cli import console
from abaco_cli.cli.common import state
from abaco_cli.datasets.kpi.catalogue import NOTES, KpiDefinition, catalogue

app = typer.Typer(help="The KPI catalogue of the kpi dataset.", no_args_is_help=True)


def definition_payload(definition: KpiDefinition) -> dict[str, Any]:
    """One KPI as `kpi definitions --json` prints it."""
    threshold = definition.threshold
    return {
        "kpi": definition.key,
        "unit": definition.unit,
        "formula": definition.formula,
        "definition_version": definition.version,
        "thresholds": None
        if threshold is None
        else {
            "direction": threshold.direction,
            "green": threshold.green,
            "amber": threshold.amber,
        },
    }


def _bounds(definition: KpiDefinition) -> str:
    threshold = definition.threshold
    if threshold is None:
        return ""
    sign = "<=" if threshold.direction == "lower_is_better" else ">="
    return f"green {sign} {threshold.green:g}, amber {sign} {threshold.amber:g}, else red"


@app.command("definitions")
def definitions(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the catalogue as one JSON object on stdout.")
    ] = False,
) -> None:
    """Print every KPI of the kpi dataset: key, formula, unit, thresholds and version.

    The formulas follow the effective configuration (PAR thresholds, NPL threshold, write-off
    days); thresholds come from kpi.thresholds.
    """
    settings = state(ctx).settings()
    found = catalogue(settings)
    if as_json:
        console.emit_json({"notes": NOTES, "kpis": [definition_payload(d) for d in found]})
        return
    console.table(
        "KPI catalogue (kpi dataset)",
        ["kpi", "unit", "formula", "thresholds", "version"],
        [(d.key, d.unit, d.formula, _bounds(d), d.version) for d in found],
    )
    console.info(NOTES)
