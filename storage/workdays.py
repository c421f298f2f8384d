"""Working days: what the hotline's promise of a callback "within N working days" counts.

A working day is Monday to Friday, less the country's public holidays and the days off the law
moves them to (a holiday on a Saturday or Sunday gives the next Monday off in Kazakhstan), plus
the weekend days a government decree makes working days. The dates come from the holidays
package (python-holidays, "Open World Holidays Framework"), which follows each country's
published calendar; Kazakhstan ("KZ") by default (HOTLINE_HOLIDAYS). Its Eid al-Adha date is
an estimate from the tabular Islamic calendar and can be a day off from the decree's.

Without a country (HOTLINE_HOLIDAYS=none) a working day is Monday to Friday.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from functools import lru_cache

import holidays

WEEKDAYS = range(0, 5)  # Monday to Friday (date.weekday())


@lru_cache(maxsize=1)
def supported_countries() -> frozenset[str]:
    """Country codes the holidays package has calendars for (ISO 3166-1 alpha-2)."""
    return frozenset(holidays.list_supported_countries())


@lru_cache(maxsize=32)
def _year(country: str, year: int) -> tuple[frozenset[date], frozenset[date]]:
    """The year's days off (holidays and the days they move to) and its working weekend days.

    Kept as frozen sets per country and year: a HolidayBase fills itself in year by year as it
    is asked, which is not safe from several threads at once.
    """
    # With the next year: a decree that moves a day off into January can make a Saturday of
    # this December a working day, and the package files it under the year of the day off.
    calendar = holidays.country_holidays(country, years=(year, year + 1))
    return (frozenset(day for day in calendar if day.year == year),
            frozenset(day for day in calendar.weekend_workdays if day.year == year))


@dataclass(frozen=True)
class WorkCalendar:
    """Which days are working days; country None: Monday to Friday."""

    country: str | None = None

    def __post_init__(self) -> None:
        if self.country is not None and self.country not in supported_countries():
            raise ValueError(f"no holiday calendar for country {self.country!r}")

    def is_working_day(self, day: date) -> bool:
        """Whether day is a working day."""
        if self.country is None:
            return day.weekday() in WEEKDAYS
        days_off, working_weekend = _year(self.country, day.year)
        if day in days_off:
            return False
        return day.weekday() in WEEKDAYS or day in working_weekend

    def add_working_days(self, day: date, days: int) -> date:
        """Return the days-th working day after day."""
        current = day
        left = days
        while left > 0:
            current += timedelta(days=1)
            if self.is_working_day(current):
                left -= 1
        return current

    def deadline(self, created_at: datetime, working_days: int, tz: tzinfo) -> datetime:
        """Return the end (midnight, local time of tz) of the working_days-th working day
        after the local day of created_at."""
        last_day = self.add_working_days(created_at.astimezone(tz).date(), working_days)
        return datetime.combine(last_day + timedelta(days=1), time(0), tz)
