"""Loan delinquency states shared by the kpi, pricing and analytics datasets.

``delinquency_at`` embeds dpd/delinquency.sql (the rules for one as-of date), optionally over a
subset of the loans; ``loan_states_query`` evaluates the same rules at many dates in one pass
(month-end series, roll rates); the date helpers name the month-ends and months they use.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta

from psycopg import sql

from abaco_cli.datasets.base import load_sql, source_names
from abaco_cli.settings import Settings

DPD_PACKAGE = "abaco_cli.datasets.dpd"


def delinquency_at(settings: Settings, loans: sql.Composable | None = None) -> sql.Composed:
    """dpd/delinquency.sql at %(as_of)s; ``loans`` replaces the loans table (e.g. a subquery
    holding only the loans disbursed in a window) without touching the rules."""
    names = source_names(settings)
    if loans is not None:
        names["loans"] = loans
    return sql.SQL(load_sql(DPD_PACKAGE, "delinquency.sql")).format(**names)


def loan_states_query(settings: Settings, dates_param: str) -> sql.Composed:
    """Loan states at every date of the ``dates_param`` parameter (a sorted date array), for the
    loans that still owe principal then; columns as in dpd/loans."""
    return sql.SQL(load_sql(__name__, "loan_states.sql")).format(
        dates=sql.Placeholder(dates_param), **source_names(settings)
    )


def month_end(day: date) -> date:
    """The last day of ``day``'s month."""
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def is_month_end(day: date) -> bool:
    """True when ``day`` is the last day of its month."""
    return day == month_end(day)


def add_months(first_of_month: date, months: int) -> date:
    """The first day of the month ``months`` after (or before) ``first_of_month``'s month."""
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def month_ends_until(day: date, count: int) -> list[date]:
    """The ``count`` most recent month-ends on or before ``day``, oldest first (``day`` itself
    when it is a month-end)."""
    latest = day if is_month_end(day) else day.replace(day=1) - timedelta(days=1)
    first = latest.replace(day=1)
    return [month_end(add_months(first, -back)) for back in range(count - 1, -1, -1)]


def month_ends_between(start: date, end: date) -> list[date]:
    """Every month-end in [start, end], oldest first (a backfill's as-of dates)."""
    found: list[date] = []
    current = month_end(start)
    while current <= end:
        found.append(current)
        current = month_end(add_months(current.replace(day=1), 1))
    return found


def months_until(day: date, count: int) -> list[tuple[date, date]]:
    """The ``count`` calendar months through ``day``'s month, oldest first, each as (first day,
    period end); the period end is the month's last day, or ``day`` for its own month."""
    first = day.replace(day=1)
    months = [add_months(first, -back) for back in range(count - 1, -1, -1)]
    return [(m, min(month_end(m), day)) for m in months]
