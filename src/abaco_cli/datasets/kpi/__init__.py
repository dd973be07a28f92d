"""kpi: every KPI of docs/domain.md at the as-of date, its trailing month-end series and the
dashboard's JSON (daily; the dashboard and management)."""

from __future__ import annotations

from datetime import date

from psycopg import sql

from abaco_cli.datasets.base import DatasetSpec, Params, TableSpec, load_sql, source_names
from abaco_cli.datasets.dpd import delinquency_params
from abaco_cli.datasets.kpi.catalogue import catalogue
from abaco_cli.datasets.kpi.dashboard import dashboard_files
from abaco_cli.datasets.states import WRITE_OFF_LEVEL, month_ends_until, states_with_history
from abaco_cli.settings import Settings

LTM_MONTH_ENDS = 13  # the LTM average outstanding: the 13 latest month-ends (opening one too)
SCHEMA_VERSION = 2  # 2: the KPIs of definitions version 2 (docs/domain.md)


def _kpis(
    settings: Settings, *, kpi_dates: str, history: str, ltm_for: str, ltm_on: str
) -> sql.Composed:
    """kpis.sql over the arrears history and the loan states at the dates of the ``history``
    parameter, which holds the KPI dates and the month-ends their LTM averages cover."""
    return sql.SQL(load_sql(__name__, "kpis.sql")).format(
        kpi_dates=sql.Placeholder(kpi_dates),
        states=states_with_history(settings, history, (WRITE_OFF_LEVEL, "default_level")),
        ltm_for=sql.Placeholder(ltm_for),
        ltm_on=sql.Placeholder(ltm_on),
        **source_names(settings),
    )


def snapshot_query(settings: Settings) -> sql.Composed:
    """One row per KPI at %(as_of)s."""
    return _kpis(
        settings,
        kpi_dates="snapshot_dates",
        history="snapshot_history",
        ltm_for="snapshot_ltm_for",
        ltm_on="snapshot_ltm_on",
    )


def series_query(settings: Settings) -> sql.Composed:
    """One row per KPI and month-end of the trailing series (none when series_months is 0)."""
    kpis = _kpis(
        settings,
        kpi_dates="series_dates",
        history="series_history",
        ltm_for="series_ltm_for",
        ltm_on="series_ltm_on",
    )
    return sql.SQL(
        "SELECT %(as_of)s::date AS as_of_date, k.as_of_date AS month_end, k.kpi, k.unit, "
        "k.value, k.numerator, k.denominator, k.status, k.definition_version\n"
        "FROM ({kpis}) AS k\n"
        "ORDER BY k.as_of_date, array_position(%(kpi_keys)s::text[], k.kpi)"
    ).format(kpis=kpis)


def _ltm_pairs(kpi_dates: list[date]) -> tuple[list[date], list[date]]:
    """Parallel arrays: each KPI date repeated against each of its 13 LTM month-ends."""
    pairs = [(d, m) for d in kpi_dates for m in month_ends_until(d, LTM_MONTH_ENDS)]
    return [d for d, _ in pairs], [m for _, m in pairs]


def kpi_params(settings: Settings, as_of: date) -> Params:
    """Parameters of the kpi queries: the DPD policy, the catalogue and the dates."""
    definitions = catalogue(settings)
    months = settings.kpi.series_months
    series = month_ends_until(as_of, months) if months else []
    history = month_ends_until(as_of, months + LTM_MONTH_ENDS - 1) if months else []
    snapshot_for, snapshot_on = _ltm_pairs([as_of])
    series_for, series_on = _ltm_pairs(series)
    return {
        **delinquency_params(settings, as_of),
        "npl_threshold_days": settings.dpd.npl_threshold_days,
        "par_thresholds": list(settings.dpd.par_thresholds),
        "kpi_keys": [k.key for k in definitions],
        "kpi_units": [k.unit for k in definitions],
        "kpi_versions": [k.version for k in definitions],
        "kpi_directions": [k.threshold.direction if k.threshold else None for k in definitions],
        "kpi_green": [k.threshold.green if k.threshold else None for k in definitions],
        "kpi_amber": [k.threshold.amber if k.threshold else None for k in definitions],
        "snapshot_dates": [as_of],
        "snapshot_history": sorted({as_of, *month_ends_until(as_of, LTM_MONTH_ENDS)}),
        "snapshot_ltm_for": snapshot_for,
        "snapshot_ltm_on": snapshot_on,
        "series_dates": series,
        "series_history": history,
        "series_ltm_for": series_for,
        "series_ltm_on": series_on,
    }


KPI = DatasetSpec(
    name="kpi",
    description="Every KPI at the as-of date (value, unit, status), its month-end series and "
    "the dashboard's JSON",
    refresh="daily",
    tables=(
        TableSpec(
            "snapshot",
            "one row per KPI at the as-of date: value, unit, numerator, denominator, status",
            snapshot_query,
            collect=True,
            weight=3.0,
        ),
        TableSpec(
            "series",
            "one row per KPI and month-end of the trailing kpi.series_months month-ends",
            series_query,
            collect=True,
            weight=lambda settings: 0.1 + 0.25 * settings.kpi.series_months,
        ),
    ),
    build_params=kpi_params,
    schema_version=SCHEMA_VERSION,
    derive=dashboard_files,
)
