"""Effective configuration: defaults, then abaco.toml, then ABACO_* environment, then flags.

Nested sections use a double underscore in the environment, for example
``ABACO_DPD__DEFAULT_THRESHOLD_DAYS=90`` or ``ABACO_TABLES__LOANS=lending.loans``.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from abaco_cli.durations import parse_duration
from abaco_cli.errors import ConfigurationError

DEFAULT_CONFIG_FILE = Path("abaco.toml")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")


class DpdBucket(BaseModel):
    """One delinquency bucket: inclusive day bounds, a stable value, a label, a description."""

    value: int = Field(ge=0)
    label: str
    min_days: int = Field(ge=0)
    max_days: int | None = None
    description: str = ""


def _default_buckets() -> list[DpdBucket]:
    rows = [
        (0, "Current", 0, 0, "Not past due"),
        (1, "1-30", 1, 30, "1 to 30 days past due"),
        (2, "31-60", 31, 60, "31 to 60 days past due"),
        (3, "61-90", 61, 90, "61 to 90 days past due"),
        (4, "91-120", 91, 120, "91 to 120 days past due"),
        (5, "121-180", 121, 180, "121 to 180 days past due"),
        (6, "180+", 181, None, "More than 180 days past due"),
    ]
    return [
        DpdBucket(value=v, label=lab, min_days=lo, max_days=hi, description=d)
        for v, lab, lo, hi, d in rows
    ]


class DpdPolicy(BaseModel):
    """The delinquency policy of docs/domain.md; every number here is a risk team's choice."""

    tolerance: Decimal = Field(default=Decimal("0.01"), ge=0)
    write_off_after_days: int = Field(default=180, ge=1)
    default_threshold_days: int = Field(default=90, ge=1)
    npl_threshold_days: int = Field(default=90, ge=1)
    par_thresholds: list[int] = Field(default_factory=lambda: [7, 30, 60, 90])
    buckets: list[DpdBucket] = Field(default_factory=_default_buckets)

    @field_validator("par_thresholds")
    @classmethod
    def _par_positive(cls, value: list[int]) -> list[int]:
        if not value or any(n < 1 for n in value) or len(set(value)) != len(value):
            raise ValueError("par_thresholds must be distinct positive day counts")
        return sorted(value)

    @model_validator(mode="after")
    def _buckets_cover_every_day(self) -> DpdPolicy:
        buckets = self.buckets
        if not buckets:
            raise ValueError("dpd.buckets must not be empty")
        expected_min = 0
        for index, bucket in enumerate(buckets):
            if bucket.value != index:
                raise ValueError(
                    f"dpd.buckets[{index}].value must be {index} (0, 1, 2, ... in order)"
                )
            if bucket.min_days != expected_min:
                raise ValueError(
                    f"dpd.buckets[{index}] ({bucket.label}) must start at {expected_min} days: "
                    "buckets must cover every day count without gaps or overlaps"
                )
            last = index == len(buckets) - 1
            if last and bucket.max_days is not None:
                raise ValueError("the last dpd bucket must be open-ended (no max_days)")
            if not last:
                if bucket.max_days is None or bucket.max_days < bucket.min_days:
                    raise ValueError(
                        f"dpd.buckets[{index}] ({bucket.label}) needs max_days >= min_days"
                    )
                expected_min = bucket.max_days + 1
        return self


_KPI_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


class KpiThreshold(BaseModel):
    """Traffic-light bounds of one KPI, in the KPI's own unit (ratios are fractions).

    lower_is_better: green when value <= green, amber when value <= amber, else red.
    higher_is_better: green when value >= green, amber when value >= amber, else red.
    """

    direction: str = Field(pattern="^(lower|higher)_is_better$")
    green: float
    amber: float

    @model_validator(mode="after")
    def _ordered(self) -> KpiThreshold:
        if self.direction == "lower_is_better" and self.green > self.amber:
            raise ValueError("lower_is_better: amber must be at or above green")
        if self.direction == "higher_is_better" and self.green < self.amber:
            raise ValueError("higher_is_better: amber must be at or below green")
        return self


def _default_kpi_thresholds() -> dict[str, KpiThreshold | None]:
    lower, higher = "lower_is_better", "higher_is_better"
    rows = [
        ("par_7", lower, 0.10, 0.15),
        ("par_30", lower, 0.05, 0.08),
        ("par_60", lower, 0.04, 0.06),
        ("par_90", lower, 0.03, 0.05),
        ("npl_ratio", lower, 0.03, 0.05),
        ("customer_par_30", lower, 0.08, 0.12),
        ("customer_par_90", lower, 0.05, 0.08),
        ("par30_top10_share", lower, 0.50, 0.70),
        ("default_rate_count", lower, 0.03, 0.05),
        ("default_rate_balance", lower, 0.05, 0.10),
        ("net_loss_rate_ltm", lower, 0.02, 0.04),
        ("collection_rate_mtd", higher, 0.95, 0.85),
        ("repaid_on_time_ltm", higher, 0.70, 0.50),
        ("repaid_within_30d_ltm", higher, 0.95, 0.85),
        ("top10_concentration", lower, 0.35, 0.50),
        ("largest_customer_share", lower, 0.05, 0.10),
        ("yield_ltm", higher, 0.30, 0.20),
        ("risk_adjusted_yield_ltm", higher, 0.25, 0.15),
    ]
    return {k: KpiThreshold(direction=d, green=g, amber=a) for k, d, g, a in rows}


class KpiPolicy(BaseModel):
    """The kpi dataset: the trailing month-end series and the traffic-light thresholds.

    ``thresholds`` is merged over the built-in defaults key by key: naming one KPI replaces
    only that KPI's bounds, and ``null`` (in JSON) removes a default so the KPI gets no status.
    """

    series_months: int = Field(default=12, ge=0, le=120)  # a dashboard without a trend is half one
    thresholds: dict[str, KpiThreshold | None] = Field(default_factory=_default_kpi_thresholds)

    @field_validator("thresholds", mode="before")
    @classmethod
    def _over_defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        for key in value:
            if not _KPI_KEY.match(str(key)):
                raise ValueError(f"{key!r} is not a KPI key (snake_case, e.g. par_30)")
        return {**_default_kpi_thresholds(), **value}

    def threshold(self, kpi: str) -> KpiThreshold | None:
        """The bounds of one KPI, or None when it has no status."""
        return self.thresholds.get(kpi)


class TenorBand(BaseModel):
    """A tenor band of the pricing grid: from ``min_days`` up to the next band's minimum."""

    label: str = Field(min_length=1)
    min_days: int = Field(ge=0)


class TicketBand(BaseModel):
    """A ticket band of the pricing grid: from ``min_amount`` (USD) up to the next band's."""

    label: str = Field(min_length=1)
    min_amount: Decimal = Field(ge=0, decimal_places=2)


def _default_tenor_bands() -> list[TenorBand]:
    rows = [("0-30", 0), ("31-60", 31), ("61-90", 61), ("91-180", 91), ("181+", 181)]
    return [TenorBand(label=label, min_days=low) for label, low in rows]


def _default_ticket_bands() -> list[TicketBand]:
    rows = [("under 1K", "0"), ("1K-5K", "1000"), ("5K-25K", "5000"), ("25K-100K", "25000"),
            ("100K+", "100000")]  # fmt: skip
    return [TicketBand(label=label, min_amount=Decimal(low)) for label, low in rows]


class PricingPolicy(BaseModel):
    """The pricing dataset: its window, the grid's bands and the adherence tolerance."""

    window_months: int = Field(default=12, ge=1, le=120)
    tenor_bands: list[TenorBand] = Field(default_factory=_default_tenor_bands)
    ticket_bands: list[TicketBand] = Field(default_factory=_default_ticket_bands)
    day_count_basis: int = Field(default=360)
    apr_tolerance: Decimal = Field(default=Decimal("0.01"), ge=0)

    @field_validator("day_count_basis")
    @classmethod
    def _basis(cls, value: int) -> int:
        if value not in (360, 365):
            raise ValueError("day_count_basis must be 360 or 365")
        return value

    @model_validator(mode="after")
    def _bands_increase_from_zero(self) -> PricingPolicy:
        for name, lows in (
            ("tenor_bands", [Decimal(b.min_days) for b in self.tenor_bands]),
            ("ticket_bands", [b.min_amount for b in self.ticket_bands]),
        ):
            if not lows or lows[0] != 0:
                raise ValueError(f"pricing.{name} must start at 0")
            if lows != sorted(set(lows)):
                raise ValueError(f"pricing.{name} minimums must increase strictly")
        return self


class AnalyticsPolicy(BaseModel):
    """The analytics bundle: how many months it covers, the customer-type rules, the days of
    the repayment curve and the stages of the provision matrix."""

    months: int = Field(default=12, ge=1, le=120)
    vintage_months: int = Field(default=24, ge=1, le=240)
    top_customers: int = Field(default=20, ge=1, le=10_000)
    reactivation_days: int = Field(default=180, ge=1)
    recovered_from_days: int = Field(default=90, ge=1)
    recovered_to_days: int = Field(default=30, ge=0)
    repayment_days: list[int] = Field(default_factory=lambda: [0, 7, 15, 30, 60, 90, 180])
    stage_2_from_days: int = Field(default=31, ge=1)
    stage_3_from_days: int = Field(default=90, ge=2)

    @field_validator("repayment_days")
    @classmethod
    def _repayment_days(cls, value: list[int]) -> list[int]:
        if not value or any(n < 0 for n in value) or len(set(value)) != len(value):
            raise ValueError("repayment_days must be distinct day counts, 0 or more")
        return sorted(value)

    @model_validator(mode="after")
    def _recovery_spans_a_gap(self) -> AnalyticsPolicy:
        if self.recovered_to_days >= self.recovered_from_days:
            raise ValueError("analytics.recovered_to_days must be below recovered_from_days")
        if self.stage_3_from_days <= self.stage_2_from_days:
            raise ValueError("analytics.stage_3_from_days must be above stage_2_from_days")
        return self


class SourceTables(BaseModel):
    """Qualified names (schema.table) of the five source tables."""

    customers: str = "core_banking.customers"
    loans: str = "core_banking.loans"
    payment_schedule: str = "core_banking.payment_schedule"
    payments: str = "core_banking.payments"
    rate_card: str = "commercial.rate_card"

    @field_validator("*")
    @classmethod
    def _qualified(cls, value: str) -> str:
        if not _QUALIFIED_NAME.match(value):
            raise ValueError(f"{value!r} is not a qualified name like schema.table")
        return value

    def split(self, role: str) -> tuple[str, str]:
        """The (schema, table) pair of one role, for example ``split("loans")``."""
        schema, table = str(getattr(self, role)).split(".", 1)
        return schema, table

    def roles(self) -> list[str]:
        return list(type(self).model_fields)


class RetryPolicy(BaseModel):
    """Retries of transient database failures; all attempts together stay well under a minute."""

    attempts: int = Field(default=4, ge=1, le=20)
    initial_wait_seconds: float = Field(default=0.5, ge=0)
    max_wait_seconds: float = Field(default=4.0, ge=0)
    max_total_seconds: float = Field(default=30.0, gt=0)


class AuditSettings(BaseModel):
    """The hash-chained audit log (always written) and its optional PostgreSQL copy."""

    path: Path | None = Field(
        default=None, description="JSON Lines audit log; unset: <runtime_dir>/audit/audit.jsonl"
    )
    sink: str = Field(default="none", description="none, or postgres: copy every record there")
    database_url: SecretStr | None = Field(
        default=None, description="database of the PostgreSQL copy; unset: database_url"
    )
    table: str = "abaco_audit.audit_log"
    sink_timeout_seconds: int = Field(default=3, ge=1, le=60)

    @field_validator("table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        if not _QUALIFIED_NAME.match(value):
            raise ValueError(f"{value!r} is not a qualified name like schema.table")
        return value

    @field_validator("sink")
    @classmethod
    def _known_sink(cls, value: str) -> str:
        if value not in ("none", "postgres"):
            raise ValueError(f"{value!r} is not a sink; choose none or postgres")
        return value


class MetricsSettings(BaseModel):
    """The Prometheus textfile written after every export, prune and healthcheck."""

    enabled: bool = True
    path: Path | None = Field(
        default=None,
        description="a .prom file, e.g. in node_exporter's textfile directory; "
        "unset: <runtime_dir>/metrics/abaco.prom",
    )

    @field_validator("path")
    @classmethod
    def _prom(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix != ".prom":
            raise ValueError(
                "must end in .prom (node_exporter's textfile collector reads only those)"
            )
        return value


class FreshnessLimits(BaseModel):
    """Hours after which a dataset's newest successful export counts as stale."""

    model_config = {"extra": "allow"}  # datasets added later get a limit without a new field

    dpd: float = Field(default=2.0, gt=0)
    kpi: float = Field(default=26.0, gt=0)
    pricing: float = Field(default=26.0, gt=0)
    analytics: float = Field(default=26.0, gt=0)

    @model_validator(mode="after")
    def _extra_limits_are_hours(self) -> FreshnessLimits:
        for name, value in (self.model_extra or {}).items():
            try:
                hours = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: {value!r} is not a number of hours") from None
            if not hours > 0:
                raise ValueError(f"{name}: the limit must be more than 0 hours")
        return self

    def hours(self, dataset: str) -> float:
        """The limit of ``dataset``; 26 hours (a daily refresh) for one not listed."""
        value = getattr(self, dataset, None)
        if value is None and self.model_extra:
            value = self.model_extra.get(dataset)
        return float(value) if value is not None else 26.0


class HealthSettings(BaseModel):
    """Thresholds of `abaco healthcheck`."""

    freshness_hours: FreshnessLimits = Field(default_factory=FreshnessLimits)
    datasets: list[str] = Field(
        default_factory=list, description="datasets whose freshness is checked; empty: all"
    )
    db_timeout_seconds: int = Field(default=3, ge=1, le=60)
    db_latency_warning_ms: int = Field(default=1000, ge=1)
    disk_free_warning_ratio: float = Field(default=0.10, gt=0, lt=1)
    disk_free_critical_ratio: float = Field(default=0.05, gt=0, lt=1)

    @model_validator(mode="after")
    def _critical_below_warning(self) -> HealthSettings:
        if self.disk_free_critical_ratio > self.disk_free_warning_ratio:
            raise ValueError("disk_free_critical_ratio must not exceed disk_free_warning_ratio")
        return self


class PruneSettings(BaseModel):
    """Retention of exported runs; `--retention` on the command line wins over these."""

    retention: str | None = Field(default=None, description="e.g. 90d; Nh, Nd or Nw only")
    datasets: dict[str, str] = Field(
        default_factory=dict, description="per-dataset retention, e.g. {dpd = '30d'}"
    )
    keep_last: int = Field(default=1, ge=1)

    @field_validator("retention")
    @classmethod
    def _one_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("datasets")
    @classmethod
    def _durations(cls, value: dict[str, str]) -> dict[str, str]:
        for text in value.values():
            parse_duration(text)
        return value


class DataQualityPolicy(BaseModel):
    """Data-quality checks of the source (`abaco db check --data`, and before every export).

    A check that finds rows fails the run when its severity's policy says ``fail``:
    ``on_error`` for error checks (default fail), ``on_warning`` for warning checks (default
    warn: logged and recorded, the figures still go out). ``checks`` overrides the severity of
    one check, or turns it off: ``{overpayment = "error", duplicate_installment = "off"}``.
    """

    on_error: str = Field(default="fail", pattern="^(fail|warn)$")
    on_warning: str = Field(default="warn", pattern="^(warn|fail)$")
    checks: dict[str, str] = Field(
        default_factory=dict, description="check name -> error, warning or off"
    )

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, value: dict[str, str]) -> dict[str, str]:
        from abaco_cli.quality.catalogue import CHECK_NAMES  # names only; imported when used

        unknown = sorted(set(value) - set(CHECK_NAMES))
        if unknown:
            raise ValueError(
                f"unknown check {', '.join(unknown)}; the checks are {', '.join(CHECK_NAMES)}"
            )
        for name, severity in value.items():
            if severity not in ("error", "warning", "off"):
                raise ValueError(f"{name}: {severity!r} is not error, warning or off")
        return value


def known_destination(value: str | None) -> str | None:
    """A destination setting: a URL or folder abaco can use (DestinationURLError otherwise)."""
    from abaco_cli.storage.url import parse_destination  # no cloud client imported

    if value is not None:
        parse_destination(value)
    return value


class UploadSettings(BaseModel):
    """Where runs are uploaded after they are published locally, and how (abaco_cli.storage).

    ``destination`` is ``gs://bucket/prefix``, ``s3://bucket/prefix``, ``file:///abs/path`` or
    a local folder; unset: nothing is uploaded. Credentials never go in it: they come from the
    platform's usual chain (ADC, GOOGLE_APPLICATION_CREDENTIALS or the VM's service account;
    AWS_* variables, the AWS profile or the instance role).
    """

    destination: str | None = Field(
        default=None, description="gs://bucket/prefix, s3://bucket/prefix or a folder; unset: none"
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="an S3-compatible endpoint (MinIO, R2); unset: AWS"
    )
    s3_region: str | None = Field(default=None, description="unset: the AWS chain's region")
    parallel_files: int = Field(default=4, ge=1, le=32, description="files uploaded at once")
    max_total_seconds: float = Field(
        default=120.0, gt=0, le=3600, description="retries of one object's transient failures"
    )
    pending_warning_minutes: int = Field(default=90, ge=1)
    pending_critical_minutes: int = Field(default=360, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _no_credentials_shown(cls, data: Any) -> Any:
        """A URL with ``user:secret@`` is refused below, and an error shows the value it
        failed on: the credentials are masked before the fields are validated."""
        if not isinstance(data, dict):
            return data
        masked = dict(data)
        for key in ("destination", "s3_endpoint_url"):
            if isinstance(masked.get(key), str):
                masked[key] = re.sub(
                    r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@", r"\1***@", masked[key]
                )
        return masked

    @field_validator("destination")
    @classmethod
    def _known_destination(cls, value: str | None) -> str | None:
        return known_destination(value)

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        from abaco_cli.storage.url import check_endpoint_url

        if value is not None:
            check_endpoint_url(value)
        return value

    @model_validator(mode="after")
    def _critical_after_warning(self) -> UploadSettings:
        if self.pending_critical_minutes < self.pending_warning_minutes:
            raise ValueError("pending_critical_minutes must not be below pending_warning_minutes")
        return self


_LOWER_QUALIFIED = re.compile(r"^[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}$")
_LOWER_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ExtractSettings(BaseModel):
    """`abaco export table`: the source tables, and their columns, that may be extracted raw.

    ``tables`` maps a qualified table name to its allowed columns, e.g.
    ``{"core_banking.loans" = ["loan_id", "principal"]}``; unset (the default): the source
    contract's five tables, as ``tables.*`` names them, with the contract's columns (ids, dates
    and amounts, never a name). Anything else is refused.
    """

    tables: dict[str, list[str]] | None = Field(
        default=None,
        description="schema.table -> allowed columns; unset: the source contract's tables "
        "and columns",
    )

    @field_validator("tables")
    @classmethod
    def _plain_names(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is None:
            return None
        for table, columns in value.items():
            if not _LOWER_QUALIFIED.match(table):
                raise ValueError(
                    f"{table!r} is not a table name like schema.table (lower-case letters, "
                    "digits and _)"
                )
            if not columns:
                raise ValueError(f"{table}: list at least one column")
            for column in columns:
                if not _LOWER_NAME.match(column):
                    raise ValueError(f"{table}: {column!r} is not a lower-case column name")
            if len(set(columns)) != len(columns):
                raise ValueError(f"{table}: a column is listed twice")
        return value


class LakeSettings(BaseModel):
    """`abaco lake`: change data capture of source tables into Delta Lake and a change log.

    ``destination`` holds ``lake/`` (unset: the runtime folder); ``tables`` maps a qualified
    table name to the columns that may reach the lake (unset: the source contract's tables, as
    ``tables.*`` names them, with the contract's columns: ids, dates and amounts, never a name).
    """

    destination: str | None = Field(
        default=None,
        description="gs://bucket/prefix, s3://bucket/prefix or a folder that holds lake/; "
        "unset: runtime_dir",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="the source as a role with REPLICATION (docs/lake.md, 'Roles'); unset: "
        "database_url",
    )
    tables: dict[str, list[str]] | None = Field(
        default=None,
        description="schema.table -> captured columns; unset: the source contract's tables "
        "and columns",
    )
    slot: str = Field(default="abaco_lake", description="the logical replication slot")
    publication: str = Field(default="abaco_lake", description="the publication")
    batch_changes: int = Field(default=100_000, ge=1, le=10_000_000)
    merge_rows: int = Field(
        default=100_000,
        ge=1,
        description="keys merged into a Delta table at once: a larger batch (one huge "
        "transaction) is merged in parts, so memory stays bounded",
    )
    max_changes: int = Field(default=200_000, ge=1)
    max_seconds: float = Field(default=240.0, gt=0)
    stale_warning_minutes: int = Field(default=20, ge=1)
    stale_critical_minutes: int = Field(default=60, ge=1)
    compact_every_days: int = Field(
        default=7,
        ge=0,
        description="a sync also compacts the Delta tables (lake compact) this often; 0: never",
    )

    @field_validator("destination")
    @classmethod
    def _known_destination(cls, value: str | None) -> str | None:
        return known_destination(value)

    @field_validator("slot", "publication")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _LOWER_NAME.match(value):
            raise ValueError(f"{value!r} is not a lower-case name (letters, digits and _)")
        return value

    @field_validator("tables")
    @classmethod
    def _plain_tables(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        return ExtractSettings._plain_names(value)

    @model_validator(mode="after")
    def _critical_after_warning(self) -> LakeSettings:
        if self.stale_critical_minutes < self.stale_warning_minutes:
            raise ValueError("stale_critical_minutes must not be below stale_warning_minutes")
        return self


class Settings(BaseSettings):
    """Everything abaco reads from configuration."""

    model_config = SettingsConfigDict(
        env_prefix="ABACO_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    _config_file: ClassVar[Path | None] = None

    database_url: SecretStr | None = Field(
        default=None,
        description="libpq URL or key=value string; unset: libpq's PG* variables, service file",
    )
    runtime_dir: Path = Path("abaco_runtime")
    business_timezone: str = Field(
        default="UTC",
        description="IANA time zone whose days the as-of dates are (e.g. America/El_Salvador); "
        "the newest exportable as-of date is yesterday there",
    )
    application_name: str = "abaco"
    connect_timeout_seconds: int = Field(default=5, ge=1, le=300)
    statement_timeout_seconds: int = Field(default=900, ge=0)
    batch_rows: int = Field(default=20_000, ge=100, le=1_000_000)
    work_mem_mb: int = Field(default=64, ge=1, le=4096)
    parallel_queries: int = Field(
        default=2,
        ge=1,
        le=16,
        description="queries of one as-of date run at once, on connections sharing one snapshot",
    )
    lock_timeout_seconds: float = Field(default=30.0, ge=0)
    default_formats: list[str] = Field(default_factory=lambda: ["csv", "parquet"])
    tables: SourceTables = Field(default_factory=SourceTables)
    dpd: DpdPolicy = Field(default_factory=DpdPolicy)
    kpi: KpiPolicy = Field(default_factory=KpiPolicy)
    pricing: PricingPolicy = Field(default_factory=PricingPolicy)
    analytics: AnalyticsPolicy = Field(default_factory=AnalyticsPolicy)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    prune: PruneSettings = Field(default_factory=PruneSettings)
    dq: DataQualityPolicy = Field(default_factory=DataQualityPolicy)
    upload: UploadSettings = Field(default_factory=UploadSettings)
    extract: ExtractSettings = Field(default_factory=ExtractSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)

    @field_validator("business_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC)") from None
        return value

    @property
    def exports_dir(self) -> Path:
        return self.runtime_dir / "exports"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._config_file))
        return tuple(sources)


def config_file_path(explicit: Path | None = None) -> Path | None:
    """The configuration file: --config, else $ABACO_CONFIG, else ./abaco.toml if present."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigurationError(f"configuration file {explicit} does not exist")
        return explicit
    from_env = os.environ.get("ABACO_CONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigurationError(f"ABACO_CONFIG points to {path}, which does not exist")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; command-line flags arrive as ``overrides``. An invalid
    value is reported with the place it came from: the flag, the ``ABACO_*`` variable (which
    wins over the file) or the configuration file, and the setting's dotted key."""
    path = config_file_path(config_file)
    given = {k: v for k, v in overrides.items() if v is not None}
    Settings._config_file = path
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = [_invalid(error, path, given) for error in exc.errors()]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        message, hint = problems[0]
        raise ConfigurationError(f"invalid configuration: {message}{more}", hint=hint) from None
    except SettingsError as exc:  # an ABACO_* value that had to be JSON and is not
        message, hint = _undecodable(str(exc), path)
        raise ConfigurationError(message, hint=hint) from None
    except (OSError, ValueError) as exc:  # an unreadable or malformed TOML file
        raise ConfigurationError(f"cannot read the configuration file {path}: {exc}") from None
    finally:
        Settings._config_file = None  # a later Settings() reads no file unless asked


_SECRET_WORDS = ("url", "password", "secret", "key", "token")
_ENV_PREFIX = "ABACO_"
_SHOW_HINT = "`abaco config show` prints the effective configuration."


def _env_name(keys: Sequence[str]) -> str:
    return _ENV_PREFIX + "__".join(k.upper() for k in keys)


def _environment() -> dict[str, str]:
    """ABACO_* variables by upper-case name (pydantic-settings ignores the case)."""
    return {k.upper(): v for k, v in os.environ.items() if k.upper().startswith(_ENV_PREFIX)}


def _shown(keys: Sequence[str], value: object) -> str:
    if any(word in part.lower() for part in keys for word in _SECRET_WORDS):
        return ""
    text = repr(value)
    return f" = {text[:60] + '...' if len(text) > 60 else text}"


def _in_file(path: Path | None, keys: Sequence[str]) -> str | None:
    """None when the file does not set ``keys``; else "value" (a leaf) or "table"."""
    if path is None:
        return None
    try:
        data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return "table" if isinstance(data, dict) else "value"


def _invalid(error: Any, path: Path | None, given: dict[str, Any]) -> tuple[str, str]:
    """One validation error as `key = value from SOURCE: what is wrong`, and a hint."""
    keys = [str(k) for k in error["loc"] if not isinstance(k, int)]
    dotted = ".".join(keys) or "configuration"
    what = str(error["msg"]).removeprefix("Value error, ")
    shown = _shown(keys, error.get("input"))
    environment = _environment()
    if keys and keys[0] in given:
        flag = "--" + keys[0].replace("_", "-")
        return f"{dotted}{shown} from {flag}: {what}", f"Fix {flag} on the command line."
    for depth in range(len(keys), 0, -1):  # the variable of this key, or of a parent table
        name = _env_name(keys[:depth])
        if name in environment:
            return (
                f"{dotted}{shown} from the environment variable {name}: {what}",
                f"Fix or unset {name} (it wins over the configuration file); {_SHOW_HINT}",
            )
    deeper = sorted(n for n in environment if n.startswith(_env_name(keys) + "__"))
    in_file = _in_file(path, keys)
    if in_file == "value" or (path is not None and not deeper and in_file is None):
        return f"{dotted}{shown} in {path}: {what}", f"Fix {dotted} in {path}; {_SHOW_HINT}"
    places = [*deeper, *([f"{path} [{dotted}]"] if in_file else [])]
    if places:
        return (
            f"{dotted} from {' and '.join(places)}: {what}",
            f"Fix the values of {dotted} there; {_SHOW_HINT}",
        )
    return f"{dotted}: {what}", ConfigurationError.default_hint


def _undecodable(text: str, path: Path | None) -> tuple[str, str]:
    """pydantic-settings could not decode a value (a list or table from the environment must
    be JSON): name the variable and show how to write it."""
    match = re.search(r'field "(\w+)" from source "(\w+)"', text)
    field, source = (match.group(1), match.group(2)) if match else ("", "")
    if source != "EnvSettingsSource":
        where = f"the configuration file {path}" if path else "the configuration"
        return f"cannot read {where}: {text}", ConfigurationError.default_hint
    name = _env_name([field])
    environment = _environment()
    candidates = sorted(n for n in environment if n == name or n.startswith(name + "__"))
    for candidate in candidates:
        value = environment[candidate]
        try:
            json.loads(value)
        except ValueError:
            keys = candidate.removeprefix(_ENV_PREFIX).lower().split("__")
            items = [item.strip() for item in value.split(",")]
            example = (
                "[" + ",".join(items) + "]"
                if all(item.lstrip("-").isdigit() for item in items)
                else json.dumps(items, separators=(",", ":"))
            )
            shown = _shown(keys, value)
            return (
                f"invalid configuration: {'.'.join(keys)}{shown} from the environment variable "
                f"{candidate}: a list or table in an ABACO_* variable is written as JSON",
                f"Write it as JSON, e.g. {candidate}='{example}'; {_SHOW_HINT}",
            )
    named = ", ".join(candidates) or name
    return (
        f"invalid configuration: {field} from the environment ({named}): {text}",
        f"Lists and tables in ABACO_* variables are written as JSON; {_SHOW_HINT}",
    )
