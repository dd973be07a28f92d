"""dpd: loan-level delinquency and the aging summary (hourly; risk and collections)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from psycopg import sql

from abaco_cli.datasets.base import DatasetSpec, Params, TableSpec, load_sql
from abaco_cli.datasets.states import WRITE_OFF_LEVEL, delinquency_at
from abaco_cli.settings import Settings

SCHEMA_VERSION = 2  # 2: dpd/loans gained write_off_date, gross_write_off, recoveries,
#                        principal_recovered (definitions version 2)


def delinquency_query(settings: Settings) -> sql.Composed:
    """The loan-level delinquency SELECT; parameters come from ``delinquency_params``."""
    return delinquency_at(settings)


def delinquency_params(settings: Settings, as_of: date) -> Params:
    """Parameters of the delinquency query: the as-of date and the DPD policy."""
    policy = settings.dpd
    return {
        "as_of": as_of,
        "tolerance": policy.tolerance,
        "write_off_after_days": policy.write_off_after_days,
        "default_threshold_days": policy.default_threshold_days,
        WRITE_OFF_LEVEL: policy.write_off_after_days + 1,  # "exceeded" the limit: reached +1
        "default_level": policy.default_threshold_days,
        "bucket_values": [b.value for b in policy.buckets],
        "bucket_labels": [b.label for b in policy.buckets],
        "bucket_descriptions": [b.description for b in policy.buckets],
        "bucket_thresholds": [b.min_days for b in policy.buckets[1:]],
    }


def _wrap(file_name: str) -> Callable[[Settings], sql.Composed]:
    def build(settings: Settings) -> sql.Composed:
        return sql.SQL(load_sql(__name__, file_name)).format(
            delinquency=delinquency_query(settings)
        )

    return build


DPD = DatasetSpec(
    name="dpd",
    description="Loan-level delinquency (days past due, buckets, default, write-off) and aging",
    refresh="hourly",
    tables=(
        TableSpec(
            "loans", "one row per loan disbursed on or before the as-of date", _wrap("loans.sql")
        ),
        TableSpec(
            "aging", "per bucket: active loans, customers, outstanding, share", _wrap("aging.sql")
        ),
    ),
    build_params=delinquency_params,
    schema_version=SCHEMA_VERSION,
)
