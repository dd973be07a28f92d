"""Data-quality checks of the source: what must hold before figures go to risk officers.

``run_checks(conn, settings)`` runs every check inside the caller's open transaction and
returns a typed ``QualityReport``; ``abaco db check --data`` and the exports both use it.
"""

from abaco_cli.quality.catalogue import CATALOGUE, CHECK_NAMES, CheckSpec, Severity
from abaco_cli.quality.checks import (
    EXAMPLES,
    CheckResult,
    DataQualityError,
    Finding,
    QualityReport,
    run_checks,
)

__all__ = [
    "CATALOGUE",
    "CHECK_NAMES",
    "EXAMPLES",
    "CheckResult",
    "CheckSpec",
    "DataQualityError",
    "Finding",
    "QualityReport",
    "Severity",
    "run_checks",
]
