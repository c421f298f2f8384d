"""The language of a resident's SMS, Latin transliteration to Cyrillic, and text normalisation.

Residents write from basic phones: Cyrillic Kazakh (often without the Kazakh letters, which
many phones cannot type: "зейнетакы" for "зейнетақы"), Cyrillic Russian, or either language in
Latin letters ("pensiya kogda", "zeinetaqy qashan"). Pure functions, no I/O.

Libraries: cyrtranslit (Russian Latin -> Cyrillic, GOST 7.79 B plus common informal spellings).
Kazakh has no transliterator there; `KK_LATIN` below maps the official 2021 Latin alphabet and
the informal ASCII spellings people use.
"""

from __future__ import annotations

import re
import unicodedata

import cyrtranslit  # Russian Latin -> Cyrillic transliteration

# Kazakh-specific Cyrillic letters: one of them in a word makes the word Kazakh.
KAZAKH_CYRILLIC = frozenset("әғқңөұүһі")
# Letters of the Kazakh Latin alphabets (2017-2021 drafts) that Russian transliteration never
# uses: q is қ, the rest are 2021 letters with diacritics or the 2018 acute ones.
KAZAKH_LATIN = frozenset("äğqñöūüışçáǵńóú")

# Kazakh Latin -> Cyrillic. The official 2021 alphabet, letter by letter:
#   a а   ä ә   b б   ç ч   d д   e е   f ф   g г   ğ ғ   h х   ı і   i и/й   j ж   k к   l л
#   m м   n н   ñ ң   o о   ö ө   p п   q қ   r р   s с   ş ш   t т   u у   ū ұ   ü ү   v в
#   y ы   z з
# ("i" is both и and й; и is written, which matching folds with й anyway.)
# The 2018 acute version: á ә, ǵ ғ, ń ң, ó ө, ú ү, ý у.
# Informal ASCII spellings, tried first, longest first:
#   sh ш   ch ч   zh ж   kh х   gh ғ   a' ә   o' ө   u' ү   g' ғ   n' ң   i' і   k' қ   s' ш
#   c' ч   w у   x х   c ц
# Without diacritics informal text is ambiguous (i for і/и/ы, u for у/ұ/ү, o for о/ө):
# the plain letter is written and matching folds the Kazakh letters onto their plain
# neighbours (see `skeleton`).
KK_LATIN_PAIRS = (
    ("sh", "ш"), ("ch", "ч"), ("zh", "ж"), ("kh", "х"), ("gh", "ғ"),
    ("a'", "ә"), ("o'", "ө"), ("u'", "ү"), ("g'", "ғ"), ("n'", "ң"), ("i'", "і"), ("k'", "қ"),
    ("s'", "ш"), ("c'", "ч"),
)
KK_LATIN = {
    "a": "а", "ä": "ә", "á": "ә", "b": "б", "c": "ц", "ç": "ч", "d": "д", "e": "е", "é": "е",
    "f": "ф", "g": "г", "ğ": "ғ", "ǵ": "ғ", "h": "х", "ı": "і", "i": "и", "j": "ж", "k": "к",
    "l": "л", "m": "м", "n": "н", "ñ": "ң", "ń": "ң", "o": "о", "ö": "ө", "ó": "ө", "p": "п",
    "q": "қ", "r": "р", "s": "с", "ş": "ш", "t": "т", "u": "у", "ū": "ұ", "ü": "ү", "ú": "ү",
    "v": "в", "w": "у", "x": "х", "y": "ы", "ý": "у", "z": "з", "'": "",
}
# Informal Russian spellings cyrtranslit reads differently (it would give "шч", "кх", x).
_RU_PRE = (("shch", "shh"), ("sch", "shh"), ("kh", "h"), ("x", "h"))

# Latin letters that look like Cyrillic ones: inside a word that is otherwise Cyrillic they
# are typos of the keyboard ("пенcия" with a Latin c; "і" typed as Latin i on a Russian phone).
_HOMOGLYPHS = str.maketrans({
    "a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у", "k": "к", "m": "м",
    "t": "т", "i": "і", "h": "н", "b": "в", "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н",
    "K": "К", "M": "М", "O": "О", "P": "Р", "T": "Т", "X": "Х", "Y": "У", "I": "І",
})

# ...and the other way, in a word that is mostly Latin ("potеryal" with a Cyrillic е).
_LATIN_LOOKALIKES = str.maketrans({
    "а": "a", "с": "c", "е": "e", "о": "o", "р": "p", "х": "x", "у": "y", "к": "k", "м": "m",
    "т": "t", "і": "i", "А": "A", "В": "B", "С": "C", "Е": "E", "Н": "H", "К": "K", "М": "M",
    "О": "O", "Р": "P", "Т": "T", "Х": "X", "І": "I",
})

_APOSTROPHES = "'’ʼ`´"
_WORD = re.compile(rf"[^\W\d_](?:[^\W\d_]|[{_APOSTROPHES}])*")
# Latin words that say nothing about the language: SMS keywords (handled before any matching)
# and English every phone knows.
_NEUTRAL_LATIN = frozenset(
    "q question menu help info stop start more sms ok okay hello hi thanks egov kz ru kk".split()
)

# Folding for matching: Kazakh letters onto the plain letters people type instead, Russian
# spelling variants onto one form, doubled letters onto one.
_FOLD = str.maketrans({
    "ә": "а", "ғ": "г", "қ": "к", "ң": "н", "ө": "о", "ұ": "у", "ү": "у", "һ": "х", "і": "и",
    "ы": "и", "й": "и", "ё": "е", "э": "е", "щ": "ш", "ц": "тс", "я": "иа", "ю": "иу",
    "ь": "", "ъ": "",
})
_DOUBLE = re.compile(r"(.)\1+")

# Words that tell the language, compared after `skeleton` folding. Whole words...
_KK_WORDS = frozenset(
    "бе ба ма ме па пе ғой ғана еді едім едік екен жоқ иә бар мен менің маған мені біз бізге "
    "бізді біздің сіз сізге сіздің сіздер ол оның оған осы бұл сол үшін туралы бойынша және "
    "немесе қалай қашан қайда қандай қанша неше неге кім керек мүмкін жақсы рахмет рақмет "
    "сәлем салем сәлеметсіз сәлеметсізбе ассалаумағалейкум апа ата әже балам қызым ұлым "
    "жыл ай ақша ауыл ауылда ауылға әкім әкімдік мәзір тоқта баста тағы сұрақ көмек болады "
    "бола болмайды жатыр жатырмын келді келмеді келмейді береді бермейді алдым "
    "аламын алам алуға беру алу істеу істеймін жасаймын дейді деп деген қайдан "
    # Family, as elders write of it, and everyday verbs (added after a review: "Апам қайтыс
    # болды", "Үйімді сатып жіберді" typed without Kazakh letters were read as Russian).
    "апам атам әжем ағам інім әпкем болды болдым берді алды".split()
)
# ...and stems, matched as word beginnings.
_KK_STEMS = (
    "зейнет", "мүгедек", "жәрдемақ", "көмек", "құжат", "анықтам", "куәлі", "куәланд", "тірке",
    "атаулы", "әлеумет", "сарапта", "отбасы", "келмей", "түспей", "бермей", "алмай", "істеу",
    "істей", "істед",
    "жұмыс", "кезек", "өтініш", "төле", "қажет", "айтыңыз", "көмектес", "сұра", "білгім",
    "білмей", "балалар", "әйел", "ерлер", "жасқа", "жасым", "тағайында", "шығады", "шығу",
    "жазыңыз", "жазам", "жоғал", "қалпына", "тексер", "дәрігер", "жолдама", "шағым",
    "рәсімде", "өтіл", "еңбек", "кітапша", "жинақ", "толдым", "күйеу", "көрші", "қарыз",
    "қайтыс", "сатып", "жібер", "үйім", "немере", "келін",
)
_RU_WORDS = frozenset(
    "как когда где что почему сколько можно нужно надо мне меня мой моя мою мои моего моей "
    "я у и в с по за для о об про уже еще ещё пожалуйста здравствуйте здраствуйте спасибо "
    "добрый день вечер утро получить получаю получает пришла пришел пришло приходит дали "
    "дают дает будет будут есть был была было были сын дочь муж жена год года лет "
    "месяц месяца деньги это этот эта если или но нет так там тут куда кто чем меню нам нас "
    "вам вас их его ее её она они мы вы".split()
)
_RU_STEMS = (
    "пожалуйст", "подскаж", "помогит", "здравств", "спасиб", "получ", "приход", "пришл",
    "котор", "сколько", "почему", "нужн", "можн", "должн", "сделат", "оформ", "обрат",
    "работа", "платит", "выплат", "пособи", "назнач", "помощ", "сказал", "говор", "хочу",
    "знать", "узна", "через", "только", "сейчас", "теперь", "потерял", "отказ", "очеред",
)
_KK_EVIDENCE_WORD = 1.0
_KK_EVIDENCE_LETTER_WORD = 2.0  # a word with a Kazakh-only letter
_RU_EVIDENCE_WORD = 1.0


def skeleton(word: str, *, single: bool = True) -> str:
    """Fold a lower-case Cyrillic word for matching: Kazakh letters onto plain ones (қ→к, і→и,
    ұ/ү→у, ә→а...), ы/й→и, ё/э→е, щ→ш, ц→тс, я→иа, ю→иу, soft and hard signs dropped, and
    (with `single`) doubled letters single. "зейнетақы", "зейнетакы" and a transliterated
    "zeynetaky" all fold alike."""
    folded = word.translate(_FOLD)
    return _DOUBLE.sub(r"\1", folded) if single else folded


_FOLDED_KK_WORDS = frozenset(skeleton(w) for w in _KK_WORDS)
_FOLDED_KK_STEMS = tuple(skeleton(s) for s in _KK_STEMS)
_FOLDED_RU_WORDS = frozenset(skeleton(w) for w in _RU_WORDS)
_FOLDED_RU_STEMS = tuple(skeleton(s) for s in _RU_STEMS)


def normalise(text: str) -> str:
    """NFC, lower case, ё→е, no control characters, emoji or punctuation (each becomes a
    space), whitespace collapsed: only letters, digits and single spaces remain."""
    text = unicodedata.normalize("NFC", text).lower().replace("ё", "е")
    out: list[str] = []
    for ch in text:
        category = unicodedata.category(ch)
        if category[0] == "L" or category == "Nd":
            out.append(ch)
        elif category == "Mn" and out and out[-1] != " " and not 0xFE00 <= ord(ch) <= 0xFE0F:
            out.append(ch)  # a combining accent that NFC could not compose stays on its letter
        else:
            out.append(" ")
    return " ".join("".join(out).split())


def _is_cyrillic(ch: str) -> bool:
    return "\u0400" <= ch <= "\u04ff" or "\u0500" <= ch <= "\u052f"


def _is_latin(ch: str) -> bool:
    return ch.isalpha() and ch.isascii() or "\u00c0" <= ch <= "\u024f" or ch in "ıİ"


def is_latin_word(word: str) -> bool:
    """Tell whether a word is written in Latin letters only (Kazakh Latin letters included)."""
    return bool(word) and all(_is_latin(ch) for ch in word)


def _restore_case(source: str, result: str) -> str:
    letters = [c for c in source if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return result.upper()
    if letters and letters[0].isupper():
        return result[:1].upper() + result[1:]
    return result


def _kazakh_word_to_cyrillic(word: str) -> str:
    lower = word.replace("İ", "i").replace("I", "ı" if word.isupper() else "i").lower()
    lower = "".join("'" if c in _APOSTROPHES else c for c in lower)
    out: list[str] = []
    i = 0
    while i < len(lower):
        for latin, cyrillic in KK_LATIN_PAIRS:
            if lower.startswith(latin, i):
                out.append(cyrillic)
                i += len(latin)
                break
        else:
            out.append(KK_LATIN.get(lower[i], lower[i]))
            i += 1
    return _restore_case(word, "".join(out))


def _russian_word_to_cyrillic(word: str) -> str:
    lower = "".join("'" if c in _APOSTROPHES else c for c in word.lower())
    for latin, replacement in _RU_PRE:
        lower = lower.replace(latin, replacement)
    # cyrtranslit reads "shh" as щ only with a letter after it ("pomoshh" came out "помошх"):
    # a space after the word gives it one, and goes again.
    result = str(cyrtranslit.to_cyrillic(lower + " ", "ru"))[:-1]
    return _restore_case(word, result)


def to_cyrillic(text: str, language: str) -> str:
    """Write the Latin words of text in Cyrillic, as language ("kk" or "ru") would.

    Russian goes through cyrtranslit (after mapping informal shch/kh/x); Kazakh through
    `KK_LATIN`. A word mixing Cyrillic and Latin letters only has its look-alike Latin letters
    replaced (a phone's keyboard typo). Cyrillic text, digits and punctuation are unchanged.
    """
    if not any(_is_latin(ch) for ch in text):
        return text
    convert = _kazakh_word_to_cyrillic if language == "kk" else _russian_word_to_cyrillic

    def one(match: re.Match[str]) -> str:
        word = match.group(0)
        if not any(_is_latin(ch) for ch in word):
            return word
        cyrillic = sum(_is_cyrillic(ch) for ch in word)
        if cyrillic * 2 >= len(word):
            return word.translate(_HOMOGLYPHS)
        if cyrillic:
            word = word.translate(_LATIN_LOOKALIKES)
        return convert(word)

    return _WORD.sub(one, text)


def _evidence(words: list[str]) -> tuple[float, float]:
    kk = ru = 0.0
    for word in words:
        folded = skeleton(word)
        if any(ch in KAZAKH_CYRILLIC for ch in word):
            kk += _KK_EVIDENCE_LETTER_WORD
        elif folded in _FOLDED_KK_WORDS or (
            len(folded) >= 4 and folded.startswith(_FOLDED_KK_STEMS)
        ):
            kk += _KK_EVIDENCE_WORD
        if folded in _FOLDED_RU_WORDS or (
            len(folded) >= 4 and folded.startswith(_FOLDED_RU_STEMS)
        ):
            ru += _RU_EVIDENCE_WORD
    return kk, ru


# How many more votes the other language needs to replace the one a number is known to write
# in (language_votes): one Russian stem ("пенсия", shared by Kazakh) beside Kazakh typed without
# Kazakh letters ("Пенсия туспеди") is no reason to answer a Kazakh speaker in Russian; a word
# with a Kazakh letter (2), or two Russian words, are.
SWITCH_MARGIN = 2.0


def keeps_language(text: str, remembered: str, detected: str) -> bool:
    """Whether a message detected as `detected` still reads as the `remembered` language of
    its number: the vote for the switch is below SWITCH_MARGIN."""
    kk, ru = language_votes(text)
    votes = {"kk": kk, "ru": ru}
    if remembered not in votes or detected not in votes:
        return False
    return votes[detected] - votes[remembered] < SWITCH_MARGIN


def detect_language(text: str) -> str | None:
    """Return "kk", "ru", or None when the text does not tell (no letters at all).

    Each word votes: a word with a Kazakh-only letter (ә ғ қ ң ө ұ ү һ і) counts twice for
    Kazakh, a common Kazakh word or stem once (many phones have no Kazakh letters: "калай",
    "зейнетакы"), a common Russian word or stem once for Russian. The larger vote wins, so a
    Russian question naming the ХҚКО stays Russian and "Салем, когда пенсия?" too, while
    "Сәлеметсіз бе, пенсия когда келеді" is Kazakh. Cyrillic text with no votes is Russian.
    Latin text is read both ways (Kazakh and Russian transliteration, see `to_cyrillic`);
    letters only Kazakh Latin has (q ä ğ ñ ö ū ü ı ş) count for Kazakh; Latin text with no votes
    at all (an English word, a name) gives None.
    """
    kk, ru = language_votes(text)
    if kk > ru:
        return "kk"
    if ru > 0 or any(_is_cyrillic(ch) for ch in text):
        return "ru"
    return None


def language_votes(text: str) -> tuple[float, float]:
    """The Kazakh and the Russian votes of detect_language."""
    text = unicodedata.normalize("NFC", text)
    words = _WORD.findall(text)
    if not words:
        return 0.0, 0.0
    cyrillic_words: list[str] = []
    kk = ru = 0.0
    for word in words:
        if any(_is_latin(ch) for ch in word) and not any(_is_cyrillic(ch) for ch in word):
            lower = word.lower()
            if "".join(c for c in lower if c.isalpha()) in _NEUTRAL_LATIN:
                continue
            # As typed in lower case: an all-caps word's I is read as the Kazakh Latin ı (І)
            # when it is written back, which made every Russian word in capitals with an I
            # ("OTKLUCHILI", "PRIVET") a word with a Kazakh letter, and the message Kazakh.
            kk_word = normalise(_kazakh_word_to_cyrillic(lower))
            ru_word = normalise(_russian_word_to_cyrillic(word))
            if any(ch in KAZAKH_LATIN for ch in lower):
                kk += _KK_EVIDENCE_LETTER_WORD
                continue
            kk_vote, _ = _evidence(kk_word.split())
            _, ru_vote = _evidence(ru_word.split())
            kk += kk_vote
            ru += ru_vote
        else:
            cyrillic_words.extend(normalise(to_cyrillic(word, "ru")).split())
    kk_vote, ru_vote = _evidence(cyrillic_words)
    return kk + kk_vote, ru + ru_vote
