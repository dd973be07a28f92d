"""The registry of datasets, from name to specification."""

from __future__ import annotations

from abaco_cli.datasets.analytics import ANALYTICS
from abaco_cli.datasets.base import DatasetSpec
from abaco_cli.datasets.dpd import DPD
from abaco_cli.datasets.kpi import KPI
from abaco_cli.datasets.pricing import PRICING
from abaco_cli.errors import UsageError

REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in (DPD, KPI, PRICING, ANALYTICS)}


def get_dataset(name: str) -> DatasetSpec:
    """The dataset called ``name``; a clear usage error for an unknown one."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise UsageError(f"unknown dataset {name!r}; known datasets: {known}") from None
