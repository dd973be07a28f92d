"""The KPI catalogue: every KPI of DOMAIN.md with its unit, formula and definition version.

The keys are the dashboard's contract: they never change meaning without a new
``definition_version``, and a renamed or removed key bumps the payload's schema version.
"""

from __future__ import annotations

from dataclasses import dataclass

from abaco_cli.settings import KpiThreshold, Settings

USD = "usd"
COUNT = "count"
RATIO = "ratio"
DAYS = "days"


@dataclass(frozen=True)
class KpiDefinition:
    """One KPI: its key, unit, formula in words, version and traffic-light bounds."""

    key: str
    unit: str
    formula: str
    version: int = 1
    threshold: KpiThreshold | None = None


def _static(settings: Settings) -> list[tuple[str, str, str]]:
    policy = settings.dpd
    npl = policy.npl_threshold_days
    write_off = policy.write_off_after_days
    return [
        ("outstanding_balance", USD, "sum of outstanding over active loans (in scope at D, not "
         "written off, outstanding > 0)"),
        ("active_loans", COUNT, "count of active loans"),
        ("active_customers", COUNT, "count of distinct customers holding an active loan"),
        ("disbursed_mtd", USD, "sum of principal of loans disbursed from the first day of D's "
         "month through D"),
        ("disbursed_ltm", USD, "sum of principal of loans disbursed in the twelve months ending "
         "on D (D minus one year, exclusive, through D)"),
        ("collections_mtd", USD, "sum of cash (principal + interest + fee + other + tax + "
         "fee_tax - rebates) of payments dated in the MTD window"),
        ("PAR", RATIO, ""),  # placeholder: the PAR rows follow dpd.par_thresholds
        ("npl_ratio", RATIO, f"outstanding of active loans with days_past_due >= {npl} "
         "(dpd.npl_threshold_days) / outstanding_balance"),
        ("default_rate_count", RATIO, "active loans with is_default / active_loans"),
        ("default_rate_balance", RATIO, "outstanding of active loans with is_default / "
         "outstanding_balance"),
        ("written_off_ltm", USD, "written_off_balance at D of loans whose write-off date "
         f"(written_off_date when on or before D, else first_arrears_date + {write_off} + 1) "
         "falls in the LTM window"),
        ("collection_rate_mtd", RATIO, "collections_mtd / total due (principal + interest + fee "
         "+ other + tax) of installments with due_date in the MTD window; null when nothing is "
         "due"),
        ("weighted_apr", RATIO, "interest_rate_apr weighted by outstanding over active loans "
         "with a rate"),
        ("weighted_fee_rate", RATIO, "(origination_fee + origination_fee_taxes) / principal, "
         "weighted by outstanding over active loans"),
        ("weighted_term_days", DAYS, "term_days weighted by outstanding over active loans with "
         "a term"),
        ("average_ticket_ltm", USD, "disbursed_ltm / number of loans disbursed in LTM"),
        ("top10_concentration", RATIO, "outstanding of the 10 customers with the most "
         "outstanding / outstanding_balance"),
        ("largest_customer_share", RATIO, "outstanding of the customer with the most "
         "outstanding / outstanding_balance"),
        ("revenue_mtd", USD, "sum of interest + fee + other - rebates of payments dated in the "
         "MTD window"),
        ("revenue_ltm", USD, "sum of interest + fee + other - rebates of payments dated in the "
         "LTM window"),
        ("yield_ltm", RATIO, "revenue_ltm / mean outstanding_balance over the 12 most recent "
         "month-ends on or before D"),
    ]  # fmt: skip


def catalogue(settings: Settings) -> list[KpiDefinition]:
    """Every KPI in the order of the snapshot table, with the configured thresholds."""
    thresholds = settings.kpi.thresholds
    found: list[KpiDefinition] = []
    for key, unit, formula in _static(settings):
        if key == "PAR":
            for days in settings.dpd.par_thresholds:
                for name, par_unit, text in (
                    (f"par_{days}", RATIO, f"outstanding of active loans with days_past_due "
                     f">= {days} / outstanding_balance (PAR{days} ratio)"),
                    (f"par_{days}_amount", USD, f"outstanding of active loans with "
                     f"days_past_due >= {days} (PAR{days} amount)"),
                ):  # fmt: skip
                    found.append(KpiDefinition(name, par_unit, text, 1, thresholds.get(name)))
            continue
        found.append(KpiDefinition(key, unit, formula, 1, thresholds.get(key)))
    return found


NOTES = (
    "Windows: MTD is the first day of D's month through D; LTM is D minus one year (exclusive) "
    "through D. Active: in scope (disbursed on or before D), not written off, outstanding > 0. "
    "Payments dated after D never count. A ratio whose denominator is zero is null."
)
