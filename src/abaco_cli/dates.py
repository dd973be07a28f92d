"""As-of dates: only days that are over can be exported.

A day is over once it has ended in the business time zone (``business_timezone``, UTC by
default): the newest date an export may describe is yesterday there. Later dates would export
figures of a day that has not happened (all zeros for 2027) and, once published, would hold
the latest pointers; they are refused unless ``--allow-future`` says the caller means it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from abaco_cli.errors import UsageError
from abaco_cli.runtime.tree import TABLES_DATASET
from abaco_cli.settings import Settings


def last_complete_day(settings: Settings, now: datetime | None = None) -> date:
    """Yesterday in the business time zone: the newest as-of date whose day is over."""
    zone = ZoneInfo(settings.business_timezone)
    moment = now.astimezone(zone) if now is not None else datetime.now(zone)
    return moment.date() - timedelta(days=1)


def newest_true_day(settings: Settings, dataset: str, now: datetime | None = None) -> date:
    """The newest as-of date a run of ``dataset`` can truly have: yesterday in the business
    time zone, except for raw table extracts (dated by their snapshot's UTC day: today)."""
    if dataset == TABLES_DATASET:
        return (now or datetime.now(UTC)).astimezone(UTC).date()
    return last_complete_day(settings, now)


def default_as_of(settings: Settings) -> date:
    return last_complete_day(settings)


def parse_date(text: str, option: str) -> date:
    """An ISO date (YYYY-MM-DD) from the command line; UsageError otherwise."""
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not a date; use YYYY-MM-DD, e.g. 2025-06-30"
        ) from None


def check_as_of(day: date, option: str, settings: Settings, *, allow_future: bool) -> date:
    """``day`` unless it is later than the last complete day (and the caller did not say
    --allow-future); UsageError naming both dates otherwise."""
    last = last_complete_day(settings)
    if day > last and not allow_future:
        what = (
            "today, whose day is not over" if day == last + timedelta(days=1) else "in the future"
        )
        raise UsageError(
            f"{option} {day} is {what}: the newest as-of date is {last} "
            f"(yesterday in {settings.business_timezone}); --allow-future exports it anyway",
            hint="An export describes a day that is over; a future date would publish "
            "figures of a day that has not happened.",
        )
    return day
