"""Durations such as ``90d``: hours, days or weeks only, whole and positive.

Months and minutes are refused on purpose: ``6m`` reads as six minutes to some people and six
months to others, and a month has no fixed length. A retention or a time window given wrongly
deletes or hides data, so an ambiguous duration is an error, never a guess.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_DURATION = re.compile(r"^([0-9]+)([hdw])$")
_EXAMPLE = "use a whole number of hours, days or weeks such as 36h, 90d or 12w"


def parse_duration(text: str) -> timedelta:
    """``Nh``, ``Nd`` or ``Nw`` as a timedelta; ValueError saying why anything else is refused."""
    value = text.strip().lower()
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: {_why(value)}")
    count = int(match.group(1))
    if count == 0:
        raise ValueError(f"{text!r} is zero: a duration must be at least 1 ({_EXAMPLE})")
    return count * _UNITS[match.group(2)]


def _why(value: str) -> str:
    if value.startswith("-"):
        return f"a duration cannot be negative ({_EXAMPLE})"
    if re.fullmatch(r"[0-9]+(\.[0-9]*)?", value):
        return f"it has no unit ({_EXAMPLE})"
    if re.fullmatch(r"[0-9]+m", value):
        return f"'m' is ambiguous (months or minutes?) ({_EXAMPLE})"
    if re.fullmatch(r"[0-9]+(mo|mon|months?|min|minutes?|y|yr|years?|s|sec)", value):
        return (
            "months and years have no fixed length and minutes and seconds are too fine, "
            f"so they are not accepted ({_EXAMPLE})"
        )
    if re.fullmatch(r"[0-9]*\.[0-9]+[hdw]", value):
        return f"fractions are not accepted ({_EXAMPLE})"
    return _EXAMPLE


def format_duration(delta: timedelta) -> str:
    """The shortest exact ``Nw``/``Nd``/``Nh`` spelling, else hours with a fraction."""
    seconds = delta.total_seconds()
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds / 3600:.1f}h"
