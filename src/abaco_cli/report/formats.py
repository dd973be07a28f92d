"""How the report writes a number for a reader: money with its currency, ratios as percentages.

The figures stay exact decimals until here: only their text is rounded (money to the cent,
percentages to two places), and a missing value (a ratio whose denominator is zero) is "n/a".
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CURRENCY = "USD"  # the unit "usd" of the KPI catalogue; every amount of every dataset
NOT_AVAILABLE = "n/a"


def _decimal(value: object) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def money(value: object) -> str:
    """``USD 1,234,567.89``."""
    amount = _decimal(value)
    if amount is None:
        return NOT_AVAILABLE
    return f"{CURRENCY} {amount.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"


def percent(value: object, places: int = 2) -> str:
    """A ratio (0.0523) as ``5.23 %``."""
    ratio = _decimal(value)
    if ratio is None:
        return NOT_AVAILABLE
    shown = (ratio * 100).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
    return f"{shown:,} %"


def count(value: object) -> str:
    number = _decimal(value)
    if number is None:
        return NOT_AVAILABLE
    return f"{number.to_integral_value(ROUND_HALF_UP):,}"


def days(value: object) -> str:
    number = _decimal(value)
    if number is None:
        return NOT_AVAILABLE
    return f"{number.quantize(Decimal('0.1'), ROUND_HALF_UP):,} days"


def by_unit(value: object, unit: str) -> str:
    """A KPI value in its catalogue unit (usd, ratio, count, days)."""
    if unit == "usd":
        return money(value)
    if unit == "ratio":
        return percent(value)
    if unit == "days":
        return days(value)
    return count(value)


def number(value: object) -> float | None:
    """A chart's data point (Vega-Lite plots numbers; the tables beside keep the exact text)."""
    exact = _decimal(value)
    return None if exact is None else float(exact)
