"""Exact decimals as a person writes them, for CSV and JSON.

Money (scale 2) keeps its two places (``1234.50``, ``0.00``). Every other decimal (ratios and
rates, scale 10) is written without an exponent and without trailing zeros beyond its scale:
``0.079570503``, ``0``, ``1991``. Arrow's own decimal-to-text cast writes ``0E-10`` and
``1991.0000000000``; this never does. The digits are exact: no binary float on the way.
"""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

MONEY_SCALE = 2


def decimal_text(value: Decimal) -> str:
    """One decimal as plain text: scale 2 or less as it is, finer scales without trailing zeros."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_SCALE:
        value = value.normalize()
        if value.is_zero():
            return "0"
    return format(value, "f")


def plain_decimals(column: pa.Array) -> pa.Array:
    """A decimal column as plain text (nulls stay null); other columns as they are."""
    kind = column.type
    if not pa.types.is_decimal(kind) or kind.scale <= MONEY_SCALE:
        return column
    if kind.precision > 18:  # beyond int64: exact, one value at a time (small tables only)
        values = [None if v is None else decimal_text(v) for v in column.to_pylist()]
        return pa.array(values, pa.string())
    scale = kind.scale
    unscaled = pc.cast(pc.multiply(column, pa.scalar(Decimal(10) ** scale)), pa.int64())
    negative = pc.less(unscaled, 0)
    magnitude = pc.abs(unscaled)
    divisor = pa.scalar(10**scale, pa.int64())
    whole = pc.cast(pc.divide(magnitude, divisor), pa.string())
    fraction = pc.utf8_lpad(
        pc.cast(pc.subtract(magnitude, pc.multiply(pc.divide(magnitude, divisor), divisor)),
                pa.string()),
        width=scale,
        padding="0",
    )  # fmt: skip
    fraction = pc.utf8_rtrim(fraction, characters="0")
    joined = pc.if_else(
        pc.equal(pc.utf8_length(fraction), 0),
        whole,
        pc.binary_join_element_wise(whole, fraction, "."),
    )
    signed = pc.if_else(negative, pc.binary_join_element_wise("-", joined, ""), joined)
    return pc.cast(signed, pa.string())
