"""pricing: the realized pricing grid and rate-card adherence of the loans disbursed in the
pricing window (daily; pricing strategists)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from psycopg import sql

from abaco_cli.datasets.base import DatasetSpec, Params, TableSpec, load_sql, source_names
from abaco_cli.datasets.dpd import delinquency_params
from abaco_cli.datasets.states import add_months, delinquency_at, month_end
from abaco_cli.settings import Settings

SCHEMA_VERSION = 2  # 2: grid gained gross_write_off; written_off_share is on it (version 2)


def window_after(as_of: date, months: int) -> date:
    """The day before the pricing window opens: D minus ``months`` months (the window is
    (that day, D]; with 12 months it is the LTM of docs/domain.md)."""
    first = add_months(as_of.replace(day=1), -months)
    return first.replace(day=min(as_of.day, month_end(first).day))


def _window_loans(settings: Settings) -> sql.Composed:
    return sql.SQL(load_sql(__name__, "window_loans.sql")).format(**source_names(settings))


def _query(file_name: str) -> Callable[[Settings], sql.Composed]:
    def build(settings: Settings) -> sql.Composed:
        window = _window_loans(settings)
        loans = sql.SQL(
            "(SELECT l.* FROM {loans} AS l "
            "WHERE l.disbursement_date > %(window_after)s AND l.disbursement_date <= %(as_of)s)"
        ).format(loans=source_names(settings)["loans"])
        return sql.SQL(load_sql(__name__, file_name)).format(
            window_loans=window,
            delinquency=delinquency_at(settings, loans=loans),
            **source_names(settings),
        )

    return build


def pricing_params(settings: Settings, as_of: date) -> Params:
    """Parameters of the pricing queries: the window, the bands, the DPD policy."""
    policy = settings.pricing
    return {
        **delinquency_params(settings, as_of),
        "window_after": window_after(as_of, policy.window_months),
        "tenor_mins": [b.min_days for b in policy.tenor_bands],
        "tenor_labels": [b.label for b in policy.tenor_bands],
        "ticket_mins": [b.min_amount for b in policy.ticket_bands],
        "ticket_labels": [b.label for b in policy.ticket_bands],
        "day_count_basis": policy.day_count_basis,
        "apr_tolerance": policy.apr_tolerance,
    }


PRICING = DatasetSpec(
    name="pricing",
    description="Realized pricing grid (product x risk band x tenor x ticket) and rate-card "
    "adherence of the loans disbursed in the pricing window",
    refresh="daily",
    tables=(
        TableSpec(
            "grid",
            "per product_type x risk_band x tenor band x ticket band: loans, disbursed, "
            "weighted rates, PAR30, gross write-off and written-off share",
            _query("grid.sql"),
        ),
        TableSpec(
            "adherence",
            "per loan disbursed in the window: the card of its band, card APR, deviation",
            _query("adherence.sql"),
        ),
    ),
    build_params=pricing_params,
    schema_version=SCHEMA_VERSION,
)
