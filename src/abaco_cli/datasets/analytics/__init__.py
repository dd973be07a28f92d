"""analytics: the business stakeholders' bundle (daily): monthly portfolio overview,
vintages, roll rates, concentration and customer types, one table each, one manifest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

from psycopg import sql

from abaco_cli.datasets.base import DatasetSpec, Params, TableSpec, load_sql, source_names
from abaco_cli.datasets.dpd import delinquency_params
from abaco_cli.datasets.states import add_months, delinquency_at, loan_states_query, months_until
from abaco_cli.settings import Settings


def _query(
    file_name: str, *, states: str | None = None, cohorts_only: bool = False
) -> Callable[[Settings], sql.Composed]:
    """A table's query: its SQL file with the source tables, the loan states at the dates of
    the ``states`` parameter, and dpd/delinquency.sql at D (over the cohorts' loans only when
    ``cohorts_only``)."""

    def build(settings: Settings) -> sql.Composed:
        names = source_names(settings)
        loans = None
        if cohorts_only:
            loans = sql.SQL(
                "(SELECT l.* FROM {loans} AS l WHERE l.disbursement_date >= "
                "(%(cohort_months)s::date[])[1] AND l.disbursement_date <= %(as_of)s)"
            ).format(loans=names["loans"])
        extra: dict[str, sql.Composable] = {"delinquency": delinquency_at(settings, loans=loans)}
        if states is not None:
            extra["states"] = loan_states_query(settings, states)
        return sql.SQL(load_sql(__name__, file_name)).format(**names, **extra)

    return build


def analytics_params(settings: Settings, as_of: date) -> Params:
    """Parameters of the analytics queries: the months of the window, the cohorts, the rules."""
    policy = settings.analytics
    periods = months_until(as_of, policy.months)
    first_month = periods[0][0]
    first_cohort = add_months(as_of.replace(day=1), 1 - policy.vintage_months)
    return {
        **delinquency_params(settings, as_of),
        "npl_threshold_days": settings.dpd.npl_threshold_days,
        "period_months": [month for month, _ in periods],
        "period_ends": [end for _, end in periods],
        "roll_dates": [first_month - timedelta(days=1)] + [end for _, end in periods],
        "cohort_months": [add_months(first_cohort, n) for n in range(policy.vintage_months)],
        "top_customers": policy.top_customers,
        "reactivation_days": policy.reactivation_days,
        "recovered_from_days": policy.recovered_from_days,
        "recovered_to_days": policy.recovered_to_days,
    }


ANALYTICS = DatasetSpec(
    name="analytics",
    description="Monthly portfolio overview, vintages, roll rates, concentration and customer "
    "types",
    refresh="daily",
    tables=(
        TableSpec(
            "portfolio_overview",
            "per month of the window: disbursements, collections, revenue, collection rate, "
            "outstanding, PAR30/90, NPL, write-offs",
            _query("portfolio_overview.sql", states="period_ends"),
            weight=2.0,
        ),
        TableSpec(
            "vintages",
            "per disbursement-month cohort and month on book: cumulative principal collected "
            "and written off, as amounts and shares of the cohort",
            _query("vintages.sql", cohorts_only=True),
        ),
        TableSpec(
            "roll_rates",
            "per pair of consecutive month-ends: active loans by bucket moved to each bucket, "
            "written off or paid off (loans and balances)",
            _query("roll_rates.sql", states="roll_dates"),
            weight=2.0,
        ),
        TableSpec(
            "concentration",
            "outstanding at D by customer (top N), company, product, risk band, segment, "
            "industry: share, cumulative share, HHI",
            _query("concentration.sql"),
        ),
        TableSpec(
            "customer_types",
            "per month: new, recurrent, reactivated and recovered customers",
            _query("customer_types.sql", states="roll_dates"),
            weight=2.5,
        ),
    ),
    build_params=analytics_params,
)
