"""The KPI catalogue: every KPI of docs/domain.md with its unit, formula and definition version.

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


def _static(settings: Settings) -> list[tuple[str, str, int, str]]:
    """(key, unit, version, formula) of every KPI; the version is the definitions version the
    KPI's current meaning came in (docs/domain.md, "Changes from version 1")."""
    policy = settings.dpd
    npl = policy.npl_threshold_days
    default = policy.default_threshold_days
    write_off = policy.write_off_after_days
    return [
        ("outstanding_balance", USD, 2, "sum of outstanding over active loans (in scope at D, not "
         "written off, outstanding above dpd.tolerance: a settled loan's cents are not active)"),
        ("active_loans", COUNT, 2, "count of active loans"),
        ("active_customers", COUNT, 2, "count of distinct customers holding an active loan"),
        ("disbursed_mtd", USD, 1, "sum of principal of loans disbursed from the first day of D's "
         "month through D"),
        ("disbursed_ltm", USD, 1, "sum of principal of loans disbursed in the twelve months "
         "ending on D (D minus one year, exclusive, through D)"),
        ("collections_mtd", USD, 1, "sum of cash (principal + interest + fee + other + tax + "
         "fee_tax - rebates) of payments dated in the MTD window"),
        ("PAR", RATIO, 2, ""),  # placeholder: the PAR rows follow dpd.par_thresholds
        ("npl_ratio", RATIO, 2, f"outstanding of active loans with days_past_due >= {npl} "
         "(dpd.npl_threshold_days) / outstanding_balance"),
        ("customer_par_30", RATIO, 2, "outstanding of all active loans of the customers whose "
         "days past due (the most of their active loans) is >= 30 / outstanding_balance"),
        ("customer_par_90", RATIO, 2, "outstanding of all active loans of the customers whose "
         "days past due (the most of their active loans) is >= 90 / outstanding_balance"),
        ("par30_top10_share", RATIO, 2, "PAR30 amount held by the 10 customers with the most "
         "PAR30 amount / the PAR30 amount"),
        ("default_rate_count", RATIO, 2, "loans that defaulted in the LTM window (days past due "
         f"reached {default}, dpd.default_threshold_days, or written off while not in default; "
         "each loan once) / loans active at any of the 13 month-ends of the window, disbursed "
         "in it or defaulted in it"),
        ("default_rate_balance", RATIO, 2, "outstanding principal of those loans at the end of "
         "the day before their (first) default in the window / LTM average outstanding (the "
         "mean outstanding_balance over the 13 month-ends of the window)"),
        ("written_off_ltm", USD, 2, "gross write-offs (outstanding principal at the end of the "
         "day before the write-off date, frozen) of loans whose write-off date (the earlier of "
         f"written_off_date and the first day days past due exceeded {write_off}) falls in LTM"),
        ("recoveries_ltm", USD, 2, "cash of payments dated in LTM on loans written off on or "
         "before the payment date"),
        ("net_credit_loss_ltm", USD, 2, "written_off_ltm - recoveries_ltm"),
        ("net_loss_rate_ltm", RATIO, 2, "net_credit_loss_ltm / LTM average outstanding"),
        ("collection_rate_mtd", RATIO, 1, "collections_mtd / total due (principal + interest + "
         "fee + other + tax) of installments with due_date in the MTD window; null when "
         "nothing is due"),
        ("repaid_on_time_ltm", RATIO, 2, "of the principal due on installments due in LTM, the "
         "share covered by payments dated on or before the due date (payments pay a loan's "
         "installments oldest first)"),
        ("repaid_within_30d_ltm", RATIO, 2, "of the principal due on installments due in LTM "
         "whose due date + 30 days is on or before D, the share covered by payments dated on "
         "or before the due date + 30 days"),
        ("weighted_apr", RATIO, 2, "interest_rate_apr weighted by outstanding over active "
         "loans with a rate"),
        ("weighted_fee_rate", RATIO, 2, "(origination_fee + origination_fee_taxes) / "
         "principal, weighted by outstanding over active loans"),
        ("weighted_term_days", DAYS, 2, "term_days weighted by outstanding over active loans "
         "with a term"),
        ("average_ticket_ltm", USD, 1, "disbursed_ltm / number of loans disbursed in LTM"),
        ("top10_concentration", RATIO, 2, "outstanding of the 10 customers with the most "
         "outstanding / outstanding_balance"),
        ("largest_customer_share", RATIO, 2, "outstanding of the customer with the most "
         "outstanding / outstanding_balance"),
        ("revenue_mtd", USD, 1, "sum of interest + fee + other - rebates of payments dated in "
         "the MTD window"),
        ("revenue_ltm", USD, 1, "sum of interest + fee + other - rebates of payments dated in "
         "the LTM window"),
        ("yield_ltm", RATIO, 2, "revenue_ltm / LTM average outstanding (the mean "
         "outstanding_balance over the 13 most recent month-ends on or before D)"),
        ("risk_adjusted_yield_ltm", RATIO, 2, "yield_ltm - net_loss_rate_ltm: (revenue_ltm - "
         "net_credit_loss_ltm) / LTM average outstanding"),
    ]  # fmt: skip


def catalogue(settings: Settings) -> list[KpiDefinition]:
    """Every KPI in the order of the snapshot table, with the configured thresholds."""
    thresholds = settings.kpi.thresholds
    found: list[KpiDefinition] = []
    for key, unit, version, formula in _static(settings):
        if key == "PAR":
            for days in settings.dpd.par_thresholds:
                for name, par_unit, text in (
                    (f"par_{days}", RATIO, f"outstanding of active loans with days_past_due "
                     f">= {days} / outstanding_balance (PAR{days} ratio)"),
                    (f"par_{days}_amount", USD, f"outstanding of active loans with "
                     f"days_past_due >= {days} (PAR{days} amount)"),
                ):  # fmt: skip
                    found.append(KpiDefinition(name, par_unit, text, version, thresholds.get(name)))
            continue
        found.append(KpiDefinition(key, unit, formula, version, thresholds.get(key)))
    return found


NOTES = (
    "Definitions version 2 (docs/domain.md). Windows: MTD is the first day of D's month through "
    "D; LTM is D minus one year (exclusive) through D; the LTM average outstanding is the mean "
    "outstanding_balance over the 13 most recent month-ends on or before D. Active: in scope "
    "(disbursed on or before D), not written off, outstanding above dpd.tolerance. A loan is "
    "written off once, for good, at a frozen gross write-off; later cash is a recovery. "
    "Payments dated after D never count. A ratio whose denominator is zero is null."
)
