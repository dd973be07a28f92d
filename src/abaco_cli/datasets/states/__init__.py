"""Loan delinquency states shared by the dpd, kpi, pricing and analytics datasets.

``arrears_history`` is the walk of every loan's arrears up to a date (history.sql: the days it
reached each lateness level, its write-off date and gross write-off); ``delinquency_at`` embeds
dpd/delinquency.sql (the rules for one as-of date), optionally over a subset of the loans;
``loan_states_query`` evaluates the same rules at many dates in one pass (month-end series, roll
rates); the date helpers name the month-ends and months they use.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date, timedelta

from psycopg import sql

from abaco_cli.datasets.base import load_sql, source_names
from abaco_cli.settings import Settings

DPD_PACKAGE = "abaco_cli.datasets.dpd"
WRITE_OFF_LEVEL = "write_off_level"  # the parameter holding write_off_after_days + 1
# loan attributes h_loans carries for its hosts (beside loan_id, customer_id,
# disbursement_date, principal, written_off_date)
DELINQUENCY_ATTRIBUTES = ("company", "product_type", "maturity_date")
STATES_ATTRIBUTES = ("interest_rate_apr", "term_days", "origination_fee", "origination_fee_taxes")


def arrears_history(
    settings: Settings,
    through: sql.Composable,
    levels: Sequence[str] = (WRITE_OFF_LEVEL,),
    loans: sql.Composable | None = None,
    attributes: Sequence[str] = (),
) -> sql.Composed:
    """The common table expressions of history.sql (h_loans, arrears_entries, write_offs and
    the walk's own) for a host query's WITH list: every loan's arrears up to ``through`` (a date
    expression) at the lateness levels held by the parameters named in ``levels`` (which must
    include ``write_off_level``); ``loans`` replaces the loans table (e.g. a subquery of the
    loans disbursed in a window); h_loans also carries the loan ``attributes`` named."""
    if WRITE_OFF_LEVEL not in levels:
        raise ValueError("the arrears history needs the write-off level")
    names = source_names(settings)
    if loans is not None:
        names["loans"] = loans
    values = sql.SQL(", ").join(
        sql.SQL("{}::integer").format(sql.Placeholder(name)) for name in levels
    )
    carried = sql.SQL("").join(
        sql.SQL("l.{}, ").format(sql.Identifier(name)) for name in attributes
    )
    return sql.SQL(load_sql(__name__, "history.sql")).format(
        attributes=carried,
        through=sql.SQL("({}::date)").format(through),
        levels=sql.SQL("ARRAY[{}]").format(values),
        min_level=sql.SQL("least({})").format(values),
        write_off_level=sql.SQL("{}::integer").format(sql.Placeholder(WRITE_OFF_LEVEL)),
        **names,
    )


def last_of(dates_param: str) -> sql.Composed:
    """The last date of a sorted date-array parameter (null when it is empty)."""
    dates = sql.Placeholder(dates_param)
    return sql.SQL("({d}::date[])[cardinality({d}::date[])]").format(d=dates)


def delinquency_at(settings: Settings, loans: sql.Composable | None = None) -> sql.Composed:
    """dpd/delinquency.sql at %(as_of)s; ``loans`` replaces the loans table (e.g. a subquery
    holding only the loans disbursed in a window) without touching the rules."""
    names = source_names(settings)
    if loans is not None:
        names["loans"] = loans
    history = arrears_history(
        settings, sql.Placeholder("as_of"), loans=loans, attributes=DELINQUENCY_ATTRIBUTES
    )
    return sql.SQL(load_sql(DPD_PACKAGE, "delinquency.sql")).format(history=history, **names)


def loan_states_query(settings: Settings, dates_param: str) -> sql.Composed:
    """Loan states at every date of the ``dates_param`` parameter (a sorted date array), for the
    loans that owe more than the tolerance then; columns as in dpd/loans. It reads h_paid, h_due
    and write_offs: the host's WITH list holds ``arrears_history`` up to the last of the dates
    (``states_with_history`` composes both)."""
    return sql.SQL(load_sql(__name__, "loan_states.sql")).format(
        dates=sql.Placeholder(dates_param), **source_names(settings)
    )


def states_with_history(
    settings: Settings, dates_param: str, levels: Sequence[str] = (WRITE_OFF_LEVEL,)
) -> sql.Composed:
    """WITH-list entries: the arrears history up to the last of the dates, then ``states`` (the
    loan states at every date); the host continues its WITH list after them."""
    return sql.SQL("{history},\nstates AS ({states})").format(
        history=arrears_history(
            settings, last_of(dates_param), levels, attributes=STATES_ATTRIBUTES
        ),
        states=loan_states_query(settings, dates_param),
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
