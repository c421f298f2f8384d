"""SMS segment counting (GSM-7 / UCS-2 parts) and cutting long answers for "reply MORE"."""

from __future__ import annotations

import pytest

from flows.content import load_content
from flows.engine import DAY_WORDS
from flows.segments import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    MAX_PARTS,
    Segments,
    fits,
    segments,
    split_to_fit,
)


def test_the_tables_of_3gpp_ts_23_038() -> None:
    assert len(GSM7_BASIC) == 127  # 128 codes, one of them the escape
    assert GSM7_EXTENSION == set("\f^{}\\[~]|€")
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert "\x1b" not in GSM7_BASIC


def test_160_plain_latin_characters_are_one_sms() -> None:
    assert segments("a" * 160) == Segments("GSM-7", parts=1, units=160, chars=160)


def test_161_plain_latin_characters_are_two_parts() -> None:
    assert segments("a" * 161) == Segments("GSM-7", parts=2, units=161, chars=161)
    assert segments("a" * 306).parts == 2  # 2 x 153
    assert segments("a" * 307).parts == 3


def test_gsm_punctuation_and_accents_stay_gsm7() -> None:
    text = "Hello @ £5, ¿qué? Ñoño àèéìòù ÄÖÜ äöü ß Ø Å Δ Ω §!\n(1+2=3) 50% #1 'a' \"b\""
    assert segments(text).encoding == "GSM-7"
    assert segments(text).units == len(text)


@pytest.mark.parametrize("char", list("€[]{}^~|\\\f"))
def test_escape_table_characters_count_two_septets(char: str) -> None:
    assert segments(char) == Segments("GSM-7", parts=1, units=2, chars=1)
    assert segments(char * 80) == Segments("GSM-7", parts=1, units=160, chars=80)
    assert segments(char * 81).parts == 2
    assert segments("a" * 159 + char).parts == 2  # 161 septets


def test_an_escape_pair_is_not_split_between_parts() -> None:
    # 306 septets would be exactly two parts of 153, but the € would straddle them.
    text = "a" * 152 + "€" + "a" * 152
    assert segments(text).units == 306
    assert segments(text).parts == 3
    assert segments("a" * 151 + "€" + "a" * 153).parts == 2  # € ends the first part exactly


@pytest.mark.parametrize("char", ["ы", "қ", "ә", "ң", "ғ", "ү", "ұ", "һ", "і", "ө"])
def test_cyrillic_is_ucs2_70_in_one_sms(char: str) -> None:
    assert segments(char * 70) == Segments("UCS-2", parts=1, units=70, chars=70)
    assert segments(char * 71) == Segments("UCS-2", parts=2, units=71, chars=71)


def test_cyrillic_201_characters_are_3_parts_and_202_are_4() -> None:
    assert segments("я" * 134).parts == 2  # 2 x 67
    assert segments("я" * 135).parts == 3
    assert segments("я" * 201) == Segments("UCS-2", parts=3, units=201, chars=201)
    assert segments("я" * 202) == Segments("UCS-2", parts=4, units=202, chars=202)
    assert fits("я" * 201) and not fits("я" * 202)
    assert MAX_PARTS == 3


def test_an_emoji_is_two_utf16_units() -> None:
    assert segments("😀") == Segments("UCS-2", parts=1, units=2, chars=1)
    assert segments("😀" * 35) == Segments("UCS-2", parts=1, units=70, chars=35)
    assert segments("😀" * 36).parts == 2


def test_a_surrogate_pair_is_not_split_between_parts() -> None:
    text = "я" * 66 + "😀" + "я" * 66  # 134 units: two parts of 67 only if the emoji split
    assert segments(text).units == 134
    assert segments(text).parts == 3


def test_one_non_gsm_character_makes_the_whole_text_ucs2() -> None:
    text = "Pension: " + "a" * 60 + " ы"
    result = segments(text)
    assert result.encoding == "UCS-2"
    assert result.units == len(text) == 71
    assert result.parts == 2
    assert segments("a" * 100).parts == 1
    # Latin that looks plain but is not GSM: a curly quote or a Kazakh letter.
    assert segments("it’s").encoding == "UCS-2"
    assert segments("Qazaqstan ğ").encoding == "UCS-2"


def test_mixed_escape_and_cyrillic_counts_in_utf16_units() -> None:
    result = segments("Сумма: 100 € [пример]")
    assert result.encoding == "UCS-2"
    assert result.units == result.chars == 21  # in UCS-2 no character needs an escape


def test_empty_text_is_one_empty_part() -> None:
    assert segments("") == Segments("GSM-7", parts=1, units=0, chars=0)


def test_split_to_fit_returns_a_text_that_fits_as_it_is() -> None:
    assert split_to_fit("Short answer.", 3, "Reply MORE") == ("Short answer.", "")
    text = "я" * 201
    assert split_to_fit(text, 3, "Ещё: MORE") == (text, "")


def test_split_to_fit_cuts_at_a_word_and_keeps_words_whole() -> None:
    words = [f"слово{i}" for i in range(60)]
    text = " ".join(words)
    suffix = "Ответьте ЕЩЁ"
    head, rest = split_to_fit(text, 2, suffix)
    assert head.endswith(" " + suffix)
    body = head.removesuffix(" " + suffix)
    assert fits(head, 2)
    assert body.split() == words[: len(body.split())]  # whole words, in order
    assert rest.split() == words[len(body.split()):]
    assert f"{body} {rest}" == text
    # As long as it can be: one more word would not fit.
    next_word = words[len(body.split())]
    assert not fits(f"{body} {next_word} {suffix}", 2)


def test_split_to_fit_counts_the_suffix_encoding() -> None:
    # Plain Latin text, Cyrillic suffix: the head must fit as UCS-2.
    text = " ".join(["word"] * 100)
    head, rest = split_to_fit(text, 1, "ЕЩЁ")
    assert segments(head).encoding == "UCS-2"
    assert fits(head, 1) and segments(head).units > 60
    assert rest and f"{head.removesuffix(' ЕЩЁ')} {rest}" == text


def test_split_to_fit_can_be_applied_again_to_the_rest() -> None:
    text = "\n".join(f"Пункт {i}: обратитесь в ЦОН с удостоверением." for i in range(20))
    pieces, rest = [], text
    while rest:
        head, rest = split_to_fit(rest, 3, "MORE")
        assert fits(head, 3)
        pieces.append(head.removesuffix(" MORE"))
    assert " ".join(" ".join(pieces).split()) == " ".join(text.split())


def test_split_to_fit_cuts_inside_a_word_too_long_for_any_sms() -> None:
    text = "x" * 500
    head, rest = split_to_fit(text, 1, "MORE")
    assert head == "x" * 155 + " MORE"
    assert rest == "x" * 345


def test_split_to_fit_refuses_a_suffix_that_leaves_no_room() -> None:
    with pytest.raises(ValueError):
        split_to_fit("a b c " * 50, 1, "y" * 160)


def test_every_sms_text_of_the_content_fits_in_three_parts() -> None:
    content = load_content()
    too_long: list[str] = []
    checked = 0
    for language in content.language_codes:
        prompts = content.prompts[language]
        footer = prompts["sms.answer_footer"]
        # {days} is filled in when sent: count its longest form (a word, or a number).
        days = max([*DAY_WORDS.get(language, {}).values(), "10"], key=len)
        for key, text in sorted(prompts.items()):
            if not key.startswith("sms."):
                continue
            sent = [(key, text)]
            if key.startswith("sms.topic."):
                # An answer goes out with the footer (how to ask a lawyer, the menu).
                sent.append((f"{key} + sms.answer_footer", f"{text} {footer}"))
            for name, body in sent:
                checked += 1
                result = segments(body.replace("{days}", days).strip())
                if result.parts > MAX_PARTS:
                    too_long.append(f"{language}.yaml {name}: {result.parts} parts "
                                    f"({result.encoding}, {result.units} units)")
    assert checked, "no sms.* prompts in the content"
    assert not too_long, "SMS texts longer than 3 parts:\n" + "\n".join(too_long)
