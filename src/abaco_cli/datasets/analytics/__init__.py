"""analytics: the business stakeholders' bundle (daily): monthly portfolio overview,
vintages, roll rates, concentration, customer types, the repayment curve and the IFRS 9
provision matrix, one table each, one manifest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, timedelta

from psycopg import sql

from abaco_cli.datasets.base import DatasetSpec, Params, TableSpec, load_sql, source_names
from abaco_cli.datasets.dpd import delinquency_params
from abaco_cli.datasets.states import (
    WRITE_OFF_LEVEL,
    add_months,
    arrears_history,
    delinquency_at,
    month_end,
    month_ends_between,
    months_until,
    states_with_history,
)
from abaco_cli.settings import Settings

SCHEMA_VERSION = 2  # 2: vintages, portfolio_overview and roll rates on definitions version 2;
#                        repayment_curve and provisions added
EVER_LEVELS = ("ever_30_level", "ever_90_level")  # vintages: ever 30 / 90 days past due
PROVISION_LOOKBACK = (24, 12)  # loss rates: the month-ends 24 to 12 months before D


def _query(
    file_name: str,
    *,
    states: str | None = None,
    levels: Sequence[str] = (WRITE_OFF_LEVEL,),
    history: bool = False,
    cohorts_only: bool = False,
    delinquency: bool = False,
) -> Callable[[Settings], sql.Composed]:
    """A table's query: its SQL file with the source tables and, as the file needs them, the
    arrears history and the loan states at the dates of the ``states`` parameter ({states}),
    the arrears history up to D alone ({history}, over the cohorts' loans when
    ``cohorts_only``), or dpd/delinquency.sql at D ({delinquency})."""

    def build(settings: Settings) -> sql.Composed:
        names = source_names(settings)
        extra: dict[str, sql.Composable] = {}
        if states is not None:
            extra["states"] = states_with_history(settings, states, levels)
        if history:
            loans = None
            if cohorts_only:
                loans = sql.SQL(
                    "(SELECT l.* FROM {loans} AS l WHERE l.disbursement_date >= "
                    "(%(cohort_months)s::date[])[1] AND l.disbursement_date <= %(as_of)s)"
                ).format(loans=names["loans"])
            extra["history"] = arrears_history(
                settings, sql.Placeholder("as_of"), levels, loans=loans
            )
        if delinquency:
            extra["delinquency"] = delinquency_at(settings)
        return sql.SQL(load_sql(__name__, file_name)).format(**names, **extra)

    return build


def shift_months(day: date, months: int) -> date:
    """``day`` moved by ``months`` months, its day of the month clamped to the month's length
    (2024-02-29 minus 12 months is 2023-02-28)."""
    first = add_months(day.replace(day=1), months)
    return first.replace(day=min(day.day, month_end(first).day))


def provision_lookback(as_of: date) -> list[date]:
    """The month-ends from 24 to 12 months before ``as_of`` (both ends included) whose loans'
    next 12 months give the provision matrix its historical loss rates."""
    longest, shortest = PROVISION_LOOKBACK
    return month_ends_between(shift_months(as_of, -longest), shift_months(as_of, -shortest))


def analytics_params(settings: Settings, as_of: date) -> Params:
    """Parameters of the analytics queries: the months of the window, the cohorts, the rules."""
    policy = settings.analytics
    periods = months_until(as_of, policy.months)
    first_month = periods[0][0]
    first_cohort = add_months(as_of.replace(day=1), 1 - policy.vintage_months)
    lookback = provision_lookback(as_of)
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
        "recovered_level": policy.recovered_from_days + 1,  # "more than" N days: reached N + 1
        "ever_30_level": 30,
        "ever_90_level": 90,
        "repayment_days": list(policy.repayment_days),
        "stage_2_from_days": policy.stage_2_from_days,
        "stage_3_from_days": policy.stage_3_from_days,
        "provision_month_ends": lookback,
        "provision_dates": [*lookback, as_of],
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
            "outstanding, PAR30/90, NPL, gross write-offs, recoveries",
            _query("portfolio_overview.sql", states="period_ends"),
            weight=2.0,
        ),
        TableSpec(
            "vintages",
            "per disbursement-month cohort and month on book: cumulative principal collected, "
            "ever 30 / 90 days past due, gross write-off, recoveries and net loss",
            _query(
                "vintages.sql",
                levels=(WRITE_OFF_LEVEL, *EVER_LEVELS),
                history=True,
                cohorts_only=True,
            ),
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
            _query("concentration.sql", delinquency=True),
        ),
        TableSpec(
            "customer_types",
            "per month: new, recurrent, reactivated and recovered customers",
            _query(
                "customer_types.sql",
                states="roll_dates",
                levels=(WRITE_OFF_LEVEL, "recovered_level"),
            ),
            weight=2.5,
        ),
        TableSpec(
            "repayment_curve",
            "per due month and days after the due date: the share of the principal due "
            "repaid by then, by amount and by loans",
            _query("repayment_curve.sql"),
        ),
        TableSpec(
            "provisions",
            "the IFRS 9 provision matrix: per stage (customer days past due) the exposure at "
            "D, the historical loss rate, the expected credit loss and its coverage",
            _query("provisions.sql", states="provision_dates"),
            weight=1.5,
        ),
    ),
    build_params=analytics_params,
    schema_version=SCHEMA_VERSION,
)
