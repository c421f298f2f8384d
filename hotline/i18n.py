"""The workspace's languages (Kazakh, Russian, English) with Flask-Babel and plain `.po` files.

Source strings are English. The Kazakh and Russian catalogues are the `.po` files under
`hotline/translations/<lang>/LC_MESSAGES/` (messages.po, and one file per part of the workspace,
merged), read and compiled in memory once per process: no `.mo` files in the repository and no
build step. A language comes from `?lang=` (remembered in a cookie), then the cookie, then the
browser's Accept-Language; Kazakh otherwise.

New strings: `pybabel extract -F hotline/translations/babel.cfg -o messages.pot hotline`, then
`pybabel update -i messages.pot -d hotline/translations` and translate; a test fails while a
string of the workspace lacks a Kazakh or Russian translation.
"""

from __future__ import annotations

from functools import cache
from io import BytesIO
from pathlib import Path
from urllib.parse import urlencode

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from flask import Flask, Response, current_app, request
from flask_babel import Babel, Domain, get_locale
from flask_babel import gettext as _

TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"
# Code and the language's own name, in the order the switcher shows them.
LANGUAGES = {"kk": "Қазақша", "ru": "Русский", "en": "English"}
DEFAULT_LANGUAGE = "kk"
LANGUAGE_COOKIE = "lang"
LANGUAGE_COOKIE_SECONDS = 365 * 24 * 3600


# Alphabetical order for lists shown in a language (the regions in the question page's and
# the queue's selects): Python compares code points, which puts Kazakh's own letters (Ә Ғ Қ Ң
# Ө Ұ Ү Һ І, U+0456 and up) after Я. No collation library is installed (Babel has none, PyICU
# would need the ICU C library), and these lists are short: each letter's place in the
# alphabet, lower case. Kazakh: its 42 letters. Russian: its 33, Ё counted as Е as Russian
# dictionaries do, and the Kazakh letters a Russian page still shows ("область Ұлытау") each
# right after the Russian letter it is read as (Ұ and Ү after У, І after И).
ALPHABETS = {
    "kk": "аәбвгғдеёжзийкқлмнңоөпрстуұүфхһцчшщъыіьэюя",
    "ru": "аәбвгғдежзиійкқлмнңоөпрстуұүфхһцчшщъыьэюя",
}
# Each letter's weight: after every sign below the Cyrillic block (U+0400), before the rest.
_PLACES = {language: {letter: 0x400 + index for index, letter in enumerate(alphabet)}
           for language, alphabet in ALPHABETS.items()}
_PLACES["ru"]["ё"] = _PLACES["ru"]["е"]


def _weight(sign: str, places: dict[str, int]) -> int:
    if sign in places:
        return places[sign]
    code = ord(sign)
    return code if code < 0x400 else code + 0x100


def alphabetical(text: str, language: str | None = None) -> tuple[tuple[int, ...], str, str]:
    """A sort key putting text in the alphabetical order of the language (the request's by
    default); English and other languages: case-folded code points. Signs outside the
    alphabet (spaces, digits, Latin letters) keep their code points, so they come before the
    Cyrillic letters as before; a letter of no alphabet here comes after them. Ties (Ё and Е
    in Russian, capitals) are broken by the text itself, so the order is always the same."""
    folded = text.casefold()
    places = _PLACES.get(language or current_language(), {})
    return tuple(_weight(sign, places) for sign in folded), folded, text


def language_name(code: str | None) -> str:
    """A question's or caller's language as the pages show it, the same on each ("unknown"
    in the page's language when the caller never chose one)."""
    return LANGUAGES.get(code or "", code or str(_("unknown")))


babel = Babel()


class PoDomain(Domain):  # type: ignore[misc]
    """Flask-Babel's message domain, reading `.po` catalogues instead of compiled `.mo` files."""

    def get_translations(self) -> NullTranslations:
        """Return the catalogue of the request's language."""
        return catalogue(str(get_locale() or DEFAULT_LANGUAGE))


def po_files(language: str) -> list[Path]:
    """The language's `.po` files: messages.po, and one per part of the workspace."""
    return sorted((TRANSLATIONS_DIR / language / "LC_MESSAGES").glob("*.po"))


@cache
def catalogue(language: str) -> NullTranslations:
    """Compile the language's `.po` files in memory into one catalogue (English has none)."""
    files = po_files(language)
    if not files:
        return NullTranslations()
    merged: Translations | None = None
    for po in files:
        with po.open("rb") as source:
            messages = read_po(source, locale=language)
        compiled = BytesIO()
        write_mo(compiled, messages)
        compiled.seek(0)
        part = Translations(compiled)
        if merged is None:
            merged = part
        else:
            merged.merge(part)
    assert merged is not None
    return merged


def select_language() -> str:
    """Pick the request's language: ?lang=, the cookie, then Accept-Language."""
    for asked in (request.args.get("lang"), request.cookies.get(LANGUAGE_COOKIE)):
        if asked in LANGUAGES:
            return asked
    return request.accept_languages.best_match(list(LANGUAGES)) or DEFAULT_LANGUAGE


def current_language() -> str:
    """Return the request's language code."""
    return str(get_locale() or DEFAULT_LANGUAGE)


def _remember_language(response: Response) -> Response:
    # Only pages opened with ?lang= (the switcher's links): a webhook's lang is a caller's.
    if request.method != "GET":
        return response
    asked = request.args.get("lang")
    if asked in LANGUAGES and request.cookies.get(LANGUAGE_COOKIE) != asked:
        response.set_cookie(
            LANGUAGE_COOKIE, asked, max_age=LANGUAGE_COOKIE_SECONDS, httponly=True,
            samesite="Lax", secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")),
        )
    return response


def language_url(code: str) -> str:
    """This page in another language: its address with `lang` set and the rest of its query
    (the queue's filters, the reports' dates) kept. A form's answer (a POST) links to the
    form's own address: a GET there goes to the page the form is on (hotline.workspace)."""
    query = [(key, value) for key, value in request.args.items(multi=True) if key != "lang"]
    return f"{request.path}?{urlencode([*query, ('lang', code)])}"


def init_app(app: Flask) -> None:
    """Give the app's templates gettext in the request's language, and the language switcher."""
    babel.init_app(app, default_locale="en", locale_selector=select_language)
    # cached_property on the shared Babel object: every app uses the same .po catalogues.
    babel.domain_instance = PoDomain()
    app.after_request(_remember_language)
    app.context_processor(lambda: {"languages": LANGUAGES, "language": current_language(),
                                   "language_url": language_url})
