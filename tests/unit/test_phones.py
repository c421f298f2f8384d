"""Phone numbers are stored in E.164 form; anything that is no phone number becomes None."""

from __future__ import annotations

import pytest

from storage.phones import normalise_phone


@pytest.mark.parametrize(
    "raw",
    [
        "8 701 123 45 67",
        "+7 (701) 123-45-67",
        "87011234567",
        "+77011234567",
        "7011234567",
        "  +7 701 123 45 67  ",
        "8-701-123-45-67",
    ],
)
def test_kazakh_mobile_forms_give_e164(raw: str) -> None:
    assert normalise_phone(raw) == "+77011234567"


def test_kazakh_landline() -> None:
    assert normalise_phone("8 (7172) 12-34-56") == "+77172123456"


def test_foreign_number_with_country_code() -> None:
    assert normalise_phone("+1 415 555 2671") == "+14155552671"


def test_other_default_region() -> None:
    assert normalise_phone("(415) 555-2671", region="US") == "+14155552671"


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "anonymous",
        "Anonymous",
        "client:alice",
        "sip:alice@example.com",
        "unknown",
        "garbage",
        "0000",
        "12",
        "+7 701 123",
        "+7701123456789012",
        "8 800 FLOWERS",
        "+266696687",  # Twilio's stand-in for an unknown caller ID
        "+2562533",  # ... a blocked one
        "+8656696",  # ... an unavailable one
        "+7378742833",  # ... a restricted one
    ],
)
def test_not_a_phone_number_gives_none(raw: str | None) -> None:
    assert normalise_phone(raw) is None
