"""How many SMS a text takes: GSM-7 or UCS-2, and the parts a carrier splits it into.

Pure functions, no Flask, no Twilio. The SMS replies of the hotline stay within `MAX_PARTS`
parts (DESIGN.md, SMS rules); `split_to_fit` cuts a longer text at a word so the first reply
fits with a "reply MORE" hint and the rest waits for MORE.

Counting follows what carriers and Twilio do:

- GSM-7 when every character is in the GSM 03.38 default alphabet or its extension table;
  an extension character takes two septets (ESC + the character). Anything else makes the
  whole message UCS-2, counted in UTF-16 code units (a character outside the Basic
  Multilingual Plane, such as an emoji, takes two).
- One SMS holds 160 septets or 70 UCS-2 units. A longer text is sent as concatenated parts
  whose user-data header leaves 153 septets or 67 units each.
- Parts are filled character by character: an escape pair or a surrogate pair is never split
  between two parts, so a part can end one unit short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# 3GPP TS 23.038, section 6.2.1: the GSM 7-bit default alphabet, in code order 0x00-0x7F.
# 0x1B is the escape to the extension table, not a character, so it is left out here.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ" "ÆæßÉ"  # 0x1B (escape) sits between Ξ and Æ
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# 3GPP TS 23.038, section 6.2.1.1: the default extension table, each character sent as
# ESC (0x1B) followed by its code, so two septets: form feed ^ { } \ [ ~ ] | €.
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE_SEPTETS, PART_SEPTETS = 160, 153
SINGLE_UNITS, PART_UNITS = 70, 67
MAX_PARTS = 3


@dataclass(frozen=True)
class Segments:
    """The encoding of a text and what it costs.

    units: septets for GSM-7 (an extension character counts 2), UTF-16 code units for UCS-2
    (a character outside the BMP counts 2). chars: characters (code points) of the text.
    An empty text is one (empty) part.
    """

    encoding: Encoding
    parts: int
    units: int
    chars: int


def is_gsm7(text: str) -> bool:
    """Tell whether every character of text can be sent in the GSM 7-bit alphabet."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _widths(text: str, encoding: Encoding) -> list[int]:
    if encoding == "GSM-7":
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _count_parts(widths: list[int], single: int, per_part: int) -> int:
    if sum(widths) <= single:
        return 1
    parts, used = 1, 0
    for width in widths:
        if used + width > per_part:
            parts, used = parts + 1, 0
        used += width
    return parts


def segments(text: str) -> Segments:
    """Return the encoding, parts, units and characters of text as one SMS message."""
    encoding: Encoding = "GSM-7" if is_gsm7(text) else "UCS-2"
    widths = _widths(text, encoding)
    if encoding == "GSM-7":
        parts = _count_parts(widths, SINGLE_SEPTETS, PART_SEPTETS)
    else:
        parts = _count_parts(widths, SINGLE_UNITS, PART_UNITS)
    return Segments(encoding=encoding, parts=parts, units=sum(widths), chars=len(text))


def fits(text: str, max_parts: int = MAX_PARTS) -> bool:
    """Tell whether text goes out in at most max_parts SMS parts."""
    return segments(text).parts <= max_parts


def split_to_fit(text: str, max_parts: int, suffix: str) -> tuple[str, str]:
    """Cut text so that `head + " " + suffix` fits in max_parts; return (that, the rest).

    The cut is at the last whitespace that lets it fit, so words stay whole; a single word
    too long for the room left is cut between characters. When the whole text fits it is
    returned as it is, with "" as the rest. Raises ValueError when the suffix alone leaves
    no room for any text.
    """
    if fits(text, max_parts):
        return text, ""

    def fitting(head: str) -> bool:
        return fits(f"{head} {suffix}", max_parts)

    # Cut points: just before each whitespace run. A longer head never costs fewer parts, so
    # the last fitting cut can be found by bisection.
    cuts = [i for i in range(1, len(text)) if text[i].isspace() and not text[i - 1].isspace()]
    lo, hi = 0, len(cuts)  # cuts[:lo] fit, cuts[hi:] do not
    while lo < hi:
        mid = (lo + hi) // 2
        if fitting(text[: cuts[mid]].rstrip()):
            lo = mid + 1
        else:
            hi = mid
    if lo:
        cut = cuts[lo - 1]
    else:
        # Not even the first word fits: cut inside it, as far as the room allows.
        lo, hi = 0, len(text)  # text[:lo] fits, text[:hi + 1] does not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fitting(text[:mid]):
                lo = mid
            else:
                hi = mid - 1
        cut = lo
    head = text[:cut].rstrip()
    if not head:
        raise ValueError(f"the suffix {suffix!r} leaves no room in {max_parts} parts")
    return f"{head} {suffix}", text[cut:].strip()
