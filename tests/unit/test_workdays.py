"""Working days (storage.workdays) and HOTLINE_HOLIDAYS."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from hotline.config import ConfigError, Settings
from storage.workdays import WorkCalendar

ALMATY = timezone(timedelta(hours=5))
KZ = WorkCalendar("KZ")


def test_kazakhstan_s_holidays_and_the_days_off_they_move_to_are_not_working_days() -> None:
    # Nauryz 2026: 21-23 March (Saturday to Monday); Saturday's and Sunday's days off move to
    # Tuesday 24 and Wednesday 25.
    assert [KZ.is_working_day(date(2026, 3, day)) for day in range(20, 28)] == [
        True, False, False, False, False, False, True, True]
    # Independence Day, 16 December, is a Wednesday in 2026; the weekend around it is not.
    assert not KZ.is_working_day(date(2026, 12, 16))
    assert KZ.is_working_day(date(2026, 12, 17))
    assert not KZ.is_working_day(date(2026, 12, 19))


def test_a_saturday_the_government_made_a_working_day_counts() -> None:
    # Saturday 12 October 2013 was a working day, its day off moved to Monday 14 October
    # (before Eid al-Adha on Tuesday 15).
    assert KZ.is_working_day(date(2013, 10, 12))
    assert not WorkCalendar().is_working_day(date(2013, 10, 12))
    assert not KZ.is_working_day(date(2013, 10, 14))
    assert KZ.add_working_days(date(2013, 10, 11), 2) == date(2013, 10, 16)
    # Saturday 28 December 2013 worked for Friday 3 January 2014 off: a decree of 2014's.
    assert KZ.is_working_day(date(2013, 12, 28))
    assert not KZ.is_working_day(date(2014, 1, 3))


def test_a_deadline_moves_past_the_holidays() -> None:
    # Friday 20 March 2026 at 10:00 in Almaty, 3 working days: Thursday 26, Friday 27,
    # Monday 30; Monday to Friday alone: Monday 23 to Wednesday 25.
    asked = datetime(2026, 3, 20, 5, 0, tzinfo=UTC)
    assert KZ.deadline(asked, 3, ALMATY) == datetime(2026, 3, 31, tzinfo=ALMATY)
    assert WorkCalendar().deadline(asked, 3, ALMATY) == datetime(2026, 3, 26, tzinfo=ALMATY)
    # A year's end: New Year, 1 and 2 January 2027, is a Friday and a Saturday, so Monday 4 is
    # off too; 7 January, Orthodox Christmas, is a day off.
    assert KZ.add_working_days(date(2026, 12, 31), 2) == date(2027, 1, 6)
    assert KZ.add_working_days(date(2027, 1, 6), 1) == date(2027, 1, 8)


def test_hotline_holidays_chooses_the_calendar() -> None:
    assert Settings.from_env({}).work_calendar == KZ
    assert Settings.from_env({"HOTLINE_HOLIDAYS": " kz "}).holidays == "KZ"
    assert Settings.from_env({"HOTLINE_HOLIDAYS": "none"}).work_calendar == WorkCalendar()
    assert Settings.from_env({"HOTLINE_HOLIDAYS": ""}).holidays is None
    unknown = Settings.from_env({"HOTLINE_HOLIDAYS": "XX", "TWILIO_AUTH_TOKEN": "t"})
    with pytest.raises(ConfigError, match="HOTLINE_HOLIDAYS"):
        unknown.check()
    with pytest.raises(ValueError, match="XX"):
        WorkCalendar("XX")
