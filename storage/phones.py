"""Phone numbers as the hotline stores them: E.164 strings."""

from __future__ import annotations

from collections.abc import Callable

import phonenumbers


def normalise_phone(raw: str | None, region: str = "KZ") -> str | None:
    """Return the number in E.164 form, or None when it is not a real phone number."""
    if raw is None:
        return None
    text = raw.strip()
    # Letters mean a caller ID that is no number ("anonymous", "client:alice", "sip:…");
    # phonenumbers would otherwise read them as a vanity number's keypad digits.
    if not text or any(ch.isalpha() for ch in text):
        return None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not (phonenumbers.is_possible_number(number) and phonenumbers.is_valid_number(number)):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# What a person answers: the kinds of number a consultant may put on their own account.
_PERSONAL_TYPES = frozenset({phonenumbers.PhoneNumberType.MOBILE,
                             phonenumbers.PhoneNumberType.FIXED_LINE,
                             phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE})


def is_local_personal_phone(e164: str, region: str = "KZ") -> bool:
    """Whether an E.164 number is an ordinary mobile or landline number of region: not
    another country's (Kazakhstan shares +7 with Russia), not premium-rate or shared-cost."""
    try:
        number = phonenumbers.parse(e164, region)
    except phonenumbers.NumberParseException:
        return False
    return (phonenumbers.region_code_for_number(number) == region
            and phonenumbers.number_type(number) in _PERSONAL_TYPES)


def replace_phone_numbers(text: str, replace: Callable[[str], str | None],
                          region: str = "KZ") -> str:
    """The text with each phone number phonenumbers finds in it, however written ("+7 701 555
    01 01", "8(701)5550101"), replaced by replace(its E.164 form); a number for which replace
    gives None stays as written."""
    parts: list[str] = []
    last = 0
    for match in phonenumbers.PhoneNumberMatcher(text, region):
        new = replace(phonenumbers.format_number(match.number,
                                                 phonenumbers.PhoneNumberFormat.E164))
        if new is None:
            continue
        parts += [text[last:match.start], new]
        last = match.end
    return "".join(parts) + text[last:]
